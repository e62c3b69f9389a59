"""The bundled Wikipedia corpus and the markup stripper."""

from __future__ import annotations

import importlib.util

import pytest

from llm2comp.data import load_documents, wiki_articles, wiki_paragraphs
from llm2comp.data import wikipedia as wikipedia_module
from llm2comp.data.wiki_markup import remove_links, remove_templates_and_tables, strip_markup

needs_gensim = pytest.mark.skipif(importlib.util.find_spec("gensim") is None,
                                  reason="the bundled corpus lives in the gensim wheel (data only)")

LEFTOVERS = ("{{", "}}", "[[", "]]", "<ref", "{|", "|}", "|", "<", ">", "''", "http://", "https://", "\x00")


def paragraphs_of(wikitext: str) -> list[str]:
    return [text for kind, _, text in strip_markup(wikitext) if kind == "paragraph"]


def test_templates_nested_and_tables():
    text = "a {{outer|x={{inner|{{deep}}}}|}} b {| class=t\n| {{cell|}} || [[x]]\n|} c {{convert|5|km|mi}} d"
    assert remove_templates_and_tables(text) == "a  b  c 5 km d"
    assert remove_templates_and_tables("x {{lang-fr|Bonjour}} y {{unclosed") == "x Bonjour y "


def test_links():
    text = ("[[Political philosophy]], [[state (polity)|state]], [[File:A.jpg|thumb|A [[cat]] here]] "
            "[[Category:Things]] [[fr:Chose]] [http://x.org the site] [http://y.org]")
    assert remove_links(text).split() == ["Political", "philosophy,", "state,", "the", "site"]


def test_strip_markup_blocks():
    page = (
        "{{Infobox|name=X}}\n'''Bold''' and ''italic'' text<ref name=a>cite {{cite web|url=u}}</ref> here.<ref "
        "name=b/>\n<!-- hidden\ncomment -->\nSame paragraph.\n\n== History ==\n* a list item\n"
        "Has a <math>x^2</math> formula.\n\nPlain &nbsp;text with<br/> a <span style=''>tag</span> (  ).\n"
        "[[Category:X]]"
    )
    assert strip_markup(page) == [
        ("paragraph", 0, "Bold and italic text here. Same paragraph."),
        ("heading", 2, "History"),
        ("paragraph", 0, "Plain text with a tag."),
    ]  # the list item goes; the paragraph that held a formula is dropped whole


def test_dropped_paragraphs_and_emptied_parentheses():
    page = ("Asphalt ({{IPA|x}}, {{IPA|y}}, occasionally {{IPA|z}}), also known as bitumen.\n\n"
            "{{sc|E}} is a letter whose subject went with its template.\n\nA [[a|b]]|c table leftover.")
    assert paragraphs_of(page) == ["Asphalt (occasionally), also known as bitumen."]


@needs_gensim
def test_bundled_corpus_is_clean_and_large_enough():
    paragraphs = wiki_paragraphs()
    assert len(paragraphs) >= 3000
    assert all(len(p) >= 100 for p in paragraphs)
    for leftover in LEFTOVERS:
        assert not [p for p in paragraphs if leftover in p], leftover
    articles = wiki_articles()
    assert len(articles) >= 90  # 106 articles, a few are disambiguation lists
    assert any(section.heading == "History" for article in articles for section in article.sections)
    assert all(article.title and "\n" not in article.title for article in articles)


@needs_gensim
def test_wiki_default_source_and_license_is_documented():
    assert load_documents("wiki_default") == wiki_paragraphs()
    assert len(load_documents({"type": "wiki_default", "min_chars": 400})) < len(wiki_paragraphs())
    assert "CC BY-SA" in wikipedia_module.__doc__ and "gensim" in wikipedia_module.__doc__
