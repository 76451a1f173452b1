"""The API reference of :mod:`vicourse`, generated from the docstrings at build time.

The page ``appendix/api.md`` holds one directive, ``{vicourse-api}``.  It finds
every public module of the package (``pkgutil``; a module whose name starts
with ``_`` is private), so a new chapter's module is documented as soon as it
exists, and writes for each one a section with

* the module's docstring (``automodule``),
* a summary table of its public names (``autosummary``, one line each), and
* each public name in full (``autofunction``, ``autoclass`` with its members,
  ``autoexception``, ``autodata``).

The public names of a module are its ``__all__``, or, without one, the names
it defines that do not start with ``_`` (and its constants documented with
``#:``).  A name a module re-exports from another public module is documented
once, where it is defined, and gets a one-line entry under the re-exporting
module that points there, so that a reference by either name resolves; a
class defined in a private module (``vicourse._gaussian``) is documented
where the package exports it (``vicourse.GaussianFit``).

The docstrings are numpydoc, written for readers: types are prose such as
"array of shape (n_samples, n_features)".  ``sphinx.ext.napoleon`` renders
them with the types as text (``napoleon_use_param = False``, set here), so a
prose type is not taken for a class name and the nitpicky build stays quiet.
A docstring cites the book's equations with MyST roles (``{eq}`eq-cg-elbo```);
``autodoc-process-docstring`` turns these into their reStructuredText form, so
the reference links to the equation it implements.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE = "vicourse"

# MyST roles a docstring may use, written {role}`target` -> :role:`target`.
_MYST_ROLE = re.compile(r"\{(eq|doc|ref|numref|prf:ref|cite|cite:p|cite:t)\}`")
# A reStructuredText section title inside a docstring (a line underlined with
# -, = or ~ of at least its length).  Inside a directive's content Sphinx cannot
# open a section, so such a title is shown as a rubric instead.
_UNDERLINE = re.compile(r"^([-=~^])\1{2,}\s*$")


def public_modules(package: str = PACKAGE) -> list[str]:
    """The package and its public submodules, in alphabetical order after the package."""
    root = importlib.import_module(package)
    names = [info.name for info in pkgutil.iter_modules(root.__path__, prefix=f"{package}.")
             if not info.name.rsplit(".", 1)[-1].startswith("_")]
    return [package, *sorted(names)]


def public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, or else what the module itself defines under a name without ``_``.

    Without ``__all__``: the functions and classes whose ``__module__`` is this
    module, and the constants documented with a ``#:`` comment (names merely
    imported, such as ``scipy.special.xlogy``, are not its API).
    """
    if hasattr(module, "__all__"):
        return [name for name in module.__all__
                if not isinstance(getattr(module, name), types.ModuleType)]
    documented = {attr for (_, attr) in ModuleAnalyzer.for_module(module.__name__).find_attr_docs()}
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        defined_here = ((inspect.isclass(value) or inspect.isfunction(value))
                        and value.__module__ == module.__name__)
        if defined_here or name in documented:
            names.append(name)
    return names


def home_of(value, modules: list[str]) -> str | None:
    """The public module under which ``value`` is documented.

    Its defining module if that is public, else the first public module (the
    package itself first) that exports it; ``None`` for plain data, which has
    no defining module and is documented wherever it is listed.
    """
    defined_in = getattr(value, "__module__", None)
    if not (inspect.isclass(value) or inspect.isfunction(value)) or defined_in is None:
        return None
    if defined_in in modules:
        return defined_in
    for name in modules:
        module = importlib.import_module(name)
        if any(getattr(module, n) is value for n in public_names(module)):
            return name
    return None


def _kind(value) -> str:
    """What Sphinx's Python domain calls ``value``: exception, class, function or data."""
    if inspect.isclass(value) and issubclass(value, BaseException):
        return "exception"
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return "data"


def _directive_for(value) -> str:
    return f"auto{_kind(value)}"


def _alias_directive(value) -> str:
    return f"py:{_kind(value)}"


def module_rst(name: str, modules: list[str]) -> list[str]:
    """The reStructuredText of one module's section."""
    module = importlib.import_module(name)
    own, elsewhere = [], []
    for attr in public_names(module):
        home = home_of(getattr(module, attr), modules)
        if home is None or home == name:
            own.append(attr)
        else:
            elsewhere.append((attr, home))
    lines = [name, "-" * len(name), "", f".. automodule:: {name}", ""]
    if own:
        lines += [".. autosummary::", ""] + [f"   {attr}" for attr in own] + [""]
    for attr in own:
        directive = _directive_for(getattr(module, attr))
        lines.append(f".. {directive}:: {name}.{attr}")
        if directive in ("autoclass", "autoexception"):
            lines.append("   :members:")
            lines.append("   :show-inheritance:")
        lines.append("")
    # A re-exported name gets a short entry of its own, so that a reference to
    # it under this module's name (``vicourse.GaussianFit``) resolves too.
    for attr, home in elsewhere:
        lines += [f".. {_alias_directive(getattr(module, attr))}:: {attr}",
                  f"   :module: {name}", "   :no-index-entry:", "",
                  f"   The same object as :py:obj:`{home}.{attr}`, documented there.", ""]
    return lines


class VicourseApi(SphinxDirective):
    """``{vicourse-api}``: a section for every public module of the package."""

    has_content = False

    def run(self):
        modules = public_modules()
        lines = []
        for name in modules:
            lines += module_rst(name, modules)
            # The Python domain's "current module" must not leak into the next section.
            lines += [".. currentmodule:: None", ""]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="vicourse-api"), container)
        return container.children


_PROSE = {}   # the docstring of a constant or attribute, before napoleon reads it


def _keep_prose(app, what, name, obj, options, lines):
    if what in ("data", "attribute"):
        _PROSE[name] = list(lines)


def _process_docstring(app, what, name, obj, options, lines):
    """MyST roles to their rST form; section titles inside a docstring to rubrics.

    Napoleon reads the first line of a constant's or an attribute's docstring
    as ``type: description`` when it holds a colon, which turns a sentence such
    as "the palette (black dropped: it is the text colour)" into a type; such a
    docstring is prose here, and is restored as written.
    """
    if what in ("data", "attribute") and any(line.startswith(":type:") for line in lines):
        lines[:] = _PROSE.pop(name, lines)
    for i, line in enumerate(lines):
        lines[i] = _MYST_ROLE.sub(r":\1:`", line)
    i = 1
    while i < len(lines):
        if _UNDERLINE.match(lines[i]) and lines[i - 1].strip() and len(lines[i].strip()) >= len(
                lines[i - 1].strip()):
            lines[i - 1] = f".. rubric:: {lines[i - 1].strip()}"
            lines[i] = ""
        i += 1


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.autosummary")
    app.setup_extension("sphinx.ext.napoleon")
    app.add_directive("vicourse-api", VicourseApi)
    # Around napoleon (priority 500): before it to keep prose, after it to fix up.
    app.connect("autodoc-process-docstring", _keep_prose, priority=400)
    app.connect("autodoc-process-docstring", _process_docstring, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
