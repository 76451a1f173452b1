"""Chapter 2: EM for a Gaussian mixture as coordinate ascent on the ELBO.

The independent routes are scikit-learn's ``GaussianMixture`` (started from the
same parameters), ``scipy.stats.multivariate_normal`` for the densities, a
direct per-component loop for the M-step formulas, and
``vicourse.elbo.discrete_elbo`` for the ELBO.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from vicourse import em


def make_data(seed=0, n=400, d=2, K=3):
    """A seeded mixture sample and a deliberately poor start (equal weights, data covariance)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(K, d))
    factors = rng.normal(size=(K, d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    labels = rng.integers(K, size=n)
    X = centres[labels] + np.einsum("nab,nb->na", factors[labels], rng.normal(size=(n, d)))
    weights = np.full(K, 1.0 / K)
    means = X[rng.choice(n, K, replace=False)]
    covariances = np.tile(np.cov(X.T), (K, 1, 1))
    return X, weights, means, covariances


def scipy_log_joint(X, weights, means, covariances):
    """log pi_k + log N(x_i | mu_k, Sigma_k) evaluated by scipy, one component at a time."""
    return np.stack([np.log(w) + multivariate_normal(m, c).logpdf(X)
                     for w, m, c in zip(weights, means, covariances, strict=True)], axis=1)


def scipy_log_likelihood(X, weights, means, covariances):
    return logsumexp(scipy_log_joint(X, weights, means, covariances), axis=1).sum()


def sklearn_fit(X, weights, means, covariances, max_iter, reg_covar=1e-6):
    gm = GaussianMixture(
        n_components=len(weights), covariance_type="full", weights_init=weights,
        means_init=means, precisions_init=np.linalg.inv(covariances), max_iter=max_iter,
        tol=0.0, reg_covar=reg_covar, n_init=1,
    )
    with warnings.catch_warnings():
        # tol=0 never converges by design: scikit-learn warns, we do not.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X)


# ---------------------------------------------------------------------- against scikit-learn

@pytest.mark.parametrize("max_iter", [1, 2, 7, 25])
@pytest.mark.parametrize("seed, d, K", [(0, 2, 3), (1, 3, 4)])
def test_fit_gmm_matches_sklearn_after_the_same_number_of_iterations(seed, d, K, max_iter):
    # How iterations correspond: scikit-learn's fit loop runs, for n_iter = 1..max_iter,
    # an E-step at the current parameters and then an M-step, starting from
    # (weights_init, means_init, precisions_init) -- exactly our iteration.  With
    # tol=0 neither stops early, so both have run max_iter E/M pairs.
    X, weights, means, covariances = make_data(seed, d=d, K=K)
    ours = em.fit_gmm(X, weights, means, covariances, max_iter=max_iter, tol=0.0)
    ref = sklearn_fit(X, weights, means, covariances, max_iter)
    assert ours.n_iter == ref.n_iter_ == max_iter
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8, atol=1e-12)
    # scikit-learn's lower_bounds_[t] is the mean log-likelihood at the parameters
    # the E-step of iteration t + 1 saw: our log_likelihoods[t] / n.
    np.testing.assert_allclose(ours.log_likelihoods[:-1] / len(X), ref.lower_bounds_, rtol=1e-10)
    # and the final parameters' log-likelihood is scikit-learn's score.
    assert ours.log_likelihoods[-1] / len(X) == pytest.approx(ref.score(X), rel=1e-10)


def test_fit_gmm_matches_sklearn_with_a_large_regulariser():
    X, weights, means, covariances = make_data(2)
    ours = em.fit_gmm(X, weights, means, covariances, max_iter=5, tol=0.0, reg_covar=0.5)
    ref = sklearn_fit(X, weights, means, covariances, 5, reg_covar=0.5)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)


def test_a_component_that_loses_all_its_points_stays_finite_and_matches_sklearn():
    X, weights, means, covariances = make_data(3)
    means = means.copy()
    means[0] = X.mean(axis=0) + 1e4          # far from every point: its responsibilities underflow
    covariances = covariances.copy()
    covariances[0] = 0.01 * np.eye(2)
    assert np.all(np.exp(em.e_step(X, weights, means, covariances))[:, 0] == 0.0)
    ours = em.fit_gmm(X, weights, means, covariances, max_iter=4, tol=0.0)
    ref = sklearn_fit(X, weights, means, covariances, 4)
    for value in (ours.weights, ours.means, ours.covariances, ours.log_likelihoods, ours.elbos):
        assert np.all(np.isfinite(value))
    # N_k = 10 eps: a weight of about 1e-15 / n, not zero and not NaN.
    assert 0 < ours.weights[0] < 1e-14
    np.testing.assert_allclose(ours.covariances[0], 1e-6 * np.eye(2), rtol=1e-8)
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8, atol=1e-12)


def test_fit_gmm_matches_sklearn_with_a_narrow_component_far_from_the_data_mean():
    # A tight cluster of 6 points 100 units from the bulk, owned by a component of
    # variance 1e-10: its moments expansion would cancel (eps * 100^2 / 1e-10 ~ 1e-8
    # relative), so fit_gmm must take the centred route for it at every step.
    rng = np.random.default_rng(20)
    spike = np.array([60.0, -80.0])
    X = np.vstack([rng.normal(size=(200, 2)), spike + 1e-5 * rng.normal(size=(6, 2))])
    weights = np.array([0.97, 0.03])
    means = np.array([[0.0, 0.0], spike])
    covariances = np.stack([np.eye(2), 1e-10 * np.eye(2)])
    ours = em.fit_gmm(X, weights, means, covariances, max_iter=5, tol=0.0, reg_covar=1e-12)
    ref = sklearn_fit(X, weights, means, covariances, 5, reg_covar=1e-12)
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.log_likelihoods[:-1] / len(X), ref.lower_bounds_, rtol=1e-10)


def test_one_e_step_then_m_step_is_one_sklearn_iteration():
    X, weights, means, covariances = make_data(4, d=3, K=2)
    resp = np.exp(em.e_step(X, weights, means, covariances))
    new_weights, new_means, new_covariances = em.m_step(X, resp, reg_covar=1e-6)
    ref = sklearn_fit(X, weights, means, covariances, 1)
    np.testing.assert_allclose(new_weights, ref.weights_, rtol=1e-10)
    np.testing.assert_allclose(new_means, ref.means_, rtol=1e-10)
    np.testing.assert_allclose(new_covariances, ref.covariances_, rtol=1e-10)


# ---------------------------------------------------------------------- the two steps

def test_e_step_matches_scipy_multivariate_normal():
    X, weights, means, covariances = make_data(5, d=3, K=4)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    ref_joint = scipy_log_joint(X, weights, means, covariances)
    np.testing.assert_allclose(em.log_joint(X, weights, means, covariances), ref_joint,
                               rtol=1e-10)
    ref = ref_joint - logsumexp(ref_joint, axis=1, keepdims=True)
    log_resp = em.e_step(X, weights, means, covariances)
    np.testing.assert_allclose(log_resp, ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-13)


def test_e_step_does_not_underflow_far_from_every_component():
    # Points 10^3 standard deviations from every component: every density is
    # exp(-5e5) = 0 in floating point, so exponentiate-then-normalise gives 0/0.
    means = np.array([[0.0, 0.0], [3.0, 0.0]])
    covariances = np.stack([np.eye(2), 2.0 * np.eye(2)])
    weights = np.array([0.5, 0.5])
    X = np.array([[1000.0, 0.0], [0.0, -1500.0], [-1200.0, 900.0]])
    assert np.all(multivariate_normal(means[0], covariances[0]).pdf(X) == 0.0)
    log_resp = em.e_step(X, weights, means, covariances)
    assert np.all(np.isfinite(log_resp))
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-13)
    ref_joint = scipy_log_joint(X, weights, means, covariances)
    ref = ref_joint - logsumexp(ref_joint, axis=1, keepdims=True)
    # log_joint is about -5e5 here: agree to a few ulps of that magnitude.
    np.testing.assert_allclose(log_resp, ref, rtol=1e-9, atol=1e-9 * np.abs(ref_joint).max())


def test_log_joint_stays_accurate_for_a_very_narrow_component_far_from_the_data_mean():
    # Expanding (x - mu)^T Lambda (x - mu) into moments would lose every digit here
    # (Lambda = 1e14, |x|^2 = 1e4); such components take the centred route.
    rng = np.random.default_rng(19)
    spike = np.array([60.0, -80.0])
    X = np.vstack([rng.normal(size=(50, 2)), spike + 1e-7 * rng.normal(size=(5, 2))])
    weights = np.array([0.9, 0.1])
    means = np.array([[0.0, 0.0], spike])
    covariances = np.stack([np.eye(2), 1e-14 * np.eye(2)])
    ref = scipy_log_joint(X, weights, means, covariances)
    finite = np.isfinite(ref)
    np.testing.assert_allclose(em.log_joint(X, weights, means, covariances)[finite], ref[finite],
                               rtol=1e-9, atol=1e-6)
    resp = np.zeros((55, 2))
    resp[:50, 0] = resp[50:, 1] = 1.0
    _, new_means, new_covariances = em.m_step(X, resp, reg_covar=0.0)
    diff = X[50:] - X[50:].mean(axis=0)
    np.testing.assert_allclose(new_means[1], X[50:].mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(new_covariances[1], diff.T @ diff / 5, rtol=1e-6)


def test_m_step_matches_the_textbook_formulas_component_by_component():
    X, _, _, _ = make_data(6, d=3, K=3)
    rng = np.random.default_rng(6)
    resp = rng.dirichlet(np.ones(3), size=len(X))
    weights, means, covariances = em.m_step(X, resp, reg_covar=0.0)
    for k in range(3):
        n_k = resp[:, k].sum()
        mu = resp[:, k] @ X / n_k
        diff = X - mu
        sigma = (resp[:, k, None] * diff).T @ diff / n_k
        assert weights[k] == pytest.approx(n_k / len(X), rel=1e-12)
        np.testing.assert_allclose(means[k], mu, rtol=1e-11)
        np.testing.assert_allclose(covariances[k], sigma, rtol=1e-10)


def test_reg_covar_is_added_to_every_diagonal():
    X, _, _, _ = make_data(7)
    resp = np.random.default_rng(7).dirichlet(np.ones(3), size=len(X))
    _, _, plain = em.m_step(X, resp, reg_covar=0.0)
    _, _, regularised = em.m_step(X, resp, reg_covar=0.25)
    np.testing.assert_allclose(regularised - plain, np.broadcast_to(0.25 * np.eye(2), plain.shape),
                               atol=1e-12)


def test_m_step_is_unchanged_by_shifting_the_data():
    # Translation equivariance, which the implementation's centring relies on.
    X, _, _, _ = make_data(8)
    resp = np.random.default_rng(8).dirichlet(np.ones(3), size=len(X))
    shift = np.array([1e3, -2e3])
    w0, m0, c0 = em.m_step(X, resp)
    w1, m1, c1 = em.m_step(X + shift, resp)
    np.testing.assert_allclose(w1, w0, rtol=1e-12)
    np.testing.assert_allclose(m1 - shift, m0, atol=1e-9)
    np.testing.assert_allclose(c1, c0, rtol=1e-7)


def test_logsumexp_rows_matches_scipy():
    lj = np.random.default_rng(9).normal(scale=300.0, size=(50, 4))
    buffer = np.empty_like(lj)
    lse, sums = em._logsumexp_rows(lj, buffer)
    np.testing.assert_allclose(lse, logsumexp(lj, axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(buffer / sums, np.exp(lj - lse), rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------------- the ELBO and its invariants

def test_elbo_equals_the_log_likelihood_at_the_exact_posterior():
    X, weights, means, covariances = make_data(10, d=3, K=2)
    resp = np.exp(em.e_step(X, weights, means, covariances))
    ref = scipy_log_likelihood(X, weights, means, covariances)
    assert em.elbo(X, resp, weights, means, covariances) == pytest.approx(ref, rel=1e-10)
    assert em.log_likelihood(X, weights, means, covariances) == pytest.approx(ref, rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_other_q_has_a_smaller_elbo(seed):
    # The E-step maximises the ELBO over q: L(q) = log p(x) - KL(q || posterior).
    X, weights, means, covariances = make_data(11, n=60)
    q = np.random.default_rng(seed).dirichlet(np.ones(3), size=len(X))
    posterior = np.exp(em.e_step(X, weights, means, covariances))
    kl = np.sum(q * (np.log(q) - np.log(posterior)))
    log_lik = scipy_log_likelihood(X, weights, means, covariances)
    value = em.elbo(X, q, weights, means, covariances)
    assert value < log_lik
    assert value + kl == pytest.approx(log_lik, rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 0.3))
def test_m_step_maximises_the_elbo_over_parameters(seed, scale):
    X, _, _, _ = make_data(12, n=80)
    rng = np.random.default_rng(seed)
    resp = rng.dirichlet(np.ones(3), size=len(X))
    weights, means, covariances = em.m_step(X, resp, reg_covar=0.0)
    best = em.elbo(X, resp, weights, means, covariances)
    # A random nearby point of the parameter space: weights stay on the simplex,
    # covariances stay positive definite (congruence by I + small).
    other_weights = weights * np.exp(scale * rng.normal(size=3))
    other_weights /= other_weights.sum()
    other_means = means + scale * rng.normal(size=means.shape)
    A = np.eye(2) + scale * rng.normal(size=(3, 2, 2))
    other_covariances = A @ covariances @ np.swapaxes(A, 1, 2)
    assert em.elbo(X, resp, other_weights, other_means, other_covariances) <= best


def test_log_likelihood_never_decreases_checked_one_iteration_at_a_time():
    X, weights, means, covariances = make_data(13, n=300, K=4)
    previous = scipy_log_likelihood(X, weights, means, covariances)
    for _ in range(30):
        resp = np.exp(em.e_step(X, weights, means, covariances))
        after_e = em.elbo(X, resp, weights, means, covariances)
        assert after_e == pytest.approx(previous, rel=1e-10)            # the gap closes
        weights, means, covariances = em.m_step(X, resp)
        after_m = em.elbo(X, resp, weights, means, covariances)
        current = scipy_log_likelihood(X, weights, means, covariances)
        slack = 1e-10 * abs(current)
        assert after_m >= after_e - slack                                # M-step raises L
        assert current >= after_m - slack                                # L <= log p(x | theta)
        assert current >= previous - slack                               # so log p rises
        previous = current


def test_fit_gmm_records_the_staircase():
    X, weights, means, covariances = make_data(14, n=300)
    fit = em.fit_gmm(X, weights, means, covariances, max_iter=15, tol=0.0)
    ll, elbos = fit.log_likelihoods, fit.elbos
    assert ll.shape == (16,) and elbos.shape == (30,)
    slack = 1e-10 * np.abs(ll).max()
    # After every E-step the ELBO touches the log-likelihood (to 1e-8) ...
    np.testing.assert_allclose(elbos[0::2], ll[:-1], rtol=1e-8)
    # ... after every M-step it is below the new log-likelihood, above the old one.
    assert np.all(elbos[1::2] <= ll[1:] + slack)
    assert np.all(elbos[1::2] >= elbos[0::2] - slack)
    assert np.all(np.diff(ll) >= -slack)
    # The recorded values agree with the public functions (an ELBO through discrete_elbo).
    w, m, c = weights, means, covariances
    for t in range(3):
        resp = np.exp(em.e_step(X, w, m, c))
        assert elbos[2 * t] == pytest.approx(em.elbo(X, resp, w, m, c), rel=1e-10)
        w, m, c = em.m_step(X, resp)
        assert elbos[2 * t + 1] == pytest.approx(em.elbo(X, resp, w, m, c), rel=1e-10)
        assert ll[t + 1] == pytest.approx(scipy_log_likelihood(X, w, m, c), rel=1e-10)


def test_tol_zero_runs_exactly_max_iter_without_warning():
    X, weights, means, covariances = make_data(15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = em.fit_gmm(X, weights, means, covariances, max_iter=100, tol=0.0)
    assert fit.n_iter == 100 and not fit.converged
    assert fit.log_likelihoods.shape == (101,) and fit.elbos.shape == (200,)


def test_fit_gmm_stops_when_the_log_likelihood_stops_rising():
    X, weights, means, covariances = make_data(16)
    fit = em.fit_gmm(X, weights, means, covariances, max_iter=500, tol=1e-6)
    assert fit.converged and fit.n_iter < 500
    per_point = np.diff(fit.log_likelihoods) / len(X)
    assert abs(per_point[-1]) < 1e-6 and np.all(np.abs(per_point[:-1]) >= 1e-6)


def test_fit_gmm_warns_when_it_runs_out_of_iterations():
    X, weights, means, covariances = make_data(17)
    with pytest.warns(UserWarning, match="max_iter"):
        fit = em.fit_gmm(X, weights, means, covariances, max_iter=2, tol=1e-12)
    assert not fit.converged and fit.n_iter == 2


# ---------------------------------------------------------------------- bad input

GOOD = make_data(18, n=30)


def call_with(**changes):
    X, weights, means, covariances = GOOD
    args = {"X": X, "weights": weights, "means": means, "covariances": covariances, **changes}
    return em.fit_gmm(args.pop("X"), args.pop("weights"), args.pop("means"),
                      args.pop("covariances"), **args)


@pytest.mark.parametrize("changes, name", [
    ({"X": np.zeros(30)}, "X"),
    ({"X": np.full((30, 2), np.nan)}, "X"),
    ({"weights": np.array([0.5, 0.5, 0.5])}, "weights"),
    ({"weights": np.array([1.2, -0.1, -0.1])}, "weights"),
    ({"weights": np.array([0.5, 0.5, 0.0])}, "weights"),
    ({"weights": np.full((1, 3), 1 / 3)}, "weights"),
    ({"means": np.zeros((2, 2))}, "means"),
    ({"means": np.zeros((3, 3))}, "means"),
    ({"covariances": np.tile(np.eye(2), (2, 1, 1))}, "covariances"),
    ({"covariances": np.tile([[1.0, 0.5], [0.0, 1.0]], (3, 1, 1))}, "covariances"),
    ({"covariances": np.tile([[1.0, 2.0], [2.0, 1.0]], (3, 1, 1))}, "covariances"),
    ({"max_iter": 0}, "max_iter"),
    ({"max_iter": 2.5}, "max_iter"),
    ({"tol": -1.0}, "tol"),
    ({"tol": np.nan}, "tol"),
    ({"reg_covar": -1e-6}, "reg_covar"),
    ({"reg_covar": "big"}, "reg_covar"),
])
def test_fit_gmm_rejects_bad_input(changes, name):
    # "<name> must": other messages mention X and weights ("to match weights and X").
    with pytest.raises(ValueError, match=f"{name} must"):
        call_with(**changes)


def test_step_functions_reject_bad_input():
    X, weights, means, covariances = GOOD
    resp = np.full((30, 3), 1 / 3)
    # One feature in X but two in the means: the mismatch is reported against the means.
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\) = \(3, 1\) to match weights and X"):
        em.e_step(X[:, :1], weights, means, covariances)
    with pytest.raises(ValueError, match="covariances must be positive definite"):
        em.e_step(X, weights, means, -covariances)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        em.log_likelihood(X, weights[:2], means, covariances)
    with pytest.raises(ValueError, match="resp must have shape"):
        em.m_step(X, resp[:10])
    with pytest.raises(ValueError, match="resp must sum to 1"):
        em.m_step(X, np.full((30, 3), 0.5))
    with pytest.raises(ValueError, match="reg_covar must be >= 0"):
        em.m_step(X, resp, reg_covar=-1.0)
    with pytest.raises(ValueError, match="X must be a 2-D"):
        em.m_step(X[:, 0], resp)
    with pytest.raises(ValueError, match=r"resp must have shape \(n, K\) = \(30, 3\)"):
        em.elbo(X, np.full((30, 2), 0.5), weights, means, covariances)
    with pytest.raises(ValueError, match="resp must sum to 1"):
        em.elbo(X, np.full((30, 3), 0.5), weights, means, covariances)
    with pytest.raises(ValueError, match="X must be finite"):
        em.elbo(np.inf * X, resp, weights, means, covariances)


def test_a_collapse_without_regularisation_raises_and_names_reg_covar():
    # One component owns a single point: its covariance is exactly singular.
    X = np.array([[0.0, 0.0], [10.0, 10.0], [10.5, 9.0], [9.0, 10.5], [11.0, 11.0]])
    resp = np.zeros((5, 2))
    resp[0, 0] = 1.0
    resp[1:, 1] = 1.0
    with pytest.raises(ValueError, match="reg_covar"):
        em.m_step(X, resp, reg_covar=0.0)
    weights = np.array([0.2, 0.8])
    means = np.array([[0.0, 0.0], [10.0, 10.0]])
    covariances = np.stack([1e-4 * np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match="reg_covar"):
        em.fit_gmm(X, weights, means, covariances, reg_covar=0.0, max_iter=3, tol=0.0)
    # With the regulariser the same start is fine and the collapsed covariance is reg_covar I.
    fit = em.fit_gmm(X, weights, means, covariances, reg_covar=1e-3, max_iter=3, tol=0.0)
    np.testing.assert_allclose(fit.covariances[0], 1e-3 * np.eye(2), rtol=1e-6)
