"""The team's runbook, read at run time: numbered Markdown sections, their labelled parts
(**Symptom**, **Resolution**…) and a ranked search over them. The prose stays in the team's file.

Entries: a numbered section without numbered subsections is one entry of the runbook. Its
unnumbered sub-headings (chapter 7's ``#### OIDC Authentication Failures``) are sub-problems,
entries of their own named ``"7.2/oidc"`` (the shortest word-prefix of the heading that tells the
siblings apart), except in a chapter of procedures (its title says "Procedure"), whose
sub-headings are steps. A section with sub-problems is an entry itself only when it has content of
its own before them (a code block or a labelled part: chapter 1's flowchart).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_HEADING = re.compile(r"^(#{2,4})\s+(\d+(?:\.\d+)*)\.?\s+(.*?)\s*$")
_SUBHEADING = re.compile(r"^(#{2,6})\s+(\S.*?)\s*#*\s*$")
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
    # Sub-problems ("7.2/oidc"), in runbook order; their ``number`` is "<section>/<key>".
    subs: list["Section"] = field(default_factory=list)
    # Text before the first sub-problem (all of the body when there is none).
    own: str = ""
    parent: str = ""

    @property
    def anchor(self) -> str:
        """GitHub-style heading anchor ("5.1 Vault Sealed" → "51-vault-sealed")."""
        text = (self.title if self.parent else f"{self.number} {self.title}").lower()
        text = re.sub(r"[^\w\- ]", "", text)
        return text.replace(" ", "-")

    @property
    def has_own_content(self) -> bool:
        """A code block or a problem's labelled part before the sub-problems (a **Note** is not)."""
        return "```" in self.own or any(k != "note" for k in _parts(self.own.splitlines()))

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
        # Unnumbered sub-headings of the current section: (level, title, first line index).
        subs: list[tuple[int, str, int]] = []
        chapter = ""
        in_code = False

        def close() -> None:
            if current is not None:
                _fill(current, lines, subs, procedures="procedure" in chapter.lower())

        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_code = not in_code
            m = None if in_code else _HEADING.match(line)
            if m:
                close()
                current = Section(number=m.group(2), title=m.group(3), level=len(m.group(1)), body="")
                if current.level == 2:
                    chapter = current.title
                # Keep the first of duplicate numbers: the runbook's own ordering wins.
                sections.setdefault(current.number, current)
                lines, subs = [], []
            elif current is not None:
                sub = None if in_code else _SUBHEADING.match(line)
                if sub and len(sub.group(1)) > current.level:
                    subs.append((len(sub.group(1)), sub.group(2), len(lines)))
                lines.append(line)
        close()
        book = cls(sections=sections, source=source, url=url)
        for number, section in sections.items():
            if section.subs and not book.is_leaf(number):
                section.subs, section.own = [], section.body  # a chapter's flowchart, not a problem
                section.parts = _parts(section.body.splitlines())
        return book

    def is_leaf(self, number: str) -> bool:
        return not any(n.startswith(number + ".") for n in self.sections)

    def entries(self) -> list[Section]:
        """Every entry of the runbook in order: leaf sections and their sub-problems (see above)."""
        out: list[Section] = []
        for number, section in self.sections.items():
            if not self.is_leaf(number):
                continue
            if not section.subs or section.has_own_content:
                out.append(section)
            out += section.subs
        return out

    @classmethod
    def load(cls, path: Path, url: str | None = None) -> "Runbook":
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path), url=url)

    def get(self, number: str) -> Section | None:
        """A section ("4.1") or a sub-problem ("7.2/oidc", or any unique start of its heading's words)."""
        number, _, key = number.strip().rstrip(".").partition("/")
        section = self.sections.get(number.rstrip("."))
        if section is None or not key:
            return section
        key = key.lower()
        exact = [s for s in section.subs if s.number.split("/", 1)[1] == key]
        if exact:
            return exact[0]
        hits = [s for s in section.subs if _slug(s.title).startswith(key)]
        return hits[0] if len(hits) == 1 else None

    def link(self, number: str) -> str | None:
        section = self.get(number)
        if section is None or not self.url:
            return None
        return f"{self.url}#{section.anchor}"

    def search(self, query: str, limit: int = 5) -> list[tuple[Section, float]]:
        """Rank sections and sub-problems by TF-IDF over title (weighted 3x) and text; a section
        with sub-problems counts with its own text only, so "OIDC" finds 7.2/oidc itself."""
        terms = _tokens(query)
        if not terms:
            return []
        units = {n: s for n, s in self.sections.items()}
        units.update({sub.number: sub for s in self.sections.values() for sub in s.subs})
        docs = {n: Counter(_tokens(s.title) * 3 + _tokens(s.own if s.subs else s.body)) for n, s in units.items()}
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
            unit = units[number]
            if query.lower().strip() in (unit.own if unit.subs else unit.body).lower():
                score *= 2
            if score > 0:
                scores.append((unit, score))
        scores.sort(key=lambda p: -p[1])
        return scores[:limit]


def _words(title: str) -> list[str]:
    words = (re.sub(r"[^a-z0-9-]+", "-", w).strip("-") for w in title.lower().split())
    return [w for w in words if w]


def _slug(title: str) -> str:
    return "-".join(_words(title))


def _keys(titles: list[str]) -> list[str]:
    """The shortest word-prefix of each title that no sibling shares ("oidc", "phase-0")."""
    out = []
    for title in titles:
        words = _words(title) or ["part"]
        n = 1
        while n < len(words) and any(o is not title and _words(o)[:n] == words[:n] for o in titles):
            n += 1
        key = "-".join(words[:n])
        out.append(key if key not in out else f"{key}-{len(out) + 1}")
    return out


def _fill(section: Section, lines: list[str], subs: list[tuple[int, str, int]], *,
          procedures: bool) -> None:
    """Body, parts and sub-problems of a section from its lines (headings excluded)."""
    section.body = "\n".join(lines).strip()
    # Sub-problems are the shallowest sub-headings; deeper ones stay inside their sub-problem.
    top = min((level for level, _, _ in subs), default=0)
    subs = [] if procedures else [s for s in subs if s[0] == top]
    if not subs:
        section.own, section.parts = section.body, _parts(lines)
        return
    own = lines[: subs[0][2]]
    section.own, section.parts = "\n".join(own).strip(), _parts(own)
    keys = _keys([title for _, title, _ in subs])
    for i, ((level, title, start), key) in enumerate(zip(subs, keys)):
        end = subs[i + 1][2] if i + 1 < len(subs) else len(lines)
        chunk = lines[start + 1: end]
        sub = Section(number=f"{section.number}/{key}", title=title, level=level,
                      body="\n".join(chunk).strip(), parts=_parts(chunk), parent=section.number)
        sub.own = sub.body
        section.subs.append(sub)


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
