"""Benchmark: vicourse.em.fit_gmm against scikit-learn's GaussianMixture (Chapter 2).

Same data, same start (weights, means, precisions), full covariances,
n = 100 000, d = 8, K = 8, 50 iterations with tol = 0, so both run exactly 50
EM iterations.  Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_em.py``);
it rewrites ``appendix/performance.md``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

from vicourse.em import fit_gmm  # noqa: E402

N, D, K, ITERATIONS, SEED = 100_000, 8, 8, 50, 0


def make_problem(seed: int = SEED):
    """A seeded 8-component mixture sample and a start: equal weights, K data points as
    means, the data covariance for every component."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(K, D))
    factors = rng.normal(size=(K, D, D)) / np.sqrt(D) + 0.5 * np.eye(D)
    labels = rng.integers(K, size=N)
    X = centres[labels] + np.einsum("nab,nb->na", factors[labels], rng.normal(size=(N, D)))
    weights = np.full(K, 1.0 / K)
    means = X[rng.choice(N, K, replace=False)]
    covariances = np.tile(np.cov(X.T), (K, 1, 1))
    return X, weights, means, covariances


def main() -> None:
    X, weights, means, covariances = make_problem()
    precisions = np.linalg.inv(covariances)

    def ours():
        return fit_gmm(X, weights, means, covariances, max_iter=ITERATIONS, tol=0.0)

    def peer():
        model = GaussianMixture(n_components=K, covariance_type="full", weights_init=weights,
                                means_init=means, precisions_init=precisions,
                                max_iter=ITERATIONS, tol=0.0, reg_covar=1e-6, n_init=1)
        with warnings.catch_warnings():
            # tol=0 never converges by design.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(X)

    # Check that both compute the same fit before timing them.
    a, b = ours(), peer()
    for name, x, y in [("weights", a.weights, b.weights_), ("means", a.means, b.means_),
                       ("covariances", a.covariances, b.covariances_)]:
        if not np.allclose(x, y, rtol=1e-8, atol=1e-10):
            raise SystemExit(f"fit_gmm and GaussianMixture disagree on {name}")

    result = _report.compare(ours, peer, repeats=5, warmup=0)   # the check above warmed both
    memory_ours = _report.peak_python_memory_mb(ours)
    memory_peer = _report.peak_python_memory_mb(peer)
    result["case"] = f"n={N}, d={D}, K={K}, {ITERATIONS} iterations"
    result["extra"] = {
        "ratio (median of per-pair ratios)": f"{result['ratio']:.3f}",
        "peak memory, vicourse (MiB)": f"{memory_ours:.1f}",
        "peak memory, scikit-learn (MiB)": f"{memory_peer:.1f}",
    }
    _report.record(
        "em",
        title="EM for a Gaussian mixture (vicourse.em.fit_gmm)",
        peer="sklearn.mixture.GaussianMixture(covariance_type='full') from the same start",
        sizes=(f"n = {N} points, d = {D}, K = {K} full-covariance components, {ITERATIONS} "
               "iterations with tol = 0 (both run all of them); the fits agree to 1e-8."),
        rows=[result],
        target=1.0,
        notes=("Peak memory is what numpy allocates through Python during one fit "
               "(tracemalloc); the input data (6.1 MiB) are not counted. fit_gmm keeps the "
               "sufficient statistics T(x) = (1, x, xx^T) of every point, n x 45 numbers."),
    )


if __name__ == "__main__":
    main()
