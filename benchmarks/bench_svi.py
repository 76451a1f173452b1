"""Benchmark: stochastic VI (vicourse.svi), how a step's cost grows with n, and online LDA
against scikit-learn's.

1. ``svi.bayesian_gmm``: the time and the peak memory of one SVI step (a minibatch of
   1000 points, Bishop's mixture with K = 10 components in d = 8 dimensions) for
   n = 1e4, 1e5 and 1e6 points.  A step should cost the same whatever n is: each
   size is timed against n = 1e4 in one process (the two alternating), and the
   ratio of the times per step is the recorded ratio (target <= 1.3); the ratio
   of the peak memories is reported beside it (target <= 1.3).  Only the steps are
   measured, through the routine's own step function (with BLAS on one thread,
   as the routine runs it): the start (the global factor set from the starting
   responsibilities, one pass over the data) is outside them.  n = 1e7 would need
   1.3 GiB for the data and the starting responsibilities alone, more than this
   benchmark may take on a shared machine.

2. ``svi.online_lda`` against scikit-learn's ``LatentDirichletAllocation.partial_fit``
   on the same minibatches of the same corpus, from the same random draws (a
   ``RandomState`` seed replays scikit-learn's), one pass each; both then set every
   document's topic proportions for the final topics (ours inside ``online_lda``,
   scikit-learn's with ``transform``).  The ratio of the totals is the ratio per
   minibatch (target <= 1.0).  The fits are checked to agree before timing.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_svi.py``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import LatentDirichletAllocation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import compare, peak_python_memory_mb, record  # noqa: E402
from bench_cavi import make_problem  # noqa: E402

from vicourse import _vbgmm, svi  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
BATCH, STEPS = 1000, 200
TARGET = 1.3
D, V, K_LDA, LDA_BATCH = 5000, 2000, 10, 256


def svi_steps(n: int, seed: int = 0):
    """A zero-argument callable running STEPS steps of svi.bayesian_gmm on n points."""
    X, resp_init = make_problem(n, seed=seed)
    X, resp, prior = _vbgmm.check_problem(X, resp_init, alpha0=None, beta0=1.0, m0=None, W0=None,
                                          nu0=None, reg_covar=1e-6)
    stats = _vbgmm.stats_from_resp(X, prior.shift, resp)
    start = (_vbgmm.m_step(prior, stats), stats)

    def run():
        rng = np.random.default_rng(seed)
        params, state = start
        with _vbgmm.one_blas_thread():           # as svi.bayesian_gmm runs its steps
            for t in range(1, STEPS + 1):
                params, state, _, _ = svi._svi_step(X, prior, params, state, t, rng=rng,
                                                    batch_size=BATCH, tau0=1.0, kappa=0.7)
        return params

    return run


def corpus(seed: int = 0):
    """Documents drawn from LDA: 10 sparse topics over 2000 words, about 100 words each."""
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(V, 0.05), size=K_LDA)
    proportions = rng.dirichlet(np.full(K_LDA, 0.3), size=D)
    rows = [rng.multinomial(m, p @ topics) for m, p in zip(rng.poisson(100, size=D), proportions,
                                                          strict=True)]
    return sp.csr_matrix(np.stack(rows).astype(np.float64))


def lda_fitters(counts, state: int = 3):
    settings = dict(learning_offset=10.0, learning_decay=0.7)

    def ours():
        return svi.online_lda(counts, K_LDA, batch_size=LDA_BATCH, tau0=10.0, kappa=0.7,
                              max_iter=1, shuffle=False, seed=np.random.RandomState(state))

    def peer():
        model = LatentDirichletAllocation(n_components=K_LDA, learning_method="online",
                                          batch_size=LDA_BATCH, total_samples=counts.shape[0],
                                          random_state=state, **settings)
        for start in range(0, counts.shape[0], LDA_BATCH):
            model.partial_fit(counts[start:start + LDA_BATCH])
        return model, model._unnormalized_transform(counts)

    return ours, peer


def main() -> None:
    # 1. the time and memory of an SVI step against n
    smallest = svi_steps(SIZES[0])
    memory = {n: peak_python_memory_mb(svi_steps(n)) for n in SIZES}
    rows = []
    for n in SIZES[1:]:
        timing = compare(svi_steps(n), smallest, repeats=5, warmup=1)
        rows.append({
            "case": f"n={n} against n={SIZES[0]}, {STEPS} steps of {BATCH} points",
            **timing,
            "extra": {
                "time per step at this n / at n = 1e4 (ms)":
                    f"{1e3 * timing['ours_s'] / STEPS:.2f} / {1e3 * timing['peer_s'] / STEPS:.2f}",
                "peak memory of the steps at this n / at n = 1e4 (MiB)":
                    f"{memory[n]:.2f} / {memory[SIZES[0]]:.2f} (ratio {memory[n] / memory[SIZES[0]]:.2f}, "
                    f"target <= {TARGET})",
            },
        })
    record(
        "svi",
        title="A step of stochastic VI against n (vicourse.svi.bayesian_gmm)",
        peer="the same steps on the smallest data set, n = 10000",
        sizes=(f"Bishop's mixture, K = 10 components in d = 8 dimensions, minibatches of {BATCH} "
               f"points, {STEPS} steps; n = {', '.join(str(n) for n in SIZES)}."),
        rows=rows,
        target=TARGET,
        notes=("The ratio compares the time of the same number of steps on n points and on "
               "10000 points: a step costs O(|B|), so it should stay near 1. Peak memory is what "
               "numpy allocates during the steps (tracemalloc), the data and the starting "
               "statistics allocated beforehand."),
    )
    worst = max(memory[n] / memory[SIZES[0]] for n in SIZES)
    print(f"svi: peak memory per step at most {worst:.2f} times that at n = {SIZES[0]} "
          f"({'meets' if worst <= TARGET else 'MISSES'} target <= {TARGET})")

    # 2. online LDA against scikit-learn's partial_fit on the same minibatches
    counts = corpus()
    ours, peer = lda_fitters(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit, (model, _) = ours(), peer()
    agreement = float(np.max(np.abs(fit.lambda_ - model.components_) / model.components_))
    assert agreement < 1e-5, agreement
    timing = compare(ours, peer, repeats=3, warmup=0)
    batches = -(-D // LDA_BATCH)
    record(
        "svi_lda",
        title="Online LDA (vicourse.svi.online_lda)",
        peer="scikit-learn's LatentDirichletAllocation.partial_fit on the same minibatches, then transform",
        sizes=(f"{D} documents drawn from LDA ({K_LDA} topics over {V} words, about 100 words each), "
               f"minibatches of {LDA_BATCH} documents, one pass, the same random draws."),
        rows=[{
            "case": f"{batches} minibatches of {LDA_BATCH} documents",
            **timing,
            "extra": {
                "time per minibatch, vicourse / scikit-learn (ms)":
                    f"{1e3 * timing['ours_s'] / batches:.1f} / {1e3 * timing['peer_s'] / batches:.1f}",
                "largest relative difference of the topics": f"{agreement:.1e}",
            },
        }],
        target=1.0,
        notes=("Both run the same local steps (each document until its proportions change by "
               "less than 1e-3 on average, at most 100 iterations) and the same global steps, and "
               "both finish with one local step per document for the final topics. vicourse "
               "updates a minibatch's documents together with array operations and also records "
               "an estimate of the ELBO per minibatch; scikit-learn loops over documents."),
    )


if __name__ == "__main__":
    main()
