"""The team's runbook, read at run time: numbered Markdown sections, their labelled parts
(**Symptom**, **Resolution**…) and a ranked search over them. The prose stays in the team's file."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_HEADING = re.compile(r"^(#{2,4})\s+(\d+(?:\.\d+)*)\.?\s+(.*?)\s*$")
_LABEL = re.compile(r"^\*\*([A-Za-z][A-Za-z /-]*)\*\*:\s*(.*)$")
_WORD = re.compile(r"[a-z0-9][a-z0-9\-_.]*[a-z0-9]|[a-z0-9]")
_STOP = frozenset("a an and are as at be by for from how if in is it of on or the to with not no "
                  "check this that use when".split())


@dataclass
class Section:
    number: str
    title: str
    level: int
    body: str
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        """GitHub-style heading anchor ("5.1 Vault Sealed" → "51-vault-sealed")."""
        text = f"{self.number} {self.title}".lower()
        text = re.sub(r"[^\w\- ]", "", text)
        return text.replace(" ", "-")

    @property
    def severity(self) -> str | None:
        m = re.match(r"P[1-4]", self.parts.get("severity", ""))
        return m.group(0) if m else None

    def part(self, *names: str) -> str:
        for name in names:
            if self.parts.get(name):
                return self.parts[name]
        return ""


def _tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


@dataclass
class Runbook:
    sections: dict[str, Section]
    source: str = ""
    url: str | None = None

    @classmethod
    def parse(cls, text: str, source: str = "", url: str | None = None) -> "Runbook":
        sections: dict[str, Section] = {}
        current: Section | None = None
        lines: list[str] = []
        in_code = False

        def close() -> None:
            if current is not None:
                current.body = "\n".join(lines).strip()
                current.parts = _parts(lines)

        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_code = not in_code
            m = None if in_code else _HEADING.match(line)
            if m:
                close()
                current = Section(number=m.group(2), title=m.group(3), level=len(m.group(1)), body="")
                # Keep the first of duplicate numbers: the runbook's own ordering wins.
                sections.setdefault(current.number, current)
                lines = []
            elif current is not None:
                lines.append(line)
        close()
        return cls(sections=sections, source=source, url=url)

    @classmethod
    def load(cls, path: Path, url: str | None = None) -> "Runbook":
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path), url=url)

    def get(self, number: str) -> Section | None:
        return self.sections.get(number.rstrip("."))

    def link(self, number: str) -> str | None:
        section = self.get(number)
        if section is None or not self.url:
            return None
        return f"{self.url}#{section.anchor}"

    def search(self, query: str, limit: int = 5) -> list[tuple[Section, float]]:
        """Rank sections by TF-IDF over title (weighted 3x) and body."""
        terms = _tokens(query)
        if not terms:
            return []
        docs = {n: Counter(_tokens(s.title) * 3 + _tokens(s.body)) for n, s in self.sections.items()}
        total = len(docs)
        scores: list[tuple[Section, float]] = []
        for number, counts in docs.items():
            length = sum(counts.values()) or 1
            score = 0.0
            for term in set(terms):
                if counts[term]:
                    df = sum(1 for c in docs.values() if c[term])
                    score += (counts[term] / length) ** 0.5 * math.log(1 + total / df)
            # A phrase found verbatim counts most: "certificate has expired".
            if query.lower().strip() in self.sections[number].body.lower():
                score *= 2
            if score > 0:
                scores.append((self.sections[number], score))
        scores.sort(key=lambda p: -p[1])
        return scores[:limit]


def _parts(lines: list[str]) -> dict[str, str]:
    """The labelled parts of a section: ``**Symptom**: …`` up to the next label or heading."""
    parts: dict[str, list[str]] = {}
    label: str | None = None
    in_code = False
    for line in lines:
        if line.lstrip().startswith("```"):
            in_code = not in_code
        m = None if in_code else _LABEL.match(line.strip())
        if m:
            label = m.group(1).strip().lower()
            parts[label] = [m.group(2)] if m.group(2) else []
        elif label is not None:
            if not in_code and (line.startswith("---") or line.startswith("#")):
                label = None
            else:
                parts[label].append(line)
    return {k: "\n".join(v).strip() for k, v in parts.items()}
