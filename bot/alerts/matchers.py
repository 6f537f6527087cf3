"""Alertmanager-style label matchers: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Regexes are anchored (``^(?:re)$``) as in Alertmanager, so ``pod=~"vault-.*"`` does not match
``my-vault-0``. A label that is absent counts as the empty string, again as Alertmanager does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # one of = != =~ !~
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> "Matcher":
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a matcher like name=\"value\" (=, !=, =~, !~)")
        name, op, raw = m.groups()
        value = _unquote(raw)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"^(?:{value})$")
            except re.error as exc:
                raise ValueError(f"{text!r}: bad regular expression ({exc})") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self._regex is not None
        hit = self._regex.match(got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            return str(json.loads(raw))
        except ValueError:
            raise ValueError(f"{raw}: bad quoting") from None
    if raw.startswith('"') or raw.endswith('"'):
        raise ValueError(f"{raw}: unbalanced quote")
    return raw


def parse_matchers(items: list[str] | str) -> list[Matcher]:
    """A list of matcher strings, or one ``{a="b", c=~"d"}`` selector."""
    if isinstance(items, str):
        text = items.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        items = _split(text)
    return [Matcher.parse(i) for i in items if i.strip()]


def _split(text: str) -> list[str]:
    # Commas inside quoted values do not separate matchers.
    out, cur, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            cur += ch
            escaped = True
        elif ch == '"':
            cur += ch
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def matches_all(matchers: list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
