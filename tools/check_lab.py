"""Check that the documented JupyterLab commands work: ``make lab`` and ``make kernel``.

Starts JupyterLab exactly as ``make lab`` does (rooted at the repository, on
the first chapter), headless on 127.0.0.1 with a random token, after
registering the course kernel as ``make kernel`` does, and checks that

* the server answers (``/api/status``);
* its file browser is rooted at the repository, not at ``chapters/``;
* the kernel specs list ``python3`` (the course environment's Python, which
  has ``vicourse``) and the registered ``vicourse`` kernel, which runs this
  environment's Python;
* JupyterLab loads jupyterlab-myst, so theorems, exercises, solutions and
  equation references render;
* the first chapter opens (``/api/contents/chapters/01_elbo.ipynb``).

The kernel is registered in a temporary Jupyter data folder, so the check
leaves nothing behind.  ``make lab-check`` runs it; so does CI (``.ci/run``).

Usage: python tools/check_lab.py
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def check() -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory(prefix="vicourse-lab-") as tmp:
        env = dict(os.environ, JUPYTER_DATA_DIR=f"{tmp}/data", JUPYTER_RUNTIME_DIR=f"{tmp}/runtime",
                   JUPYTER_CONFIG_DIR=f"{tmp}/config")
        # `make kernel`
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "vicourse",
                        "--display-name", "Python 3 (vicourse)"],
                       env=env, check=True, capture_output=True, cwd=ROOT)
        port, token = _free_port(), secrets.token_hex(16)
        # `make lab`, headless
        command = [str(BIN / "jupyter"), "lab", f"--ServerApp.root_dir={ROOT}", "chapters/01_elbo.ipynb",
                   "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")   # containers and CI run as root
        log = open(f"{tmp}/lab.log", "w")
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    status, _ = _get(f"{base}/api/status", token)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        return [f"JupyterLab did not answer on {base} within {STARTUP_S} s:\n"
                                + Path(f"{tmp}/lab.log").read_text()[-2000:]]
                    time.sleep(0.5)
            _, body = _get(f"{base}/api/contents/", token)
            names = {item["name"] for item in json.loads(body)["content"]}
            if not {"chapters", "README.md", "Makefile"} <= names:
                problems.append(f"the file browser is not rooted at the repository: it shows {sorted(names)}")
            _, body = _get(f"{base}/api/kernelspecs", token)
            specs = json.loads(body)["kernelspecs"]
            if "python3" not in specs:
                problems.append(f"no python3 kernel: {sorted(specs)}")
            if "vicourse" not in specs:
                problems.append(f"the registered kernel 'vicourse' is not listed: {sorted(specs)}")
            else:
                argv0 = Path(specs["vicourse"]["spec"]["argv"][0])
                if argv0.resolve() != Path(sys.executable).resolve():
                    problems.append(f"the vicourse kernel runs {argv0}, not {sys.executable}")
            _, body = _get(f"{base}/lab/tree/chapters/01_elbo.ipynb", token)
            if b"jupyterlab-myst" not in body:
                problems.append("JupyterLab does not load the jupyterlab-myst extension")
            status, body = _get(f"{base}/api/contents/chapters/01_elbo.ipynb", token)
            if status != 200 or json.loads(body).get("type") != "notebook":
                problems.append("chapters/01_elbo.ipynb does not open as a notebook")
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    return problems


def main() -> int:
    start = time.perf_counter()
    problems = check()
    for problem in problems:
        print(problem)
    if not problems:
        print(f"JupyterLab: the server answers, is rooted at the repository, lists the python3 and "
              f"vicourse kernels and loads jupyterlab-myst ({time.perf_counter() - start:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
