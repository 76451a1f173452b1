"""Tests of vicourse.cavi (Chapter 3): every fit against an independent route."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from bad_inputs import assert_rejects, bad_arrays, bad_ints, bad_scalars, not_numbers
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import optimize, stats
from scipy.optimize import linear_sum_assignment
from scipy.special import roots_legendre

from vicourse import ConvergenceWarning, GaussianFit, cavi

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


def fit_strictly(fn, *args, **kwargs):
    """Run a fit that must give no warning at all (any warning fails the test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


PROPERTY = settings(max_examples=40, deadline=None)


def negative_numbers():
    return st.floats(min_value=-1e300, max_value=-1e-300)


def bad_tols():
    """Everything that is not a number >= 0."""
    return st.one_of(bad_scalars(), negative_numbers())


def wrong_length_vectors(d):
    return st.integers(1, 5).filter(lambda k: k != d).map(lambda k: np.zeros(k))


def huge_magnitudes():
    """Finite numbers whose square overflows float64 (|v| >= 1e155), of either sign."""
    return st.floats(1e155, 1e308).flatmap(lambda v: st.sampled_from([v, -v]))


def overflowing_data(shape):
    """Finite data of ``shape`` whose spread overflows: two entries +v and -v, |v| >= 1e155.

    Every entry and the mean are float64 numbers; only the squares leave float64's
    range, and the fit must refuse the data, naming them.
    """
    def build(v):
        out = np.arange(np.prod(shape), dtype=float).reshape(shape) / 7.0
        out.flat[0], out.flat[-1] = v, -v
        return out

    return huge_magnitudes().map(build)


# ---------------------------------------------------------------------------
# 0. the loop every fit shares (CONTRIBUTING.md, iterative fits)
# ---------------------------------------------------------------------------


def _fake_sweeps(values):
    values = iter(values)
    return lambda: next(values)


def test_loop_warns_once_when_the_elbo_decreases_beyond_rounding():
    with pytest.warns(ConvergenceWarning, match=r"decreased at 1 of 3 sweeps, by up to 0\.5"):
        elbos, n_iter, converged = cavi._iterate(_fake_sweeps([-10.0, -9.0, -9.5, -9.5]), 10,
                                                 1e-6, "fake")
    assert n_iter == 4 and converged
    np.testing.assert_array_equal(elbos, [-10.0, -9.0, -9.5, -9.5])


def test_loop_accepts_decreases_at_rounding_level():
    # A sum of many terms of size 1e4 is uncertain in its last digits: 1e-12 relative is rounding.
    noise = [-1e4, -1e4 + 1e-8, -1e4 + 1e-8 - 1e-8, -1e4 + 2e-8]
    fit_strictly(cavi._iterate, _fake_sweeps(noise), 4, 0.0, "fake")


def test_loop_raises_naming_the_sweep_when_the_elbo_is_not_finite():
    with pytest.raises(ValueError, match="fake: the ELBO became nan at sweep 3"):
        cavi._iterate(_fake_sweeps([-3.0, -2.0, np.nan]), 10, 1e-9, "fake")


def _fits(max_iter, tol):
    X = _blobs(n_per=10, seed=1)
    return {
        "gaussian_2d": lambda: cavi.gaussian_2d([0.0, 0.0], [[1.0, 0.9], [0.9, 1.0]],
                                                init_loc=[3.0, 3.0], max_iter=max_iter, tol=tol),
        "normal_gamma": lambda: cavi.normal_gamma(_data(), **PRIOR, init_precision=50.0,
                                                  max_iter=max_iter, tol=tol),
        "gmm": lambda: cavi.gmm(X, 3, prior_std=3.0, max_iter=max_iter, tol=tol, seed=0),
    }


@pytest.mark.parametrize("name", ["gaussian_2d", "normal_gamma", "gmm"])
def test_every_fit_warns_when_max_iter_runs_out_and_not_with_tol_zero(name):
    with pytest.warns(ConvergenceWarning, match=rf"{name}: CAVI did not converge in max_iter=2"):
        fit = _fits(2, 1e-12)[name]()
    assert fit.n_iter == 2 and not fit.converged
    fit = fit_strictly(_fits(2, 0.0)[name])       # tol=0 asks for exactly max_iter sweeps
    assert fit.n_iter == 2 and not fit.converged


@pytest.mark.parametrize("name, n_samples", [("gaussian_2d", 1), ("normal_gamma", 15), ("gmm", 30)])
def test_every_fit_stops_when_the_change_per_data_point_falls_below_tol(name, n_samples):
    # The rule, applied by hand to a run of fixed length: stop at the first sweep t > 1 with
    # |elbos[t] - elbos[t - 1]| < tol * n_samples (a target without data counts as one sample).
    full = fit_strictly(_fits(40, 0.0)[name])
    changes = np.abs(np.diff(full.elbos))
    assert changes[3] > 0
    tol = 1.001 * changes[3] / n_samples                   # met at the fourth change at the latest
    stop = int(np.argmax(changes < tol * n_samples)) + 2             # sweeps run, counting from 1
    fit = fit_strictly(_fits(40, tol)[name])
    assert fit.converged and fit.n_iter == stop
    np.testing.assert_array_equal(fit.elbos, full.elbos[:stop])


# ---------------------------------------------------------------------------
# 1. the correlated 2-D Gaussian
# ---------------------------------------------------------------------------


def _correlated(rho, s1, s2):
    return np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])


@settings(max_examples=25, deadline=None)
@given(rho=st.floats(-0.95, 0.95), s1=st.floats(0.3, 3.0), s2=st.floats(0.3, 3.0),
       mu=st.tuples(st.floats(-5, 5), st.floats(-5, 5)))
def test_gaussian_2d_fixed_point_is_the_mean_with_conditional_variances(rho, s1, s2, mu):
    cov = _correlated(rho, s1, s2)
    result = cavi.gaussian_2d(mu, cov, max_iter=2000, tol=1e-14)
    np.testing.assert_allclose(result.loc, mu, atol=1e-5 * (1 + np.abs(mu).max()))
    # 1 / Lambda_ii is the conditional variance Sigma_ii - Sigma_ij^2 / Sigma_jj (Schur complement)
    conditional = np.array([s1**2 * (1 - rho**2), s2**2 * (1 - rho**2)])
    np.testing.assert_allclose(result.scale**2, conditional, rtol=1e-10)
    assert np.all(result.scale**2 <= np.diag(cov) * (1 + 1e-12))
    assert_never_decreases(result.elbos)


def test_gaussian_2d_returns_the_shared_diagonal_gaussian_fit():
    cov = np.array([[2.0, 1.2], [1.2, 1.0]])
    result = cavi.gaussian_2d([1.0, -2.0], cov, init_loc=[5.0, 5.0])
    assert isinstance(result, GaussianFit) and result.covariance_type == "diag"
    assert result.converged
    np.testing.assert_array_equal(result.scale_tril, np.diag(np.diag(result.scale_tril)))
    np.testing.assert_allclose(result.scale**2, 1.0 / np.diag(np.linalg.inv(cov)), rtol=1e-12)
    assert result.info["loc_path"].shape == (result.n_iter + 1, 2)
    np.testing.assert_array_equal(result.info["loc_path"][0], [5.0, 5.0])
    np.testing.assert_array_equal(result.info["loc_path"][-1], result.loc)


def test_gaussian_2d_elbo_is_minus_kl_from_torch():
    mean, cov = np.array([0.5, -1.0]), np.array([[1.0, 0.8], [0.8, 2.0]])
    p = torch.distributions.MultivariateNormal(torch.as_tensor(mean), torch.as_tensor(cov))
    for max_iter in (1, 2, 5):
        result = fit_quietly(cavi.gaussian_2d, mean, cov, init_loc=[3.0, -4.0], max_iter=max_iter,
                             tol=0)
        kl = float(torch.distributions.kl_divergence(result.distribution(), p))
        assert result.elbos[-1] == pytest.approx(-kl, abs=1e-12)
        assert result.elbos[-1] <= 0.0  # log evidence of a normalised target is 0


@pytest.mark.parametrize("rho", [0.3, -0.8, 0.99])
def test_gaussian_2d_error_of_each_mean_shrinks_by_rho_squared_per_sweep(rho):
    # rho computed from the covariance, not from the precision the code uses
    cov = _correlated(rho, 1.5, 0.4)
    fit = fit_quietly(cavi.gaussian_2d, [1.0, 2.0], cov, init_loc=[-3.0, 7.0], max_iter=6, tol=0)
    errors = fit.info["loc_path"][1:] - [1.0, 2.0]
    np.testing.assert_allclose(errors[1:] / errors[:-1], rho**2, rtol=1e-9)


def test_gaussian_2d_target_offset_by_1e8_gives_the_same_fit_shifted():
    cov = _correlated(0.9, 1.0, 0.6)
    base = cavi.gaussian_2d([1.0, -0.5], cov, init_loc=[-1.5, 1.0])
    offset = np.array([1e8, -1e8])
    shifted = fit_strictly(cavi.gaussian_2d, offset + [1.0, -0.5], cov, init_loc=offset + [-1.5, 1.0])
    assert shifted.n_iter == base.n_iter
    np.testing.assert_allclose(shifted.loc - offset, base.loc, atol=1e-7)
    np.testing.assert_allclose(shifted.elbos, base.elbos, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e10, 1e30])
def test_gaussian_2d_of_a_rescaled_target_is_the_rescaled_fit(scale):
    # z -> scale * z maps p and every q of the family to their rescaled versions and leaves
    # KL(q || p), hence the ELBO, unchanged: the fit must follow, whatever the scale.
    loc, cov, start = np.array([1.0, -0.5]), _correlated(0.9, 1.0, 0.6), np.array([-1.5, 1.0])
    base = cavi.gaussian_2d(loc, cov, init_loc=start)
    scaled = fit_strictly(cavi.gaussian_2d, scale * loc, scale**2 * cov, init_loc=scale * start)
    assert scaled.n_iter == base.n_iter
    np.testing.assert_allclose(scaled.loc / scale, base.loc, rtol=1e-14)
    np.testing.assert_allclose(scaled.scale / scale, base.scale, rtol=1e-14)
    np.testing.assert_allclose(scaled.elbos, base.elbos, rtol=0, atol=1e-13)


def test_gaussian_2d_accepts_tensors_and_nested_lists():
    loc, cov = np.array([0.3, -0.2]), np.array([[1.0, 0.5], [0.5, 2.0]])
    base = cavi.gaussian_2d(loc, cov, init_loc=[1.0, 1.0])
    for convert in (torch.as_tensor, lambda a: a.tolist()):
        other = cavi.gaussian_2d(convert(loc), convert(cov), init_loc=convert(np.ones(2)))
        np.testing.assert_array_equal(other.loc, base.loc)
        np.testing.assert_array_equal(other.elbos, base.elbos)


def not_spd_2x2():
    """Finite 2 x 2 matrices that are not symmetric positive definite.

    The symmetric ones [[a, c], [c, b]] have c >= sqrt(|a b|) + 0.1, so that their
    determinant a b - c^2 <= -0.2 sqrt(|a b|) - 0.01 is negative whatever the signs of
    a and b: one eigenvalue is negative.  The singular ones are exact in float64
    (their Cholesky factorisation meets an exact zero).
    """
    def symmetric(a, b, margin):
        c = np.sqrt(abs(a * b)) + margin
        return np.array([[a, c], [c, b]])

    indefinite = st.builds(symmetric, st.floats(-5, 5), st.floats(-5, 5), st.floats(0.1, 5))
    negative_definite = st.floats(0.1, 5).map(lambda s: -s * np.eye(2))
    singular = st.sampled_from([np.zeros((2, 2)), np.ones((2, 2)),
                                np.array([[4.0, 2.0], [2.0, 1.0]])])
    asymmetric = st.floats(0.1, 1.0).map(lambda b: np.array([[2.0, b], [-b, 2.0]]))
    wrong_size = st.sampled_from([np.eye(3), np.eye(1), np.ones((2, 3))])
    return st.one_of(bad_arrays((2, 2)), indefinite, negative_definite, singular, asymmetric,
                     wrong_size)


@PROPERTY
@given(bad=st.one_of(bad_arrays((2,)), wrong_length_vectors(2)),
       name=st.sampled_from(["loc", "init_loc"]))
def test_gaussian_2d_rejects_bad_vectors(bad, name):
    assume(not (name == "init_loc" and bad is None))      # None is init_loc's default
    args = dict(loc=[0.0, 0.0], covariance_matrix=np.eye(2)) | {name: bad}
    assert_rejects(lambda: cavi.gaussian_2d(args.pop("loc"), args.pop("covariance_matrix"), **args),
                   name)


@PROPERTY
@given(bad=not_spd_2x2())
def test_gaussian_2d_rejects_a_covariance_that_is_not_spd(bad):
    assert_rejects(lambda: cavi.gaussian_2d([0.0, 0.0], bad), "covariance_matrix")


@settings(max_examples=25, deadline=None)
@given(one_minus_rho=st.floats(1e-12, 1e-4), sign=st.sampled_from([1.0, -1.0]),
       s1=st.floats(1e-3, 1e3), s2=st.floats(1e-3, 1e3),
       start=st.tuples(st.floats(-3, 3), st.floats(-3, 3)))
def test_gaussian_2d_elbo_never_decreases_for_a_nearly_singular_target(one_minus_rho, sign, s1,
                                                                      s2, start):
    # |rho| within 1e-12 of one: the sweeps crawl (rho^2 per sweep), and every one of them must
    # still raise the ELBO, with no warning that it decreased (tol=0: no convergence rule).
    cov = _correlated(sign * (1 - one_minus_rho), s1, s2)
    fit = fit_strictly(cavi.gaussian_2d, [0.5, -0.5], cov, init_loc=np.array(start) * [s1, s2],
                       max_iter=50, tol=0)
    assert_never_decreases(fit.elbos)
    # and the variances are still the conditional ones, Sigma_ii (1 - rho^2)
    np.testing.assert_allclose(fit.scale**2, np.diag(cov) * one_minus_rho * (2 - one_minus_rho),
                               rtol=1e-3)


# ---------------------------------------------------------------------------
# 2. the Normal-Gamma model
# ---------------------------------------------------------------------------

PRIOR = dict(mu0=0.5, lambda0=0.8, a0=2.0, b0=1.5)


def _data(n=15, seed=3):
    return np.random.default_rng(seed).normal(1.0, 1.7, size=n)


def _sequential_student_t(x, mu0, lambda0, a0, b0):
    """log p(x) = sum_i log p(x_i | x_<i), and the posterior, one point at a time.

    Each predictive is a Student t (Murphy 2012, 4.6.3.6), evaluated by scipy.stats.t
    from the posterior after the earlier points; the conjugate update is by one point.
    """
    mu, lam, a, b = mu0, lambda0, a0, b0
    total = 0.0
    for xi in x:
        scale = np.sqrt(b * (lam + 1) / (a * lam))
        total += stats.t.logpdf(xi, df=2 * a, loc=mu, scale=scale)
        b = b + lam * (xi - mu) ** 2 / (2 * (lam + 1))
        mu, lam, a = (lam * mu + xi) / (lam + 1), lam + 1, a + 0.5
    return total, (mu, lam, a, b)


@pytest.mark.parametrize("x", [_data(), np.full(6, 2.5), np.r_[_data(8), 1e6]],
                         ids=["data", "identical points", "far outlier"])
def test_normal_gamma_log_evidence_matches_sequential_student_t_predictives(x):
    total, posterior = _sequential_student_t(x, **PRIOR)
    assert cavi.normal_gamma_log_evidence(x, **PRIOR) == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(cavi.normal_gamma_posterior(x, **PRIOR), posterior, rtol=1e-10)


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
    result = fit_strictly(cavi.normal_gamma, x, **prior, init_precision=50.0, max_iter=500)
    assert result.converged
    assert_never_decreases(result.elbos)
    assert result.elbos.max() <= cavi.normal_gamma_log_evidence(x, **prior) + 1e-9


def test_normal_gamma_fixed_point_maximises_the_elbo_over_the_factorised_family():
    x = _data()
    fit = cavi.normal_gamma(x, **PRIOR, tol=1e-14)

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


def test_normal_gamma_fixed_point_has_the_exact_posterior_mean_of_tau():
    # Exercise ex-mf-ng-general: E_q[tau] = a_p / b_p at the fixed point, for any prior; and
    # 1 / E_q[tau] moves by the factor 1 / (2 a0 + n + 1) per sweep (an affine contraction).
    # Run to the fixed point itself (tol=0, 60 sweeps): near it the ELBO changes by the square
    # of the parameters' error, so a tolerance on the ELBO leaves them less precise than this.
    x = _data()
    fit = fit_quietly(cavi.normal_gamma, x, **PRIOR, init_precision=50.0, max_iter=60, tol=0)
    _, lambda_p, a_p, b_p = _sequential_student_t(x, **PRIOR)[1]
    assert fit.a_n / fit.b_n == pytest.approx(a_p / b_p, rel=1e-12)
    inverse = fit.path[:, 3] / fit.path[:, 2]                        # 1 / E[tau] = b_n / a_n
    steps = np.diff(inverse)[:5]
    np.testing.assert_allclose(steps[1:] / steps[:-1], 1 / (2 * PRIOR["a0"] + x.size + 1), rtol=1e-8)
    # ... so the mean-field variance of mu, b_p / (lambda_p a_p), is below the exact marginal
    # variance of mu, b_p / (lambda_p (a_p - 1)) (a Student t, from scipy)
    exact = stats.t(df=2 * a_p, loc=0.0, scale=np.sqrt(b_p / (a_p * lambda_p))).var()
    assert 1 / fit.lambda_n == pytest.approx(b_p / (lambda_p * a_p), rel=1e-12)
    assert 1 / fit.lambda_n < exact


def test_normal_gamma_limit_of_a_vague_prior_gives_the_biased_variance():
    # mu0 = lambda0 = a0 = b0 -> 0: the fixed point has 1 / E[tau] = (1/n) sum (x - xbar)^2
    x = _data(n=12)
    fit = cavi.normal_gamma(x, mu0=0.0, lambda0=1e-12, a0=1e-12, b0=1e-12, tol=1e-15)
    assert fit.b_n / fit.a_n == pytest.approx(np.var(x, ddof=0), rel=1e-9)
    assert fit.b_n / fit.a_n != pytest.approx(np.var(x, ddof=1), rel=1e-3)


def test_normal_gamma_path_starts_at_init_and_ends_at_the_fit():
    x = _data()
    fit = cavi.normal_gamma(x, **PRIOR, init_precision=3.0)
    assert fit.path.shape == (fit.n_iter + 1, 4)
    assert fit.path[0, 2] / fit.path[0, 3] == pytest.approx(3.0)
    np.testing.assert_array_equal(fit.path[-1], [fit.mu_n, fit.lambda_n, fit.a_n, fit.b_n])


def test_normal_gamma_data_and_prior_offset_by_1e8_give_the_same_fit_shifted():
    offset = 1e8
    x = (_data() + offset) - offset                   # the points x + offset represents exactly
    shifted_prior = PRIOR | dict(mu0=PRIOR["mu0"] + offset)
    base = cavi.normal_gamma(x, **PRIOR)
    shifted = fit_strictly(cavi.normal_gamma, x + offset, **shifted_prior)
    assert shifted.mu_n - offset == pytest.approx(base.mu_n, abs=1e-7)
    np.testing.assert_allclose([shifted.lambda_n, shifted.a_n, shifted.b_n],
                               [base.lambda_n, base.a_n, base.b_n], rtol=1e-7)
    np.testing.assert_allclose(shifted.elbos, base.elbos, rtol=1e-9)
    assert cavi.normal_gamma_log_evidence(x + offset, **shifted_prior) == pytest.approx(
        cavi.normal_gamma_log_evidence(x, **PRIOR), rel=1e-9)


@pytest.mark.parametrize("x", [np.full(6, 2.5), np.r_[_data(8), 1e6]],
                         ids=["identical points", "far outlier"])
def test_normal_gamma_fit_of_extreme_data_stays_below_the_exact_evidence(x):
    fit = fit_strictly(cavi.normal_gamma, x, **PRIOR)
    assert fit.converged
    assert_never_decreases(fit.elbos)
    total, (mu_p, _, a_p, b_p) = _sequential_student_t(x, **PRIOR)
    assert fit.elbos[-1] <= total
    assert fit.mu_n == pytest.approx(mu_p, rel=1e-12)
    # at the fixed point itself E_q[tau] is the exact a_p / b_p (exercise ex-mf-ng-general)
    fixed = fit_quietly(cavi.normal_gamma, x, **PRIOR, max_iter=60, tol=0)
    assert fixed.a_n / fixed.b_n == pytest.approx(a_p / b_p, rel=1e-10)


NORMAL_GAMMA_FUNCTIONS = {
    "normal_gamma": lambda x, **kw: cavi.normal_gamma(x, **kw).elbos[-1],
    "normal_gamma_posterior": lambda x, **kw: cavi.normal_gamma_posterior(x, **kw),
    "normal_gamma_log_evidence": lambda x, **kw: cavi.normal_gamma_log_evidence(x, **kw),
    "normal_gamma_elbo": lambda x, **kw: cavi.normal_gamma_elbo(x, 1.0, 2.0, 3.0, 4.0, **kw),
}


@pytest.mark.parametrize("name", sorted(NORMAL_GAMMA_FUNCTIONS))
def test_normal_gamma_functions_accept_tensors_lists_and_0d_tensors(name):
    function = NORMAL_GAMMA_FUNCTIONS[name]
    x = _data()
    base = function(x, **PRIOR)
    tensor_prior = {key: torch.tensor(value, dtype=torch.float64) for key, value in PRIOR.items()}
    for other in (function(torch.as_tensor(x), **PRIOR), function(x.tolist(), **PRIOR),
                  function(x, **tensor_prior)):
        np.testing.assert_array_equal(other, base)
    # a float32 tensor is read as the float64 numbers it holds
    x32 = torch.as_tensor(x, dtype=torch.float32)
    np.testing.assert_array_equal(function(x32, **PRIOR), function(x32.double().numpy(), **PRIOR))


@PROPERTY
@given(bad=st.one_of(bad_arrays((5,)), overflowing_data((5,))),
       name=st.sampled_from(sorted(NORMAL_GAMMA_FUNCTIONS)))
def test_normal_gamma_functions_reject_bad_data(bad, name):
    assert_rejects(lambda: NORMAL_GAMMA_FUNCTIONS[name](bad, **PRIOR), "x")


@PROPERTY
@given(data=st.data(), name=st.sampled_from(sorted(NORMAL_GAMMA_FUNCTIONS)),
       argument=st.sampled_from(["mu0", "lambda0", "a0", "b0"]))
def test_normal_gamma_functions_reject_a_bad_prior(data, name, argument):
    # a mu0 so far from the data that the posterior's rate overflows is refused too
    bad = data.draw(bad_scalars(positive=True) if argument != "mu0"
                    else st.one_of(bad_scalars(), huge_magnitudes()))
    assert_rejects(lambda: NORMAL_GAMMA_FUNCTIONS[name](_data(), **(PRIOR | {argument: bad})), argument)


@PROPERTY
@given(data=st.data(), index=st.integers(0, 3))
def test_normal_gamma_elbo_rejects_a_bad_q(data, index):
    names = ["mu_n", "lambda_n", "a_n", "b_n"]
    q = [1.0, 2.0, 3.0, 4.0]
    # a mu_n so far from the data that the ELBO overflows is refused too
    q[index] = data.draw(bad_scalars(positive=True) if index > 0
                         else st.one_of(bad_scalars(), huge_magnitudes()))
    assert_rejects(lambda: cavi.normal_gamma_elbo(_data(), *q, **PRIOR), names[index])


@PROPERTY
@given(bad=bad_scalars(positive=True).filter(lambda v: v is not None))   # None: the default
def test_normal_gamma_rejects_a_bad_init_precision(bad):
    assert_rejects(lambda: cavi.normal_gamma(_data(), **PRIOR, init_precision=bad), "init_precision")


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
    cost = ((best.means[:, None, :] - TRUE_MEANS[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    # each found mean is within 4 standard errors (1 / sqrt(60) per coordinate) of the truth
    assert np.sqrt(cost[rows, cols]).max() < 4 * np.sqrt(2 / 60)
    np.testing.assert_allclose(best.resp.sum(axis=1), 1.0, atol=1e-12)
    assert_never_decreases(best.elbos)


def test_gmm_elbo_matches_monte_carlo_with_scipy_densities():
    X = _blobs(n_per=10, seed=1)
    m0 = np.array([1.0, -2.0])
    fit = fit_quietly(cavi.gmm, X, 3, prior_std=3.0, m0=m0, max_iter=2, tol=0, seed=0)
    rng = np.random.default_rng(7)
    S, d, K = 4000, X.shape[1], 3
    s = 1 / np.sqrt(fit.mean_precision)[:, None]
    mu = fit.means + s * rng.standard_normal((S, K, d))                          # (S, K, d)
    log_p_mu = stats.norm.logpdf(mu, m0, 3.0).sum(axis=(1, 2))
    log_q_mu = stats.norm.logpdf(mu, fit.means, s).sum(axis=(1, 2))
    log_lik = stats.norm.logpdf(X[None, :, None, :], mu[:, None], 1.0).sum(-1)       # (S, n, K)
    # the expectation over q(c) is a finite sum, done exactly
    over_c = np.sum(fit.resp * (np.log(1 / K) + log_lik - np.log(fit.resp)), axis=(1, 2))
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
    log_densities = np.stack([stats.multivariate_normal(m, np.eye(2)).logpdf(X) for m in before.means],
                             axis=1)
    expected_log_lik = log_densities - 0.5 * X.shape[1] / before.mean_precision
    expected = np.exp(expected_log_lik - expected_log_lik.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(after.resp, expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("offset", [1e7, 1e8])
def test_gmm_data_offset_by_1e8_match_the_unshifted_fit(offset):
    # The prior stays at the origin, so the shift changes the model, but only through the
    # prior term -E||mu_k - m0||^2 / (2 sigma^2) of the ELBO: with sigma = 1e10 the fits must
    # agree, and their ELBOs must differ by that term's change, computed here from the means.
    # X is rounded as X + offset rounds it, so that both fits see the same points.
    X, sigma = (_blobs() + offset) - offset, 1e10
    base = fit_strictly(cavi.gmm, X, 3, prior_std=sigma, seed=1)
    shifted = fit_strictly(cavi.gmm, X + offset, 3, prior_std=sigma, seed=1)
    np.testing.assert_allclose(shifted.resp, base.resp, atol=1e-9)
    np.testing.assert_allclose(shifted.means - offset, base.means, atol=1e-6)
    prior_term_change = -0.5 * (np.sum(shifted.means**2) - np.sum(base.means**2)) / sigma**2
    assert shifted.elbos[-1] - base.elbos[-1] == pytest.approx(prior_term_change, rel=1e-4)
    assert shifted.n_iter == base.n_iter


def test_gmm_is_translation_equivariant_when_the_prior_moves_with_the_data():
    offset = np.array([-3e8, 5e7])
    X = (_blobs(n_per=20) + offset) - offset           # the points X + offset represents exactly
    m0 = np.array([0.5, -1.0])
    base = cavi.gmm(X, 3, prior_std=2.0, m0=m0, seed=3)
    shifted = fit_strictly(cavi.gmm, X + offset, 3, prior_std=2.0, m0=m0 + offset, seed=3)
    np.testing.assert_allclose(shifted.resp, base.resp, atol=1e-9)
    np.testing.assert_allclose(shifted.means - offset, base.means, atol=1e-6)
    np.testing.assert_allclose(shifted.mean_precision, base.mean_precision, rtol=1e-12)
    np.testing.assert_allclose(shifted.elbos, base.elbos, rtol=1e-11)


def test_gmm_of_identical_points_is_the_conjugate_posterior_of_one_point_shared_equally():
    # All rows equal: every phi_i is uniform, so N_k = n / K and q(mu_k) is the conjugate
    # posterior N((m0 / sigma^2 + N_k x) s_k^2, s_k^2 I), 1 / s_k^2 = 1 / sigma^2 + N_k.
    X, m0, sigma, K = np.full((12, 2), 7.0), np.array([1.0, 0.0]), 2.0, 3
    fit = fit_strictly(cavi.gmm, X, K, prior_std=sigma, m0=m0, seed=0)
    nk = 12 / K
    np.testing.assert_allclose(fit.resp, 1 / K, rtol=1e-12)
    np.testing.assert_allclose(fit.mean_precision, 1 / sigma**2 + nk, rtol=1e-12)
    np.testing.assert_allclose(fit.means, np.tile((m0 / sigma**2 + nk * X[0]) / (1 / sigma**2 + nk),
                                                  (K, 1)), rtol=1e-12)


def test_gmm_gives_a_far_outlier_its_own_component():
    X = np.r_[_blobs(n_per=20, seed=4)[:20], [[1e6, -1e6]]]        # one cluster and an outlier
    fit = fit_strictly(cavi.gmm, X, 2, prior_std=1e7, seed=0)
    outlier = int(np.argmax(fit.resp[-1]))
    assert fit.converged and fit.resp[-1, outlier] == 1.0
    np.testing.assert_allclose(fit.resp[:-1, 1 - outlier], 1.0)
    # its q(mu_k) is the conjugate posterior given that one point: precision 1 / sigma^2 + 1
    assert fit.mean_precision[outlier] == pytest.approx(1e-14 + 1, rel=1e-12)
    np.testing.assert_allclose(fit.means[outlier], X[-1] / (1e-14 + 1), rtol=1e-12)


def test_gmm_is_reproducible_from_its_seed_and_accepts_tensors():
    X = _blobs(n_per=20)
    a = cavi.gmm(X, 3, prior_std=5.0, seed=np.random.default_rng(5))
    b = cavi.gmm(torch.as_tensor(X), 3, prior_std=torch.tensor(5.0), m0=torch.zeros(2),
                 seed=np.random.default_rng(5))
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.elbos, b.elbos)


def _gmm_call(**change):
    args = dict(X=_blobs(n_per=3), n_components=2, prior_std=1.0) | change
    return lambda: cavi.gmm(args.pop("X"), args.pop("n_components"), **args)


@PROPERTY
@given(bad=st.one_of(bad_arrays((6, 2)), st.just(np.ones((1, 2))), overflowing_data((6, 2))))
def test_gmm_rejects_bad_data(bad):
    assert_rejects(_gmm_call(X=bad), "X")


@PROPERTY
@given(bad=st.one_of(bad_ints(), st.integers(10, 10**6)))
def test_gmm_rejects_a_bad_number_of_components(bad):
    assert_rejects(_gmm_call(n_components=bad), "n_components")      # X has 9 rows


def test_gmm_refuses_n_times_k_beyond_its_memory_budget_before_allocating():
    n = 2**13 + 1                                                    # n * n > 2**26
    assert_rejects(_gmm_call(X=np.zeros((n, 1)), n_components=n), "n_components")


@PROPERTY
@given(bad=st.one_of(bad_scalars(positive=True), st.sampled_from([1e-200, 1e200])))
def test_gmm_rejects_a_bad_prior_std(bad):
    assert_rejects(_gmm_call(prior_std=bad), "prior_std")


@PROPERTY
@given(bad=st.one_of(bad_arrays((2,)), wrong_length_vectors(2),
                    huge_magnitudes().map(lambda v: np.array([v, v]))).filter(lambda v: v is not None))
def test_gmm_rejects_a_bad_prior_mean(bad):
    assert_rejects(_gmm_call(m0=bad), "m0")


@PROPERTY
@given(bad=st.one_of(not_numbers().filter(lambda v: v is not None), st.integers(max_value=-1),
                     st.integers(min_value=2**63, max_value=2**300), st.floats()))
def test_gmm_rejects_a_bad_seed(bad):
    assert_rejects(_gmm_call(seed=bad), "seed")


# ---------------------------------------------------------------------------
# arguments every fit shares
# ---------------------------------------------------------------------------

FITS = {
    "gaussian_2d": lambda **kw: cavi.gaussian_2d([0.0, 0.0], np.eye(2), **kw),
    "normal_gamma": lambda **kw: cavi.normal_gamma(_data(), **PRIOR, **kw),
    "gmm": lambda **kw: cavi.gmm(_blobs(n_per=3), 2, prior_std=1.0, **kw),
}


@PROPERTY
@given(bad=bad_ints(), name=st.sampled_from(sorted(FITS)))
def test_every_fit_rejects_a_bad_max_iter(bad, name):
    assert_rejects(lambda: FITS[name](max_iter=bad), "max_iter")


@PROPERTY
@given(bad=bad_tols(), name=st.sampled_from(sorted(FITS)))
def test_every_fit_rejects_a_bad_tol(bad, name):
    assert_rejects(lambda: FITS[name](tol=bad), "tol")
