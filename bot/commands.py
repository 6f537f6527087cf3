"""``/sop`` command language: parsing and the answers that need no cluster access.

``/sop help [ID|SECTION]``, ``/sop list``, ``/sop search <words>``, ``/sop <ID> [key=value …]``.
Other features add subcommands (``health``, ``audit``) through ``Subcommand`` entries.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from bot.registry import SOP, BadArguments, Registry, UnknownSOP
from bot.render import section_ref
from bot.runbook import Runbook, Section
from bot.safe_text import code, text

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
    # Posts its results in the invoking channel: refused up front when the bot cannot post there.
    posts: bool = False
    # Runbook entries it runs as a whole (``health``: 11.1), named before the SOPs of a part.
    sections: tuple[str, ...] = ()


class CommandError(ValueError):
    pass


def parse_args(tokens: list[str]) -> dict[str, str]:
    """``key=value`` pairs only; anything else is refused with the offending token named."""
    args: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not _KEY.match(key):
            raise CommandError(f"{code(_short(token))} is not a `key=value` argument")
        if key in args:
            raise CommandError(f"{code(key)} is given twice")
        args[key] = value
    return args


def resolve(registry: Registry, sop_id: str, tokens: list[str], ctx: object | None = None) -> RunRequest:
    """Raises UnknownSOP, BadArguments or CommandError with a message fit to show. With ``ctx``
    (the HandlerContext) an argument naming nothing that exists is a BadArguments too."""
    item = registry.get(sop_id)
    context = {"ctx": ctx} if ctx is not None else None
    return RunRequest(sop=item, params=item.parse_args(parse_args(tokens), context=context))


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
        if len(item.sections) > 1:
            lines.append("Covers runbook " + ", ".join(item.sections))
        if item.causes:
            lines.append("Root causes it can name: " + "; ".join(item.causes))
        section = runbook.get(item.section) if runbook else None
        if section is not None:
            lines.append(f"{section_ref(section.number, runbook)}: **{section.title}**")
            lines += _section_digest(section, trigger)
        return "\n".join(lines)
    if re.fullmatch(r"\d+(\.\d+)*(/[a-z0-9][a-z0-9-]*)?", topic):
        section = runbook.get(topic) if runbook else None
        sops = registry.for_section(section.number if section else topic)
        if section is None and not sops:
            raise CommandError(f"runbook section {code(topic)} not found" +
                               ("" if runbook else " (no runbook configured: runbook.path)"))
        lines = ([f"**{section_ref(section.number, runbook)} — {section.title}**"] if section
                 else [f"**Runbook {topic}**"])
        if section is not None:
            lines += _section_digest(section, trigger)
        runs = _runners(registry, subcommands, section.number if section else topic, trigger)
        if runs:
            lines.append("Automated by: " + ", ".join(runs))
        return "\n".join(lines)
    raise UnknownSOP(topic, registry.closest(topic))


EXCERPT = 1500  # characters of a section's prose shown when it has no labelled parts


def _section_digest(section: Section, trigger: str) -> list[str]:
    """A section's labelled parts, or its own text where it has none (chapter 1, 10.x, 11.x), and
    the list of its sub-problems, each with its symptom."""
    out = []
    for label, names in (("Symptom", ("symptom", "symptoms")), ("Root cause", ("root cause", "root causes")),
                         ("Escalation", ("escalation",))):
        part = section.part(*names)
        if part:
            out.append(f"**{label}**: {part}")
    steps = section.part("resolution", "step-by-step", "procedure", "diagnostic steps")
    if steps:
        out += ["**Steps (from the runbook)**", steps if steps.startswith("```") else f"```\n{steps}\n```"]
    if not out and section.own:
        out.append(_excerpt(section.own, EXCERPT))
    if section.subs:
        out.append(f"Sub-problems (`/{trigger} help {section.subs[0].number}` for one):")
        for sub in section.subs:
            symptom = sub.part("symptom", "symptoms").replace("\n", " ")
            out.append(f"- `{sub.number}` {sub.title}" + (f": {_short(symptom, 140)}" if symptom else ""))
    return out


def _excerpt(prose: str, limit: int) -> str:
    """The start of ``prose`` up to a line end, a code block cut short closed again."""
    if len(prose) <= limit:
        return prose
    cut = prose[:limit].rsplit("\n", 1)[0]
    if sum(1 for line in cut.splitlines() if line.lstrip().startswith("```")) % 2:
        cut += "\n```"
    return cut + "\n…"


def list_text(registry: Registry, trigger: str) -> str:
    rows = ["| SOP | Runbook | Severity | What it checks |", "|:--|:--|:--|:--|"]
    for item in registry:
        rows.append(f"| `{item.id}` | {item.section} | {item.severity.value} | {item.title} |")
    return f"{len(registry)} SOPs (`/{trigger} help <ID>` for one):\n" + "\n".join(rows)


def _runners(registry: Registry, subcommands: dict[str, Subcommand] | None, number: str,
             trigger: str) -> list[str]:
    """The commands that run runbook entry ``number``: a subcommand running it whole first."""
    whole = [f"`/{trigger} {s.name}`" for s in (subcommands or {}).values() if number in s.sections]
    return whole + [f"`/{trigger} {s.id}`" for s in registry.for_section(number)]


def search_text(registry: Registry, runbook: Runbook | None, words: str, trigger: str,
                subcommands: dict[str, Subcommand] | None = None) -> str:
    if runbook is None:
        raise CommandError("no runbook configured (runbook.path), so there is nothing to search")
    hits = runbook.search(words)
    if not hits:
        return f"No runbook section matches {code(_short(words, 80))}."
    lines = [f"Runbook sections for {code(_short(words, 80))}:"]
    for section, _score in hits:
        runs = _runners(registry, subcommands, section.number, trigger)
        auto = (" — run " + ", ".join(runs)) if runs else ""
        lines.append(f"- {section_ref(section.number, runbook)} {section.title}{auto}")
    return "\n".join(lines)


def likely(asked: str, suggestions: list[str]) -> list[str]:
    """The suggestions close enough to be what was meant (a typo, a prefix, a shared word), not
    any id that merely shares letters: ``tribute`` is not ``traefik-lb``."""
    asked = asked.lower()
    return [s for s in suggestions
            if asked in s or difflib.SequenceMatcher(None, asked, s).ratio() >= 0.75
            or any(len(w) > 3 and w in s.split("-") for w in re.split(r"[-_\s]+", asked))]


def unknown_text(exc: UnknownSOP, trigger: str) -> str:
    meant = likely(exc.sop_id, exc.suggestions)
    if meant:
        hint = " Did you mean " + ", ".join(f"`{s}`" for s in meant) + "?"
        return f"No SOP {code(_short(exc.sop_id))}.{hint} `/{trigger} list` shows them all."
    return (f"No SOP or command {code(_short(exc.sop_id))}. `/{trigger} help` lists the commands, "
            f"`/{trigger} list` the SOPs.")


def bad_args_text(exc: BadArguments, trigger: str) -> str:
    lines = [f"Bad arguments for `{exc.sop.id}`:"] + [f"- {text(p)}" for p in exc.problems]
    lines.append(f"Usage: `/{trigger} {exc.sop.id} {exc.sop.usage()}`".rstrip())
    return "\n".join(lines)
