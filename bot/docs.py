"""Reference docs generated from the code, so they cannot drift: the configuration reference from
the pydantic models in ``bot.config`` and the SOP catalog from the registry.

    python -m bot.docs            # (re)write docs/configuration.md and docs/sop-catalog.md
    python -m bot.docs --check    # exit 1 naming the stale files (tests/ops/test_docs.py does this)

``sopbot docs [--check]`` is the same command.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import NoDecode

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
COMMAND = "python -m bot.docs"
ENV_PREFIX = "SOPBOT_"
NESTED = "__"


@dataclass(frozen=True)
class Row:
    key: str          # dotted YAML path, e.g. "mattermost.token"
    env: str | None   # SOPBOT_MATTERMOST__TOKEN; None inside list/dict items
    type: str
    default: str
    description: str
    secret: bool


@dataclass(frozen=True)
class Table:
    title: str        # "mattermost", "alertmanager.routes[]"
    doc: str
    rows: list[Row]
    items: bool       # rows describe one item of a list or map (no variables of their own)


# -- configuration reference ------------------------------------------------------------------
def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _strip(tp: Any) -> tuple[Any, bool, bool]:
    """(the type without None and Annotated, optional?, comma-separated string accepted?)"""
    comma = False
    if typing.get_origin(tp) is typing.Annotated:
        tp, *meta = _args(tp)
        comma = any(m is NoDecode or isinstance(m, type(NoDecode)) for m in meta)
    optional = False
    if _is_union(tp) and type(None) in _args(tp):
        rest = [a for a in _args(tp) if a is not type(None)]
        optional = True
        tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return tp, optional, comma


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _is_secret(tp: Any) -> bool:
    tp = _strip(tp)[0]
    if tp is SecretStr:
        return True
    return any(_is_secret(a) for a in _args(tp))


def type_name(tp: Any, *, top: bool = True, comma: bool = False) -> str:
    """Readable type; ``comma``: the field's validator also takes "a,b" (``NoDecode``)."""
    tp, optional, annotated_comma = _strip(tp)
    comma = comma or annotated_comma
    origin = typing.get_origin(tp)
    if tp is SecretStr:
        name = "string (secret)"
    elif tp in (str, int, float, bool):
        name = {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]
    elif tp is Path:
        name = "path"
    elif tp is Any:
        name = "any"
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        name = f"{tp.__name__.lower()} (" + ", ".join(f"`{m.value}`" for m in tp) + ")"
    elif origin is Literal:
        name = "one of " + ", ".join(f"`{a}`" for a in _args(tp))
    elif origin is list:
        name = f"list of {type_name(_args(tp)[0], top=False)}"
        if comma:
            name += " (comma-separated in the environment)"
    elif origin is dict:
        key, value = _args(tp)
        name = f"map of {type_name(key, top=False)} → {type_name(value, top=False)}"
    elif _is_union(tp):
        name = " or ".join(type_name(a, top=False) for a in _args(tp))
    elif _model(tp) is not None:
        name = "objects (table below)" if not top else "object"
    else:
        name = getattr(tp, "__name__", str(tp))
    if optional:
        return f"{name}, optional" if top else f"{name} or null"
    return name


def _bounds(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for attr, op in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(m, attr, None)
            if value is not None and isinstance(m, (annotated_types.BaseMetadata,)):
                parts.append(f"{op} {value}")
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return f" ({', '.join(parts)})" if parts else ""


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset"  # never a secret in the docs
    value = _plain(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_tables(model: type[BaseModel], prefix: str = "", env: str | None = ENV_PREFIX,
                  title: str = "", items: bool = False) -> Iterator[Table]:
    """One table per section (nested sections, list and map items get tables of their own)."""
    rows: list[Row] = []
    later: list[Iterator[Table]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        var = f"{env}{key.upper()}" if env is not None else None
        tp, _, _ = _strip(field.annotation)
        sub = _model(tp)
        if sub is not None:  # a nested section: its own table, reached with one more "__"
            later.append(config_tables(sub, f"{path}.", f"{var}{NESTED}" if var else None, path, items))
            continue
        origin = typing.get_origin(tp)
        if origin in (list, dict):
            inner = _model(_args(tp)[-1])
            if inner is not None:
                later.append(config_tables(inner, f"{path}{'[]' if origin is list else '.<name>'}.",
                                           None, f"{path}{'[]' if origin is list else '.<name>'}",
                                           items=True))
        comma = any(m is NoDecode for m in field.metadata)
        rows.append(Row(key=path, env=var, type=type_name(field.annotation, comma=comma) + _bounds(field),
                        default=default_text(field), description=field.description or "",
                        secret=_is_secret(field.annotation)))
    table = Table(title=title, doc=_doc(model), rows=rows, items=items) if rows else None
    if table is not None and title:
        yield table
    for tables in later:
        yield from tables
    if table is not None and not title:  # the top level's loose settings after the sections
        yield table


def _doc(model: type[BaseModel]) -> str:
    own = model.__dict__.get("__doc__")
    return " ".join(own.split()).replace("``", "`") if own else ""


def configuration_markdown() -> str:
    from bot.config import Settings

    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from bot/config.py by `{COMMAND}`; do not edit by hand. -->",
        "",
        "SOP Bot reads an optional YAML file (`sopbot run --config FILE`) and environment variables;",
        f"an environment variable wins over the file. Variables are `{ENV_PREFIX}` plus the setting's",
        f"path in upper case with `{NESTED}` between the levels (`mattermost.token` is",
        f"`{ENV_PREFIX}MATTERMOST{NESTED}TOKEN`). Lists and maps are given as JSON in the environment",
        "(`SOPBOT_SLASH__TOKENS='[\"t1\",\"t2\"]'`) unless the type says comma-separated. Settings",
        "inside list or map items (routes, schedules, approval rules) have no variables of their own:",
        "set the whole list or map.",
        "",
        "Settings marked **secret** are never printed: `sopbot check-config` shows them as",
        "`**********`, and their values are masked in the logs. Give them through the environment",
        "(a Kubernetes Secret) rather than the YAML file.",
        "",
    ]
    for table in config_tables(Settings):
        out.append(f"## `{table.title}`" if table.title else "## Top level")
        out.append("")
        if table.items:
            kind = "list" if table.title.endswith("[]") else "map"
            out.append(f"Each item of the {kind} `{table.title.rstrip('[]').removesuffix('.<name>')}`.")
            out.append("")
        if table.doc:
            out += [table.doc, ""]
        if table.items:
            out += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        else:
            out += ["| Setting | Environment variable | Type | Default | Description |",
                    "|---|---|---|---|---|"]
        for r in table.rows:
            desc = _cell(": ".join(filter(None, ["**secret**" if r.secret else "", r.description])) or "—")
            key = r.key.rsplit(".", 1)[-1] if table.items else r.key
            if table.items:
                out.append(f"| `{key}` | {_cell(r.type)} | {_cell(r.default)} | {desc} |")
            else:
                out.append(f"| `{key}` | `{r.env}` | {_cell(r.type)} | {_cell(r.default)} | {desc} |")
        out.append("")
    return "\n".join(out)


# -- SOP catalog ------------------------------------------------------------------------------
def catalog_document() -> str:
    from bot.catalog import catalog_markdown
    from bot.registry import load_handlers

    registry = load_handlers()
    return "\n".join([
        "# SOP catalog",
        "",
        f"<!-- Generated from the handler registry by `{COMMAND}` (the table is `sopbot list --markdown`);",
        "do not edit by hand. -->",
        "",
        f"{len(registry.sops)} SOPs. Run one in Mattermost with `/sop <id> [key=value ...]`, or from a",
        "terminal with `sopbot diagnose <id> [key=value ...]`. The Alerts column lists the",
        "Alertmanager alert names routed to the SOP.",
        "",
        catalog_markdown(registry),
        "",
    ])


def generated() -> dict[str, str]:
    """File name under docs/ → its current content."""
    return {"configuration.md": configuration_markdown(), "sop-catalog.md": catalog_document()}


README_START = "<!-- sop-catalog:start (generated by `python -m bot.docs`) -->"
README_END = "<!-- sop-catalog:end -->"
COVERAGE_START = "<!-- runbook-coverage:start (generated by `python -m bot.docs`) -->"
COVERAGE_END = "<!-- runbook-coverage:end -->"
# The runbook the coverage is measured on: the sandbox's, numbered entry for entry like the team's.
COVERAGE_RUNBOOK = Path(__file__).resolve().parents[1] / "sandbox" / "runbook.md"


def coverage_document() -> str:
    """``sopbot list --coverage --markdown`` for the repository's runbook."""
    from bot.approvals.actions import ACTIONS
    from bot.approvals.procedures import PROCEDURES
    from bot.coverage import coverage, coverage_markdown, load_scenarios
    from bot.registry import load_handlers
    from bot.runbook import Runbook

    registry = load_handlers()
    return coverage_markdown(coverage(registry, Runbook.load(COVERAGE_RUNBOOK), ACTIONS, load_scenarios(),
                                      PROCEDURES))


def _between(current: str, start: str, end: str, content: str) -> str:
    if start not in current or end not in current:
        return current
    head, rest = current.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def readme_text(current: str) -> str:
    """The README with the SOP catalog and the runbook coverage between their markers brought up to date."""
    from bot.catalog import catalog_markdown
    from bot.registry import load_handlers

    text = _between(current, README_START, README_END, catalog_markdown(load_handlers()))
    if COVERAGE_START in text and COVERAGE_END in text:
        text = _between(text, COVERAGE_START, COVERAGE_END, coverage_document())
    return text


def _targets(docs_dir: Path) -> dict[Path, str]:
    """Each generated file → its current content; the README (beside docs/) where it has markers."""
    out = {docs_dir / name: text for name, text in generated().items()}
    readme = docs_dir.parent / "README.md"
    if readme.is_file():
        out[readme] = readme_text(readme.read_text(encoding="utf-8"))
    return out


def stale(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """The generated files whose checked-in copy differs from what the code generates."""
    return [path for path, text in _targets(docs_dir).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def write(docs_dir: Path = DOCS_DIR) -> list[Path]:
    docs_dir.mkdir(parents=True, exist_ok=True)
    changed = stale(docs_dir)
    for path, text in _targets(docs_dir).items():
        if path in changed:
            path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Generate the reference docs from code.")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a file is stale")
    parser.add_argument("--dir", type=Path, default=DOCS_DIR, help=f"docs directory (default {DOCS_DIR})")
    args = parser.parse_args(argv)
    return run(check=args.check, docs_dir=args.dir)


def run(*, check: bool, docs_dir: Path) -> int:
    if check:
        paths = stale(docs_dir)
        for path in paths:
            print(f"{path} is out of date: run `{COMMAND}` (or `sopbot docs`) and commit it",
                  file=sys.stderr)
        return 1 if paths else 0
    for path in write(docs_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
