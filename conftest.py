"""Guards that keep the notebook sweep (``pytest --nbval``) from passing by checking too little.

pytest already exits non-zero when it collects no test at all.  With
``--nbval`` this file adds two guards:

* at least one notebook is collected (a wrong path is an error, not a pass);
* if the course is a Jupyter Book with a table of contents (``_toc.yml`` next
  to this file), every document it lists under the paths given to pytest
  whose source is a notebook is collected, and a listed document with no
  source file at all is an error: a renamed, moved or deleted chapter cannot
  drop out of the check, wherever the chapters live.

A run that selects notebooks on purpose (``-k``, ``-m``, ``--deselect``) is
held only to the first guard.

This file works in any course: copy it to the course's root (see README.md,
"Use the notebook checks in your own CI").  Without ``_toc.yml`` it needs
only pytest and nbval; with one, also PyYAML.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
TOC = ROOT / "_toc.yml"
# Suffixes a Jupyter Book document's source can have; only .ipynb is a notebook.
SOURCE_SUFFIXES = (".ipynb", ".md", ".rst", ".py")


def toc_documents(toc: dict) -> list[str]:
    """Every document (``file``) of a Jupyter Book table of contents, root first."""
    documents = [toc["root"]] if toc.get("root") else []

    def walk(entries):
        for entry in entries or []:
            if isinstance(entry, dict):
                if entry.get("file"):
                    documents.append(str(entry["file"]))
                for key in ("parts", "chapters", "sections"):
                    walk(entry.get(key))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key))
    return documents


def _read_toc() -> dict:
    try:
        import yaml
    except ImportError:
        raise pytest.UsageError(f"{TOC} exists but PyYAML is not installed, so the notebook "
                                f"guard cannot read it: pip install pyyaml") from None
    return yaml.safe_load(TOC.read_text(encoding="utf-8")) or {}


def _sources(document: str) -> list[Path]:
    """The files that could be the source of ``document`` (which may carry its suffix)."""
    path = ROOT / document
    if path.suffix in SOURCE_SUFFIXES:
        return [path]
    return [path.with_name(path.name + suffix) for suffix in SOURCE_SUFFIXES]


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _nbval_on(config) -> bool:
    return bool(config.getoption("nbval", default=False)
                or config.getoption("nbval_lax", default=False))


def pytest_collection_finish(session):
    config = session.config
    # Under pytest-xdist each worker collects; the controller checks what the
    # first worker collected (below), where its error reaches the terminal.
    if not _nbval_on(config) or hasattr(config, "workerinput"):
        return
    _check_collected(config, {Path(str(item.path)).resolve() for item in session.items})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    config = node.config
    if not _nbval_on(config) or getattr(config, "_vicourse_checked", False):
        return
    config._vicourse_checked = True
    try:
        _check_collected(config, {(config.rootpath / i.split("::")[0]).resolve() for i in ids})
    except pytest.UsageError as error:
        pytest.exit(f"UsageError: {error}", returncode=pytest.ExitCode.USAGE_ERROR)


def _check_collected(config, paths: set[Path]) -> None:
    """Raise pytest.UsageError if the collected ``paths`` miss a notebook they should hold."""
    collected = {path for path in paths if path.suffix == ".ipynb"}
    if not collected:
        raise pytest.UsageError("nbval collected no notebook: check the paths given to pytest")
    selecting = (config.getoption("keyword", default="") or config.getoption("markexpr", default="")
                 or config.getoption("deselect", default=None))
    if selecting or not TOC.is_file():
        return
    invoked_in = Path(config.invocation_params.dir)
    given = [(invoked_in / str(arg).split("::")[0]).resolve() for arg in config.args]
    problems = []
    for document in toc_documents(_read_toc()):
        sources = _sources(document)
        if not any(source.is_relative_to(path) or source == path
                   for source in sources for path in given):
            continue
        existing = [source for source in sources if source.is_file()]
        if not existing:
            problems.append(f"{document}: listed in _toc.yml, but no such file "
                            f"({', '.join(_relative(s) for s in sources)})")
        elif existing[0].suffix == ".ipynb" and existing[0].resolve() not in collected:
            problems.append(f"{_relative(existing[0])}: listed in _toc.yml, but not collected")
    if problems:
        raise pytest.UsageError("the notebook check would skip chapters of the book:\n  "
                                + "\n  ".join(problems))
