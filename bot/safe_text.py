"""Rendering externally-sourced values (alert labels, annotations, URLs, user arguments,
Kubernetes messages) into Mattermost Markdown so that they stay inert.

Mattermost's server finds mentions in the raw message text after removing code blocks and
inline code (``removeCodeFromMessage``), splitting words on anything but letters, digits and
``:._-@``. So a backslash does not defuse ``\\@all``; a code span does. Every helper here:

- drops nothing silently: control, bidi and zero-width characters are shown as ``‹U+202E›``;
- never emits a backtick taken from the value (it becomes ``ˋ``), so a value cannot open or
  close a code span or fence and expose what follows to the mention parser;
- ``text``: prose, active Markdown punctuation backslash-escaped, every ``@word`` in a code span;
- ``code``: one inline code span; ``block``: a fenced block (fence lines inside neutralised);
- ``link``: ``[label](url)`` only for http/https URLs, percent-encoded so ``)`` cannot break out.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit

_TICK = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, is not Markdown
# What Markdown (CommonMark/marked) would act on inline, escaped with a backslash, and nothing
# more, so the source stays readable: ``[`` (links, images), ``*``/``~`` and word-edge ``_``
# (emphasis that could forge "**approved**"), ``|`` (table cells), ``\\`` (would escape what
# follows), ``&`` starting an entity (``&#64;all`` shows as @all).
_PUNCT = re.compile(r"([\\\[*~|]|(?<!\w)_|_(?!\w)|&(?=#?\w+;))")
_MENTION = re.compile(r"@[\w.\-:@]*")
_FENCE = re.compile(r"~{3,}")
# Invisible or reordering characters that are format (Cf) but not harmless: all of Cf is shown.
_KEEP_IN_BLOCK = {"\n", "\t"}


def _visible(ch: str, keep: set[str]) -> str:
    if ch in keep:
        return ch
    cat = unicodedata.category(ch)
    # Cc: NUL, BEL, ESC (ANSI) …; Cf: U+202E, U+200B, U+FEFF …; Zl/Zp: line/paragraph separators.
    if cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        return f"\u2039U+{ord(ch):04X}\u203a"  # ‹U+202E›: not Markdown
    return ch


def clean(value: object, *, multiline: bool = False) -> str:
    """``value`` as text with every control, bidi and zero-width character shown as ``‹U+XXXX›``
    (newlines and tabs kept when ``multiline``, otherwise a newline becomes a space)."""
    s = str(value)
    if not multiline:
        s = s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    keep = _KEEP_IN_BLOCK if multiline else {"\t"}
    if s.isascii() and s.isprintable() and "\t" not in s:
        return s
    return "".join(_visible(ch, keep) for ch in s)


def _no_ticks(s: str) -> str:
    return s.replace("`", _TICK)


def code(value: object) -> str:
    """One inline code span: nothing in it is Markdown, a link, or a mention."""
    s = _no_ticks(clean(value)).strip() or "\u2205"  # an empty span would not render: ∅
    return f"`{s}`"


def text(value: object) -> str:
    """Inline prose: Markdown punctuation escaped, mentions in code spans, one line."""
    s = _no_ticks(clean(value))
    out: list[str] = []
    pos = 0
    for m in _MENTION.finditer(s):
        out.append(_PUNCT.sub(r"\\\1", s[pos:m.start()]))
        out.append(code(m.group(0)) if len(m.group(0)) > 1 else "@")
        pos = m.end()
    out.append(_PUNCT.sub(r"\\\1", s[pos:]))
    return "".join(out)


cell = text  # a table cell: ``|`` is escaped, newlines are spaces


def block(value: object, lang: str = "") -> str:
    """A fenced code block. Backticks become ``ˋ`` and ``~~~`` runs ``∼∼∼``, so no line inside
    can close the fence (for the renderer or for the server's mention scan)."""
    s = _no_ticks(clean(value, multiline=True)).rstrip("\n")
    s = _FENCE.sub(lambda m: "\u223c" * len(m.group(0)), s)
    return f"```{lang}\n{s}\n```"


def safe_url(url: object) -> str | None:
    """``url`` if it is an absolute http(s) URL with a host, percent-encoded so that no space,
    quote, bracket, parenthesis or control character remains; else None."""
    s = str(url).strip()
    try:
        parts = urlsplit(s)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    # Keep what URLs need (reserved and already-escaped), encode everything else.
    encoded = quote(s, safe=":/?#@$&'*+,;=%-._~")
    return encoded.replace("'", "%27").replace("*", "%2A")


def link(label: object, url: object) -> str:
    """``[label](url)`` for a safe URL; just the (escaped) label otherwise."""
    target = safe_url(url)
    shown = text(label)
    return f"[{shown}]({target})" if target else shown


def kv(key: object, value: object) -> str:
    """``key=value`` as one code span (a label or argument pair)."""
    return code(f"{key}={value}")


_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def mention(username: object, *, special: bool = False) -> str:
    """``@username`` for a real Mattermost username (letters, digits, ``._-``); anything else,
    and ``all``/``here``/``channel`` unless ``special`` (configured mentions), is shown in a code
    span and mentions nobody."""
    s = str(username).lstrip("@")
    if _USERNAME.fullmatch(s) and (special or s.lower() not in ("all", "here", "channel")):
        return f"@{s}"
    return code(f"@{s}")
