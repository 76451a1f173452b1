"""The first cell of every chapter installs the course where it is missing (tools/install_cell.py)."""

import importlib.util
from pathlib import Path
from unittest import mock

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from vicourse.claims import MAX_WIDTH

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("install_cell", ROOT / "tools" / "install_cell.py")
install_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_cell)

URL, BRANCH = "https://github.com/someone/a-fork", "teaching"


def _run(source: str, vicourse_installed: bool):
    """Run the cell as IPython would; return the line magics it called."""
    code = TransformerManager().transform_cell(source)
    shell = mock.Mock()
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "vicourse":
            return mock.sentinel.spec if vicourse_installed else None
        return real_find_spec(name, *args)

    with mock.patch("importlib.util.find_spec", find_spec):
        exec(code, {"get_ipython": lambda: shell})
    return shell.run_line_magic.call_args_list


def test_every_chapter_starts_with_the_current_install_cell():
    url, branch = install_cell.repository()
    stale = [path.name for path in install_cell.chapter_notebooks()
             if install_cell.refresh(nbformat.read(path, as_version=4), url, branch)]
    assert not stale, (f"missing or stale install cell in {stale}: run "
                       f"`python tools/install_cell.py` (the repository in _config.yml is "
                       f"{url}@{branch})")


def test_the_cell_does_nothing_where_the_course_is_installed():
    assert _run(install_cell.cell_source(URL, BRANCH), vicourse_installed=True) == []


def test_the_cell_installs_the_configured_repository_with_cpu_torch_where_it_is_missing():
    calls = _run(install_cell.cell_source(URL, BRANCH), vicourse_installed=False)
    assert len(calls) == 1
    magic, line = calls[0].args[:2]
    assert magic == "pip"
    assert line == ('install --quiet --extra-index-url {TORCH_CPU} "{COURSE}"')
    # IPython expands {COURSE} and {TORCH_CPU} from the cell's own assignments:
    source = install_cell.cell_source(URL, BRANCH)
    assert f'COURSE = "vicourse @ git+{URL}@{BRANCH}"' in source
    assert 'TORCH_CPU = "https://download.pytorch.org/whl/cpu"' in source


def test_the_cell_fits_the_column_and_is_hidden_in_the_book():
    cell = install_cell.make_cell(URL, BRANCH)
    assert max(len(line) for line in cell.source.splitlines()) <= MAX_WIDTH
    assert "remove-cell" in cell.metadata["tags"]


def test_refresh_is_idempotent_and_replaces_an_old_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_code_cell("x = 1")])
    assert install_cell.refresh(nb, "https://github.com/old/repo", "main") is True
    first_id = nb.cells[0]["id"]
    assert nb.cells[0]["execution_count"] is None          # new: the notebook must run again
    nb.cells[0]["execution_count"] = 1                      # as a run of the notebook leaves it
    assert install_cell.refresh(nb, "https://github.com/old/repo", "main") is False
    assert install_cell.refresh(nb, URL, BRANCH) is True
    assert len(nb.cells) == 3 and nb.cells[0]["id"] == first_id
    assert nb.cells[0]["execution_count"] == 1               # a new URL keeps the stored run
    assert URL in nb.cells[0].source and "old/repo" not in nb.cells[0].source
    # A copy moved elsewhere (by hand) goes back to the top, once.
    nb.cells = [nb.cells[1], nb.cells[0], nb.cells[2]]
    assert install_cell.refresh(nb, URL, BRANCH) is True
    assert [c.cell_type for c in nb.cells] == ["code", "markdown", "code"]
    assert sum("install" in c.source for c in nb.cells) == 1


@pytest.mark.parametrize("url", [None, "", "git@github.com:a/b.git", "http://x"])
def test_repository_must_be_an_https_url(tmp_path, url):
    config = tmp_path / "_config.yml"
    config.write_text(f"repository:\n  url: {url!r}\n" if url is not None else "title: x\n")
    with pytest.raises(ValueError, match="repository.url must be an https URL"):
        install_cell.repository(config)
