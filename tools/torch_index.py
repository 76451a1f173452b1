"""Print pip's option for PyTorch's CPU wheel index, if that index answers.

``make env`` installs torch from PyTorch's CPU wheel index so that pip never
picks a CUDA build (several GB; PyPI's ``torch`` is one on Linux x86_64).  The
index is one setting, ``TORCH_INDEX_URL`` (the Makefile's default is
https://download.pytorch.org/whl/cpu; set it to a mirror, or to nothing to
let pip's own configuration choose).  This asks the index once, with a short
timeout, and prints ``--extra-index-url URL`` if it answers.  If it does not,
it prints nothing and explains on stderr, so the install goes on with pip's
own indexes instead of retrying an unreachable host for every package (about
8 s each).

Usage: python tools/torch_index.py URL
"""

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 10


def reachable(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """None if ``url`` + ``torch/`` answers; otherwise why not."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error))


def main(argv: list[str]) -> int:
    url = argv[0].strip() if argv else ""
    if not url:
        print("TORCH_INDEX_URL is empty: torch comes from pip's own configuration.",
              file=sys.stderr)
        return 0
    why = reachable(url)
    if why is None:
        print(f"--extra-index-url {url}")
    else:
        print(f"note: PyTorch's CPU wheel index {url} did not answer ({why}); torch comes "
              f"from pip's own configuration instead. Where that is PyPI, on Linux that is a "
              f"CUDA build of several GB: set TORCH_INDEX_URL to a reachable copy of the index.",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
