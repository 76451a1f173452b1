"""Shared machinery of the benchmark scripts.

Each ``benchmarks/bench_*.py`` times a vicourse routine against its peer in one
process with :func:`compare`, then calls :func:`record`, which stores the
result in ``benchmarks/results/<name>.json`` and rewrites the book's
performance page (``appendix/performance.md``) from every stored result.
The page is never edited by hand: run ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import tracemalloc
from datetime import date
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "appendix" / "performance.md"


def compare(ours, peer, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Time two zero-argument callables in turn (ours, peer, ours, peer, ...).

    Alternating the two and taking the ratio pair by pair keeps the comparison
    fair when the machine's speed drifts during the run.

    Returns
    -------
    dict with ``ours_s`` and ``peer_s`` (median seconds), ``ratio`` (median of
    the per-pair ratios ours/peer), ``ratio_min``, ``ratio_max`` and ``repeats``.
    """
    for _ in range(warmup):
        ours()
        peer()
    ours_times, peer_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        peer()
        peer_times.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(ours_times, peer_times, strict=True)]
    return {
        "ours_s": statistics.median(ours_times),
        "peer_s": statistics.median(peer_times),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "repeats": repeats,
    }


def steps_row(case: str, result: dict, steps: int) -> dict:
    """A row for :func:`record` of a fit timed over ``steps`` steps: ``result`` of
    :func:`compare`, and both sides' steps per second."""
    return {
        "case": case,
        **result,
        "extra": {
            "steps per second (vicourse / plain loop)":
                f"{steps / result['ours_s']:.0f} / {steps / result['peer_s']:.0f}",
        },
    }


def peak_python_memory_mb(fn) -> float:
    """Peak memory (MiB) allocated through Python's allocator while ``fn()`` runs.

    numpy reports its array buffers to :mod:`tracemalloc`, so this covers
    numpy code; torch's own allocator is not seen.
    """
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _versions() -> dict:
    names = ["numpy", "scipy", "scikit-learn", "torch"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def record(name: str, *, title: str, peer: str, sizes: str, rows: list[dict],
           target: float, notes: str = "") -> None:
    """Store one benchmark's result and rewrite the performance page.

    Parameters
    ----------
    name : str
        File stem of the result (``benchmarks/results/<name>.json``).
    title : str
        What was timed, e.g. ``"EM for a Gaussian mixture (vicourse.em.fit_gmm)"``.
    peer : str
        What it was compared with.
    sizes : str
        The data sizes and settings, in words.
    rows : list of dict
        One per case, each with ``case`` and the keys returned by :func:`compare`,
        plus any extra numbers to show (``"extra": {"label": "value"}``).
    target : float
        The largest acceptable median ratio ours/peer.
    notes : str
        Anything a reader needs to interpret the numbers.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "name": name, "title": title, "peer": peer, "sizes": sizes, "rows": rows,
        "target": target, "notes": notes, "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "versions": _versions(),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_page()
    for row in rows:
        verdict = "meets" if row["ratio"] <= target else "MISSES"
        print(f"{name} [{row['case']}]: ours {row['ours_s']:.4f} s, peer {row['peer_s']:.4f} s, "
              f"ratio {row['ratio']:.3f} ({verdict} target <= {target})")


def write_page() -> None:
    """Rewrite ``appendix/performance.md`` from every stored result."""
    lines = [
        "# Performance",
        "",
        "```{note}",
        "This page is written by the benchmark scripts in `benchmarks/` (`make bench`);",
        "do not edit it by hand. Each routine is timed against its peer in one process,",
        "the two alternating, and the ratio is the median of the per-pair ratios",
        "(below 1 means vicourse is faster).",
        "```",
        "",
    ]
    results = sorted(RESULTS.glob("*.json"))
    if not results:
        lines.append("No benchmark has been run yet.")
    for path in results:
        r = json.loads(path.read_text())
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines += [
            f"## {r['title']}",
            "",
            f"Compared with {r['peer']}. {r['sizes']}",
            "",
            "| case | vicourse (s) | peer (s) | ratio (median) | ratio range | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in r["rows"]:
            lines.append(
                f"| {row['case']} | {row['ours_s']:.4f} | {row['peer_s']:.4f} | "
                f"{row['ratio']:.3f} | {row['ratio_min']:.3f}–{row['ratio_max']:.3f} | "
                f"≤ {r['target']} |"
            )
        extras = [(row["case"], k, v) for row in r["rows"] for k, v in row.get("extra", {}).items()]
        if extras:
            lines.append("")
            lines += [f"- {case}: {k} = {v}" for case, k, v in extras]
        lines += [
            "",
            f"Measured {r['date']} on {r['machine']} with {versions}; "
            f"median of {r['rows'][0]['repeats']} runs each.",
        ]
        if r.get("notes"):
            lines += ["", r["notes"]]
        lines.append("")
    PAGE.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    write_page()
