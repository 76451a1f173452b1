"""The book's equation index (appendix/equations.md) is complete and current."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # as when run as a script: it imports tools/_common.py
spec = importlib.util.spec_from_file_location("equation_index", ROOT / "tools" / "equation_index.py")
equation_index = importlib.util.module_from_spec(spec)
spec.loader.exec_module(equation_index)


def test_every_equation_a_docstring_cites_is_defined_in_a_chapter():
    defined = equation_index.defined_labels()
    cited = equation_index.cited_labels()
    undefined = {label: names for label, names in cited.items() if label not in defined}
    assert not undefined, f"docstrings cite equation labels no chapter defines: {undefined}"


def test_every_chapter_has_equations_implemented_in_the_package():
    chapters = {path.stem for path in (ROOT / "chapters").glob("*.ipynb")}
    cited_chapters = {equation_index.defined_labels().get(label, "").removeprefix("chapters/")
                      for label in equation_index.cited_labels()}
    assert chapters <= cited_chapters, f"no docstring cites an equation of {chapters - cited_chapters}"


def test_equation_index_page_is_current():
    assert (ROOT / "appendix" / "equations.md").read_text() == equation_index.render(), (
        "appendix/equations.md is out of date: run `python tools/equation_index.py`"
    )


def test_every_equation_a_symbolic_test_verifies_is_defined_in_a_chapter():
    defined = equation_index.defined_labels()
    undefined = {label: tests for label, tests in equation_index.verified_labels().items()
                 if label not in defined}
    assert not undefined, f"symbolic tests verify equation labels no chapter defines: {undefined}"
