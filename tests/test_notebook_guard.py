"""The notebook guard (the root conftest.py) in another course, as README.md's recipe uses it.

Each test builds a scratch course in a temporary folder: the recipe's files
(``conftest.py`` and ``nbval-sanitize.cfg`` copied to the course's root), its
own notebooks, with or without a ``_toc.yml``, and runs the recipe's command.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The command of README.md's recipe, with the course's notebook folder appended.
RECIPE = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
          "--nbval-sanitize-with", "nbval-sanitize.cfg", "-v", "-p", "no:cacheprovider"]


def _notebook(path: Path, text: str = "hello") -> None:
    cell = nbformat.v4.new_code_cell(f"print({text!r})")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{text}\n")]
    cell.execution_count = 1
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A lesson"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _course(tmp_path: Path, toc: str | None = None) -> Path:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(ROOT / "chapters" / "nbval-sanitize.cfg", tmp_path / "nbval-sanitize.cfg")
    if toc is not None:
        (tmp_path / "_toc.yml").write_text(toc)
    return tmp_path


# The recipe as written, and with README.md's pytest-xdist options (make test's way).
PARALLEL = pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadscope"]],
                                   ids=["serial", "xdist"])


def _run(course: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RECIPE, *args], cwd=course, capture_output=True, text=True,
                          timeout=300)


@PARALLEL
def test_the_recipe_runs_a_course_without_a_table_of_contents(tmp_path, workers):
    course = _course(tmp_path)
    _notebook(course / "lessons" / "first.ipynb")
    result = _run(course, "lessons", *workers)
    assert result.returncode == 0, result.stdout + result.stderr
    # -v: one line per cell (xdist writes the verdict first)
    assert re.search(r"lessons/first::ipynb::Cell 0 PASSED|PASSED lessons/first::ipynb::Cell 0",
                     result.stdout), result.stdout


@PARALLEL
def test_the_recipe_fails_when_it_finds_no_notebook(tmp_path, workers):
    course = _course(tmp_path)
    (course / "lessons").mkdir()
    result = _run(course, "lessons", *workers)
    assert result.returncode != 0
    assert "collected no notebook" in result.stdout + result.stderr


TOC = """
format: jb-book
root: intro
parts:
  - caption: Lessons
    chapters:
      - file: lessons/first
      - file: lessons/second
      - file: lessons/third
"""


@PARALLEL
def test_a_listed_notebook_that_is_missing_or_left_out_fails_wherever_the_chapters_live(tmp_path, workers):
    course = _course(tmp_path, TOC)
    (course / "intro.md").write_text("# A course\n")
    _notebook(course / "lessons" / "first.ipynb")
    _notebook(course / "lessons" / "second.ipynb")
    result = _run(course, "lessons", "--ignore", "lessons/second.ipynb", *workers)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "lessons/second.ipynb: listed in _toc.yml, but not collected" in output
    assert "lessons/third: listed in _toc.yml, but no such file" in output


def test_running_some_notebooks_on_purpose_is_allowed(tmp_path):
    course = _course(tmp_path, TOC)
    (course / "intro.md").write_text("# A course\n")
    _notebook(course / "lessons" / "first.ipynb")
    result = _run(course, "--collect-only", "lessons", "-k", "first")
    assert result.returncode == 0, result.stdout + result.stderr
