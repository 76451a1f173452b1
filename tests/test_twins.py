"""Each chapter notebook has a MyST-markdown twin that matches it (tools/twins.py)."""

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("twins", ROOT / "tools" / "twins.py")
twins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(twins)


def test_every_chapter_twin_matches_its_notebook():
    problems = twins.problems(twins.chapter_notebooks())
    assert not problems, "\n".join(problems) + "\nRun `make twins`."


def _course(tmp_path, monkeypatch):
    """A scratch course with this repository's pairing and one small notebook."""
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "chapters").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter\n\nText."),
                                         nbformat.v4.new_code_cell("x = 1\nprint(x)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "chapters" / "01_a.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(twins, "ROOT", tmp_path)
    monkeypatch.setattr(twins, "CONFIG_FILE", tmp_path / "jupytext.toml")
    return path


def test_the_twin_is_readable_markdown_of_the_notebook(tmp_path, monkeypatch):
    notebook = _course(tmp_path, monkeypatch)
    assert twins.main([]) == 0
    twin = tmp_path / "chapters" / "md" / "01_a.md"
    text = twin.read_text()
    assert "# A chapter\n\nText." in text
    assert re.search(r"```\{code-cell\}[^\n]*\nx = 1\nprint\(x\)\n```", text)
    assert "jupytext_version" not in text   # no churn when jupytext is upgraded
    assert twins.problems([notebook]) == []


def test_check_fails_on_a_stale_missing_or_orphaned_twin(tmp_path, monkeypatch):
    notebook = _course(tmp_path, monkeypatch)
    twins.main([])
    twin = tmp_path / "chapters" / "md" / "01_a.md"

    nb = nbformat.read(notebook, as_version=4)
    nb.cells[0].source = "# A chapter\n\nText, edited."
    nbformat.write(nb, notebook)
    assert twins.main(["--check"]) == 1
    assert any("differs from" in p and "+Text, edited." in p for p in twins.problems([notebook]))

    twin.unlink()
    assert any("is missing" in p for p in twins.problems([notebook]))

    twins.main([])
    (tmp_path / "chapters" / "md" / "02_gone.md").write_text("# gone\n")
    assert any("02_gone.md has no notebook" in p for p in twins.problems([notebook]))
