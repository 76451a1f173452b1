"""Every line a chapter shows fits the book's column: at most 88 characters.

The column shows 88 characters of code at 1400 px without scrolling
(``_ext/static/vicourse.css``; the browser check measures it), and the
printed book wraps nothing that fits.  This checks the source of that promise
in the notebooks themselves: every line of code (code cells and code blocks
in the text) and every line of stored text output (printed lines, reprs,
warnings, tracebacks) of every chapter notebook.  Ruff checks code cells too
(``chapters/ruff.toml``), but not outputs nor code in the text.
"""

import json
import re
from pathlib import Path

import pytest

from vicourse.claims import MAX_WIDTH

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _fenced_code(markdown: str) -> list[str]:
    """The lines inside fenced code blocks of a markdown cell (fences excluded)."""
    lines, fence = [], None
    for line in markdown.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(2)[0] * len(match.group(2))
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            lines.append(line)
    return lines


def shown_lines(cell: dict) -> list[tuple[str, str]]:
    """``(what, line)`` for every line of code or text output the cell shows."""
    if cell["cell_type"] == "markdown":
        return [("code in the text", line) for line in _fenced_code(_text(cell["source"]))]
    if cell["cell_type"] != "code":
        return []
    shown = [("code", line) for line in _text(cell["source"]).splitlines()]
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            text = _text(output.get("text"))
            what = f"output ({output.get('name', 'stream')})"
        elif kind in ("execute_result", "display_data"):
            text, what = _text(output.get("data", {}).get("text/plain")), "output (repr)"
        elif kind == "error":
            text, what = "\n".join(output.get("traceback", [])), "output (traceback)"
        else:
            continue
        # A carriage return redraws the line (a progress bar): what stays is its last part.
        shown += [(what, ANSI.sub("", line).rsplit("\r", 1)[-1]) for line in text.splitlines()]
    return shown


def test_there_are_chapter_notebooks():
    assert NOTEBOOKS, f"no chapter notebook in {ROOT / 'chapters'}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_code_and_output_line_fits_the_column(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    long = [f"cell {index}, {what}, {len(line)} characters: {line[:100]!r}"
            for index, cell in enumerate(cells)
            for what, line in shown_lines(cell) if len(line) > MAX_WIDTH]
    shown = long[:15] + ([f"... and {len(long) - 15} more"] if len(long) > 15 else [])
    assert not long, (f"{notebook.name}: {len(long)} line(s) longer than {MAX_WIDTH} characters "
                      f"(the book's column):\n  " + "\n  ".join(shown))
