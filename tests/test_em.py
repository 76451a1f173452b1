"""Chapter 2: EM for a Gaussian mixture as coordinate ascent on the ELBO.

The independent routes are scikit-learn's ``GaussianMixture`` (started from the
same responsibilities, through its own ``_initialize(X, resp)``),
``scipy.stats.multivariate_normal`` for the densities, a direct
per-component loop for the M-step formulas, and
``vicourse.elbo.discrete_elbo`` for the ELBO.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from bad_inputs import assert_rejects, bad_arrays, bad_ints, bad_scalars
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from vicourse import ConvergenceWarning, em


def make_data(seed=0, n=400, d=2, K=3):
    """A seeded mixture sample and random starting responsibilities (rows from a Dirichlet)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(K, d))
    factors = rng.normal(size=(K, d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    labels = rng.integers(K, size=n)
    X = centres[labels] + np.einsum("nab,nb->na", factors[labels], rng.normal(size=(n, d)))
    resp_init = rng.dirichlet(np.ones(K), size=n)
    return X, resp_init


def make_params(X, K, seed):
    """A poor but valid parameter point: equal weights, K data points as means, the data covariance."""
    rng = np.random.default_rng(seed)
    weights = np.full(K, 1.0 / K)
    means = X[rng.choice(len(X), K, replace=False)]
    covariances = np.tile(np.cov(X.T), (K, 1, 1))
    return weights, means, covariances


def scipy_log_joint(X, weights, means, covariances):
    """log pi_k + log N(x_i | mu_k, Sigma_k) evaluated by scipy, one component at a time."""
    return np.stack([np.log(w) + multivariate_normal(m, c).logpdf(X)
                     for w, m, c in zip(weights, means, covariances, strict=True)], axis=1)


def scipy_log_likelihood(X, weights, means, covariances):
    return logsumexp(scipy_log_joint(X, weights, means, covariances), axis=1).sum()


def sklearn_fit(X, resp_init, max_iter, reg_covar=1e-6, tol=0.0):
    """scikit-learn's EM from the responsibilities ``resp_init``.

    Replacing ``_initialize_parameters`` makes scikit-learn call its own
    ``_initialize(X, resp)``: an M-step from ``resp_init`` (its estimate of the
    parameters from responsibilities), then ``max_iter`` E/M iterations.
    """
    gm = GaussianMixture(n_components=resp_init.shape[1], covariance_type="full",
                         max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_init=1)
    gm._initialize_parameters = lambda X, random_state, xp=None: gm._initialize(X, resp_init)
    with warnings.catch_warnings():
        # tol=0 never converges by design: scikit-learn warns.
        warnings.simplefilter("ignore")
        return gm.fit(X)


def fit_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return em.fit_gmm(*args, **kwargs)


# ---------------------------------------------------------------------- against scikit-learn

@pytest.mark.parametrize("max_iter", [1, 2, 7, 25])
@pytest.mark.parametrize("seed, d, K", [(0, 2, 3), (1, 3, 4)])
def test_fit_gmm_matches_sklearn_from_the_same_responsibilities(seed, d, K, max_iter):
    # Both start with an M-step from resp_init, then run max_iter E/M iterations.
    X, resp_init = make_data(seed, d=d, K=K)
    ours = em.fit_gmm(X, resp_init, max_iter=max_iter, tol=0.0)
    ref = sklearn_fit(X, resp_init, max_iter)
    n = len(X)
    assert ours.n_iter == ref.n_iter_ == max_iter
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8, atol=1e-12)
    # lower_bounds_[t] is the mean log-likelihood at the parameters iteration t + 1's
    # E-step saw: log_likelihoods[t] / n, and the ELBO after that E-step / n.
    np.testing.assert_allclose(ours.log_likelihoods[:-1] / n, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.elbos_after_e_step / n, ref.lower_bounds_, rtol=1e-10)
    # lower_bound_ is the last of them: before the last M-step, not at the returned fit.
    assert ours.log_likelihoods[-2] / n == pytest.approx(ref.lower_bound_, rel=1e-10)
    # The returned parameters' mean log-likelihood is scikit-learn's score.
    assert ours.log_likelihoods[-1] / n == pytest.approx(ref.score(X), rel=1e-10)


def test_a_start_from_parameters_is_their_e_step_then_an_m_step():
    # resp_init = exp(e_step(theta)) makes fit_gmm's first M-step scikit-learn's first
    # iteration from theta (weights_init, means_init, precisions_init), so after
    # t iterations fit_gmm is where scikit-learn is after t + 1.
    X, _ = make_data(21, d=3, K=3)
    weights, means, covariances = make_params(X, 3, 21)
    resp_init = np.exp(em.e_step(X, weights, means, covariances))
    ours = em.fit_gmm(X, resp_init, max_iter=4, tol=0.0)
    ref = GaussianMixture(n_components=3, covariance_type="full", weights_init=weights,
                          means_init=means, precisions_init=np.linalg.inv(covariances),
                          max_iter=5, tol=0.0, reg_covar=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.log_likelihoods[:-1] / len(X), ref.lower_bounds_[1:],
                               rtol=1e-10)


def test_fit_gmm_matches_sklearn_with_a_large_regulariser():
    X, resp_init = make_data(2)
    ours = em.fit_gmm(X, resp_init, max_iter=5, tol=0.0, reg_covar=0.5)
    ref = sklearn_fit(X, resp_init, 5, reg_covar=0.5)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)


def test_fit_gmm_with_tol_holds_sklearns_parameters_after_as_many_iterations():
    # The two stopping rules differ (fit_gmm: the bound after the M-step; scikit-learn:
    # the log-likelihood before it), but each iterate is the same.
    X, resp_init = make_data(22)
    ours = em.fit_gmm(X, resp_init, max_iter=500, tol=1e-4)
    ref = sklearn_fit(X, resp_init, ours.n_iter, tol=0.0)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)
    assert ours.converged


def test_a_component_that_loses_all_its_points_stays_finite_and_matches_sklearn():
    X, resp_init = make_data(3)
    resp_init = resp_init.copy()
    resp_init[:, 1] += resp_init[:, 0]
    resp_init[:, 0] = 0.0                    # component 0 starts with no responsibility at all
    ours = em.fit_gmm(X, resp_init, max_iter=4, tol=0.0)
    ref = sklearn_fit(X, resp_init, 4)
    for value in (ours.weights, ours.means, ours.covariances, ours.log_likelihoods, ours.elbos):
        assert np.all(np.isfinite(value))
    # N_k = 10 eps: a weight of about 1e-15 / n, not zero and not NaN.
    assert 0 < ours.weights[0] < 1e-14
    np.testing.assert_allclose(ours.covariances[0], 1e-6 * np.eye(2), rtol=1e-8)
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8, atol=1e-12)


def test_fit_gmm_matches_sklearn_with_a_narrow_component_far_from_the_data_mean():
    # A tight cluster of 6 points 100 units from the bulk, owned by one component: its
    # moments expansion would cancel (eps * 100^2 / 1e-10 ~ 1e-8 relative), so fit_gmm
    # must take the centred route for it at every step.
    rng = np.random.default_rng(20)
    spike = np.array([60.0, -80.0])
    X = np.vstack([rng.normal(size=(200, 2)), spike + 1e-5 * rng.normal(size=(6, 2))])
    resp_init = np.zeros((206, 2))
    resp_init[:200, 0] = resp_init[200:, 1] = 1.0
    ours = em.fit_gmm(X, resp_init, max_iter=5, tol=0.0, reg_covar=1e-12)
    ref = sklearn_fit(X, resp_init, 5, reg_covar=1e-12)
    assert ours.covariances[1].max() < 1e-9
    np.testing.assert_allclose(ours.weights, ref.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.means, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.log_likelihoods[:-1] / len(X), ref.lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("offset, sd", [(1e-4, 1e-3), (0.05, 0.1), (0.5, 0.5), (1.0, 0.7)])
def test_the_loop_s_m_step_of_a_narrow_component_matches_sklearn_however_far_its_mean_moves(
        offset, sd):
    # Within fit_gmm the E-pass at theta_old gathers a narrow component's moments about
    # its old mean, and the M-step shifts them to the new mean; that shift cancels when
    # the mean moves far compared with the new spread, where the exact route must take
    # over.  A spike of 6 points 100 units out (spread 1e-5) and an old component of
    # standard deviation `sd` whose mean is `offset` away from it: the new parameters
    # must be scikit-learn's M-step from the same responsibilities.
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

    rng = np.random.default_rng(21)
    spike = np.array([60.0, -80.0])
    X = np.vstack([rng.normal(size=(200, 2)), spike + 1e-5 * rng.normal(size=(6, 2))])
    weights = np.array([0.97, 0.03])
    means = np.array([[0.0, 0.0], spike + offset])
    covariances = np.array([np.eye(2), sd**2 * np.eye(2)])
    data = em._Data(X, 2)
    p_old = data.params(weights, means - data.centre, covariances)
    assert 1 in p_old.narrow                                   # the shifted route is offered
    e = data.e_pass(p_old)
    new_weights, new_means_c, new_covariances = data.m_step(
        e["stats"], 1e-12, p_old=p_old, about_old_means=e["about_old_means"])
    resp = np.exp(em.e_step(X, weights, means, covariances))
    n_k, ref_means, ref_covariances = _estimate_gaussian_parameters(X, resp, 1e-12, "full")
    np.testing.assert_allclose(new_weights, n_k / len(X), rtol=1e-12)
    np.testing.assert_allclose(new_means_c + data.centre, ref_means, rtol=1e-10)
    np.testing.assert_allclose(new_covariances, ref_covariances, rtol=1e-8)


def test_one_e_step_then_m_step_is_one_sklearn_iteration():
    X, resp_init = make_data(4, d=3, K=2)
    theta0 = em.m_step(X, resp_init)
    resp = np.exp(em.e_step(X, *theta0))
    new_weights, new_means, new_covariances = em.m_step(X, resp, reg_covar=1e-6)
    ref = sklearn_fit(X, resp_init, 1)
    np.testing.assert_allclose(new_weights, ref.weights_, rtol=1e-10)
    np.testing.assert_allclose(new_means, ref.means_, rtol=1e-10)
    np.testing.assert_allclose(new_covariances, ref.covariances_, rtol=1e-10)


# ---------------------------------------------------------------------- the two steps

def test_e_step_matches_scipy_multivariate_normal():
    X, _ = make_data(5, d=3, K=4)
    _, means, covariances = make_params(X, 4, 5)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    ref_joint = scipy_log_joint(X, weights, means, covariances)
    np.testing.assert_allclose(em.log_joint(X, weights, means, covariances), ref_joint,
                               rtol=1e-10)
    ref = ref_joint - logsumexp(ref_joint, axis=1, keepdims=True)
    log_resp = em.e_step(X, weights, means, covariances)
    np.testing.assert_allclose(log_resp, ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-13)
    assert em.log_likelihood(X, weights, means, covariances) == pytest.approx(
        scipy_log_likelihood(X, weights, means, covariances), rel=1e-12)


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
    X, resp = make_data(6, d=3, K=3)
    weights, means, covariances = em.m_step(X, resp, reg_covar=0.0)
    for k in range(3):
        n_k = resp[:, k].sum()
        x_bar = resp[:, k] @ X / n_k
        diff = X - x_bar
        scatter = (resp[:, k, None] * diff).T @ diff / n_k           # S_k of eq-scatter
        assert weights[k] == pytest.approx(n_k / len(X), rel=1e-12)
        np.testing.assert_allclose(means[k], x_bar, rtol=1e-11)
        np.testing.assert_allclose(covariances[k], scatter, rtol=1e-10)


def test_reg_covar_is_added_to_every_diagonal():
    X, resp = make_data(7)
    _, _, plain = em.m_step(X, resp, reg_covar=0.0)
    _, _, regularised = em.m_step(X, resp, reg_covar=0.25)
    np.testing.assert_allclose(regularised - plain, np.broadcast_to(0.25 * np.eye(2), plain.shape),
                               atol=1e-12)


def test_m_step_is_unchanged_by_shifting_the_data():
    # Translation equivariance, which the implementation's centring relies on.
    X, resp = make_data(8)
    shift = np.array([1e3, -2e3])
    w0, m0, c0 = em.m_step(X, resp)
    w1, m1, c1 = em.m_step(X + shift, resp)
    np.testing.assert_allclose(w1, w0, rtol=1e-12)
    np.testing.assert_allclose(m1 - shift, m0, atol=1e-9)
    np.testing.assert_allclose(c1, c0, rtol=1e-7)


def test_data_offset_by_1e8_gives_the_fit_of_the_unshifted_data():
    # The data are centred before any moment is formed; a naive E[x x^T] - mu mu^T at
    # |x| = 1e8 would lose all 16 digits.  X_back is the shifted data moved back exactly
    # (Sterbenz), so the two fits see the same points up to a translation.
    X, resp_init = make_data(23, n=300)
    shifted = X + 1e8
    X_back = shifted - 1e8
    far = em.fit_gmm(shifted, resp_init, max_iter=30, tol=0.0)
    near = em.fit_gmm(X_back, resp_init, max_iter=30, tol=0.0)
    np.testing.assert_allclose(far.weights, near.weights, rtol=1e-7)
    np.testing.assert_allclose(far.means - 1e8, near.means, atol=1e-6)
    np.testing.assert_allclose(far.covariances, near.covariances, rtol=1e-6)
    # The two centred data sets differ by a translation of about 1e-8 (the rounding of
    # the mean at 1e8); the early iterations amplify it to about 1e-7 relative.
    np.testing.assert_allclose(far.log_likelihoods, near.log_likelihoods, rtol=1e-6)


# ---------------------------------------------------------------------- the ELBO and its invariants

def test_elbo_equals_the_log_likelihood_at_the_exact_posterior():
    X, _ = make_data(10, d=3, K=2)
    weights, means, covariances = make_params(X, 2, 10)
    resp = np.exp(em.e_step(X, weights, means, covariances))
    ref = scipy_log_likelihood(X, weights, means, covariances)
    assert em.elbo(X, resp, weights, means, covariances) == pytest.approx(ref, rel=1e-10)
    assert em.log_likelihood(X, weights, means, covariances) == pytest.approx(ref, rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_other_q_has_a_smaller_elbo(seed):
    # The E-step maximises the ELBO over q: L(q) = log p(x) - KL(q || posterior).
    X, _ = make_data(11, n=60)
    weights, means, covariances = make_params(X, 3, 11)
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
    X, _ = make_data(12, n=80)
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
    X, _ = make_data(13, n=300, K=4)
    weights, means, covariances = make_params(X, 4, 13)
    previous = scipy_log_likelihood(X, weights, means, covariances)
    for _ in range(30):
        resp = np.exp(em.e_step(X, weights, means, covariances))
        after_e = em.elbo(X, resp, weights, means, covariances)
        assert after_e == pytest.approx(previous, rel=1e-10)            # the gap closes
        weights, means, covariances = em.m_step(X, resp, reg_covar=0.0)
        after_m = em.elbo(X, resp, weights, means, covariances)
        current = scipy_log_likelihood(X, weights, means, covariances)
        slack = 1e-10 * abs(current)
        assert after_m >= after_e - slack                                # M-step raises L
        assert current >= after_m - slack                                # L <= log p(x | theta)
        assert current >= previous - slack                               # so log p rises
        previous = current


def test_fit_gmm_records_the_bound_and_the_staircase():
    X, resp_init = make_data(14, n=300)
    fit = em.fit_gmm(X, resp_init, max_iter=15, tol=0.0, reg_covar=0.0)
    ll, after_e, after_m = fit.log_likelihoods, fit.elbos_after_e_step, fit.elbos
    assert ll.shape == (16,) and after_e.shape == after_m.shape == (15,)
    slack = 1e-10 * np.abs(ll).max()
    # After every E-step the ELBO touches the log-likelihood ...
    np.testing.assert_allclose(after_e, ll[:-1], rtol=1e-10)
    # ... after every M-step it is below the new log-likelihood, above the old one.
    assert np.all(after_m <= ll[1:] + slack)
    assert np.all(after_m >= after_e - slack)
    assert np.all(np.diff(ll) >= -slack)
    # Each recorded value against the public functions (the ELBO through discrete_elbo,
    # the log-likelihood through scipy), replaying the iterations step by step.
    theta = em.m_step(X, resp_init, reg_covar=0.0)
    assert ll[0] == pytest.approx(scipy_log_likelihood(X, *theta), rel=1e-12)
    for t in range(4):
        resp = np.exp(em.e_step(X, *theta))
        assert after_e[t] == pytest.approx(em.elbo(X, resp, *theta), rel=1e-12)
        theta = em.m_step(X, resp, reg_covar=0.0)
        assert after_m[t] == pytest.approx(em.elbo(X, resp, *theta), rel=1e-12)
        assert ll[t + 1] == pytest.approx(scipy_log_likelihood(X, *theta), rel=1e-12)


def test_the_recorded_bound_after_an_m_step_includes_reg_covar():
    # elbos[t] is computed in closed form from the M-step's statistics; with
    # reg_covar > 0 the quadratic term is N_k (d - eps tr Lambda_k), not N_k d.
    X, resp_init = make_data(15, n=200)
    fit = em.fit_gmm(X, resp_init, max_iter=1, tol=0.0, reg_covar=0.3)
    theta0 = em.m_step(X, resp_init, reg_covar=0.3)
    resp = np.exp(em.e_step(X, *theta0))
    theta1 = em.m_step(X, resp, reg_covar=0.3)
    assert fit.elbos[0] == pytest.approx(em.elbo(X, resp, *theta1), rel=1e-12)


def test_tol_zero_runs_exactly_max_iter_without_warning():
    X, resp_init = make_data(15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = em.fit_gmm(X, resp_init, max_iter=100, tol=0.0)
    assert fit.n_iter == 100 and not fit.converged
    assert fit.log_likelihoods.shape == (101,) and fit.elbos.shape == (100,)


def test_fit_gmm_stops_when_the_bound_per_point_changes_by_less_than_tol():
    X, resp_init = make_data(16)
    fit = em.fit_gmm(X, resp_init, max_iter=500, tol=1e-6)
    assert fit.converged and fit.n_iter < 500
    per_point = np.abs(np.diff(fit.elbos)) / len(X)
    assert per_point[-1] < 1e-6 and np.all(per_point[:-1] >= 1e-6)


def test_fit_gmm_warns_when_it_runs_out_of_iterations():
    X, resp_init = make_data(17)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        fit = em.fit_gmm(X, resp_init, max_iter=2, tol=1e-12)
    assert not fit.converged and fit.n_iter == 2


def test_fit_gmm_warns_if_the_log_likelihood_falls_without_regularisation(monkeypatch):
    # A broken M-step (means pushed away from the weighted means) is what the warning
    # is for: with reg_covar=0 a fall of log p(x | theta) cannot be EM.
    X, resp_init = make_data(18)
    right = em._params_from_statistics

    calls = []

    def broken(stats, centre, reg_covar):
        weights, means_c, covariances = right(stats, centre, reg_covar)
        calls.append(1)
        if len(calls) == 4:              # the M-step of iteration 3 goes wrong
            means_c = means_c + 3.0
        return weights, means_c, covariances

    monkeypatch.setattr(em, "_params_from_statistics", broken)
    with pytest.warns(ConvergenceWarning, match="log-likelihood fell .* in iteration 3"):
        em.fit_gmm(X, resp_init, max_iter=5, tol=0.0, reg_covar=0.0)


def test_regularised_m_step_can_lower_the_log_likelihood_and_fit_gmm_does_not_warn():
    # Two tight clusters; from the reg_covar=0 optimum, one regularised step adds
    # eps I to covariances of size 1e-4: every point's density drops, and so does
    # the log-likelihood.  EM's guarantee covers reg_covar=0 only.
    rng = np.random.default_rng(24)
    X = np.vstack([0.01 * rng.normal(size=(50, 2)), [3.0, 0.0] + 0.01 * rng.normal(size=(50, 2))])
    resp_init = np.zeros((100, 2))
    resp_init[:50, 0] = resp_init[50:, 1] = 1.0
    exact = em.fit_gmm(X, resp_init, max_iter=3, tol=0.0, reg_covar=0.0)
    assert np.all(np.diff(exact.log_likelihoods) >= -1e-10 * abs(exact.log_likelihoods[-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regularised = em.fit_gmm(X, resp_init, max_iter=3, tol=0.0, reg_covar=1e-2)
    theta_0 = em.m_step(X, resp_init, reg_covar=0.0)
    theta_1 = em.m_step(X, np.exp(em.e_step(X, *theta_0)), reg_covar=1e-2)
    assert scipy_log_likelihood(X, *theta_1) < scipy_log_likelihood(X, *theta_0) - 100
    assert regularised.log_likelihoods[-1] < exact.log_likelihoods[-1] - 100


def test_peak_memory_of_fit_gmm_does_not_grow_with_n():
    # The data are read in blocks: no array of n rows is made (resp_init and X exist
    # before the measurement).  Both sizes span several blocks.
    peaks = []
    for n in (60_000, 240_000):
        X, resp_init = make_data(25, n=n, d=3, K=3)
        tracemalloc.start()
        em.fit_gmm(X, resp_init, max_iter=2, tol=0.0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.1 * peaks[0]
    assert peaks[1] < 0.5 * (X.nbytes + resp_init.nbytes)


# ---------------------------------------------------------------------- bad input, as properties

GOOD_X, GOOD_RESP = make_data(18, n=30)
GOOD_PARAMS = make_params(GOOD_X, 3, 18)


def every_function(X=GOOD_X, resp=GOOD_RESP, params=GOOD_PARAMS):
    """Each public function of em called with the given arguments."""
    weights, means, covariances = params
    return [
        lambda: em.log_joint(X, weights, means, covariances),
        lambda: em.log_likelihood(X, weights, means, covariances),
        lambda: em.e_step(X, weights, means, covariances),
        lambda: em.elbo(X, resp, weights, means, covariances),
    ]


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(30, 2)),
                     # finite, but its squared distances overflow float64
                     st.sampled_from([GOOD_X * 1e200, GOOD_X * 1e160])))
def test_every_function_rejects_bad_data(bad):
    calls = every_function(X=bad)
    calls += [lambda: em.m_step(bad, GOOD_RESP), lambda: em.fit_gmm(bad, GOOD_RESP)]
    for call in calls:
        assert_rejects(call, "X")


def test_data_of_another_dimension_than_the_means_is_reported_against_the_means():
    for call in every_function(X=np.zeros((30, 3))):
        assert_rejects(call, "means")


def _bad_probability_rows(shape):
    n, K = shape
    rows = np.full(shape, 1.0 / K)
    too_big, negative, wrong_n, one_d = rows * 1.5, rows.copy(), rows[:-1], rows[:, 0]
    negative[0, :2] = [1.5, -0.5]
    return st.one_of(bad_arrays(shape=shape),
                     st.sampled_from([too_big, negative, wrong_n, one_d, rows[:, :, None]]))


@settings(max_examples=40, deadline=None)
@given(bad=_bad_probability_rows((30, 3)))
def test_m_step_elbo_and_fit_gmm_reject_bad_responsibilities(bad):
    weights, means, covariances = GOOD_PARAMS
    assert_rejects(lambda: em.m_step(GOOD_X, bad), "resp")
    assert_rejects(lambda: em.elbo(GOOD_X, bad, weights, means, covariances), "resp")
    assert_rejects(lambda: em.fit_gmm(GOOD_X, bad), "resp_init")


def test_fit_gmm_refuses_more_components_than_points():
    X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    resp_init = np.full((3, 4), 0.25)
    assert_rejects(lambda: em.fit_gmm(X, resp_init), "resp_init")
    with pytest.raises(ValueError, match="more components than points"):
        em.fit_gmm(X, resp_init)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(3,)),
                     st.sampled_from([np.array([0.5, 0.5, 0.5]), np.array([1.2, -0.1, -0.1]),
                                      np.array([0.5, 0.5, 0.0]), np.full((1, 3), 1 / 3),
                                      np.array([0.5, 0.5])])))
def test_every_function_rejects_bad_weights(bad):
    _, means, covariances = GOOD_PARAMS
    for call in every_function(params=(bad, means, covariances)):
        assert_rejects(call, "weights")


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(3, 2)),
                     st.sampled_from([np.zeros((2, 2)), np.zeros((3, 3)), np.zeros((3, 2, 1)),
                                      # so far from X that every log density overflows
                                      GOOD_PARAMS[1] * 1e200, GOOD_PARAMS[1] + 1e160])))
def test_every_function_rejects_bad_means(bad):
    weights, _, covariances = GOOD_PARAMS
    for call in every_function(params=(weights, bad, covariances)):
        assert_rejects(call, "means")


NOT_PSD = [np.tile(np.eye(2), (2, 1, 1)), np.tile([[1.0, 0.5], [0.0, 1.0]], (3, 1, 1)),
           np.tile([[1.0, 2.0], [2.0, 1.0]], (3, 1, 1)), -np.tile(np.eye(2), (3, 1, 1)),
           np.zeros((3, 2, 2)), np.tile(np.eye(3), (3, 1, 1))]


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(3, 2, 2)), st.sampled_from(NOT_PSD)))
def test_every_function_rejects_bad_covariances(bad):
    weights, means, _ = GOOD_PARAMS
    for call in every_function(params=(weights, means, bad)):
        assert_rejects(call, "covariances")


@settings(max_examples=40, deadline=None)
@given(bad=bad_ints(minimum=1))
def test_fit_gmm_rejects_bad_max_iter(bad):
    assert_rejects(lambda: em.fit_gmm(GOOD_X, GOOD_RESP, max_iter=bad), "max_iter")


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["tol", "reg_covar"]),
       bad=st.one_of(bad_scalars(), st.floats(-1e300, -1e-300)))
def test_fit_gmm_and_m_step_reject_bad_tolerances(name, bad):
    assert_rejects(lambda: em.fit_gmm(GOOD_X, GOOD_RESP, **{name: bad}), name)
    if name == "reg_covar":
        assert_rejects(lambda: em.m_step(GOOD_X, GOOD_RESP, reg_covar=bad), name)


def test_huge_results_are_refused_before_allocating():
    # 2**20 points and 2**10 components would need an (n, K) array of 8 GiB.
    X = np.zeros((2**20, 1))
    K = 2**10
    params = (np.full(K, 1.0 / K), np.zeros((K, 1)), np.ones((K, 1, 1)))
    assert_rejects(lambda: em.log_joint(X, *params), "weights")
    assert_rejects(lambda: em.e_step(X, *params), "weights")


def test_a_collapse_without_regularisation_raises_and_names_reg_covar():
    # One component owns a single point: its covariance is exactly singular.
    X = np.array([[0.0, 0.0], [10.0, 10.0], [10.5, 9.0], [9.0, 10.5], [11.0, 11.0]])
    resp = np.zeros((5, 2))
    resp[0, 0] = 1.0
    resp[1:, 1] = 1.0
    with pytest.raises(ValueError, match="reg_covar"):
        em.m_step(X, resp, reg_covar=0.0)
    with pytest.raises(ValueError, match="reg_covar"):
        em.fit_gmm(X, resp, reg_covar=0.0, max_iter=3, tol=0.0)
    # With the regulariser the same start is fine and the collapsed covariance is reg_covar I.
    fit = em.fit_gmm(X, resp, reg_covar=1e-3, max_iter=3, tol=0.0)
    np.testing.assert_allclose(fit.covariances[0], 1e-3 * np.eye(2), rtol=1e-6)

