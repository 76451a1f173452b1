"""Fixtures for the browser check of the built book (``make browser``).

The built site (``_build/html``) is served on 127.0.0.1 from a background
thread, and Debian's Chromium is driven headless through Playwright with every
request that is not to that local server aborted: a page passes only if it
works for a reader with no network.  One browser, one context and one tab are
shared by the whole session; each page of the site is loaded once and every
check reads the same report of that visit (``visit`` in ``test_book.py``).

Without Chromium the tests are skipped with a reason that ``pytest -rs``
prints; without a built site collection fails (see ``test_book.py``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
# $VICOURSE_SITE checks a book built elsewhere (jupyter-book build --path-output).
SITE = Path(os.environ.get("VICOURSE_SITE") or ROOT / "_build" / "html").resolve()

# Chromium, the local server and the reading order, shared with tools/book_pdf.py.
_spec = importlib.util.spec_from_file_location("book_site", ROOT / "tools" / "book_site.py")
book_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_site)

# The width at which code and figures must fit the column (test_book.py's DESKTOP).
DESKTOP = {"width": 1400, "height": 900}
# Per page load or wait: generous for a loaded 2-core machine (a chapter page
# takes 1-8 s there), short enough that a hung page fails instead of stalling.
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def site_url():
    """Base URL (ending in ``/``) of ``_build/html`` served on a free local port."""
    with book_site.serve(SITE) as base:
        yield base


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium; skips the browser tests, with the reason, if there is none."""
    try:
        executable = book_site.chromium_executable()
    except ValueError as error:
        pytest.fail(str(error), pytrace=False)
    if executable is None:
        pytest.skip(f"Chromium not found ($VICOURSE_CHROMIUM unset, none of "
                    f"{', '.join(book_site.BROWSER_NAMES)} "
                    f"on PATH): the browser check of the built book did NOT run. Install it with "
                    f"`apt-get install chromium` (CI's .ci/run does this).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=book_site.CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class NetworkLog:
    """What the tab asked for and what went wrong, since the last :meth:`clear`."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)        # requests that left localhost
    failed_local: list[str] = field(default_factory=list)   # local requests that failed or 4xx/5xx

    in_flight: dict = field(default_factory=dict)            # request -> url, not yet answered

    def clear(self):
        for entries in (self.console_errors, self.page_errors, self.blocked, self.failed_local):
            entries.clear()


@pytest.fixture(scope="session")
def offline_context(browser, site_url):
    """A browser context in which every request not to the local server is aborted."""
    context = browser.new_context(viewport=DESKTOP, service_workers="block")
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    local = urlsplit(site_url).netloc
    log = NetworkLog()

    def route(route):
        url = route.request.url
        if urlsplit(url).netloc == local or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            log.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", route)
    context.vicourse_log = log
    yield context
    context.close()


def _wait_until_idle(page, log: NetworkLog, quiet_ms: int = 200) -> None:
    """Return once no request has been pending for ``quiet_ms``; fail after PAGE_TIMEOUT_MS.

    Like Playwright's "networkidle" but shorter, and it names what is stuck.
    """
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    quiet_since = None
    while True:
        now = time.monotonic()
        if log.in_flight:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_ms / 1000:
            return
        if now > deadline:
            raise AssertionError(f"{page.url}: requests still pending after {PAGE_TIMEOUT_MS} ms: "
                                 f"{sorted(log.in_flight.values())}")
        page.wait_for_timeout(50)


@pytest.fixture(scope="session")
def tab(offline_context, site_url):
    """The one tab every check uses, logging console errors and failed requests."""
    page = offline_context.new_page()
    log = offline_context.vicourse_log
    local = urlsplit(site_url).netloc

    def on_console(message):
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            log.console_errors.append(f"{message.text} (at {where})" if where else message.text)

    def on_response(response):
        if urlsplit(response.url).netloc == local and response.status >= 400:
            log.failed_local.append(f"HTTP {response.status} {response.url}")

    def on_request_failed(request):
        log.in_flight.pop(request, None)
        if urlsplit(request.url).netloc == local:
            log.failed_local.append(f"{request.failure} {request.url}")

    page.on("request", lambda request: log.in_flight.__setitem__(request, request.url))
    page.on("requestfinished", lambda request: log.in_flight.pop(request, None))
    page.on("console", on_console)
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    page.vicourse_log = log
    page.vicourse_wait_idle = lambda quiet_ms=200: _wait_until_idle(page, log, quiet_ms)
    yield page
    page.close()
