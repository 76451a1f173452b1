"""Tests of vicourse.svi (Chapter 8): stochastic VI against batch CAVI, online LDA against
scikit-learn's, each estimator against the whole-data quantity it estimates."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn.decomposition._lda as sklearn_lda
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    bad_scalars,
    bad_seeds,
    for_optional,
    huge_ints,
    not_bools,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.special import digamma, logsumexp
from sklearn.cluster import kmeans_plusplus
from sklearn.decomposition import LatentDirichletAllocation
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

from vicourse import ConvergenceWarning, _vbgmm, cavi, svi, vi

# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def _clusters(n, seed=0, separation=2.5):
    """Three elongated Gaussian clusters in 2-D."""
    rng = np.random.default_rng(seed)
    centres = separation * np.array([[-1.0, -0.6], [0.0, 1.0], [1.0, -0.3]])
    shapes = np.array([[[1.0, 0.0], [0.5, 0.6]], [[0.8, 0.0], [-0.3, 0.5]], [[0.6, 0.0], [-0.3, 0.9]]])
    labels = rng.integers(0, 3, size=n)
    return centres[labels] + np.einsum("nij,nj->ni", shapes[labels], rng.standard_normal((n, 2)))


def _kmeanspp_resp(X, K, seed):
    """Hard responsibilities to the nearest of K k-means++ centres (scikit-learn's default start)."""
    centres, _ = kmeans_plusplus(X, K, random_state=seed)
    nearest = ((X[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
    return np.eye(K)[nearest]


def _corpus(D=300, V=120, K=4, length=50, seed=0):
    """Documents drawn from the LDA model with sparse topics: counts (CSR) and the true topics."""
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(V, 0.05), size=K)
    proportions = rng.dirichlet(np.full(K, 0.3), size=D)
    counts = np.stack([rng.multinomial(m, p @ topics)
                       for m, p in zip(rng.poisson(length, size=D), proportions, strict=True)])
    return sp.csr_matrix(counts.astype(float)), topics


# ---------------------------------------------------------------------------
# 1. the mixture: SVI against batch CAVI
# ---------------------------------------------------------------------------


def test_svi_with_the_whole_data_and_unit_steps_is_cavi_sweep_for_sweep(monkeypatch):
    # small blocks, so that both fits go through several blocks per pass
    monkeypatch.setattr(_vbgmm, "_BLOCK_ENTRIES", 3 * 2 * 37)
    X = _clusters(400, seed=1)
    resp_init = np.random.default_rng(2).dirichlet(np.ones(3), size=400)
    fit = svi.bayesian_gmm(X, resp_init, batch_size=400, steps=6, tau0=1.0, kappa=0.0, seed=0,
                           snapshot_every=1)
    np.testing.assert_array_equal(fit.info["step_sizes"], np.ones(6))
    for step, snapshot in enumerate(fit.info["snapshots"], start=1):
        sweeps = cavi.bayesian_gmm(X, resp_init, max_iter=step, tol=0)
        assert snapshot.n_iter == step
        for name in ("alpha", "beta", "m", "W", "nu"):
            np.testing.assert_allclose(getattr(snapshot, name), getattr(sweeps, name), rtol=1e-12,
                                       atol=1e-12 * np.abs(getattr(sweeps, name)).max(), err_msg=name)


def test_svi_with_minibatches_reaches_the_batch_optimum():
    n = 5000
    X = _clusters(n, seed=3)
    resp_init = _kmeanspp_resp(X, 3, seed=0)
    batch = cavi.bayesian_gmm(X, resp_init, max_iter=500, tol=1e-10)
    assert batch.converged
    fit = svi.bayesian_gmm(X, resp_init, batch_size=100, steps=1500, tau0=1.0, kappa=0.7, seed=1)
    # within 1e-3 nats per point of the batch optimum's ELBO, on the whole data
    gap = (batch.elbos[-1] - fit.info["elbo"]) / n
    assert abs(gap) < 1e-3, gap
    # info["elbo"] is the whole-data ELBO of the returned fit, as bayesian_gmm_elbo computes it
    # (that function is checked against scikit-learn's per-point log-sum-exp below).
    assert fit.info["elbo"] == pytest.approx(svi.bayesian_gmm_elbo(X, fit), rel=1e-12)
    np.testing.assert_allclose(fit.weights, batch.weights, atol=0.01)
    np.testing.assert_allclose(fit.m, batch.m, atol=0.05)


def test_minibatch_elbo_estimate_is_unbiased_for_the_whole_data_elbo():
    # At a fixed global factor, the minibatch estimate (local terms scaled by n / |B|) averages to
    # the ELBO of that factor with every q(z_n) optimal; error budget 4 standard errors.
    n, B, draws = 600, 20, 2000
    X = _clusters(n, seed=4)
    fit = cavi.bayesian_gmm(X, _kmeanspp_resp(X, 3, seed=1), max_iter=2, tol=0)
    exact = svi.bayesian_gmm_elbo(X, fit)
    prior, params = _vbgmm.from_fit(fit.alpha, fit.beta, fit.m, fit.W, fit.nu, alpha0=fit.alpha0,
                                    beta0=fit.beta0, m0=fit.m0, W0=fit.W0, nu0=fit.nu0)
    stats = _vbgmm.empty_stats(3, 2)
    rng = np.random.default_rng(5)
    estimates = np.array([svi._svi_step(X, prior, params, stats, 1, rng=rng, batch_size=B, tau0=1.0,
                                        kappa=0.7)[2] for _ in range(draws)])
    se = estimates.std(ddof=1) / np.sqrt(draws)
    assert abs(estimates.mean() - exact) < 4 * se, (estimates.mean() - exact, se)
    assert se > 0


def _sklearn_model(fit):
    """scikit-learn's BayesianGaussianMixture holding the global factor of ``fit``.

    Mapping (see tests/test_bayesian_gmm.py): weight_concentration_ = alpha,
    mean_precision_ = beta, means_ = m, degrees_of_freedom_ = nu, and
    covariances_ = W^-1 / nu, whose inverse has the Cholesky factor scikit-learn uses.
    """
    model = BayesianGaussianMixture(n_components=fit.alpha.shape[0], covariance_type="full",
                                    weight_concentration_prior_type="dirichlet_distribution")
    _set_global_factor(model, fit.alpha, fit.beta, fit.m, np.linalg.inv(fit.W), fit.nu)
    return model


def _set_global_factor(model, alpha, beta, m, W_inv, nu):
    model.weight_concentration_, model.mean_precision_, model.means_ = alpha, beta, m
    model.degrees_of_freedom_ = nu
    model.covariances_ = W_inv / nu[:, None, None]
    model.precisions_cholesky_ = _compute_precision_cholesky(model.covariances_, "full")


def test_whole_data_elbo_data_terms_are_one_logsumexp_per_point():
    # L(lambda) = sum_i log sum_k exp(E[log pi_k] + E[log N(x_i | mu_k, Lambda_k^-1)]) - KL terms
    # that do not involve the data.  The difference of the bound on X and on its first rows is
    # then the log-sum-exp of the other rows, which scikit-learn's E-step computes (its
    # _estimate_weighted_log_prob is E[log pi_k] + E[log N(x_i | ...)], Bishop's (10.64)-(10.66)).
    X = _clusters(500, seed=12)
    fit = cavi.bayesian_gmm(X, _kmeanspp_resp(X, 3, seed=2), max_iter=3, tol=0)
    weighted = _sklearn_model(fit)._estimate_weighted_log_prob(X[200:])
    expected = logsumexp(weighted, axis=1).sum()
    ours = svi.bayesian_gmm_elbo(X, fit) - svi.bayesian_gmm_elbo(X[:200], fit)
    assert ours == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("batch_size, kappa", [(40, 0.7), (300, 0.0)])
def test_a_step_moves_the_natural_parameters_towards_the_scaled_minibatch_update(batch_size, kappa):
    # Independent route for eq-svi-step: scikit-learn's E-step gives the minibatch's
    # responsibilities at the current global factor; the natural parameters, as raw moments
    # (alpha, beta, beta m, W^-1 + beta m m', nu), are the prior's plus the statistics scaled by
    # n / |B|, and the step interpolates them with rho_t.  The minibatches are replayed from
    # the seed (sorted draws without replacement, as svi.bayesian_gmm makes them).  With
    # |B| = n and kappa = 0 every step is a CAVI sweep.
    X = _clusters(300, seed=13)
    n, K = X.shape[0], 3
    resp_init = np.random.default_rng(14).dirichlet(np.ones(K), size=n)
    prior = dict(alpha0=0.3, beta0=0.8, m0=np.array([0.2, -0.1]), W0=np.diag([0.5, 0.7]), nu0=3.0)
    steps, tau0 = 4, 2.0
    fit = svi.bayesian_gmm(X, resp_init, batch_size=batch_size, steps=steps, tau0=tau0, kappa=kappa,
                           seed=15, snapshot_every=1, **prior)

    def natural(alpha, beta, m, W_inv, nu):
        return [alpha, beta, beta[:, None] * m,
                W_inv + beta[:, None, None] * m[:, :, None] * m[:, None, :], nu]

    def from_natural(alpha, beta, beta_m, second, nu):
        m = beta_m / beta[:, None]
        return alpha, beta, m, second - beta[:, None, None] * m[:, :, None] * m[:, None, :], nu

    def update(resp, rows, scale):
        # the CAVI update of the global factor from statistics scaled by `scale`, Bishop (10.58)-(10.63)
        nk = scale * resp.sum(axis=0)
        sum_x = scale * resp.T @ rows
        sum_xx = scale * np.einsum("ik,ij,il->kjl", resp, rows, rows)
        m0, W0_inv = prior["m0"], np.linalg.inv(prior["W0"])
        return [prior["alpha0"] + nk, prior["beta0"] + nk, prior["beta0"] * m0 + sum_x,
                W0_inv + prior["beta0"] * np.outer(m0, m0) + sum_xx, prior["nu0"] + nk]

    lam = update(resp_init, X, 1.0)                    # the start: the update from resp_init
    model = BayesianGaussianMixture(n_components=K, covariance_type="full",
                                    weight_concentration_prior_type="dirichlet_distribution")
    rng = np.random.default_rng(15)
    for t, snapshot in enumerate(fit.info["snapshots"], start=1):
        _set_global_factor(model, *from_natural(*lam))
        idx = np.sort(rng.choice(n, size=batch_size, replace=False))
        _, log_resp = model._estimate_log_prob_resp(X[idx])
        lam_hat = update(np.exp(log_resp), X[idx], n / batch_size)
        rho = (t + tau0) ** -kappa
        lam = [(1 - rho) * a + rho * b for a, b in zip(lam, lam_hat, strict=True)]
        alpha, beta, m, W_inv, nu = from_natural(*lam)
        assert snapshot.n_iter == t
        for ours, theirs in [(snapshot.alpha, alpha), (snapshot.beta, beta), (snapshot.m, m),
                             (snapshot.W, np.linalg.inv(W_inv)), (snapshot.nu, nu)]:
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9 * np.abs(theirs).max())
    assert len(fit.info["snapshots"]) == steps


def test_whole_data_elbo_lies_between_consecutive_cavi_bounds():
    # bayesian_gmm_elbo(fit after sweep t) = L(E-step(theta_t), theta_t): at least CAVI's bound after
    # sweep t (one more coordinate step) and at most after sweep t + 1 (one more parameter step).
    X = _clusters(300, seed=6)
    resp_init = np.random.default_rng(7).dirichlet(np.ones(3), size=300)
    full = cavi.bayesian_gmm(X, resp_init, max_iter=8, tol=0)
    for t in range(1, 8):
        value = svi.bayesian_gmm_elbo(X, cavi.bayesian_gmm(X, resp_init, max_iter=t, tol=0))
        slack = 1e-10 * abs(value)
        assert full.elbos[t - 1] - slack <= value <= full.elbos[t] + slack


def test_step_sizes_follow_robbins_monro_from_step_one():
    # scikit-learn's online LDA counts t from 1: rho_1 = (1 + tau0)^-kappa
    np.testing.assert_allclose(svi.step_sizes(4, tau0=10.0, kappa=0.7),
                               [11.0 ** -0.7, 12.0 ** -0.7, 13.0 ** -0.7, 14.0 ** -0.7], rtol=1e-15)
    X = _clusters(200)
    fit = svi.bayesian_gmm(X, _kmeanspp_resp(X, 3, 0), batch_size=20, steps=5, tau0=3.0, kappa=0.6,
                           seed=0)
    np.testing.assert_allclose(fit.info["step_sizes"], (np.arange(1, 6) + 3.0) ** -0.6, rtol=1e-15)


def test_svi_is_reproducible_from_its_seed_and_keeps_nothing_per_point_when_asked():
    X = _clusters(300, seed=2)
    resp_init = _kmeanspp_resp(X, 3, 0)
    a = svi.bayesian_gmm(X, resp_init, batch_size=30, steps=20, seed=4, compute_resp=False)
    b = svi.bayesian_gmm(X, resp_init, batch_size=30, steps=20, seed=np.random.default_rng(4))
    c = svi.bayesian_gmm(X, resp_init, batch_size=30, steps=20, seed=5)
    np.testing.assert_array_equal(a.m, b.m)
    np.testing.assert_array_equal(a.elbos, b.elbos)
    assert not np.array_equal(a.m, c.m)
    assert a.resp is None and "elbo" not in a.info and b.resp.shape == (300, 3)


def test_svi_warns_when_kappa_breaks_robbins_monro_only_with_minibatches():
    X = _clusters(100)
    resp_init = _kmeanspp_resp(X, 3, 0)
    with pytest.warns(UserWarning, match=r"kappa=0.5 <= 0.5 with minibatches"):
        svi.bayesian_gmm(X, resp_init, batch_size=10, steps=2, kappa=0.5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svi.bayesian_gmm(X, resp_init, batch_size=100, steps=2, kappa=0.0, seed=0)


def test_svi_windowed_stopping_rule_converges_or_warns():
    X = _clusters(2000, seed=8)
    resp_init = _kmeanspp_resp(X, 3, 0)
    fit = svi.bayesian_gmm(X, resp_init, batch_size=200, steps=3000, seed=0, tol=1e-3, eval_window=50)
    means = fit.info["window_means"]
    assert fit.converged and fit.n_iter == 50 * len(means) < 3000
    assert abs(means[-1] - means[-2]) < 1e-3 * abs(means[-1]) <= abs(means[-2] - means[-3])
    np.testing.assert_allclose(means[-1], fit.elbos[-50:].mean())
    with pytest.warns(ConvergenceWarning, match=r"svi.bayesian_gmm: did not converge in steps=100"):
        late = svi.bayesian_gmm(X, resp_init, batch_size=20, steps=100, seed=0, tol=1e-9, eval_window=50)
    assert not late.converged and late.n_iter == 100


# ---------------------------------------------------------------------------
# 2. online LDA against scikit-learn's
# ---------------------------------------------------------------------------


def _exact_digamma(monkeypatch):
    """Replace scikit-learn's fast series for digamma (accurate to ~1e-9) by scipy's."""

    def expectation_1d(doc_topic, prior, out):
        doc_topic += prior
        out[:] = np.exp(digamma(doc_topic) - digamma(doc_topic.sum()))

    monkeypatch.setattr(sklearn_lda, "cy_dirichlet_expectation_1d",
                        {"double": expectation_1d, "float": expectation_1d})
    monkeypatch.setattr(sklearn_lda, "_dirichlet_expectation_2d",
                        lambda arr: digamma(arr) - digamma(arr.sum(axis=1))[:, None])


SETTINGS = dict(batch_size=32, learning_offset=10.0, learning_decay=0.7, max_iter=3)
OURS = dict(batch_size=32, tau0=10.0, kappa=0.7, max_iter=3, shuffle=False)


@pytest.mark.parametrize("exact_digamma, rtol", [(True, 1e-11), (False, 1e-6)])
def test_online_lda_matches_sklearn_from_the_same_draws(monkeypatch, exact_digamma, rtol):
    # scikit-learn draws the starting topics and each batch's starting gamma from
    # RandomState(random_state); a RandomState passed as seed replays those draws.  The loops
    # then differ in three ways: ours updates a batch's documents together (each stops on
    # scikit-learn's test, mean |change of gamma_d| < mean_change_tol), computes psi with scipy
    # (scikit-learn's series is accurate to ~1e-9), and writes the same sums in another order.
    # With scipy's psi in both, the topics agree to rounding; as shipped, to the series' accuracy.
    if exact_digamma:
        _exact_digamma(monkeypatch)
    counts, _ = _corpus(D=200, seed=1)
    sk = LatentDirichletAllocation(n_components=4, learning_method="online", evaluate_every=-1,
                                   random_state=3, **SETTINGS).fit(counts)
    ours = svi.online_lda(counts, 4, seed=np.random.RandomState(3), **OURS)
    assert ours.n_iter == sk.n_batch_iter_ - 1 == 3 * 7
    np.testing.assert_allclose(ours.lambda_, sk.components_, rtol=rtol)
    # gamma: one local step for the returned topics from gamma = 1, scikit-learn's transform
    np.testing.assert_allclose(ours.gamma, sk._unnormalized_transform(counts), rtol=100 * rtol)


def test_online_lda_elbo_matches_sklearns_bound(monkeypatch):
    # scikit-learn's _approx_bound is the whole ELBO of LDA (every constant of the model); with
    # scipy's psi in both, ours agrees with it on the fitted topics and proportions.
    _exact_digamma(monkeypatch)
    counts, _ = _corpus(D=150, seed=2)
    ours = svi.online_lda(counts, 4, seed=0, **OURS)
    lda = LatentDirichletAllocation(n_components=4).fit(counts[:5])      # any fitted instance
    lda.components_ = ours.lambda_.copy()
    lda.doc_topic_prior_ = lda.topic_word_prior_ = 0.25
    assert ours.info["elbo"] == pytest.approx(lda._approx_bound(counts, ours.gamma, sub_sampling=False),
                                              rel=1e-12)


def test_online_lda_recovers_the_topics_of_a_generated_corpus():
    # Online LDA finds a local optimum: from one of these two starts two true topics share a
    # fitted one.  The start whose fit has the larger ELBO recovers every topic.
    counts, topics = _corpus(D=500, V=150, K=4, length=80, seed=4)
    fits = [svi.online_lda(counts, 4, batch_size=50, max_iter=10, seed=seed) for seed in (1, 4)]
    distances = []
    for fit in fits:
        # match fitted to true topics by total variation distance (Hungarian assignment)
        tv = 0.5 * np.abs(fit.topics[:, None, :] - topics[None, :, :]).sum(axis=2)
        rows, cols = linear_sum_assignment(tv)
        distances.append(tv[rows, cols].max())
    best = int(np.argmax([fit.info["elbo"] for fit in fits]))
    assert distances[best] < 0.1 < distances[1 - best], distances
    fit = fits[best]
    np.testing.assert_allclose(fit.doc_topics.sum(axis=1), 1.0, rtol=1e-12)
    assert fit.info["passes"] == 10 and fit.n_iter == 10 * 10


def test_online_lda_takes_dense_and_sparse_counts_alike():
    counts, _ = _corpus(D=60, V=40, seed=5)
    dense = svi.online_lda(counts.toarray().astype(np.int64), 3, batch_size=20, max_iter=2, seed=0)
    for matrix in (counts, counts.tocoo(), sp.csc_array(counts)):
        sparse = svi.online_lda(matrix, 3, batch_size=20, max_iter=2, seed=0)
        np.testing.assert_allclose(sparse.lambda_, dense.lambda_, rtol=1e-12)


def test_online_lda_is_reproducible_and_shuffles_with_its_seed():
    counts, _ = _corpus(D=60, V=40, seed=6)
    a = svi.online_lda(counts, 3, batch_size=20, max_iter=2, seed=1)
    b = svi.online_lda(counts, 3, batch_size=20, max_iter=2, seed=np.random.default_rng(1))
    in_order = svi.online_lda(counts, 3, batch_size=20, max_iter=2, seed=1, shuffle=False)
    np.testing.assert_array_equal(a.lambda_, b.lambda_)
    assert not np.allclose(a.lambda_, in_order.lambda_)


def test_online_lda_documents_without_words_get_the_prior():
    counts, _ = _corpus(D=40, V=30, seed=7)
    counts = sp.vstack([counts, sp.csr_matrix((2, 30))]).tocsr()
    fit = svi.online_lda(counts, 3, alpha=0.4, batch_size=21, max_iter=1, seed=0)
    np.testing.assert_allclose(fit.gamma[-2:], 0.4)


# ---------------------------------------------------------------------------
# bad input: a ValueError naming the argument, one property per kind of argument
# ---------------------------------------------------------------------------

_X = _clusters(20, seed=9)
_RESP = np.full((20, 3), 1 / 3)
_COUNTS = np.random.default_rng(0).poisson(1.0, size=(12, 8))


def _gmm(**change):
    args = dict(X=_X, resp_init=_RESP, batch_size=5, steps=2, seed=0) | change
    return svi.bayesian_gmm(args.pop("X"), args.pop("resp_init"), **args)


def _lda(**change):
    args = dict(counts=_COUNTS, n_topics=2, batch_size=4, max_iter=1, seed=0) | change
    return svi.online_lda(args.pop("counts"), args.pop("n_topics"), **args)


@settings(max_examples=40, deadline=None)
@given(bad=bad_arrays((20, 2)), which=st.sampled_from(["X", "resp_init"]))
def test_svi_gmm_rejects_bad_data_and_responsibilities(bad, which):
    assert_rejects(lambda: _gmm(**{which: bad}), which, exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(bad_ints(), huge_ints(), st.just(21)),
       name=st.sampled_from(["batch_size", "steps", "eval_window", "snapshot_every"]))
def test_svi_gmm_rejects_bad_counts_of_points_and_steps(bad, name):
    if name in ("steps", "snapshot_every") and bad == 21 or name == "snapshot_every" and bad is None:
        return                                   # valid: only batch_size is bounded by n = 20
    if name == "eval_window" and isinstance(bad, int) and 21 <= bad <= 10**7:
        return
    assert_rejects(lambda: _gmm(**{name: bad}), name, exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(bad_scalars(), st.floats(-1e9, -1e-9), st.floats(1.0 + 1e-9, 1e9)),
       name=st.sampled_from(["tau0", "kappa", "tol"]))
def test_svi_rejects_bad_step_sizes_and_tolerances(bad, name):
    if name == "tau0" and isinstance(bad, float) and bad > 1:
        return                                   # tau0 has no upper bound
    assert_rejects(lambda: _gmm(**{name: bad}), name, exceptions=ValueError)
    assert_rejects(lambda: _lda(**{name: bad}), name, exceptions=ValueError)
    if name != "tol":
        assert_rejects(lambda: svi.step_sizes(3, **({"tau0": 1.0, "kappa": 0.7} | {name: bad})), name,
                       exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=for_optional(bad_seeds()), which=st.sampled_from(["gmm", "lda"]))
def test_svi_rejects_bad_seeds(bad, which):
    call = _gmm if which == "gmm" else _lda
    assert_rejects(lambda: call(seed=bad), "seed", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=not_bools(), which=st.sampled_from(["gmm", "lda"]))
def test_svi_rejects_flags_that_are_not_bools(bad, which):
    flag = "compute_resp" if which == "gmm" else "shuffle"
    call = _gmm if which == "gmm" else _lda
    assert_rejects(lambda: call(**{flag: bad}), flag, exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(np.ones((3, 2))), st.just(_X)))
def test_bayesian_gmm_elbo_rejects_what_is_not_a_fit_or_its_data(bad):
    fit = cavi.bayesian_gmm(_X, _RESP, max_iter=2, tol=0)
    assert_rejects(lambda: svi.bayesian_gmm_elbo(_X, bad), "fit", exceptions=ValueError)
    for X in (np.ones((5, 3)), np.array([[np.nan, 0.0]]), "X"):
        assert_rejects(lambda: svi.bayesian_gmm_elbo(X, fit), "X", exceptions=ValueError)  # noqa: B023


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(bad_arrays((12, 8)), st.just(-_COUNTS), st.just(_COUNTS + 0.5),
                     st.just(sp.csr_matrix(_COUNTS.astype(bool))), st.just(sp.csr_matrix(-_COUNTS)),
                     st.just(sp.csr_matrix(_COUNTS * 0.5)), st.just(sp.csr_matrix((0, 8)))))
def test_online_lda_rejects_counts_that_are_not_whole_non_negative_numbers(bad):
    assert_rejects(lambda: _lda(counts=bad), "counts", exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(bad_ints(), huge_ints(), st.just(13)),
       name=st.sampled_from(["n_topics", "batch_size", "max_iter", "max_doc_update_iter", "eval_window"]))
def test_online_lda_rejects_bad_integers(bad, name):
    if bad == 13 and name != "batch_size":
        return                                   # valid: only batch_size is bounded by the 12 documents
    assert_rejects(lambda: _lda(**{name: bad}), name, exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(bad=for_optional(bad_scalars(positive=True)),
       name=st.sampled_from(["alpha", "eta", "mean_change_tol"]))
def test_online_lda_rejects_bad_priors_and_tolerances(bad, name):
    if name == "mean_change_tol" and isinstance(bad, float) and bad == 0:
        return                                   # a tolerance of zero is valid
    assert_rejects(lambda: _lda(**{name: bad}), name, exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=for_optional(st.one_of(bad_arrays((2, 8)), st.just(np.ones((3, 8))), st.just(np.zeros((2, 8))),
                               st.just(-np.ones((2, 8))))))
def test_online_lda_rejects_bad_starting_topics(bad):
    assert_rejects(lambda: _lda(lambda_init=bad), "lambda_init", exceptions=ValueError)


# ---------------------------------------------------------------------------
# 3. doubly stochastic black-box VI
# ---------------------------------------------------------------------------

_D = torch.distributions


def _logistic(n=400, d=3, seed=0):
    """Bayesian logistic regression data: rows (x_1, ..., x_d, y), x_1 = 1; and its log densities."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ np.linspace(-1, 1, d)))).astype(float)

    def log_prior(z):
        return _D.Normal(0.0, 3.0).log_prob(z).sum(-1)

    def log_lik(z, batch):
        logits = z @ batch[:, :d].T
        return _D.Bernoulli(logits=logits).log_prob(batch[:, d].expand_as(logits)).sum(-1)

    return np.column_stack([x, y]), log_prior, log_lik


def test_minibatch_gradient_is_unbiased_for_the_whole_data_gradient():
    # Same seed, same Monte Carlo draws: estimate s differs between the two calls only by its
    # minibatch, so the mean difference must vanish; error budget 4 standard errors.
    data, log_prior, log_lik = _logistic()
    loc, tril = np.array([0.2, -0.1, 0.3]), np.diag([0.3, 0.2, 0.25])
    draws = 2000
    full = svi.elbo_grads(log_prior, log_lik, data, loc, tril, draws, seed=7)
    mini = svi.elbo_grads(log_prior, log_lik, data, loc, tril, draws, batch_size=20, seed=7)
    for f, m in zip(full, mini, strict=True):
        diff = (m - f).reshape(draws, -1).numpy()
        se = diff.std(axis=0, ddof=1) / np.sqrt(draws)
        assert np.all(np.abs(diff.mean(axis=0)) <= 4 * se + 1e-12), (diff.mean(axis=0), se)
    # The minibatch adds its own variance: since E[mini - full | draw] = 0, the two are uncorrelated
    # and Var(mini) = Var(full) + Var(mini - full) (law of total variance), to sampling error.
    var_full, var_mini, var_diff = (a.var(dim=0).sum().item() for a in (full[0], mini[0], mini[0] - full[0]))
    assert var_diff > var_full
    np.testing.assert_allclose(var_mini, var_full + var_diff, rtol=0.2)


def test_minibatch_gradients_average_to_the_gradient_of_the_closed_form_elbo():
    # Independent route: for Bayesian linear regression with known noise and a diagonal Gaussian
    # q, the ELBO has a closed form; autograd of it is the exact gradient in (loc, log scale).
    # The mean of the doubly stochastic estimates (minibatches of 10 of 200 rows) must match it,
    # coordinate by coordinate, within 4 standard errors of the mean.
    rng = np.random.default_rng(16)
    n, d, noise, prior_sd = 200, 3, 0.5, 2.0
    x = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    y = x @ np.array([0.5, -1.0, 0.8]) + noise * rng.normal(size=n)
    data = np.column_stack([x, y])

    def log_prior(z):
        return _D.Normal(0.0, prior_sd).log_prob(z).sum(-1)

    def log_lik(z, batch):
        return _D.Normal(z @ batch[:, :d].T, noise).log_prob(batch[:, d]).sum(-1)

    loc = torch.tensor([-0.5, 0.5, -0.5], dtype=torch.float64, requires_grad=True)  # far from the mode
    log_scale = torch.log(torch.tensor([0.2, 0.15, 0.1], dtype=torch.float64)).requires_grad_(True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    var = torch.exp(2 * log_scale)
    e_log_lik = (-0.5 * n * math.log(2 * math.pi * noise**2)
                 - (((yt - xt @ loc) ** 2).sum() + ((xt**2) @ var).sum()) / (2 * noise**2))
    e_log_prior = -0.5 * d * math.log(2 * math.pi * prior_sd**2) - ((loc**2 + var).sum()) / (2 * prior_sd**2)
    entropy = 0.5 * d * math.log(2 * math.pi * math.e) + log_scale.sum()
    exact = torch.autograd.grad(e_log_lik + e_log_prior + entropy, [loc, log_scale])
    draws = 4000
    grads = svi.elbo_grads(log_prior, log_lik, data, loc.detach().numpy(),
                           np.diag(torch.exp(log_scale).detach().numpy()), draws, batch_size=10,
                           covariance_type="diag", seed=17)
    for g, e in zip(grads, exact, strict=True):
        se = g.std(dim=0) / math.sqrt(draws)
        assert torch.all((g.mean(dim=0) - e).abs() < 4 * se), (g.mean(dim=0), e, se)


def test_control_variate_of_the_exercise_keeps_the_mean_and_removes_most_minibatch_noise():
    # Exercise ex-svi-control-variate: for a diagonal Gaussian q at the mean-field Laplace
    # optimum of a logistic regression, the log-scale gradient 1 + sigma_j eps_j g_j(z) and the
    # same minus sigma_j eps_j g_j(mu) (the same minibatch in g) have the same mean, within 4
    # standard errors of their difference, and the correction removes most of the variance.
    rng = np.random.default_rng(18)
    n, d, B, draws = 5000, 3, 50, 1000
    x = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ np.array([0.3, -0.8, 0.5])))).astype(float)
    w = np.zeros(d)
    for _ in range(20):                                    # Newton's method for the mode
        p = 1 / (1 + np.exp(-x @ w))
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.eye(d) / 9
        w = w + np.linalg.solve(hess, x.T @ (y - p) - w / 9)
    mu, sigma = torch.from_numpy(w), torch.from_numpy(1 / np.sqrt(np.diag(hess)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(19)

    def grad_log_joint(z, idx):            # g(z): prior plus the minibatch scaled by n / |B|
        z = z.clone().requires_grad_(True)
        value = (_D.Normal(0.0, 3.0).log_prob(z).sum()
                 + n / B * _D.Bernoulli(logits=xt[idx] @ z).log_prob(yt[idx]).sum())
        return torch.autograd.grad(value, z)[0]

    plain, corrected = [], []
    for _ in range(draws):
        idx = torch.randperm(n, generator=gen)[:B]
        eps = torch.randn(d, generator=gen, dtype=torch.float64)
        g_z, g_mu = grad_log_joint(mu + sigma * eps, idx), grad_log_joint(mu, idx)
        plain.append(1 + sigma * eps * g_z)
        corrected.append(1 + sigma * eps * (g_z - g_mu))
    plain, corrected = torch.stack(plain), torch.stack(corrected)
    difference = plain - corrected
    se = difference.std(dim=0) / math.sqrt(draws)
    assert torch.all(difference.mean(dim=0).abs() < 4 * se), (difference.mean(dim=0), se)
    assert torch.all(plain.var(dim=0) > 10 * corrected.var(dim=0)), (plain.var(0), corrected.var(0))


def test_whole_data_gradient_is_vi_elbo_grads_of_the_log_joint():
    data, log_prior, log_lik = _logistic(n=50)
    t = torch.from_numpy(data)
    loc, tril = np.zeros(3), np.eye(3)
    ours = svi.elbo_grads(log_prior, log_lik, data, loc, tril, 5, seed=3)
    theirs = vi.elbo_grads(lambda z: log_prior(z) + log_lik(z, t), loc, tril, 5,
                           generator=torch.Generator().manual_seed(3))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fit_with_the_whole_data_as_the_batch_is_vi_fit_gaussian():
    # batch_size = n: every minibatch is the data in order, so the loop is black-box VI's own
    data, log_prior, log_lik = _logistic(n=100)
    t = torch.from_numpy(data)
    settings_ = dict(num_samples=4, steps=150, lr=0.05, kappa=0.6, tol=0, seed=11, dim=3,
                     covariance_type="full", average=True)
    ours = svi.fit_gaussian(log_prior, log_lik, data, batch_size=100, **settings_)
    theirs = vi.fit_gaussian(lambda z: log_prior(z) + log_lik(z, t), **settings_)
    np.testing.assert_allclose(ours.loc, theirs.loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.scale_tril, theirs.scale_tril, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.elbos, theirs.elbos, rtol=1e-10)
    assert ours.info["batch_size"] == ours.info["n_samples"] == 100


def test_fit_reads_a_memmap_a_tensor_or_blocks_and_reaches_the_whole_data_fit(tmp_path):
    data, log_prior, log_lik = _logistic(n=1000, seed=2)
    path = tmp_path / "data.f8"
    stored = np.memmap(path, dtype=np.float64, mode="w+", shape=data.shape)
    stored[:] = data
    stored.flush()
    on_disk = np.memmap(path, dtype=np.float64, mode="r", shape=data.shape)
    settings_ = dict(dim=3, covariance_type="diag", num_samples=2, steps=1000, lr=0.05, kappa=0.7,
                     average=True, tol=0, seed=4)
    short = settings_ | {"steps": 30}
    from_memory = svi.fit_gaussian(log_prior, log_lik, data, batch_size=100, **short)
    from_disk = svi.fit_gaussian(log_prior, log_lik, on_disk, batch_size=100, **short)
    from_tensor = svi.fit_gaussian(log_prior, log_lik, torch.from_numpy(data), batch_size=100, **short)
    np.testing.assert_array_equal(from_disk.loc, from_memory.loc)
    np.testing.assert_allclose(from_tensor.loc, from_memory.loc, rtol=1e-12)
    blocks = [data[i:i + 100] for i in range(0, 1000, 100)]
    fit = svi.fit_gaussian(log_prior, log_lik, blocks, n_samples=1000, **settings_)
    t = torch.from_numpy(data)
    whole = vi.fit_gaussian(lambda z: log_prior(z) + log_lik(z, t), **(settings_ | {"steps": 2000}))
    # Within half a posterior standard deviation of the whole-data fit; the scales, which the
    # minibatch noise slows most, within 35 % (without the n / |B| scaling they would be
    # sqrt(10) times too wide).
    assert np.all(np.abs(fit.loc - whole.loc) < 0.5 * whole.scale), (fit.loc, whole.loc, whole.scale)
    np.testing.assert_allclose(fit.scale, whole.scale, rtol=0.35)


def test_fit_reads_a_dataloader_as_it_reads_the_same_blocks():
    # torch's DataLoader over a tensor yields the blocks as tensors; over a TensorDataset of one
    # tensor it yields [block]; both are the list of blocks.  Two tensors per row (x, y) are refused.
    data, log_prior, log_lik = _logistic(n=60, seed=5)
    t = torch.from_numpy(data)
    settings_ = dict(n_samples=60, dim=3, num_samples=2, steps=12, lr=0.05, tol=0, seed=2)
    blocks = svi.fit_gaussian(log_prior, log_lik, [data[i:i + 20] for i in range(0, 60, 20)],
                              **settings_)
    loaders = [torch.utils.data.DataLoader(t, batch_size=20),
               torch.utils.data.DataLoader(torch.utils.data.TensorDataset(t), batch_size=20)]
    for loader in loaders:
        fit = svi.fit_gaussian(log_prior, log_lik, loader, **settings_)
        np.testing.assert_array_equal(fit.loc, blocks.loc)
    # A block may also be a list of its rows, even of one row.
    as_rows = svi.fit_gaussian(log_prior, log_lik, [list(data[i:i + 20]) for i in range(0, 60, 20)],
                               **settings_)
    np.testing.assert_array_equal(as_rows.loc, blocks.loc)
    one_row = svi.fit_gaussian(log_prior, log_lik, [[row] for row in data], **settings_)
    one_row_arrays = svi.fit_gaussian(log_prior, log_lik, [data[i:i + 1] for i in range(60)],
                                      **settings_)
    np.testing.assert_array_equal(one_row.loc, one_row_arrays.loc)
    pairs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(t[:, :3], t[:, 3]), batch_size=20)
    assert_rejects(lambda: svi.fit_gaussian(log_prior, log_lik, pairs, **settings_), "data",
                   exceptions=ValueError)


def test_fit_runs_on_the_device_it_is_given():
    data, log_prior, log_lik = _logistic(n=60)
    settings_ = dict(batch_size=10, dim=3, num_samples=2, steps=20, lr=0.05, tol=0, seed=1)
    a = svi.fit_gaussian(log_prior, log_lik, data, **settings_)
    b = svi.fit_gaussian(log_prior, log_lik, data, device=torch.device("cpu"), **settings_)
    np.testing.assert_array_equal(a.loc, b.loc)
    assert a.info["device"] == "cpu"
    for bad in ("meta", "no-such-device", 3, None) + (() if torch.cuda.is_available() else ("cuda",)):
        assert_rejects(lambda: svi.fit_gaussian(log_prior, log_lik, data, device=bad, **settings_),  # noqa: B023
                       "device", exceptions=ValueError)


_DATA, _LOG_PRIOR, _LOG_LIK = _logistic(n=30)


def _dsvi(**change):
    args = dict(log_prior=_LOG_PRIOR, log_lik=_LOG_LIK, data=_DATA, batch_size=5, dim=3, num_samples=2,
                steps=3, lr=0.05, tol=0, seed=0) | change
    return svi.fit_gaussian(args.pop("log_prior"), args.pop("log_lik"), args.pop("data"), **args)


@settings(max_examples=30, deadline=None)
@given(bad=bad_callables(expected_rows=2), name=st.sampled_from(["log_prior", "log_lik"]))
def test_dsvi_rejects_log_densities_that_break_the_convention(bad, name):
    callable_ = (lambda z, batch: bad(z)) if name == "log_lik" and callable(bad) else bad
    assert_rejects(lambda: _dsvi(**{name: callable_}), name, exceptions=ValueError)
    if name == "log_prior":
        assert_rejects(lambda: svi.elbo_grads(bad, _LOG_LIK, _DATA, np.zeros(3), np.eye(3), 2, seed=0),
                       name, exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers().filter(lambda v: not isinstance(v, list) or v == [1.0, "a"]),
                     st.just(np.full((30, 4), np.nan)), st.just(iter([_DATA])),
                     st.just(np.array(["a", "b"])), st.just(torch.empty((30, 4), device="meta")),
                     st.just([np.full((5, 4), np.inf)]), st.just(np.empty((0, 4)))))
def test_dsvi_rejects_data_that_is_not_rows_of_real_numbers(bad):
    change = {"batch_size": None, "n_samples": 30} if isinstance(bad, list) else {}
    assert_rejects(lambda: _dsvi(data=bad, **change), "data", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(), huge_ints(), st.just(31)))
def test_dsvi_rejects_bad_batch_sizes_and_counts(bad):
    assert_rejects(lambda: _dsvi(batch_size=bad), "batch_size", exceptions=ValueError)
    blocks = [_DATA[:15], _DATA[15:]]
    assert_rejects(lambda: _dsvi(data=blocks, batch_size=None, n_samples=bad), "n_samples",
                   exceptions=ValueError)
    assert_rejects(lambda: _dsvi(data=blocks, batch_size=5, n_samples=30), "batch_size",
                   exceptions=ValueError)


def test_online_lda_with_the_whole_corpus_and_unit_steps_is_batch_vb():
    # batch_size = D and kappa = 0: lambda = eta + sum_d n_dw phi_dwk, scikit-learn's batch VB
    counts, _ = _corpus(D=80, V=50, seed=8)
    peer = LatentDirichletAllocation(n_components=3, learning_method="batch", max_iter=2,
                                     random_state=7, evaluate_every=-1).fit(counts)
    ours = svi.online_lda(counts, 3, batch_size=80, kappa=0.0, max_iter=2, shuffle=False,
                          seed=np.random.RandomState(7))
    np.testing.assert_allclose(ours.info["step_sizes"], 1.0)
    np.testing.assert_allclose(ours.lambda_, peer.components_, rtol=1e-6)


def test_online_lda_bound_stays_exact_where_exp_e_log_beta_underflows(monkeypatch):
    # Topics that give some words almost no mass make exp(E[log beta]) underflow to 0; the
    # bound is then taken in log space for those words, and still equals scikit-learn's.
    _exact_digamma(monkeypatch)
    counts, _ = _corpus(D=30, V=40, seed=9)
    lam = np.random.default_rng(0).gamma(100.0, 0.01, (4, 40))
    lam[:, :10] = 1e-300                                          # E[log beta] about -1e300
    lam_t = lam.T.copy()
    elog_beta_t = svi._dirichlet_expectation(lam_t, axis=0)
    gamma = np.ones((30, 4))
    gamma, _, elog_theta, log_norm = svi._lda_local_step(counts, elog_beta_t, np.exp(elog_beta_t),
                                                         0.25, gamma, 100, 1e-3)
    assert np.all(np.isfinite(log_norm)) and np.any(log_norm < -1e200)
    ours = (svi._lda_local_elbo(counts, gamma, elog_theta, log_norm, 0.25)
            + svi._lda_global_elbo(lam_t, elog_beta_t, 0.25))
    lda = LatentDirichletAllocation(n_components=4).fit(counts[:5])
    lda.components_, lda.doc_topic_prior_, lda.topic_word_prior_ = lam, 0.25, 0.25
    assert ours == pytest.approx(lda._approx_bound(counts, gamma, sub_sampling=False), rel=1e-12)
