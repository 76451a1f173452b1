"""Write ``appendix/claims.md``: every checked claim of the book, chapter by chapter.

A cell that checks a claim of the text calls :func:`vicourse.claims.check`,
which asserts it and prints ``✓ <claim>``.  This script reads those lines from
the outputs stored in the chapter notebooks (the outputs ``pytest --nbval``
re-checks) and lists them, each linked to the cell that printed it (the
``cell-<notebook>-<index>`` targets that ``_ext/cell_anchors.py`` adds to the
built pages).  ``tests/test_claims_ledger.py`` fails if the page is stale.

Usage: python tools/claims_ledger.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _common import ROOT, write_or_check

PAGE = ROOT / "appendix" / "claims.md"
MARK = "✓ "


def chapter_claims(path: Path) -> tuple[str, list[tuple[int, str]]]:
    """The chapter's title and its (cell index, claim) pairs, in order."""
    cells = json.loads(path.read_text())["cells"]
    title = path.stem
    for cell in cells:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).lstrip().splitlines()[0]
            if first.startswith("# "):
                title = first[2:].strip()
                break
    claims = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                text = "".join(output.get("text", ""))
                claims += [(index, line[len(MARK):].strip()) for line in text.splitlines()
                           if line.startswith(MARK)]
    return title, claims


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")


def render() -> str:
    chapters = []
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        title, claims = chapter_claims(path)
        chapters.append((path, title, claims))
    total = sum(len(c) for _, _, c in chapters)
    lines = [
        "# Checked claims",
        "",
        "Every sentence of the book that states a result is checked by the cell next to it:",
        "the cell asserts the claim and prints it as one line starting with ✓, and a fresh",
        "run of the notebook that breaks the claim fails. This page lists every such line,",
        "chapter by chapter, with a link to the cell that printed it. It is generated from",
        "the notebooks' stored outputs by `tools/claims_ledger.py`; a unit test keeps it",
        "current.",
        "",
        f"**{total} checked claims** in {len(chapters)} chapters.",
        "",
        "| chapter | claims |",
        "| --- | ---: |",
    ]
    for path, title, claims in chapters:
        number = int(path.stem[:2])
        lines.append(f"| {{doc}}`{number}. {title} <../chapters/{path.stem}>` | {len(claims)} |")
    for path, title, claims in chapters:
        number = int(path.stem[:2])
        lines += ["", f"## {number}. {title}", ""]
        if not claims:
            lines.append("No checked claims yet.")
            continue
        lines += ["| | claim | cell |", "| --- | --- | --- |"]
        for k, (index, claim) in enumerate(claims, start=1):
            link = f"{{ref}}`cell {index} <cell-{path.stem.lower()}-{index}>`"
            lines.append(f"| {number}.{k} | {_escape(claim)} | {link} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(PAGE, render(), argv, "tools/claims_ledger.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
