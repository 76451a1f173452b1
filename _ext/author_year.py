"""Author–year citations and an author–year bibliography.

sphinxcontrib-bibtex's ``author_year`` reference style writes a citation as
``[Blei et al., 2017]`` while its ``plain`` bibliography style numbers the
list ``[1]`` ... ``[29]``, so a reader cannot find the cited work by the name
the text gives it.  This registers one style for both, under the name
``vicourse_author_year``:

* in the text, ``{cite}`` (parenthetical) gives ``(Blei et al., 2017)``, several
  works ``(Bishop, 2006; Blei et al., 2017)``, and ``{cite:t}`` (textual)
  ``Blei et al. (2017)``;
* in the bibliography, entries are sorted by author, year and title, and each
  is led by the same author–year key, ``Blei et al. (2017)``;
* a ``.bib`` author list that ends in ``and others`` reads "et al.", never
  "and others".

``_config.yml`` selects it with ``bibtex_reference_style`` and
``bibtex_default_style``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pybtex.plugin
from pybtex.richtext import Tag, Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import field as entry_field
from pybtex.style.template import first_of, join, node, optional, tag
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle, PersonStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.template import join as join_et_al

STYLE_NAME = "vicourse_author_year"
ET_AL = Text(" ", Tag("em", "et al."))


def _is_others(person) -> bool:
    """BibTeX's ``and others``: a person whose only name is ``others``."""
    return str(person) == "others"


@node
def _names(children, data, role, sep="", sep2=None, last_sep=None, other=None):
    """Like sphinxcontrib-bibtex's ``names``, reading a trailing ``others`` as "et al."."""
    assert not children
    persons = data["entry"].persons[role]
    style = data["style"]
    named = [person for person in persons if not _is_others(person)]
    formatted = [style.person.style_plugin.format(person, style.person.abbreviate)
                 for person in named]
    if len(named) < len(persons):
        return join[formatted[0], ET_AL].format_data(data)
    return join_et_al(sep=sep, sep2=sep2, last_sep=last_sep, other=other)[formatted].format_data(data)


@node
def _author_or_editor_or_title(children, data, **kwargs):
    assert not children
    return first_of[
        optional[_names("author", **kwargs)],
        optional[_names("editor", **kwargs)],
        tag("em")[entry_field("title")],
    ].format_data(data)


@dataclass
class _PersonStyle(PersonStyle):
    """Last names; "et al." from three authors on, or where the entry says ``and others``."""

    def names(self, role: str, full: bool):
        return _names(role=role, sep=self.sep, sep2=self.sep2, last_sep=self.last_sep,
                      other=None if full else self.other)

    def author_or_editor_or_title(self, full: bool):
        return _author_or_editor_or_title(sep=self.sep, sep2=self.sep2, last_sep=self.last_sep,
                                          other=None if full else self.other)


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")", sep="; ")


@dataclass
class AuthorYearRound(AuthorYearReferenceStyle):
    """The ``author_year`` reference style with round brackets, works separated by ``;``."""

    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)
    person: PersonStyle = field(default_factory=_PersonStyle)


def _authors_key(entry) -> str:
    """"Bishop", "Kingma and Welling", "Blei et al.": the names an author–year citation shows."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    named = [person for person in persons if not _is_others(person)]
    last = [" ".join(person.prelast_names + person.last_names) for person in named]
    if not last:
        return entry.fields.get("title", entry.key)
    if len(last) == 1 and len(named) == len(persons):
        return last[0]
    if len(last) == 2 and len(named) == len(persons):
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    """Label each entry ``Authors (year)``; equal labels get ``a``, ``b``, ... after the year."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        keys = [(_authors_key(e), e.fields.get("year", "n.d.")) for e in entries]
        counts, seen = Counter(keys), Counter()
        for authors, year in keys:
            suffix = ""
            if counts[authors, year] > 1:
                suffix = "abcdefghijklmnopqrstuvwxyz"[seen[authors, year]]
                seen[authors, year] += 1
            yield f"{authors} ({year}{suffix})"


class AuthorYearStyle(UnsrtStyle):
    """The ``unsrt`` entry format, sorted by author, year and title, labelled author–year."""

    default_sorting_style = "author_year_title"
    default_label_style = AuthorYearLabels


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.formatting", STYLE_NAME, AuthorYearStyle)
    register_plugin("sphinxcontrib.bibtex.style.referencing", STYLE_NAME, AuthorYearRound)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
