"""What the scripts that generate a page of the book share: write it, or check it is current."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_or_check(page: Path, text: str, argv: list[str], script: str) -> int:
    """Write ``text`` to ``page``; with ``--check`` in ``argv``, only check that it is there.

    Returns the exit status: 1 when ``--check`` finds ``page`` missing or out of
    date (and says to run ``python <script>``), else 0.
    """
    if "--check" in argv:
        if not page.exists() or page.read_text() != text:
            print(f"{page.relative_to(ROOT)} is out of date: run python {script}")
            return 1
        return 0
    page.write_text(text)
    print(f"wrote {page.relative_to(ROOT)}")
    return 0
