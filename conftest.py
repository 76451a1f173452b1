"""Guards that keep a test sweep from passing by collecting nothing.

pytest already exits non-zero when it collects no test at all.  The notebook
sweep (``pytest --nbval chapters``) needs one more guard: every chapter listed
in ``_toc.yml`` must be collected, so that a renamed or misplaced notebook
cannot silently drop out of the check.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _chapters_in_toc() -> set[str]:
    """The notebook paths (relative to the repository) that ``_toc.yml`` lists."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    return {f"{name}.ipynb" for name in files if name.startswith("chapters/")}


def pytest_collection_finish(session):
    if not session.config.getoption("nbval", default=False):
        return
    collected = {Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
                 for item in session.items if str(item.path).endswith(".ipynb")}
    if not collected:
        raise pytest.UsageError("nbval collected no notebook: check the paths given to pytest")
    args = [Path(a).resolve() for a in session.config.args]
    expected = {name for name in _chapters_in_toc()
                if any((ROOT / name).is_relative_to(a) for a in args)}
    missing = expected - collected
    if missing:
        raise pytest.UsageError(f"nbval did not collect chapters listed in _toc.yml: {sorted(missing)}")
