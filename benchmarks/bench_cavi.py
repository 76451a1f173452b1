"""Benchmark: vicourse.cavi.bayesian_gmm against scikit-learn's BayesianGaussianMixture.

Same data, same priors (scikit-learn's defaults), same initial responsibilities,
50 sweeps each (tol=0, so neither stops early), timed in turn in one process.
scikit-learn is handed the responsibilities by replacing ``_initialize_parameters``
on the instance: it then runs one M-step from them and 50 E/M iterations,
exactly the sweeps of ``bayesian_gmm`` (see tests/test_cavi.py).  The ratio of
total times is therefore the ratio of times per iteration.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_cavi.py``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.mixture import BayesianGaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import compare, peak_python_memory_mb, record  # noqa: E402

from vicourse import cavi  # noqa: E402

N, D, K, ITERATIONS = 100_000, 8, 10, 50


def make_problem(seed: int = 0):
    """Ten anisotropic Gaussian clusters in 8-D and random starting responsibilities."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(K, D))
    scales = rng.normal(size=(K, D, D)) / np.sqrt(D) + np.eye(D)
    labels = rng.integers(0, K, size=N)
    X = centres[labels] + np.einsum("nij,nj->ni", scales[labels], rng.standard_normal((N, D)))
    resp_init = rng.dirichlet(np.ones(K), size=N)
    return X, resp_init


def fitters(X, resp_init, iterations):
    """Zero-argument callables running each implementation for ``iterations`` sweeps."""

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0: "did not converge" is expected
            return cavi.bayesian_gmm(X, resp_init, max_iter=iterations, tol=0.0)

    def peer():
        model = BayesianGaussianMixture(
            n_components=resp_init.shape[1], covariance_type="full",
            weight_concentration_prior_type="dirichlet_distribution",
            reg_covar=0.0, tol=0.0, max_iter=iterations)
        model._initialize_parameters = lambda X, random_state, xp=None: model._initialize(X, resp_init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.fit(X)

    return ours, peer


def main() -> None:
    X, resp_init = make_problem()

    # Check that the two do the same computation, and measure peak memory, on short runs
    # (memory does not grow with the number of sweeps); this keeps the whole script short.
    short_ours, short_peer = fitters(X, resp_init, 3)
    fits = {}
    memory = {"ours": peak_python_memory_mb(lambda: fits.setdefault("ours", short_ours())),
              "peer": peak_python_memory_mb(lambda: fits.setdefault("peer", short_peer()))}
    agreement = float(np.max(np.abs(fits["ours"].m - fits["peer"].means_))
                      / np.abs(fits["peer"].means_).max())
    assert agreement < 1e-6, agreement

    ours, peer = fitters(X, resp_init, ITERATIONS)
    timing = compare(ours, peer, repeats=5, warmup=0)
    row = {
        "case": f"n={N}, d={D}, K={K}, {ITERATIONS} sweeps",
        **timing,
        "extra": {
            "time per sweep, vicourse (ms)": f"{1e3 * timing['ours_s'] / ITERATIONS:.1f}",
            "time per sweep, scikit-learn (ms)": f"{1e3 * timing['peer_s'] / ITERATIONS:.1f}",
            "peak numpy memory, vicourse (MiB)": f"{memory['ours']:.0f}",
            "peak numpy memory, scikit-learn (MiB)": f"{memory['peer']:.0f}",
            "max relative difference of the means (3 sweeps)": f"{agreement:.1e}",
        },
    }
    record(
        "cavi",
        title="Variational Gaussian mixture (vicourse.cavi.bayesian_gmm)",
        peer="scikit-learn's BayesianGaussianMixture (dirichlet_distribution, full covariances)",
        sizes=(f"n = {N} points in d = {D} dimensions, K = {K} components, {ITERATIONS} sweeps "
               "from the same random responsibilities, scikit-learn's default priors."),
        rows=[row],
        target=1.0,
        notes=("Both run the same sweeps (one M-step from the initial responsibilities, then "
               f"{ITERATIONS} E/M sweeps), so the ratio of total times is the ratio per sweep. "
               "vicourse forms the products x x' once and writes each sweep as a few matrix "
               "products; scikit-learn loops over components."),
    )


if __name__ == "__main__":
    main()
