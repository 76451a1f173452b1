"""The book as a reader meets it: every built page, opened offline in Chromium.

Run after building the book (``make book``) with ``make browser``
(``pytest tests/browser -q -rs``).  The pages are discovered from the built
site at collection time, so each page is its own test item and a new chapter
is checked as soon as it is built.  Each page is loaded once (see ``visit``);
every check below reads what that visit recorded:

* math: every ``.math`` element was typeset by MathJax (holds an
  ``mjx-container``, no ``mjx-merror``), and no raw TeX delimiter
  (``$$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\begin{``) is left in the
  page's text outside code;
* every ``<img>`` loaded (``naturalWidth > 0``);
* figures: every image has alt text that describes it (not empty, not a file
  name), and every image a notebook cell draws sits in a figure with a caption;
* no cell output shows an error, a traceback or a warning;
* the console logged no error, no script threw, no local request failed and no
  request tried to leave the machine;
* accessibility: axe-core (WCAG 2.0/2.1, levels A and AA) finds no serious or
  critical violation, in the light theme and in the dark one;
* at 1400 px, no block of code or output scrolls sideways and every figure is
  shown at least at its natural width; in dark mode figures are shown as drawn
  (no filter) on white;
* at 400 px (a phone), the page does not scroll sideways, and no equation
  number covers its equation;
* the previous/next links follow ``_toc.yml`` and resolve to built pages;
* each chapter page offers its notebook for download and Binder and Colab
  launch buttons built from the repository in ``_config.yml``;
* the search page, and the search box, find "ELBO" in the chapters that
  define it;
* the site holds a page for every document of ``_toc.yml`` and none for a
  document outside it, and ``index.html`` leads to the root page;
* the PDF of the book (``tools/book_pdf.py``) is linked from the landing page,
  holds every document of ``_toc.yml`` in order, and shows the solutions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import urllib.request
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

# The same as in conftest.py (pytest does not make conftest importable by name).
ROOT = Path(__file__).resolve().parents[2]
# $VICOURSE_SITE checks a book built elsewhere (jupyter-book build --path-output).
SITE = Path(os.environ.get("VICOURSE_SITE") or ROOT / "_build" / "html").resolve()
PAGE_TIMEOUT_MS = 30_000
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 400, "height": 800}
# axe-core, fetched from npm by the Makefile (`make browser`).
AXE = Path(os.environ.get("VICOURSE_AXE") or ROOT / ".axe" / "axe.min.js")
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
               "resultTypes": ["violations"]}
# In dark mode only colours change, so only the rules about colour run again
# (half the cost of a second full audit).
AXE_DARK_OPTIONS = {"runOnly": {"type": "rule", "values": ["color-contrast", "link-in-text-block"]},
                    "resultTypes": ["violations"]}
# The PDF of the whole book, printed from the site by tools/book_pdf.py.
PDF = SITE / "vicourse.pdf"
# The reading order of _toc.yml, shared with tools/book_pdf.py.
_spec = importlib.util.spec_from_file_location("book_site", ROOT / "tools" / "book_site.py")
book_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_site)

# --------------------------------------------------------------------------------------
# Which pages: discovered from the built site at collection time.
# --------------------------------------------------------------------------------------

# index.html is a one-line redirect to the root document (tested on its own);
# search.html only shows results for a query (tested on its own).
SPECIAL_PAGES = {"index.html", "search.html"}


def _discover_pages() -> list[str]:
    """Every HTML page a reader can reach, as paths relative to the site root.

    Sphinx writes the pages of the book at the site root and in the folders of
    their sources; ``_static``, ``_sources``, ``_images`` and any hidden
    folder hold assets and copies, not pages.
    """
    if not SITE.is_dir():
        pytest.fail(f"{SITE} does not exist: build the book first (`make book`, or "
                    f"`.venv/bin/jupyter-book build .`), then run `make browser`.", pytrace=False)
    pages = []
    for path in sorted(SITE.rglob("*.html")):
        relative = path.relative_to(SITE)
        if any(part.startswith(("_", ".")) for part in relative.parts):
            continue
        if relative.as_posix() not in SPECIAL_PAGES:
            pages.append(relative.as_posix())
    if not pages:
        pytest.fail(f"found no HTML page in {SITE}: the browser check would test nothing. "
                    f"Rebuild the book.", pytrace=False)
    return pages


TOC_DOCUMENTS = book_site.toc_documents(ROOT)
PAGES = _discover_pages()
# Pages built from a notebook: Sphinx keeps the source as _sources/<doc>.ipynb.
NOTEBOOK_PAGES = [p for p in PAGES if (SITE / "_sources" / p).with_suffix(".ipynb").is_file()]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


# --------------------------------------------------------------------------------------
# One visit per page.
# --------------------------------------------------------------------------------------

# Console messages that are not faults of the page.  Keep each entry narrow and
# say why it is harmless.
BENIGN_CONSOLE_ERRORS = [
    # pydata-sphinx-theme logs this once per fresh browser profile, which has
    # no stored light/dark preference yet; the theme falls back to "auto".
    re.compile(r"^Got invalid theme mode: \. Resetting to auto\. \(at [^ ]*/pydata-sphinx-theme\.js[^ ]*\)$"),
    # The browser itself asks the server for /favicon.ico (the book sets no
    # favicon); a reader opening the book from disk never sees this request.
    re.compile(r"^Failed to load resource: the server responded with a status of 404 \(File not found\) "
               r"\(at http://127\.0\.0\.1:\d+/favicon\.ico\)$"),
]


def _serious(console_errors: list[str]) -> list[str]:
    """The console errors that are not on the benign list."""
    return [m for m in console_errors if not any(p.search(m) for p in BENIGN_CONSOLE_ERRORS)]


# Collected in the page after load, MathJax and images have settled.
INSPECT_JS = r"""
async (timeoutMs) => {
  const withTimeout = (promise, ms) =>
    Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve("timeout"), ms))]);
  const result = {};

  // --- math -------------------------------------------------------------------------
  const mathElements = [...document.querySelectorAll(".math")];
  result.mathCount = mathElements.length;
  result.mathjaxLoaded = typeof window.MathJax === "object" && !!window.MathJax.startup;
  if (result.mathjaxLoaded) {
    const done = await withTimeout(
      window.MathJax.startup.promise.then(() => "done", (e) => "error: " + e), timeoutMs);
    result.mathjaxStatus = done;
  } else {
    result.mathjaxStatus = "not loaded";
  }
  result.untypesetMath = mathElements
    .filter((el) => !el.querySelector("mjx-container"))
    .map((el) => el.textContent.trim().slice(0, 80));
  // TeX errors: a parse error becomes <merror>; an undefined macro (the noundefined
  // extension) becomes a red <mtext> holding the macro's name, e.g. "\foo".
  result.mathErrors = [...document.querySelectorAll("mjx-merror")]
    .map((el) => (el.getAttribute("data-mjx-error") || el.textContent).slice(0, 120));
  if (result.mathjaxLoaded && window.MathJax.startup.document) {
    for (const item of window.MathJax.startup.document.math) {
      if (!item.root) continue;
      item.root.walkTree((node) => {
        if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red") {
          const text = node.childNodes.map((child) => child.text || "").join("");
          if (text.startsWith("\\")) result.mathErrors.push(`undefined macro ${text} in ${item.math}`);
        }
      });
    }
  }
  result.mjxContainers = document.querySelectorAll("mjx-container").length;
  await withTimeout(document.fonts.ready, timeoutMs);

  // --- raw TeX left in the text (code, scripts and typeset math excluded) ------------
  const skip = "pre, code, kbd, samp, script, style, textarea, noscript, mjx-container";
  const delimiters = /\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{/g;
  result.rawTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!text || !delimiters.test(text)) continue;
    delimiters.lastIndex = 0;
    if (node.parentElement && node.parentElement.closest(skip)) continue;
    const first = text.search(delimiters);
    result.rawTex.push(JSON.stringify(text.slice(Math.max(0, first - 30), first + 50)));
  }

  // --- images -------------------------------------------------------------------------
  const images = [...document.images];
  for (const img of images) if (img.loading === "lazy") img.loading = "eager";
  await withTimeout(Promise.all(images.map((img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", resolve, { once: true });
  }))), timeoutMs);
  const content = document.querySelector("article") || document.body;
  result.images = images.map((img) => {
    const figure = img.closest("figure");
    const caption = figure ? figure.querySelector("figcaption") : null;
    return {
      src: img.getAttribute("src") || "",
      loaded: img.complete && img.naturalWidth > 0,
      alt: img.getAttribute("alt"),
      inContent: content.contains(img),
      inCellOutput: !!img.closest(".cell_output"),
      caption: caption ? caption.textContent.trim() : null,
    };
  });

  // --- notebook outputs ---------------------------------------------------------------
  result.errorOutputs = [...document.querySelectorAll(
      ".cell_output .traceback, .cell_output .output.error, .cell_output .output.stderr")]
    .map((el) => ({ cls: el.className, text: el.textContent.trim().slice(0, 300) }));
  result.tracebackText = [...document.querySelectorAll(".cell_output")]
    .filter((el) => el.textContent.includes("Traceback (most recent call last)"))
    .map((el) => el.textContent.trim().slice(0, 300));

  // --- navigation, launch buttons -----------------------------------------------------
  const href = (selector) => {
    const a = document.querySelector(selector);
    return a ? a.href : null;
  };
  result.prev = href("a.left-prev");
  result.next = href("a.right-next");
  result.links = [...document.querySelectorAll("a[href]")].map((a) => a.href);
  result.title = document.title;
  return result;
}
"""


# At 1400 px, right after INSPECT_JS: blocks of code or output that scroll
# sideways (with their longest line), and images shown narrower than drawn.
DESKTOP_JS = r"""
() => {
  const article = document.querySelector("article") || document.body;
  const code = [];
  for (const pre of article.querySelectorAll("pre")) {
    if (pre.scrollWidth <= pre.clientWidth + 1) continue;
    const longest = pre.textContent.split("\n").reduce((a, b) => (b.length > a.length ? b : a), "");
    const kind = pre.closest(".cell_input") ? "code" : pre.closest(".cell_output") ? "output" : "block";
    code.push({ kind, chars: longest.length, line: longest.slice(0, 100),
                shown: pre.clientWidth, needed: pre.scrollWidth });
  }
  const shrunk = [...article.querySelectorAll("img")]
    .filter((img) => img.naturalWidth > 0 && img.clientWidth + 1 < img.naturalWidth)
    .map((img) => ({ src: img.getAttribute("src"), natural: img.naturalWidth, shown: img.clientWidth }));
  // Entries of the two sidebars that run past their sidebar or the window.
  const clipped = [];
  for (const bar of document.querySelectorAll(".bd-sidebar-primary, .bd-sidebar-secondary")) {
    const edge = Math.min(bar.getBoundingClientRect().right, window.innerWidth);
    for (const link of bar.querySelectorAll("a")) {
      const box = link.getBoundingClientRect();
      if (box.width > 0 && box.right > edge + 1) {
        clipped.push({ text: link.textContent.trim().slice(0, 80), right: Math.round(box.right),
                       edge: Math.round(edge) });
      }
    }
  }
  return { code, shrunk, clipped, column: article.clientWidth };
}
"""

# Switch the page to the theme's dark mode (what its toggle does) and report
# how each image is drawn there.  Transitions are switched off first, so that
# what is checked is the dark theme's colours, not a blend on the way there.
DARK_JS = r"""
async () => {
  const still = document.createElement("style");
  still.textContent = "*, *::before, *::after { transition: none !important; animation: none !important; }";
  document.head.appendChild(still);
  document.documentElement.dataset.theme = "dark";
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const article = document.querySelector("article") || document.body;
  return [...article.querySelectorAll("img")].map((img) => {
    const style = getComputedStyle(img);
    return { src: img.getAttribute("src"), filter: style.filter, background: style.backgroundColor };
  });
}
"""

# At 400 px: does the page scroll sideways (and what sticks out), does every
# display equation stay inside the screen, and does any number cover its equation.
PHONE_JS = r"""
async () => {
  document.documentElement.dataset.theme = "light";
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const width = document.documentElement.clientWidth;
  const result = { width, scrollWidth: document.documentElement.scrollWidth, sticking: [], equations: [] };
  const scrolls = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  if (result.scrollWidth > width) {
    for (const el of document.body.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > width + 1 && !scrolls(el)) {
        result.sticking.push(`<${el.tagName.toLowerCase()} class="${el.className}"> ends at ` +
                             `${Math.round(r.right)} px: ${(el.textContent || "").trim().slice(0, 60)}`);
        if (result.sticking.length >= 8) break;
      }
    }
  }
  for (const div of document.querySelectorAll("div.math")) {
    const box = div.querySelector("mjx-container");
    if (!box) continue;
    const b = box.getBoundingClientRect();
    if (b.width === 0) continue;   // inside a folded box
    const number = div.querySelector(".eqno");
    const name = number ? number.textContent.replace("#", "").trim() : div.id || "unnumbered";
    if (b.left < -1 || b.right > width + 1) {
      const span = `${Math.round(b.left)}..${Math.round(b.right)} px`;
      result.equations.push(`${name}: the equation's box spans ${span}`);
    }
    if (number) {
      const n = number.getBoundingClientRect();
      if (n.left < b.right && n.right > b.left && n.top < b.bottom && n.bottom > b.top) {
        result.equations.push(`${name}: the equation number covers the equation`);
      }
    }
  }
  return result;
}
"""

AXE_JS = r"""
async (options) => (await axe.run(document, options)).violations.map((v) => ({
  id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
  targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
}))
"""


@dataclass
class PageReport:
    """What one visit of a page recorded."""

    path: str
    url: str
    final_url: str
    data: dict
    console_errors: list[str]
    page_errors: list[str]
    blocked: list[str]
    failed_local: list[str]


_REPORTS: dict[str, PageReport] = {}
_VISIT_FAILURES: dict[str, str] = {}   # a page that failed to load fails its other checks at once


@pytest.fixture(scope="session")
def axe_source() -> Path:
    """axe-core's script; the Makefile fetches it from npm (`make browser`)."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} not found: run `make browser` (it fetches axe-core from npm), or set "
                    f"VICOURSE_AXE to a copy of axe.min.js", pytrace=False)
    return AXE


@pytest.fixture(scope="session")
def visit(tab, site_url, axe_source):
    """``visit(path)`` loads a page once (cached for the session) and returns its report."""

    def load(path: str) -> PageReport:
        if path in _VISIT_FAILURES:
            pytest.fail(f"{path}: could not be loaded: {_VISIT_FAILURES[path]}", pytrace=False)
        if path not in _REPORTS:
            try:
                _REPORTS[path] = _load(path)
            except Exception as error:
                _VISIT_FAILURES[path] = f"{type(error).__name__}: {error}"
                raise
        return _REPORTS[path]

    def _load(path: str) -> PageReport:
        log = tab.vicourse_log
        # Leave the previous page first, so that what its unfinished requests
        # report is not blamed on this one.
        tab.goto("about:blank")
        tab.vicourse_wait_idle(quiet_ms=50)
        log.clear()
        url = urljoin(site_url, path)
        response = tab.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        assert response is not None and response.ok, f"{path}: HTTP {response and response.status}"
        data = tab.evaluate(INSPECT_JS, PAGE_TIMEOUT_MS)
        # Let late requests and console messages (fonts, async scripts) arrive.
        tab.vicourse_wait_idle()
        console = _serious(log.console_errors)
        # The same page, laid out and audited three ways (no reload): desktop
        # light, desktop dark, phone light.
        data["desktop"] = tab.evaluate(DESKTOP_JS)
        tab.add_script_tag(path=str(axe_source))
        data["axe"] = {"light": tab.evaluate(AXE_JS, AXE_OPTIONS)}
        data["dark"] = tab.evaluate(DARK_JS)
        data["axe"]["dark"] = tab.evaluate(AXE_JS, AXE_DARK_OPTIONS)
        tab.set_viewport_size(PHONE)
        try:
            data["phone"] = tab.evaluate(PHONE_JS)
        finally:
            tab.set_viewport_size(DESKTOP)
        return PageReport(path, url, tab.url, data, console, list(log.page_errors),
                          list(log.blocked), list(log.failed_local))

    return load


def _problems(path: str, problems: list[str], limit: int = 12) -> None:
    """Fail naming the page and what is wrong with it (the first ``limit`` findings)."""
    shown = problems[:limit]
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more")
    assert not problems, f"{path}: {len(problems)} problem(s)\n  " + "\n  ".join(shown)


def _fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


# --------------------------------------------------------------------------------------
# The site as a whole.
# --------------------------------------------------------------------------------------


def test_pages_were_discovered():
    """Guard against a sweep that checks nothing: the root document must be among the pages."""
    assert f"{TOC_DOCUMENTS[0]}.html" in PAGES, f"root document missing from {SITE}: {PAGES}"


@pytest.mark.parametrize("document", TOC_DOCUMENTS)
def test_toc_document_was_built(document):
    """Every document listed in _toc.yml is a page of the built site."""
    assert (SITE / f"{document}.html").is_file(), (
        f"_toc.yml lists {document!r} but {SITE / (document + '.html')} was not built: "
        f"is the source missing, or the build stale?")


def test_every_page_is_in_the_toc():
    """No page built from a source outside _toc.yml (e.g. left behind by a renamed chapter).

    Pages Sphinx generates (genindex, domain indices) have no source under _sources.
    """
    sources = {p.relative_to(SITE / "_sources").with_suffix("").with_suffix("").as_posix()
               for p in (SITE / "_sources").rglob("*") if p.is_file()}
    built = {page[: -len(".html")] for page in PAGES}
    stray = sorted((sources & built) - set(TOC_DOCUMENTS))
    assert not stray, (f"pages built from documents that _toc.yml does not list: {stray}; "
                       f"a stale build? rebuild from scratch (`make clean book`)")


def test_index_redirects_to_the_root_document(tab, site_url):
    tab.goto(urljoin(site_url, "index.html"), wait_until="load")
    # The root page itself is checked on its own; here only the redirect matters.
    tab.wait_for_url(f"**/{TOC_DOCUMENTS[0]}.html", wait_until="commit", timeout=PAGE_TIMEOUT_MS)


# --------------------------------------------------------------------------------------
# Every page.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_math_is_typeset(path, visit):
    data = visit(path).data
    problems = []
    if data["mathCount"]:
        if not data["mathjaxLoaded"]:
            problems.append(f"{data['mathCount']} math elements but MathJax did not load")
        elif data["mathjaxStatus"] != "done":
            problems.append(f"MathJax did not finish typesetting: {data['mathjaxStatus']}")
        if data["mjxContainers"] == 0:
            problems.append("no mjx-container on a page with math")
    problems += [f"math not typeset: {tex!r}" for tex in data["untypesetMath"]]
    problems += [f"MathJax error: {err!r}" for err in data["mathErrors"]]
    _problems(path, problems)


@pytest.mark.parametrize("path", PAGES)
def test_no_raw_tex_in_text(path, visit):
    """No $$, \\( \\), \\[ \\] or \\begin{ is left in the text a reader sees (code excluded)."""
    _problems(path, [f"raw TeX in text: {snippet}" for snippet in visit(path).data["rawTex"]])


@pytest.mark.parametrize("path", PAGES)
def test_images_load(path, visit):
    images = visit(path).data["images"]
    _problems(path, [f"image did not load: {img['src']}" for img in images if not img["loaded"]])


_FILE_NAME = re.compile(r"(^|/)[^\s/]+\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


@pytest.mark.parametrize("path", PAGES)
def test_figures_have_alt_text_and_captions(path, visit):
    """Alt text that describes each image; a caption for each image a notebook cell draws.

    Without alt text docutils writes the image's path into ``alt``, so an alt
    that is a file name counts as missing.
    """
    problems = []
    for img in visit(path).data["images"]:
        alt = (img["alt"] or "").strip()
        if not alt or alt == img["src"] or _FILE_NAME.search(alt):
            problems.append(f"no alt text (alt={img['alt']!r}): {img['src']}")
        if img["inCellOutput"] and not img["caption"]:
            problems.append(f"notebook figure without a caption: {img['src']}")
    _problems(path, problems)


_ERROR_WORDS = re.compile(r"Traceback|Error\b|Exception\b|Warning\b")


@pytest.mark.parametrize("path", PAGES)
def test_no_error_outputs(path, visit):
    """No cell output shows an error, a traceback, or an error or warning on stderr.

    Other stderr output (a progress bar) is allowed.
    """
    data = visit(path).data
    problems = []
    for output in data["errorOutputs"]:
        if "stderr" in output["cls"].split() and not _ERROR_WORDS.search(output["text"]):
            continue
        problems.append(f"error output ({output['cls']}): {output['text']!r}")
    problems += [f"traceback in output: {text!r}" for text in data["tracebackText"]]
    _problems(path, problems)


@pytest.mark.parametrize("path", PAGES)
def test_console_and_network_are_clean(path, visit):
    """No console error, no uncaught exception, no failed local request, nothing sent off the machine."""
    report = visit(path)
    problems = [f"console error: {m}" for m in report.console_errors]
    problems += [f"uncaught exception: {m}" for m in report.page_errors]
    problems += [f"local request failed: {m}" for m in report.failed_local]
    problems += [f"request to the network (blocked): {m}" for m in report.blocked]
    _problems(path, problems)


def _built_reading_order() -> list[str]:
    return [f"{doc}.html" for doc in TOC_DOCUMENTS if (SITE / f"{doc}.html").is_file()]


@pytest.mark.parametrize("path", PAGES)
def test_prev_next_links(path, visit, site_url):
    """Previous/next links follow _toc.yml's reading order and lead to built pages."""
    data = visit(path).data
    order = _built_reading_order()
    problems = []
    if path in order:
        i = order.index(path)
        expected = {"prev": order[i - 1] if i > 0 else None,
                    "next": order[i + 1] if i + 1 < len(order) else None}
        for key, want in expected.items():
            got = data[key]
            got_path = urlsplit(got).path.lstrip("/") if got else None
            if got_path != want:
                problems.append(f"{key} link is {got_path!r}, expected {want!r}")
    for key in ("prev", "next"):
        if data[key]:
            target = urlsplit(data[key])
            if target.netloc != urlsplit(site_url).netloc:
                problems.append(f"{key} link leaves the site: {data[key]}")
            elif not (SITE / target.path.lstrip("/")).is_file():
                problems.append(f"{key} link leads nowhere: {data[key]}")
    _problems(path, problems)


# --------------------------------------------------------------------------------------
# Chapter pages: notebook download, Binder and Colab.
# --------------------------------------------------------------------------------------


def _repository() -> tuple[str, str, str]:
    repo = CONFIG["repository"]
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", repo["url"])
    assert match, f"_config.yml repository.url is not a GitHub URL: {repo['url']!r}"
    return match.group(1), repo.get("branch", "main"), (repo.get("path_to_book") or "").strip("/")


# With no notebook page at all, one item runs and fails rather than none passing.
@pytest.mark.parametrize("path", NOTEBOOK_PAGES or [None])
def test_chapter_offers_download_and_launch_buttons(path, visit, site_url):
    if path is None:
        pytest.fail(f"no page of {SITE} was built from a notebook (no _sources/**/*.ipynb)")
    report = visit(path)
    links = report.data["links"]
    slug, branch, book = _repository()
    notebook = posixpath.join(book, path[: -len(".html")] + ".ipynb") if book else path[:-5] + ".ipynb"
    binder = CONFIG["launch_buttons"]["binderhub_url"].rstrip("/")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    binder_re = re.compile(re.escape(f"{binder}/v2/gh/{slug}/{branch}?urlpath=")
                           + r"(lab/)?tree/" + re.escape(notebook) + "$")
    colab_url = f"{colab}/github/{slug}/blob/{branch}/{notebook}"
    download_url = urljoin(site_url, f"_sources/{path[:-5]}.ipynb")
    problems = []
    if not any(binder_re.match(link) for link in links):
        problems.append(f"no Binder launch button for {notebook} ({binder_re.pattern})")
    if colab_url not in links:
        problems.append(f"no Colab launch button {colab_url}")
    if download_url not in links:
        problems.append(f"no notebook download link {download_url}")
    else:
        status, body = _fetch(download_url)
        notebook_json = json.loads(body)
        if status != 200 or "cells" not in notebook_json:
            problems.append(f"download {download_url} is not a notebook (HTTP {status})")
    _problems(path, problems)


# --------------------------------------------------------------------------------------
# Search.
# --------------------------------------------------------------------------------------


def _pages_defining_the_elbo() -> list[str]:
    """Pages that hold the ELBO's labelled definition or say "ELBO" in a heading."""
    defining = []
    heading = re.compile(r"<h[1-3][^>]*>(?:(?!</h[1-3]>).)*\bELBO\b", re.DOTALL)
    for path in PAGES:
        html = (SITE / path).read_text(encoding="utf-8")
        if 'id="equation-eq-elbo-def"' in html or heading.search(html):
            defining.append(path)
    return defining


def _search_results(tab) -> list[str]:
    tab.wait_for_function(
        """() => {
             const s = document.querySelector('#search-results .search-summary');
             return s && s.innerText.trim().length > 0;
           }""", timeout=PAGE_TIMEOUT_MS)
    hrefs = tab.eval_on_selector_all("#search-results ul.search li > a", "els => els.map(a => a.href)")
    return sorted({urlsplit(h).path.lstrip("/") for h in hrefs})


def test_search_page_finds_elbo(tab, site_url):
    defining = _pages_defining_the_elbo()
    assert defining, "no page defines the ELBO (label eq-elbo-def, or ELBO in a heading)"
    tab.goto("about:blank")
    tab.vicourse_wait_idle(quiet_ms=50)
    tab.vicourse_log.clear()
    tab.goto(urljoin(site_url, "search.html?q=ELBO"), wait_until="load")
    found = _search_results(tab)
    missing = sorted(set(defining) - set(found))
    assert not missing, f"searching 'ELBO' did not list {missing}; it listed {found}"
    tab.vicourse_wait_idle()
    log = tab.vicourse_log
    _problems("search.html", [f"console error: {m}" for m in _serious(log.console_errors)]
              + [f"uncaught exception: {m}" for m in log.page_errors]
              + [f"local request failed: {m}" for m in log.failed_local]
              + [f"request to the network (blocked): {m}" for m in log.blocked])


def test_search_box_finds_elbo(tab, site_url):
    """A reader on a page of the book opens the search box, types ELBO, presses Enter."""
    # Every page carries the same search box; start from the lightest one.
    start = min((f"{doc}.html" for doc in TOC_DOCUMENTS if (SITE / f"{doc}.html").is_file()),
                key=lambda page: (SITE / page).stat().st_size)
    tab.goto(urljoin(site_url, start), wait_until="load")
    tab.locator("button.search-button__button:visible").first.click()
    box = tab.locator("#pst-search-dialog input[name='q']")
    box.fill("ELBO")
    box.press("Enter")
    tab.wait_for_url("**/search.html?q=ELBO*", timeout=PAGE_TIMEOUT_MS)
    found = _search_results(tab)
    missing = sorted(set(_pages_defining_the_elbo()) - set(found))
    assert found and not missing, f"search box for 'ELBO' listed {found}; missing {missing}"



# --------------------------------------------------------------------------------------
# Accessibility and layout: desktop, dark mode, phone.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_accessibility(path, visit):
    """axe-core finds no serious or critical WCAG 2.0/2.1 A/AA violation; in dark mode, no colour one."""
    problems = []
    for theme, violations in visit(path).data["axe"].items():
        for v in violations:
            if v["impact"] in ("serious", "critical"):
                problems.append(f"{theme} theme: {v['impact']} {v['id']} ({v['help']}) on "
                                f"{v['count']} element(s), e.g. {v['targets']}")
    _problems(path, problems)


@pytest.mark.parametrize("path", PAGES)
def test_code_fits_the_column(path, visit):
    """At 1400 px no block of code or output scrolls sideways (lines of at most 88 characters fit)."""
    desktop = visit(path).data["desktop"]
    _problems(path, [f"{c['kind']} block scrolls sideways ({c['needed']} px in {c['shown']} px); "
                     f"longest line ({c['chars']} characters): {c['line']!r}"
                     for c in desktop["code"]])


@pytest.mark.parametrize("path", PAGES)
def test_sidebar_entries_fit(path, visit):
    """At 1400 px every entry of the navigation and "Contents" sidebars wraps inside its sidebar."""
    _problems(path, [f"sidebar entry {c['text']!r} runs to {c['right']} px, past {c['edge']} px"
                     for c in visit(path).data["desktop"]["clipped"]])


@pytest.mark.parametrize("path", PAGES)
def test_figures_at_natural_size_and_as_drawn_in_dark_mode(path, visit):
    """At 1400 px every image is at least its natural width; in dark mode, unfiltered on white."""
    data = visit(path).data
    problems = [f"image shrunk to {img['shown']} px of its {img['natural']} px: {img['src']}"
                for img in data["desktop"]["shrunk"]]
    for img in data["dark"]:
        if img["filter"] != "none":
            problems.append(f"dark mode filters the image ({img['filter']}): {img['src']}")
        if img["background"] != "rgb(255, 255, 255)":
            problems.append(f"dark mode shows the image on {img['background']}, not white: {img['src']}")
    _problems(path, problems)


@pytest.mark.parametrize("path", PAGES)
def test_phone_layout(path, visit):
    """At 400 px the page does not scroll sideways and no equation number covers its equation."""
    phone = visit(path).data["phone"]
    problems = []
    if phone["scrollWidth"] > phone["width"]:
        problems.append(f"the page scrolls sideways ({phone['scrollWidth']} px in {phone['width']} px): "
                        + "; ".join(phone["sticking"]))
    problems += phone["equations"]
    _problems(path, problems)


# --------------------------------------------------------------------------------------
# The PDF of the book.
# --------------------------------------------------------------------------------------


def _page_title(document: str) -> str:
    html = (SITE / f"{document}.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html, re.DOTALL).group(1)
    return unescape(title).split(" \u2014 ")[0].strip()


def test_landing_page_links_the_pdf(visit, site_url):
    root = f"{TOC_DOCUMENTS[0]}.html"
    pdf_url = urljoin(site_url, PDF.name)
    assert pdf_url in visit(root).data["links"], f"{root} has no link to {PDF.name}"
    status, body = _fetch(pdf_url)
    assert status == 200 and body.startswith(b"%PDF"), f"{pdf_url}: HTTP {status}, not a PDF"


def test_pdf_holds_the_book_in_order_with_the_solutions():
    """One bookmark per document of _toc.yml, in order; every solution printed, none folded."""
    from pypdf import PdfReader

    assert PDF.is_file() and PDF.stat().st_size > 0, (
        f"{PDF} is missing or empty: build it with `make pdf` (needs Chromium)")
    reader = PdfReader(PDF)
    built = [doc for doc in TOC_DOCUMENTS if (SITE / f"{doc}.html").is_file()]
    bookmarks = [item.title for item in reader.outline if not isinstance(item, list)]
    assert bookmarks == [_page_title(doc) for doc in built], "the PDF's bookmarks are not the book's pages"
    assert len(reader.pages) >= len(built)
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    assert "Click to show" not in text, "the PDF shows a folded box instead of its content"
    solution = re.compile(r'class="solution[ "]')
    solutions = sum(len(solution.findall((SITE / f"{doc}.html").read_text(encoding="utf-8")))
                    for doc in built)
    printed = len(re.findall(r"Solution to\s*Exercise", text))
    assert printed == solutions, f"the book has {solutions} solutions, the PDF prints {printed}"
