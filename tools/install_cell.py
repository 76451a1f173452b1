"""Insert, or refresh, the first cell of every chapter: install the course where it is missing.

A chapter opened on Colab (or any Jupyter without the course) has no
``vicourse``.  Its first code cell installs the package from the repository
named in ``_config.yml`` (``repository.url`` and ``repository.branch``, the one
setting a fork changes), with PyTorch's CPU wheels, when and only when the
kernel cannot import it.  Where the course is installed (``make book``,
``pip install -e .``, Binder, whose ``binder/postBuild`` installs it) the cell
does nothing and prints nothing, so ``pytest --nbval`` is unaffected.  The cell
is tagged ``remove-cell``: the book does not show it; the downloaded notebook
has it.

The cell is found by its metadata (``"vicourse": "install-cell"``), so running
this again replaces it rather than adding a second one, and a changed
repository URL reaches every notebook.  ``tools/execute_notebooks.py`` calls
:func:`refresh` before running a notebook, so ``make notebooks`` keeps the
cell in place and current; ``--check`` fails if a notebook's cell is missing
or stale (``tests/test_install_cell.py``).

Usage: python tools/install_cell.py [--check] [NOTEBOOK.ipynb ...]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = {"vicourse": "install-cell"}
TAGS = ["remove-cell"]
# PyTorch's CPU wheels: on Colab or a plain Jupyter, torch==2.13.0 from PyPI
# would be a CUDA build of several GB.  The Makefile uses the same index.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def repository(config_path: Path = ROOT / "_config.yml") -> tuple[str, str]:
    """``(url, branch)`` of the course's repository, from ``_config.yml``."""
    config = yaml.safe_load(config_path.read_text())
    repo = config.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch") or "main"
    if not url or not re.fullmatch(r"https://\S+", url):
        raise ValueError(f"{config_path}: repository.url must be an https URL; got {url!r}")
    return url.rstrip("/"), branch


def cell_source(url: str, branch: str) -> str:
    """The install cell's code (every line at most 88 characters)."""
    return "\n".join([
        "# On Colab, or any Jupyter without the course: install its package first.",
        "# Where the course is installed (make book, pip install -e .), this does nothing.",
        "import importlib",
        "import importlib.util",
        "",
        'if importlib.util.find_spec("vicourse") is None:',
        f'    COURSE = "vicourse @ git+{url}@{branch}"',
        f'    TORCH_CPU = "{TORCH_CPU_INDEX}"  # CPU wheels, not CUDA',
        '    %pip install --quiet --extra-index-url {TORCH_CPU} "{COURSE}"',
        "    importlib.invalidate_caches()",
    ])


def make_cell(url: str, branch: str):
    cell = nbformat.v4.new_code_cell(cell_source(url, branch))
    cell.metadata.update(MARKER)
    cell.metadata["tags"] = list(TAGS)
    return cell


def _is_install_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and all(
        cell.get("metadata", {}).get(k) == v for k, v in MARKER.items())


def refresh(nb, url: str | None = None, branch: str | None = None) -> bool:
    """Make the notebook's first cell the current install cell; return whether it changed.

    An existing install cell keeps its id (so the notebook's diff is the
    change of its code alone); any other copy of it is removed.
    """
    if url is None or branch is None:
        url, branch = repository()
    wanted = make_cell(url, branch)
    existing = [cell for cell in nb.cells if _is_install_cell(cell)]
    if nb.get("nbformat_minor", 5) < 5:
        wanted.pop("id", None)          # cell ids exist from nbformat 4.5 on
    elif existing:
        wanted["id"] = existing[0].get("id", wanted["id"])
    if existing:
        # It prints nothing where the course is installed, so a new repository URL
        # leaves the stored run valid (tests/test_notebook_runs.py); a cell that is
        # new needs the notebook run again (make notebooks).
        wanted["execution_count"] = existing[0].get("execution_count")
    others = [cell for cell in nb.cells if not _is_install_cell(cell)]
    first = nb.cells[0] if nb.cells else None
    if len(existing) == 1 and first is existing[0] and _same(first, wanted):
        return False
    nb.cells = [wanted, *others]
    return True


def _same(cell, wanted) -> bool:
    return (cell.source == wanted.source and cell.get("outputs") == []
            and cell.metadata.get("tags") == wanted.metadata["tags"])


def chapter_notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or chapter_notebooks()
    url, branch = repository()
    stale = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if refresh(nb, url, branch):
            if check:
                stale.append(path)
            else:
                nbformat.write(nb, path)
                print(f"{path}: install cell written for {url}@{branch}")
    if stale:
        names = ", ".join(str(p.relative_to(ROOT) if p.is_absolute() else p) for p in stale)
        print(f"missing or stale install cell in {names}: run `python tools/install_cell.py`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
