"""Turning MediaWiki markup into plain prose, with the standard library only.

`strip_markup(wikitext)` returns a list of blocks: ``("heading", level, text)`` for section
headings and ``("paragraph", 0, text)`` for runs of prose lines. What is removed:

- html comments ``<!-- .. -->`` (also an unclosed one running to the end of the page);
- references ``<ref>..</ref>`` / ``<ref .. />`` and other non-prose elements (gallery, timeline,
  imagemap, score, syntaxhighlight, source, pre, nowiki is kept as its text);
- formulas (``<math>``, ``<chem>``, ``<ce>``): the whole paragraph holding one is dropped, since
  a sentence with a hole where its formula was is not clean text;
- templates ``{{..}}`` (nested to any depth) and tables ``{| .. |}``; a few inline templates
  whose text belongs to the sentence are rendered instead (``convert``, ``lang``, ``nowrap``..);
- links: ``[[target|label]]`` -> label, ``[[target]]`` -> target, ``[[File:..]]``,
  ``[[Image:..]]``, ``[[Category:..]]`` and interlanguage links dropped (captions included);
  external links ``[http://.. label]`` -> label;
- bold / italic quotes, remaining html tags (their content kept), html entities;
- list items, indented lines, table rows and magic words (``__TOC__``).

A paragraph that still holds markup characters after all this is dropped rather than returned
half-cleaned, so callers can rely on ``{{``, ``[[``, ``<ref``, ``|}`` never appearing.
"""

from __future__ import annotations

import html
import re

_DROPPED_ELEMENTS = ("ref", "gallery", "timeline", "imagemap", "score", "syntaxhighlight", "source", "pre",
                     "references", "graph", "mapframe", "templatedata", "inputbox", "poem")
_FORMULA_ELEMENTS = ("math", "chem", "ce", "hiero")
_POISON = "\x00"  # marks a paragraph that lost a formula; such paragraphs are dropped

_COMMENT_LINE = re.compile(r"^[ \t]*<!--(?:(?!-->).)*-->[ \t]*\n", re.S | re.M)  # a line of its own: no paragraph break
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_ALL_DROPPED = "|".join(_DROPPED_ELEMENTS + _FORMULA_ELEMENTS)
_SELF_CLOSING = re.compile(rf"<(?:{_ALL_DROPPED})\b[^<>]*/>", re.I)
_DROPPED = re.compile(r"<(" + "|".join(_DROPPED_ELEMENTS) + r")\b[^<>]*>.*?</\1\s*>", re.I | re.S)
_FORMULA = re.compile(r"<(" + "|".join(_FORMULA_ELEMENTS) + r")\b[^<>]*>.*?</\1\s*>", re.I | re.S)
_INNERMOST_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
_BARE_URL = re.compile(r"(?:https?|ftp)://\S+")
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*?/?>")
_BLOCK_TOKEN = re.compile(r"(?=(\{\{|\{\||\}\}|\|\}))")  # lookahead: overlapping marks are all seen
_QUOTES = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_LINK_DROPPED_NAMESPACES = ("file", "image", "category", "media")
_LEFTOVER_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<|>|\|")

# Inline templates whose text is part of the sentence: name -> how to render its arguments.
_RENDERED_TEMPLATES = {
    "convert": lambda args: " ".join(a for a in args[:2] if a),
    "cvt": lambda args: " ".join(a for a in args[:2] if a),
    "nowrap": lambda args: args[0] if args else "",
    "nobr": lambda args: args[0] if args else "",
    "lang": lambda args: args[-1] if args else "",
    "transl": lambda args: args[-1] if args else "",
    "ill": lambda args: args[0] if args else "",
    "sic": lambda args: args[-1] if args else "",
    "small": lambda args: args[0] if args else "",
    "nbsp": lambda args: " ",
    "snd": lambda args: " – ",
    "ndash": lambda args: "–",
    "mdash": lambda args: "—",
}


def _render_template(body: str) -> str:
    """Render a template without nested templates if it is one of the known inline ones, else ''."""
    parts = [part.strip() for part in body.split("|")]
    name = parts[0].lower().replace("_", " ")
    args = [part for part in parts[1:] if "=" not in part]  # positional arguments only
    if name.startswith("lang-"):
        return args[0] if args else ""
    render = _RENDERED_TEMPLATES.get(name)
    return render(args) if render else ""


def remove_templates_and_tables(text: str) -> str:
    """Remove ``{{..}}`` templates and ``{|..|}`` tables, nested to any depth, in one left-to-right scan.

    A stack tells which kind of block is open, so that the ``|}`` inside ``{{name|}}`` does not
    close a table. Known inline templates holding no nested block are rendered instead.
    """
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (kind, start index of its body)
    copied = 0  # text[copied:] has not been emitted or skipped yet
    for token in _BLOCK_TOKEN.finditer(text):
        mark, at = token.group(1), token.start()
        if at < copied:
            continue  # inside a mark just consumed, as the second "{" of "{{{"
        if mark in ("{{", "{|"):
            if not stack:
                out.append(text[copied:at])
            stack.append(("template" if mark == "{{" else "table", at + 2))
            copied = at + 2
        elif stack and stack[-1][0] == ("template" if mark == "}}" else "table"):
            _, start = stack.pop()
            if not stack:
                body = text[start:at]
                out.append("" if "{" in body else _render_template(body))
            copied = at + 2
    if not stack:
        out.append(text[copied:])
    return "".join(out)  # an unclosed block swallows the rest of the page, as MediaWiki shows it


def _replace_link(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    raw_prefix = target.split(":", 1)[0].strip() if ":" in target else ""
    prefix = raw_prefix.lower()
    interlanguage = raw_prefix.islower() and raw_prefix.isalpha() and len(raw_prefix) in (2, 3) and not label
    if prefix in _LINK_DROPPED_NAMESPACES or interlanguage:
        return ""  # files, categories, interlanguage links: not part of the prose
    if target.startswith(":"):
        target = target[1:]
    text = label if label else target
    return text.split("|")[-1] if "|" in text else text  # [[a|b|c]] (file-like) shows the last part


def remove_links(text: str) -> str:
    """Replace wiki links by their visible text, innermost first (file captions hold links)."""
    while True:
        replaced = _INNERMOST_LINK.sub(_replace_link, text)
        if replaced == text:
            break
        text = replaced
    return _EXTERNAL_LINK.sub(lambda m: m.group(1), text)


def _clean_inline(text: str) -> str:
    text = _QUOTES.sub("", text)
    text = _TAG.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    text = _BARE_URL.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = re.sub(r"\(\s*[,;:\s]*\)", "", text)  # parentheses emptied by removed templates
    text = re.sub(r"\(\s*(?:[,;]\s*)+", "(", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?%)])", r"\1", text)
    return re.sub(r"\(\s+", "(", text)


def _is_prose_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and stripped[0] not in "*#:;|!{}=-" and not stripped.lower().startswith("#redirect")


def _is_clean(paragraph: str) -> bool:
    """No markup left, no formula removed, and the subject is still there (a paragraph opening in
    lower case or punctuation lost its first words to a removed template)."""
    if not paragraph or _POISON in paragraph or _LEFTOVER_MARKUP.search(paragraph):
        return False
    return paragraph[0].isupper() or paragraph[0].isdigit() or paragraph[0] in "\"'("


def strip_markup(wikitext: str) -> list[tuple[str, int, str]]:
    """Return ``[(kind, level, text), ...]``: headings and clean prose paragraphs, in page order."""
    text = _COMMENT.sub("", _COMMENT_LINE.sub("", wikitext))
    text = _SELF_CLOSING.sub("", text)
    text = _DROPPED.sub("", text)
    text = _FORMULA.sub(_POISON, text)
    text = remove_templates_and_tables(text)
    text = remove_links(text)
    blocks: list[tuple[str, int, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            joined = _clean_inline(" ".join(paragraph))
            if _is_clean(joined):
                blocks.append(("paragraph", 0, joined))
            paragraph.clear()

    for line in text.split("\n"):
        heading = _HEADING.match(line.strip())
        if heading:
            flush()
            title = _clean_inline(heading.group(2))
            if title and not _LEFTOVER_MARKUP.search(title):
                blocks.append(("heading", len(heading.group(1)), title))
        elif _is_prose_line(line):
            paragraph.append(line.strip())
        else:
            flush()  # blank lines, lists, tables and indents end a paragraph
    flush()
    return blocks
