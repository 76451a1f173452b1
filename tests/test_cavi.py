"""Tests of vicourse.cavi (Chapter 3): every fit against an independent route."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats
from scipy.optimize import linear_sum_assignment
from scipy.special import roots_legendre

from vicourse import cavi

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def assert_never_decreases(elbos, rtol=1e-12):
    """Each sweep's ELBO is at least the previous one, up to rounding."""
    elbos = np.asarray(elbos)
    slack = rtol * np.maximum(1.0, np.abs(elbos[:-1]))
    assert np.all(np.diff(elbos) >= -slack), np.diff(elbos).min()


def fit_quietly(fn, *args, **kwargs):
    """Run a fit with tol=0 (a fixed number of sweeps) without its non-convergence warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------
# 1. the correlated 2-D Gaussian
# ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(rho=st.floats(-0.95, 0.95), s1=st.floats(0.3, 3.0), s2=st.floats(0.3, 3.0),
       mu=st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_gaussian_2d_fixed_point_is_the_mean_with_conditional_variances(rho, s1, s2, mu):
    cov = np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
    result = cavi.gaussian_2d(mu, cov, max_iter=2000, tol=1e-14)
    np.testing.assert_allclose(result.means, mu, atol=1e-5 * (1 + np.abs(mu).max()))
    # 1 / Lambda_ii is the conditional variance Sigma_ii - Sigma_ij^2 / Sigma_jj (Schur complement)
    conditional = np.array([s1**2 - (rho * s1 * s2) ** 2 / s2**2, s2**2 - (rho * s1 * s2) ** 2 / s1**2])
    np.testing.assert_allclose(result.variances, conditional, rtol=1e-10)
    assert np.all(result.variances <= np.diag(cov) * (1 + 1e-12))
    assert_never_decreases(result.elbos)


def test_gaussian_2d_variances_are_inverse_precision_diagonal():
    cov = np.array([[2.0, 1.2], [1.2, 1.0]])
    result = cavi.gaussian_2d([1.0, -2.0], cov, init=[5.0, 5.0])
    np.testing.assert_allclose(result.variances, 1.0 / np.diag(np.linalg.inv(cov)), rtol=1e-12)
    assert result.converged


def test_gaussian_2d_elbo_is_minus_kl_from_torch():
    mean, cov = np.array([0.5, -1.0]), np.array([[1.0, 0.8], [0.8, 2.0]])
    for max_iter in (1, 2, 5):
        result = fit_quietly(cavi.gaussian_2d, mean, cov, init=[3.0, -4.0], max_iter=max_iter, tol=0)
        q = torch.distributions.MultivariateNormal(torch.as_tensor(result.means),
                                                   torch.diag(torch.as_tensor(result.variances)))
        p = torch.distributions.MultivariateNormal(torch.as_tensor(mean), torch.as_tensor(cov))
        kl = float(torch.distributions.kl_divergence(q, p))
        assert result.elbos[-1] == pytest.approx(-kl, abs=1e-12)
        assert result.elbos[-1] <= 0.0  # log evidence of a normalised target is 0


def test_gaussian_2d_warns_when_not_converged():
    with pytest.warns(UserWarning, match="max_iter"):
        result = cavi.gaussian_2d([0.0, 0.0], [[1.0, 0.99], [0.99, 1.0]], init=[5.0, 5.0], max_iter=3)
    assert not result.converged and result.n_iter == 3


@pytest.mark.parametrize("kwargs, name", [
    (dict(mean=[0.0, 0.0, 0.0]), "mean"),
    (dict(mean=[0.0, np.nan]), "mean"),
    (dict(cov=[[1.0, 2.0], [2.0, 1.0]]), "cov"),
    (dict(cov=[[1.0, 0.1], [0.2, 1.0]]), "cov"),
    (dict(init=[1.0]), "init"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=-1.0), "tol"),
])
def test_gaussian_2d_rejects_bad_input(kwargs, name):
    args = dict(mean=[0.0, 0.0], cov=np.eye(2)) | kwargs
    with pytest.raises(ValueError, match=name):
        cavi.gaussian_2d(args.pop("mean"), args.pop("cov"), **args)


# ---------------------------------------------------------------------------
# 2. the Normal-Gamma model
# ---------------------------------------------------------------------------

PRIOR = dict(mu0=0.5, lambda0=0.8, a0=2.0, b0=1.5)


def _data(n=15, seed=3):
    return np.random.default_rng(seed).normal(1.0, 1.7, size=n)


def test_normal_gamma_log_evidence_matches_sequential_student_t_predictives():
    # log p(x) = sum_i log p(x_i | x_<i); each predictive is a Student t (Murphy 2012, 4.6.3.6),
    # evaluated by scipy.stats.t from the posterior after the earlier points.
    x = _data()
    mu, lam, a, b = PRIOR["mu0"], PRIOR["lambda0"], PRIOR["a0"], PRIOR["b0"]
    total = 0.0
    for xi in x:
        scale = np.sqrt(b * (lam + 1) / (a * lam))
        total += stats.t.logpdf(xi, df=2 * a, loc=mu, scale=scale)
        # conjugate update by one point
        b = b + lam * (xi - mu) ** 2 / (2 * (lam + 1))
        mu, lam, a = (lam * mu + xi) / (lam + 1), lam + 1, a + 0.5
    assert cavi.normal_gamma_log_evidence(x, **PRIOR) == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(cavi.normal_gamma_posterior(x, **PRIOR), (mu, lam, a, b), rtol=1e-10)


def test_normal_gamma_elbo_matches_quadrature():
    # E_q[log p(x, mu, tau) - log q(mu, tau)] on a 300 x 300 Gauss-Legendre grid, densities from scipy.stats
    x = _data(n=8)
    mu_n, lambda_n, a_n, b_n = 1.1, 6.0, 5.0, 9.0
    q_mu = stats.norm(mu_n, 1 / np.sqrt(lambda_n))
    q_tau = stats.gamma(a_n, scale=1 / b_n)
    nodes, weights = roots_legendre(300)

    def rule(lo, hi):
        return 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo), 0.5 * (hi - lo) * weights

    mus, w_mu = rule(*q_mu.ppf([1e-12, 1 - 1e-12]))
    taus, w_tau = rule(*q_tau.ppf([1e-12, 1 - 1e-12]))
    mu, tau = mus[:, None], taus[None, :]
    log_joint = (stats.norm.logpdf(x[:, None, None], mu, 1 / np.sqrt(tau)).sum(axis=0)
                 + stats.norm.logpdf(mu, PRIOR["mu0"], 1 / np.sqrt(PRIOR["lambda0"] * tau))
                 + stats.gamma.logpdf(tau, PRIOR["a0"], scale=1 / PRIOR["b0"]))
    log_q = q_mu.logpdf(mu) + q_tau.logpdf(tau)
    value = w_mu @ (np.exp(log_q) * (log_joint - log_q)) @ w_tau
    assert cavi.normal_gamma_elbo(x, mu_n, lambda_n, a_n, b_n, **PRIOR) == pytest.approx(value, rel=1e-8)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 10_000), lambda0=st.floats(0.01, 10),
       a0=st.floats(0.1, 10), b0=st.floats(0.1, 10), mu0=st.floats(-3, 3))
def test_normal_gamma_elbo_never_decreases_and_stays_below_log_evidence(n, seed, lambda0, a0, b0, mu0):
    x = np.random.default_rng(seed).normal(2.0, 3.0, size=n)
    prior = dict(mu0=mu0, lambda0=lambda0, a0=a0, b0=b0)
    result = cavi.normal_gamma(x, **prior, init_precision=50.0, max_iter=500)
    assert result.converged
    assert_never_decreases(result.elbos)
    assert result.elbos.max() <= cavi.normal_gamma_log_evidence(x, **prior) + 1e-9


def test_normal_gamma_fixed_point_maximises_the_elbo_over_the_factorised_family():
    x = _data()
    fit = cavi.normal_gamma(x, **PRIOR, tol=1e-13)

    def negative_elbo(params):  # the optimiser minimises, so it gets -ELBO
        mu_n, log_lambda_n, log_a_n, log_b_n = params
        return -cavi.normal_gamma_elbo(x, mu_n, *np.exp([log_lambda_n, log_a_n, log_b_n]), **PRIOR)

    start = np.array([0.0, 0.0, 0.0, 0.0])
    best = optimize.minimize(negative_elbo, start, method="BFGS", options=dict(gtol=1e-10))
    direct = np.array([best.x[0], *np.exp(best.x[1:])])
    np.testing.assert_allclose([fit.mu_n, fit.lambda_n, fit.a_n, fit.b_n], direct, rtol=1e-5)
    assert fit.elbos[-1] >= -best.fun - 1e-9


def test_normal_gamma_each_update_maximises_the_elbo_over_its_factor():
    # Coordinate ascent, checked one factor at a time against a numerical maximisation of
    # normal_gamma_elbo (itself checked against quadrature above) with the other factor fixed.
    # Started far from the fixed point (init_precision=50), so the first sweeps move a lot.
    x = _data()
    fit = fit_quietly(cavi.normal_gamma, x, **PRIOR, init_precision=50.0, max_iter=2, tol=0)

    def argmax(objective, start):  # the optimiser minimises, so it gets -ELBO
        best = optimize.minimize(lambda p: -objective(p), start, method="BFGS",
                                 options=dict(gtol=1e-10))
        return best.x

    for t in (1, 2):
        _, _, a_prev, b_prev = fit.path[t - 1]
        mu_n, lambda_n, a_n, b_n = fit.path[t]
        # q(mu) given the previous q(tau)
        mu_opt, log_lambda_opt = argmax(
            lambda p, a=a_prev, b=b_prev: cavi.normal_gamma_elbo(x, p[0], np.exp(p[1]), a, b, **PRIOR),
            [0.0, 0.0])
        np.testing.assert_allclose([mu_n, lambda_n], [mu_opt, np.exp(log_lambda_opt)], rtol=1e-5)
        # q(tau) given that q(mu)
        log_a_opt, log_b_opt = argmax(
            lambda p, m=mu_n, lam=lambda_n: cavi.normal_gamma_elbo(x, m, lam, *np.exp(p), **PRIOR),
            [0.0, 0.0])
        np.testing.assert_allclose([a_n, b_n], np.exp([log_a_opt, log_b_opt]), rtol=1e-5)


def test_normal_gamma_limit_of_a_vague_prior_gives_the_biased_variance():
    # mu0 = lambda0 = a0 = b0 -> 0: the fixed point has 1 / E[tau] = (1/N) sum (x - xbar)^2
    x = _data(n=12)
    fit = cavi.normal_gamma(x, mu0=0.0, lambda0=1e-12, a0=1e-12, b0=1e-12, tol=1e-14)
    assert fit.b_n / fit.a_n == pytest.approx(np.var(x, ddof=0), rel=1e-9)
    assert fit.b_n / fit.a_n != pytest.approx(np.var(x, ddof=1), rel=1e-3)


def test_normal_gamma_path_starts_at_init_and_ends_at_the_fit():
    x = _data()
    fit = cavi.normal_gamma(x, **PRIOR, init_precision=3.0)
    assert fit.path.shape == (fit.n_iter + 1, 4)
    assert fit.path[0, 2] / fit.path[0, 3] == pytest.approx(3.0)
    np.testing.assert_array_equal(fit.path[-1], [fit.mu_n, fit.lambda_n, fit.a_n, fit.b_n])


@pytest.mark.parametrize("change, name", [
    (dict(lambda0=0.0), "lambda0"), (dict(a0=-1.0), "a0"), (dict(b0=0.0), "b0"),
    (dict(mu0=np.inf), "mu0"), (dict(init_precision=0.0), "init_precision"),
    (dict(max_iter=0), "max_iter"), (dict(tol=np.nan), "tol"), (dict(tol=-1.0), "tol must be >= 0"),
    (dict(a0=[1.0, 2.0]), "a0 must be a scalar"),
])
def test_normal_gamma_rejects_bad_input(change, name):
    with pytest.raises(ValueError, match=name):
        cavi.normal_gamma(_data(), **(PRIOR | change))


def test_normal_gamma_rejects_bad_data_and_bad_q():
    with pytest.raises(ValueError, match="x must be finite"):
        cavi.normal_gamma([1.0, np.nan], **PRIOR)
    with pytest.raises(ValueError, match="x must be a 1-D"):
        cavi.normal_gamma_log_evidence(np.ones((2, 2)), **PRIOR)
    for name, args in [("lambda_n", (0.0, 0.0, 1.0, 1.0)), ("a_n", (0.0, 1.0, -1.0, 1.0)),
                       ("b_n", (0.0, 1.0, 1.0, 0.0)), ("mu_n", (np.nan, 1.0, 1.0, 1.0))]:
        with pytest.raises(ValueError, match=name):
            cavi.normal_gamma_elbo(_data(), *args, **PRIOR)


# ---------------------------------------------------------------------------
# 3. the mixture of unit-variance Gaussians (Blei et al. 2017)
# ---------------------------------------------------------------------------

TRUE_MEANS = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, -2.0]])


def _blobs(n_per=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n_per, 2)) + mu for mu in TRUE_MEANS])


def test_gmm_recovers_well_separated_means():
    X = _blobs()
    best = max((cavi.gmm(X, 3, prior_std=10.0, seed=s) for s in range(4)), key=lambda r: r.elbos[-1])
    cost = ((best.m[:, None, :] - TRUE_MEANS[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    # each found mean is within 4 standard errors (1 / sqrt(60) per coordinate) of the truth
    assert np.sqrt(cost[rows, cols]).max() < 4 * np.sqrt(2 / 60)
    np.testing.assert_allclose(best.phi.sum(axis=1), 1.0, atol=1e-12)
    assert_never_decreases(best.elbos)


def test_gmm_elbo_matches_monte_carlo_with_scipy_densities():
    X = _blobs(n_per=10, seed=1)
    fit = fit_quietly(cavi.gmm, X, 3, prior_std=3.0, max_iter=2, tol=0, seed=0)
    rng = np.random.default_rng(7)
    S, d, K = 4000, X.shape[1], 3
    mu = fit.m + np.sqrt(fit.s2)[:, None] * rng.standard_normal((S, K, d))        # (S, K, d)
    log_p_mu = stats.norm.logpdf(mu, 0.0, 3.0).sum(axis=(1, 2))
    log_q_mu = stats.norm.logpdf(mu, fit.m, np.sqrt(fit.s2)[:, None]).sum(axis=(1, 2))
    log_lik = stats.norm.logpdf(X[None, :, None, :], mu[:, None], 1.0).sum(-1)       # (S, n, K)
    # the expectation over q(c) is a finite sum, done exactly
    over_c = np.sum(fit.phi * (np.log(1 / K) + log_lik - np.log(fit.phi)), axis=(1, 2))
    terms = over_c + log_p_mu - log_q_mu
    # The last update made q(mu) proportional to exp E_q(c) log p (the mean-field theorem), so
    # every term is the same number up to rounding and the standard error is ~0: allow rounding.
    se = terms.std(ddof=1) / np.sqrt(S)
    assert abs(terms.mean() - fit.elbos[-1]) < 4 * se + 1e-10 * abs(fit.elbos[-1])
    # That constancy is itself the check of the (m_k, s_k^2) update: log q(mu) differs from
    # E_q(c) log p(x, c, mu) by a constant only at the optimal q(mu) given phi (a wrong
    # s_k^2 or m_k leaves a spread of order one nat).
    assert terms.std(ddof=1) < 1e-10 * abs(fit.elbos[-1])


@pytest.mark.parametrize("sweeps", [1, 4])
def test_gmm_phi_update_is_the_softmax_of_expected_log_likelihoods(sweeps):
    # Sweep t + 1 sets log phi_ik = E_q(mu_k) log N(x_i | mu_k, I) + const with q(mu) after sweep t,
    # and E_q log N(x | mu_k, I) = log N(x | m_k, I) - d s_k^2 / 2 (scipy densities).
    X = _blobs(n_per=10, seed=2)
    before = fit_quietly(cavi.gmm, X, 3, prior_std=3.0, max_iter=sweeps, tol=0, seed=1)
    after = fit_quietly(cavi.gmm, X, 3, prior_std=3.0, max_iter=sweeps + 1, tol=0, seed=1)
    log_densities = np.stack([stats.multivariate_normal(m, np.eye(2)).logpdf(X) for m in before.m],
                             axis=1)
    expected_log_lik = log_densities - 0.5 * X.shape[1] * before.s2
    expected = np.exp(expected_log_lik - expected_log_lik.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(after.phi, expected, rtol=1e-9, atol=1e-14)


def test_gmm_is_reproducible_from_its_seed():
    X = _blobs(n_per=20)
    a = cavi.gmm(X, 3, prior_std=5.0, seed=np.random.default_rng(5))
    b = cavi.gmm(X, 3, prior_std=5.0, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(a.m, b.m)


@pytest.mark.parametrize("change, name", [
    (dict(X=np.ones(5)), "X"), (dict(X=np.full((4, 2), np.nan)), "X"),
    (dict(n_components=0), "n_components"), (dict(n_components=500), "n_components"),
    (dict(prior_std=0.0), "prior_std"), (dict(seed=-1), "seed"), (dict(max_iter=1.5), "max_iter"),
    (dict(prior_std=[1.0, 2.0]), "prior_std must be a scalar"), (dict(tol=-1e-8), "tol"),
    (dict(tol=[1e-8]), "tol must be a scalar"), (dict(X=np.ones((1, 2))), "X must have at least 2"),
])
def test_gmm_rejects_bad_input(change, name):
    args = dict(X=_blobs(n_per=5), n_components=2, prior_std=1.0) | change
    with pytest.raises(ValueError, match=name):
        cavi.gmm(args.pop("X"), args.pop("n_components"), **args)
