"""Print the built book to one PDF, offline, with headless Chromium.

Each page of ``_build/html`` is opened in reading order (``_toc.yml``) from a
server on 127.0.0.1, exactly as a reader sees it, and printed with the book's
print stylesheet (``_ext/static/vicourse.css``): no sidebars or buttons, code
wrapped instead of cut, solutions and folded cells unfolded.  The pages are
then joined into ``_build/html/vicourse.pdf`` (``pypdf``) with a bookmark per
page, and every link from one page of the book to another becomes a link to
that page inside the PDF.  The landing page links to the file.

``make book`` runs this with ``--optional``: without Chromium it says so and
the HTML book is still built.  ``make test`` runs it without, so CI (which
installs Chromium) always builds the PDF, and the browser check then reads it.

Usage: python tools/book_pdf.py [--site DIR] [--out FILE] [--optional]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

from book_site import BROWSER_NAMES, CHROMIUM_ARGS, ROOT, chromium_executable, serve, toc_documents

SITE = ROOT / "_build" / "html"
PDF_NAME = "vicourse.pdf"
PAGE_TIMEOUT_MS = 60_000
# A4 with 15 mm margins leaves 180 mm (680 CSS px at 96 px per inch); printed at
# 85 % the page holds 800 CSS px, so a 700 px figure and an 88-character line of
# code (about 742 px) fit as on the screen, with text at about 10 pt.
PDF_OPTIONS = {
    "format": "A4",
    "scale": 0.85,
    "margin": {"top": "15mm", "bottom": "18mm", "left": "15mm", "right": "15mm"},
    "print_background": True,
    "display_header_footer": True,
    "header_template": "<span></span>",
    "footer_template": (
        '<div style="font-size:8px;width:100%;padding:0 15mm;color:#555;'
        'display:flex;justify-content:space-between">'
        '<span class="title"></span><span class="pageNumber"></span></div>'),
}


# Wait until MathJax has typeset and every image has loaded, then unfold what
# the print stylesheet cannot (``vicourse.js``), and make links to other pages
# of the book absolute so that they can be found in the PDF.
PREPARE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const images = [...document.images];
  for (const img of images) img.loading = "eager";
  await Promise.all(images.map((img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", resolve, { once: true });
  })));
  await document.fonts.ready;
  if (window.vicourseUnfoldForPrint) window.vicourseUnfoldForPrint();
  for (const a of document.querySelectorAll("a[href]")) a.href = a.href;
  return document.title;
}
"""


def print_pages(site: Path, documents: list[str],
                executable: str) -> tuple[list[tuple[str, str, bytes]], str]:
    """Print each document's page: (document, title, PDF bytes) in order, and the base URL."""
    from playwright.sync_api import sync_playwright

    printed = []
    with serve(site) as base:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            # Offline: nothing but the local server is fetched.
            context.route("**/*", lambda route: route.continue_()
                          if urlsplit(route.request.url).netloc == urlsplit(base).netloc
                          or route.request.url.startswith(("data:", "blob:"))
                          else route.abort("internetdisconnected"))
            page = context.new_page()
            for doc in documents:
                page.goto(urljoin(base, f"{doc}.html"), wait_until="load")
                title = page.evaluate(PREPARE_JS)
                # page.pdf() lays the page out for print media (the print stylesheet).
                printed.append((doc, title.split(" \u2014 ")[0].strip(), page.pdf(**PDF_OPTIONS)))
            browser.close()
    return printed, base


def assemble(printed: list[tuple[str, str, bytes]], base: str, out: Path) -> int:
    """Join the pages into ``out``; return its number of pages.

    Each document gets a bookmark.  A link to another page of the book, which
    Chromium wrote as a link to the local server, becomes a link to that
    document's first page in the PDF; a link to the same page stays as
    Chromium made it.
    """
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ArrayObject, NameObject, NullObject

    writer = PdfWriter()
    first_page = {}
    for doc, title, data in printed:
        first_page[doc] = len(writer.pages)
        writer.append(PdfReader(io.BytesIO(data)), import_outline=False)
        writer.add_outline_item(title=title, page_number=first_page[doc])
    local = urlsplit(base).netloc
    for page in writer.pages:
        for annotation in page.get("/Annots") or []:
            annotation = annotation.get_object()
            action = annotation.get("/A")
            uri = action.get("/URI") if action is not None else None
            if not uri or urlsplit(str(uri)).netloc != local:
                continue
            target = urldefrag(str(uri))[0][len(base):].removesuffix(".html")
            if target not in first_page:
                # A page outside the book (the search page): no link in print.
                del annotation[NameObject("/A")]
                continue
            destination = writer.pages[first_page[target]].indirect_reference
            del annotation[NameObject("/A")]
            annotation[NameObject("/Dest")] = ArrayObject(
                [destination, NameObject("/XYZ"), NullObject(), NullObject(), NullObject()])
    writer.add_metadata({"/Title": printed[0][1]})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        writer.write(handle)
    return len(writer.pages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=SITE, help="the built HTML book")
    parser.add_argument("--out", type=Path, help=f"the PDF (default: SITE/{PDF_NAME})")
    parser.add_argument("--optional", action="store_true",
                        help="without Chromium, say so and exit 0 instead of failing")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    out = (args.out or site / PDF_NAME).resolve()
    try:
        executable = chromium_executable()
    except ValueError as error:
        print(f"No PDF of the book: {error}", file=sys.stderr)
        return 1
    if executable is None:
        message = (f"No PDF of the book: Chromium not found ($VICOURSE_CHROMIUM unset, "
                   f"none of {', '.join(BROWSER_NAMES)} on PATH). Install it "
                   f"(`apt-get install chromium` on Debian), then run `make pdf`.")
        print(message, file=sys.stderr)
        return 0 if args.optional else 1
    documents = [doc for doc in toc_documents() if (site / f"{doc}.html").is_file()]
    if not documents:
        print(f"No page of _toc.yml is built in {site}: build the book first (`make book`).",
              file=sys.stderr)
        return 1
    start = time.perf_counter()
    printed, base = print_pages(site, documents, executable)
    pages = assemble(printed, base, out)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {pages} pages "
          f"from {len(documents)} documents in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
