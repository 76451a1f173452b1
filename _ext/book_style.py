"""The book's stylesheet and print script, and one accessibility fix of the HTML.

* ``static/vicourse.css`` (layout for 88-character code at 1400 px, figures at
  natural size and untouched in dark mode, equations and tables that scroll in
  their own box on a phone, contrast, the author–year bibliography, print) and
  ``static/vicourse.js`` (unfold solutions before printing) are added to every
  page.  They live here rather than in ``_static/``: Jupyter Book 1 injects a
  ``<script>`` for every ``.js`` file under every static path once a
  ``_static/`` folder exists, which would load MathJax's files twice.
* Bibliography entries: docutils marks each entry ``role="doc-biblioentry"``
  inside a ``role="list"``.  That role is deprecated in DPUB-ARIA 1.1, and a
  list whose children are not list items is a critical finding of axe-core
  (``aria-required-children``); the entries become ``role="listitem"``.
"""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def _add_static_path(app, config):
    config.html_static_path.append(str(STATIC))


def _fix_bibliography_roles(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if body and 'role="doc-biblioentry"' in body:
        context["body"] = body.replace('role="doc-biblioentry"', 'role="listitem"')


def setup(app):
    app.connect("config-inited", _add_static_path)
    app.add_css_file("vicourse.css")
    app.add_js_file("vicourse.js")
    app.connect("html-page-context", _fix_bibliography_roles)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
