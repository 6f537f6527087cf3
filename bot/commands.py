"""``/sop`` command language: parsing and the answers that need no cluster access.

``/sop help [ID|SECTION]``, ``/sop list``, ``/sop search <words>``, ``/sop <ID> [key=value …]``.
Other features add subcommands (``health``, ``audit``) through ``Subcommand`` entries.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from bot.registry import SOP, BadArguments, Registry, UnknownSOP
from bot.render import section_ref
from bot.runbook import Runbook

MAX_TEXT = 2000  # longer command text is refused before parsing
_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class Invocation(BaseModel):
    """Who ran what, where: the parts of Mattermost's slash-command request the bot uses."""

    user_id: str
    user_name: str
    channel_id: str
    team_id: str = ""
    text: str = ""
    trigger_id: str = ""
    response_url: str = ""


class Reply(BaseModel):
    """The immediate answer Mattermost shows to the requester (Mattermost's JSON field names)."""

    text: str
    response_type: Literal["ephemeral", "in_channel"] = "ephemeral"


@dataclass
class RunRequest:
    """A validated request to run an SOP; ``params`` is the SOP's model instance."""

    sop: SOP
    params: object


@dataclass
class Subcommand:
    name: str
    usage: str
    summary: str
    # Returns the immediate reply; may schedule work in the background itself.
    run: Callable[[Invocation, list[str]], Awaitable[Reply]]


class CommandError(ValueError):
    pass


def parse_args(tokens: list[str]) -> dict[str, str]:
    """``key=value`` pairs only; anything else is refused with the offending token named."""
    args: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not _KEY.match(key):
            raise CommandError(f"`{_short(token)}` is not a `key=value` argument")
        if key in args:
            raise CommandError(f"`{key}` is given twice")
        args[key] = value
    return args


def resolve(registry: Registry, sop_id: str, tokens: list[str]) -> RunRequest:
    """Raises UnknownSOP, BadArguments or CommandError with a message fit to show."""
    item = registry.get(sop_id)
    return RunRequest(sop=item, params=item.parse_args(parse_args(tokens)))


def _short(text: str, n: int = 40) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= n else text[: n - 1] + "…"


def help_text(registry: Registry, runbook: Runbook | None, topic: str, trigger: str,
              subcommands: dict[str, Subcommand]) -> str:
    if not topic:
        lines = [f"**SOP Bot** runs the runbook's diagnostics. Commands:",
                 f"- `/{trigger} list`: every SOP the bot can run",
                 f"- `/{trigger} help <ID|SECTION>`: what an SOP does, or a runbook section",
                 f"- `/{trigger} search <words>`: runbook sections for a symptom",
                 f"- `/{trigger} <ID> [key=value …]`: run an SOP; results go to a thread"]
        lines += [f"- `/{trigger} {s.usage}`: {s.summary}" for s in subcommands.values()]
        return "\n".join(lines)
    if topic in registry.sops:
        item = registry.get(topic)
        lines = [f"**`{item.id}`** — {item.title}",
                 f"{section_ref(item.section, runbook)} · severity {item.severity.value} "
                 f"({item.severity.label}, respond within {item.severity.response_time})"]
        if item.description:
            lines.append(item.description)
        lines.append(f"Usage: `/{trigger} {item.id} {item.usage()}`".rstrip())
        if item.alerts:
            lines.append("Runs on alerts: " + ", ".join(f"`{a}`" for a in item.alerts))
        lines += _section_digest(runbook, item.section)
        return "\n".join(lines)
    if re.fullmatch(r"\d+(\.\d+)*", topic):
        section = runbook.get(topic) if runbook else None
        sops = registry.for_section(topic)
        if section is None and not sops:
            raise CommandError(f"runbook section {topic} not found" +
                               ("" if runbook else " (no runbook configured: runbook.path)"))
        lines = [f"**Runbook {topic}**" + (f" — {section.title}" if section else "")]
        lines += _section_digest(runbook, topic)
        if sops:
            lines.append("Automated by: " + ", ".join(f"`/{trigger} {s.id}`" for s in sops))
        return "\n".join(lines)
    raise UnknownSOP(topic, registry.closest(topic))


def _section_digest(runbook: Runbook | None, number: str) -> list[str]:
    section = runbook.get(number) if runbook else None
    if section is None:
        return []
    out = [f"{section_ref(number, runbook)}: **{section.title}**"]
    for label in ("symptom", "root cause", "escalation"):
        text = section.part(label)
        if text:
            out.append(f"**{label.capitalize()}**: {text}")
    steps = section.part("resolution", "step-by-step", "diagnostic steps")
    if steps:
        out += ["**Steps (from the runbook)**", steps if steps.startswith("```") else f"```\n{steps}\n```"]
    return out


def list_text(registry: Registry, trigger: str) -> str:
    rows = ["| SOP | Runbook | Severity | What it checks |", "|:--|:--|:--|:--|"]
    for item in registry:
        rows.append(f"| `{item.id}` | {item.section} | {item.severity.value} | {item.title} |")
    return f"{len(registry)} SOPs (`/{trigger} help <ID>` for one):\n" + "\n".join(rows)


def search_text(registry: Registry, runbook: Runbook | None, words: str, trigger: str) -> str:
    if runbook is None:
        raise CommandError("no runbook configured (runbook.path), so there is nothing to search")
    hits = runbook.search(words)
    if not hits:
        return f"No runbook section matches “{_short(words, 80)}”."
    lines = [f"Runbook sections for “{_short(words, 80)}”:"]
    for section, _score in hits:
        sops = registry.for_section(section.number)
        auto = (" — run " + ", ".join(f"`/{trigger} {s.id}`" for s in sops)) if sops else ""
        lines.append(f"- {section_ref(section.number, runbook)} {section.title}{auto}")
    return "\n".join(lines)


def unknown_text(exc: UnknownSOP, trigger: str) -> str:
    hint = (" Did you mean " + ", ".join(f"`{s}`" for s in exc.suggestions) + "?") if exc.suggestions else ""
    return f"No SOP `{_short(exc.sop_id)}`.{hint} `/{trigger} list` shows them all."


def bad_args_text(exc: BadArguments, trigger: str) -> str:
    lines = [f"Bad arguments for `{exc.sop.id}`:"] + [f"- {p}" for p in exc.problems]
    lines.append(f"Usage: `/{trigger} {exc.sop.id} {exc.sop.usage()}`".rstrip())
    return "\n".join(lines)
