"""Write, or check, the MyST-markdown twin of every chapter notebook.

A notebook's JSON is hard to review: a one-word change to the text is a change
to an escaped string in a long array, next to base64 images.  Each chapter
therefore has a twin, ``chapters/md/NN_name.md``, written by jupytext in MyST
markdown: the same cells, text as text and code as code blocks (with the
cells' tags and metadata), no outputs.  Diffs are reviewed in the twin.

The notebook is the source, because it also holds the outputs that the book
shows and ``pytest --nbval`` checks; the twin is generated from it.  Pairing
is declared in ``jupytext.toml``, so ``jupytext --sync`` and JupyterLab (with
jupytext installed, as in the course environment) keep the two in step when
a notebook is edited; this script rewrites every twin from its notebook, and
with ``--check`` fails when one is missing, stale, or has no notebook.
``make twins`` writes them, ``make notebooks`` refreshes them, and
``tests/test_twins.py`` (part of ``make test``) runs the check.

Usage: python tools/twins.py [--check] [NOTEBOOK.ipynb ...]
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import jupytext
from jupytext.config import load_jupytext_configuration_file
from jupytext.paired_paths import paired_paths

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "jupytext.toml"
TWIN_FORMAT = "md:myst"


def _config():
    return load_jupytext_configuration_file(str(CONFIG_FILE))


def chapter_notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def twin_path(notebook: Path) -> Path:
    """The twin's path, from the pairing that ``jupytext.toml`` declares."""
    config = _config()
    notebook = notebook.resolve()
    formats = config.default_formats(str(notebook))
    if not formats:
        raise ValueError(f"jupytext.toml pairs no format with {notebook.relative_to(ROOT)}")
    for path, fmt in paired_paths(str(notebook), "ipynb", formats):
        if fmt.get("format_name") == "myst":
            return Path(path)
    raise ValueError(f"jupytext.toml pairs no MyST markdown file with {notebook.relative_to(ROOT)}")


def render(notebook: Path) -> str:
    """The twin's text for the notebook as it is on disk."""
    nb = jupytext.read(notebook)
    return jupytext.writes(nb, fmt=TWIN_FORMAT, config=_config())


def problems(notebooks: list[Path]) -> list[str]:
    """What is wrong with the twins of ``notebooks`` (and twins without a notebook)."""
    found = []
    for notebook in notebooks:
        twin = twin_path(notebook)
        name, twin_name = notebook.relative_to(ROOT), twin.relative_to(ROOT)
        if not twin.exists():
            found.append(f"{twin_name} is missing (the twin of {name})")
            continue
        expected, actual = render(notebook), twin.read_text(encoding="utf-8")
        if actual != expected:
            diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                             str(twin_name), f"{twin_name} from {name}",
                                             lineterm="", n=1))
            shown = "\n    ".join(diff[:12] + (["..."] if len(diff) > 12 else []))
            found.append(f"{twin_name} differs from {name}:\n    {shown}")
    twins = {twin_path(nb) for nb in chapter_notebooks()}
    folders = {twin_path(nb).parent for nb in notebooks}
    for folder in folders:
        for orphan in sorted(set(folder.glob("*.md")) - twins):
            found.append(f"{orphan.relative_to(ROOT)} has no notebook: delete it")
    return found


def main(argv: list[str]) -> int:
    check = "--check" in argv
    names = [a for a in argv if a != "--check"]
    notebooks = [Path(n).resolve() for n in names] or chapter_notebooks()
    if check:
        found = problems(notebooks)
        for problem in found:
            print(problem)
        if found:
            print("Rewrite the twins from the notebooks with `make twins` "
                  "(python tools/twins.py).")
        return 1 if found else 0
    for notebook in notebooks:
        twin = twin_path(notebook)
        twin.parent.mkdir(parents=True, exist_ok=True)
        text = render(notebook)
        if not twin.exists() or twin.read_text(encoding="utf-8") != text:
            twin.write_text(text, encoding="utf-8")
            print(f"wrote {twin.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
