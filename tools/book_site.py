"""What the PDF printer and the browser check share: the reading order, Chromium, a local server.

``tools/book_pdf.py`` and ``tests/browser/`` both open the built site in a
headless Chromium served from 127.0.0.1 and walk its pages in the order of
``_toc.yml``; this module holds that once.  (The root ``conftest.py`` reads
``_toc.yml`` with its own few lines, so that it can be copied to another
course alone.)
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Chromium flags for a headless run in a container: no sandbox (we run as
# root), no GPU, no background traffic (updates, safe browsing, field trials).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def toc_documents(root: Path = ROOT) -> list[str]:
    """The documents of ``_toc.yml`` in reading order (root first), without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    documents = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                documents.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", doc) for doc in documents]


def chromium_executable() -> str | None:
    """``$VICOURSE_CHROMIUM``, else the first of BROWSER_NAMES on PATH, else None.

    Raises ``ValueError`` if ``$VICOURSE_CHROMIUM`` is set but is not a file.
    """
    configured = os.environ.get("VICOURSE_CHROMIUM")
    if configured:
        if not Path(configured).is_file():
            raise ValueError(f"$VICOURSE_CHROMIUM is {configured!r}, which is not a file")
        return configured
    return next(filter(None, map(shutil.which, BROWSER_NAMES)), None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files over keep-alive HTTP/1.1 without logging every request to stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    # The default listen backlog (5) overflows when a page asks for its fonts,
    # images and scripts at once; dropped connections are retried by the
    # browser only after 1, 2, 4, ... seconds, which made page loads flaky.
    request_queue_size = 128


@contextlib.contextmanager
def serve(site: Path):
    """Serve ``site`` on a free port of 127.0.0.1; yield its base URL (ending in ``/``)."""
    server = _Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
