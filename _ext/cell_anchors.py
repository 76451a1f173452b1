"""Give every code cell of a chapter an anchor, so that other pages can link to it.

myst-nb renders each notebook cell as a container node that knows its index in
the notebook (``cell_index``).  This adds the HTML id ``cell-<index>`` to each
code cell of a chapter, and registers the reference target
``cell-<notebook>-<index>`` (for example ``cell-01_elbo-7``), which the page
of checked claims (``tools/claims_ledger.py``) links to with ``{ref}``.  Sphinx
resolves those links at build time, so a link to a cell that does not exist is
a warning, and the strict build fails on it.
"""

from docutils import nodes


def _anchor_cells(app, doctree):
    docname = app.env.docname
    if not docname.startswith("chapters/"):
        return
    stem = docname.rsplit("/", 1)[-1].lower()
    std = app.env.get_domain("std")
    for node in doctree.findall(nodes.container):
        if node.get("nb_element") != "cell_code" or node.get("cell_index") is None:
            continue
        index = node["cell_index"]
        node_id = f"cell-{index}"
        if node_id not in node["ids"]:
            node["ids"].append(node_id)
        std.note_hyperlink_target(f"cell-{stem}-{index}", docname, node_id, f"cell {index}")


def setup(app):
    app.connect("doctree-read", _anchor_cells)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
