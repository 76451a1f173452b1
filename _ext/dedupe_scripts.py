"""Drop repeated <script> entries from each page (Sphinx 7.4 + sphinx-thebe 0.3.1).

sphinx-thebe adds an inline script (``const THEBE_JS_URL = ...``) with
``app.add_js_file(None, body=...)`` after the builder has started; Sphinx then
re-adds the registry's copy under the name ``''`` instead of ``None``, the two
do not compare equal, and every page declares the constant twice, which throws
"Identifier 'THEBE_JS_URL' has already been declared" in the browser.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", None),
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
