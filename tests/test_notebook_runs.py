"""Each chapter's stored outputs come from one run of the whole notebook, top to bottom.

nbval compares a fresh run with the stored outputs, cell by cell; that
comparison means what it says only if the stored outputs are themselves one
run of the notebook as it stands.  A cell inserted or edited after the last
run (``tools/install_cell.py`` inserts the first cell) breaks the numbering,
1, 2, 3, ... over the non-empty code cells, that a run from the top leaves.
``make notebooks`` re-executes every chapter and restores it.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def test_the_chapters_were_found():
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_were_run_once_in_order(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    counts = [cell.get("execution_count") for cell in cells
              if cell["cell_type"] == "code" and "".join(cell["source"]).strip()]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts[:12]}{'...' if len(counts) > 12 else ''} are not "
        "1, 2, 3, ...: its stored outputs are not one run of the notebook as it stands; "
        "re-execute it (make notebooks)")
