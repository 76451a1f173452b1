"""Execute chapter notebooks in place so that their stored outputs are fresh.

``make notebooks`` calls this.  The stored outputs are what the book shows and
what ``pytest --nbval`` compares a new run against, so regenerate them after
any change to a chapter or to the package it imports.

Before running, the notebook's first cell is made the current install cell
(``tools/install_cell.py``: it installs the course on Colab and does nothing
where the course is installed), so re-executing never drops or duplicates it.

Usage: python tools/execute_notebooks.py chapters/01_elbo.ipynb [...]
"""

import sys
import time
from pathlib import Path

import nbformat
from install_cell import refresh as refresh_install_cell
from nbclient import NotebookClient

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def normalise_metadata(nb) -> None:
    """Give every chapter the same kernel and drop authoring-tool metadata."""
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.pop("jupytext", None)
    for cell in nb.cells:
        cell.metadata.pop("lines_to_next_cell", None)


def execute(path: Path, timeout: int = 600) -> float:
    """Run every cell of the notebook at ``path`` and write it back; return seconds taken."""
    nb = nbformat.read(path, as_version=4)
    refresh_install_cell(nb)
    normalise_metadata(nb)
    start = time.perf_counter()
    # Run from the notebook's own folder, as Jupyter and nbval do.
    # coalesce_streams merges consecutive writes to a stream into one output, so a
    # progress bar is stored as its final line rather than one output per redraw.
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    elapsed = time.perf_counter() - start
    for cell in nb.cells:
        # Wall-clock timestamps change on every run and only add noise to diffs.
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return elapsed


def main(paths: list[str]) -> None:
    if not paths:
        raise SystemExit("usage: execute_notebooks.py NOTEBOOK.ipynb [...]")
    for name in paths:
        seconds = execute(Path(name))
        print(f"{name}: executed in {seconds:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
