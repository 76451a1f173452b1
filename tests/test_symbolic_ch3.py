"""The algebra of Chapter 3, step by step with sympy, and checked against vicourse.cavi.

Each test derives an update or a closed form of the chapter from the model's
log density, with sympy doing every expansion and simplification, and then
compares the result with what the package computes at a few numerical values.
The densities come from ``sympy.stats`` (not written by hand), and every
expectation under a factor of ``q`` replaces a monomial by its moment:
:math:`\\mathbb E[w] = m` and :math:`\\mathbb E[w^2] = m^2 + v` for a factor
with mean ``m`` and variance ``v`` (factors are independent under ``q``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp
from sympy import stats as sps

from vicourse import cavi


def expect(expr, moments):
    """E_q[expr] for a polynomial ``expr`` in independent variables.

    ``moments`` maps each variable to its (mean, variance); powers up to 2
    are replaced by the moments E[w] = m and E[w^2] = m^2 + v.
    """
    poly = sp.Poly(sp.expand(expr), *moments)
    total = 0
    for powers, coeff in poly.terms():
        term = coeff
        for var, k in zip(moments, powers, strict=True):
            mean, var_ = moments[var]
            if k > 2:
                raise ValueError("only moments up to the second are needed here")
            term *= {0: 1, 1: mean, 2: mean**2 + var_}[k]
        total += term
    return sp.expand(total)


def log_density(rv, at):
    """log of the sympy.stats density of ``rv`` at ``at``, with the logs of products split."""
    return sp.expand_log(sp.log(sps.density(rv)(at)), force=True)


def quadratic_coefficients(expr, var):
    """(c2, c1) of c2 var^2 + c1 var + c0, checking that ``expr`` is that quadratic."""
    poly = sp.Poly(sp.expand(expr), var)
    assert poly.degree() == 2
    return poly.coeff_monomial(var**2), poly.coeff_monomial(var)


def fit_sweeps(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs, tol=0)


# ---------------------------------------------------------------------------
# The correlated Gaussian
# ---------------------------------------------------------------------------

z1, z2, mu1, mu2, m1, m2, v1, v2 = sp.symbols("z1 z2 mu1 mu2 m1 m2 v1 v2", real=True)
l11, l22 = sp.symbols("Lambda11 Lambda22", positive=True)
l12 = sp.symbols("Lambda12", real=True)
LAMBDA = sp.Matrix([[l11, l12], [l12, l22]])


def _log_gaussian_2d_unnormalised():
    """-1/2 (z - mu)' Lambda (z - mu): the part of log N(z | mu, Lambda^-1) that depends on z."""
    d = sp.Matrix([z1 - mu1, z2 - mu2])
    return -(d.T * LAMBDA * d)[0, 0] / 2


def _optimal_gaussian_factor(z, other, m_other, v_other):
    """Precision and mean of q*(z) by (eq-mf-update), when q(other) has mean m_other and
    variance v_other: E_{q(other)}[log p(z)] is a quadratic in z, -c2 z^2 ... + c1 z, so q*(z)
    is Gaussian with precision -2 c2 and mean c1 / precision."""
    expected = expect(_log_gaussian_2d_unnormalised(), {other: (m_other, v_other)})
    c2, c1 = quadratic_coefficients(expected, z)
    precision = sp.simplify(-2 * c2)
    return precision, sp.simplify(c1 / precision)


@pytest.mark.verifies("eq-mf-gauss-update")
def test_gaussian_update_is_gaussian_with_precision_lambda11_and_the_stated_mean():
    # Steps 1-2: E_{q2}[log p(z)] as a function of z1 (q2 has mean m2 and variance v2) is a
    # quadratic in z1, so q1* is Gaussian.
    precision, mean = _optimal_gaussian_factor(z1, z2, m2, v2)
    assert sp.simplify(precision - l11) == 0
    assert sp.simplify(mean - (mu1 - l12 / l11 * (m2 - mu2))) == 0
    # Step 3: v2 does not enter: the update of the mean needs only E[z2].
    assert not mean.has(v2)

    # The package, one sweep from (m1, m2) = (3, -1): m1 by the formula, then m2 by symmetry.
    mean_np, cov = np.array([0.4, -1.3]), np.array([[1.5, 0.7], [0.7, 0.9]])
    prec = np.linalg.inv(cov)
    values = {mu1: mean_np[0], mu2: mean_np[1], l11: prec[0, 0], l12: prec[0, 1], l22: prec[1, 1]}
    new_m1 = float(mean.subs(values | {m2: -1.0}))
    mean_2 = mean.subs({mu1: mu2, mu2: mu1, l11: l22, m2: m1}, simultaneous=True)   # symmetric
    new_m2 = float(mean_2.subs(values | {m1: new_m1}))
    fit = fit_sweeps(cavi.gaussian_2d, mean_np, cov, init_loc=[3.0, -1.0], max_iter=1)
    np.testing.assert_allclose(fit.loc, [new_m1, new_m2], rtol=1e-13)
    np.testing.assert_allclose(fit.scale**2, 1 / np.diag(prec), rtol=1e-13)


@pytest.mark.verifies("eq-mf-gauss-rate")
def test_each_sweep_multiplies_the_error_of_the_mean_by_rho_squared():
    # The two updates, each derived from the model as above (not typed in): m1 from m2, m2 from m1.
    _, update_1 = _optimal_gaussian_factor(z1, z2, m2, v2)
    _, update_2 = _optimal_gaussian_factor(z2, z1, m1, v1)
    # A sweep from the error e1 = m1 - mu1: q2 first (from m1), then q1 (from that m2).
    e1 = sp.symbols("e1", real=True)
    m1_next = update_1.subs(m2, update_2.subs(m1, mu1 + e1))
    factor = sp.simplify((m1_next - mu1) / e1)
    assert not factor.has(e1, mu1, mu2)                   # linear in the error, whatever mu
    assert sp.simplify(factor - l12**2 / (l11 * l22)) == 0
    # For Sigma = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]] the factor is rho^2, whatever s1, s2.
    s1, s2 = sp.symbols("s1 s2", positive=True)
    rho = sp.symbols("rho", real=True)
    prec = sp.Matrix([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]).inv()
    assert sp.simplify(factor.subs({l11: prec[0, 0], l12: prec[0, 1], l22: prec[1, 1]})
                       - rho**2) == 0

    fit = fit_sweeps(cavi.gaussian_2d, [0.0, 0.0], [[4.0, -1.4], [-1.4, 1.0]], init_loc=[1.0, 2.0],
                     max_iter=4)
    errors = fit.info["loc_path"][1:, 0]
    np.testing.assert_allclose(errors[1:] / errors[:-1], 0.7**2, rtol=1e-12)


@pytest.mark.verifies("eq-mf-gauss-kl")
def test_kl_at_the_fixed_point_is_minus_half_log_one_minus_rho_squared():
    # KL(q || p) = E_q[log q(z) - log p(z)], every expectation by moments of the factors.
    s1, s2 = sp.symbols("s1 s2", positive=True)
    rho = sp.symbols("rho", real=True)
    cov = sp.Matrix([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
    prec = cov.inv()
    d = sp.Matrix([z1 - mu1, z2 - mu2])
    log_p = -sp.log(2 * sp.pi) - sp.log(cov.det()) / 2 - (d.T * prec * d)[0, 0] / 2
    log_q = sum(-sp.log(2 * sp.pi * v) / 2 - (z - m) ** 2 / (2 * v)
                for z, m, v in [(z1, m1, v1), (z2, m2, v2)])
    kl = expect(log_q - log_p, {z1: (m1, v1), z2: (m2, v2)})
    # at the fixed point: m = mu and v_i = 1 / Lambda_ii
    at_fixed_point = kl.subs({m1: mu1, m2: mu2, v1: 1 / prec[0, 0], v2: 1 / prec[1, 1]})
    closed_form = -sp.log(1 - rho**2) / 2
    difference = sp.simplify(sp.expand_log(at_fixed_point - closed_form, force=True))
    assert difference == 0

    fit = cavi.gaussian_2d([0.0, 0.0], [[4.0, 1.2], [1.2, 1.0]], init_loc=[0.0, 0.0], tol=1e-15)
    assert -fit.elbos[-1] == pytest.approx(float(closed_form.subs(rho, 0.6)), rel=1e-12)


# ---------------------------------------------------------------------------
# The Normal-Gamma model
# ---------------------------------------------------------------------------

mu = sp.symbols("mu", real=True)
tau, lam0, a0, b0, lam_n, a_n, b_n = sp.symbols("tau lambda0 a0 b0 lambda_n a_n b_n", positive=True)
mu0, mu_n, xbar = sp.symbols("mu0 mu_n xbar", real=True)
n, ss, e_tau = sp.symbols("n S E_tau", positive=True)      # S = sum_i (x_i - xbar)^2
log_tau = sp.symbols("log_tau", real=True)                  # stands for log(tau) in collections
PRIOR = dict(mu0=0.5, lambda0=0.8, a0=2.0, b0=1.5)
X = np.array([1.3, -0.2, 2.9, 0.4, 1.1])


def _statistics():
    return {n: X.size, xbar: X.mean(), ss: np.sum((X - X.mean()) ** 2)} | {
        mu0: PRIOR["mu0"], lam0: PRIOR["lambda0"], a0: PRIOR["a0"], b0: PRIOR["b0"]}


def _log_joint():
    """log p(x, mu, tau) from sympy.stats densities, the data entering by n, xbar and S.

    The likelihood of n points is prod_i N(x_i | mu, 1/tau); its log is
    n/2 log(tau / 2 pi) - tau/2 sum_i (x_i - mu)^2, and the sum of squares is
    S + n (xbar - mu)^2 (checked for n = 3 explicit points below).
    """
    y = sp.symbols("y", real=True)
    one_point = log_density(sps.Normal("x", mu, 1 / sp.sqrt(tau)), y)
    # n copies of log N(y | mu, 1/tau), with (y - mu)^2 summed over the data
    constant_part = one_point.subs(y, mu)                              # the terms free of y - mu
    assert sp.simplify(one_point - (constant_part - tau / 2 * (y - mu) ** 2)) == 0
    log_lik = n * constant_part - tau / 2 * (ss + n * (xbar - mu) ** 2)
    log_prior_mu = log_density(sps.Normal("m", mu0, 1 / sp.sqrt(lam0 * tau)), mu)
    log_prior_tau = log_density(sps.Gamma("t", a0, 1 / b0), tau)
    return sp.expand(log_lik + log_prior_mu + log_prior_tau)


def test_sum_of_squares_splits_into_spread_and_distance_of_the_mean():
    xs = sp.symbols("x1:4", real=True)
    mean = sum(xs) / 3
    spread = sum((x - mean) ** 2 for x in xs)
    assert sp.expand(sum((x - mu) ** 2 for x in xs) - (spread + 3 * (mean - mu) ** 2)) == 0


@pytest.mark.verifies("eq-mf-ng-exact", "eq-mf-ng-evidence")
def test_exact_posterior_and_log_evidence_of_the_normal_gamma_model():
    lam_p = lam0 + n
    mu_p = (lam0 * mu0 + n * xbar) / lam_p
    a_p = a0 + n / 2
    b_p = b0 + ss / 2 + lam0 * n * (xbar - mu0) ** 2 / (2 * lam_p)
    log_post = (log_density(sps.Normal("m", mu_p, 1 / sp.sqrt(lam_p * tau)), mu)
                + log_density(sps.Gamma("t", a_p, 1 / b_p), tau))
    # log p(x) = log p(x, mu, tau) - log p(mu, tau | x) must not depend on (mu, tau) ...
    log_evidence = sp.expand(_log_joint() - log_post)
    assert sp.simplify(sp.diff(log_evidence, mu)) == 0
    assert sp.simplify(sp.diff(log_evidence, tau)) == 0
    # ... and must be the chapter's formula
    formula = (sp.log(sp.gamma(a_p)) - sp.log(sp.gamma(a0)) + a0 * sp.log(b0) - a_p * sp.log(b_p)
               + sp.log(lam0 / lam_p) / 2 - n / 2 * sp.log(2 * sp.pi))
    values = _statistics()
    assert float((log_evidence - formula).subs(values | {mu: 0.3, tau: 1.7})) == pytest.approx(0, abs=1e-12)
    assert sp.simplify(sp.expand_log(log_evidence - formula, force=True).subs(
        {mu: 0, tau: 1})) == 0

    assert cavi.normal_gamma_log_evidence(X, **PRIOR) == pytest.approx(float(formula.subs(values)),
                                                                       rel=1e-13)
    np.testing.assert_allclose(cavi.normal_gamma_posterior(X, **PRIOR),
                               [float(v.subs(values)) for v in (mu_p, lam_p, a_p, b_p)], rtol=1e-13)


@pytest.mark.verifies("eq-mf-ng-qmu")
def test_q_mu_update_is_gaussian_with_the_stated_mean_and_precision():
    # Step 1: E_{q(tau)}[log p(x, mu, tau)]: the terms with mu are linear in tau -> E[tau].
    with_mu = sum(t for t in sp.Add.make_args(_log_joint()) if t.has(mu))
    assert sp.Poly(with_mu, tau).degree() == 1
    expected = with_mu.subs(tau, e_tau)
    # Step 2: a quadratic in mu, so q*(mu) is Gaussian: precision -2 c2, mean c1 / precision.
    c2, c1 = quadratic_coefficients(expected, mu)
    precision, mean = sp.simplify(-2 * c2), sp.simplify(c1 / (-2 * c2))
    assert sp.simplify(precision - (lam0 + n) * e_tau) == 0
    assert sp.simplify(mean - (lam0 * mu0 + n * xbar) / (lam0 + n)) == 0

    fit = fit_sweeps(cavi.normal_gamma, X, **PRIOR, init_precision=3.0, max_iter=1)
    values = _statistics() | {e_tau: 3.0}
    np.testing.assert_allclose(fit.path[1, :2], [float(mean.subs(values)), float(precision.subs(values))],
                               rtol=1e-13)


@pytest.mark.verifies("eq-mf-ng-qtau")
def test_q_tau_update_is_gamma_with_the_stated_shape_and_rate():
    # Step 1: write log(tau) as its own symbol, so that log p is linear in (log tau, tau).
    joint = sp.expand(sp.expand_log(_log_joint(), force=True).subs(sp.log(tau), log_tau))
    with_tau = sum(t for t in sp.Add.make_args(joint) if t.has(tau) or t.has(log_tau))
    # Step 2: E_{q(mu)} with q(mu) = N(mu_n, 1 / lambda_n).
    expected = expect(with_tau, {mu: (mu_n, 1 / lam_n)})
    # Step 3: c_log log(tau) + c_tau tau is the log of Gam(a, b) up to a constant:
    # a - 1 = c_log and b = -c_tau.
    poly = sp.Poly(expected, log_tau, tau)
    assert {m for m, _ in poly.terms()} <= {(1, 0), (0, 1), (0, 0)}
    shape = sp.simplify(poly.coeff_monomial(log_tau) + 1)
    rate = sp.simplify(-poly.coeff_monomial(tau))
    assert sp.simplify(shape - (a0 + (n + 1) / 2)) == 0
    stated_rate = b0 + ((ss + n * ((xbar - mu_n) ** 2 + 1 / lam_n))
                        + lam0 * ((mu_n - mu0) ** 2 + 1 / lam_n)) / 2
    assert sp.simplify(rate - stated_rate) == 0

    fit = fit_sweeps(cavi.normal_gamma, X, **PRIOR, init_precision=3.0, max_iter=1)
    values = _statistics() | {mu_n: fit.path[1, 0], lam_n: fit.path[1, 1]}
    np.testing.assert_allclose(fit.path[1, 2:], [float(shape.subs(values)), float(rate.subs(values))],
                               rtol=1e-13)


@pytest.mark.verifies("eq-mf-ng-fixed")
def test_fixed_point_of_cavi_has_the_exact_posterior_mean_of_tau():
    # t = 1 / E[tau]. With lambda_n = (lambda0 + n) / t and a_n = a0 + (n + 1) / 2 the q(tau)
    # update is t <- b_n / a_n = (B + t / 2) / a_n: solve t = (B + t / 2) / a_n.
    t = sp.symbols("t", positive=True)
    mu_n_value = (lam0 * mu0 + n * xbar) / (lam0 + n)
    shape = a0 + (n + 1) / 2
    rate = b0 + ((ss + n * ((xbar - mu_n_value) ** 2 + t / (lam0 + n)))
                 + lam0 * ((mu_n_value - mu0) ** 2 + t / (lam0 + n))) / 2
    (solution,) = sp.solve(sp.Eq(t, rate / shape), t)
    b_p = b0 + ss / 2 + lam0 * n * (xbar - mu0) ** 2 / (2 * (lam0 + n))
    assert sp.simplify(solution - b_p / (a0 + n / 2)) == 0
    # the map t -> rate / shape is affine with slope 1 / (2 a0 + n + 1): a contraction
    assert sp.simplify(sp.diff(rate / shape, t) - 1 / (2 * a0 + n + 1)) == 0

    fit = fit_sweeps(cavi.normal_gamma, X, **PRIOR, init_precision=30.0, max_iter=60)
    assert fit.b_n / fit.a_n == pytest.approx(float(solution.subs(_statistics())), rel=1e-13)


@pytest.mark.verifies("eq-mf-ng-limit")
def test_vague_prior_fixed_point_is_the_maximum_likelihood_variance():
    t = sp.symbols("t", positive=True)
    # mu0, lambda0, a0, b0 -> 0: a_n = (n + 1) / 2 and b_n = (S + n / lambda_n) / 2, lambda_n = n / t
    rate = (ss + n / (n / t)) / 2
    (solution,) = sp.solve(sp.Eq(t, rate / ((n + 1) / 2)), t)
    assert sp.simplify(solution - ss / n) == 0
    # with a_n = n / 2 instead (the prior's 1/2 log tau left out) the fixed point would be S / (n - 1)
    (other,) = sp.solve(sp.Eq(t, rate / (n / 2)), t)
    assert sp.simplify(other - ss / (n - 1)) == 0

    fit = fit_sweeps(cavi.normal_gamma, X, mu0=0.0, lambda0=1e-12, a0=1e-12, b0=1e-12, max_iter=60)
    assert fit.b_n / fit.a_n == pytest.approx(float(solution.subs(_statistics())), rel=1e-9)


# ---------------------------------------------------------------------------
# The mixture of unit-variance Gaussians (one dimension, three points)
# ---------------------------------------------------------------------------


@pytest.mark.verifies("eq-mf-gmm-resp", "eq-mf-gmm-m")
def test_mixture_updates_for_the_assignments_and_the_means():
    xs = sp.symbols("x1:4", real=True)
    resps = sp.symbols("r1:4", nonnegative=True)
    mu_k, m_k = sp.symbols("mu_k m_k", real=True)
    s2_k, sigma = sp.symbols("s2_k sigma", positive=True)
    # log q*(mu_k): the prior and every point weighted by r_ik, E over q(z) replacing the
    # indicator [z_i = k] by r_ik
    terms = (log_density(sps.Normal("m", mu0, sigma), mu_k)
             + sum(p * log_density(sps.Normal("x", mu_k, 1), x) for p, x in zip(resps, xs, strict=True)))
    c2, c1 = quadratic_coefficients(terms, mu_k)
    precision, mean = sp.simplify(-2 * c2), sp.simplify(c1 / (-2 * c2))
    assert sp.simplify(precision - (1 / sigma**2 + sum(resps))) == 0
    assert sp.simplify(mean - (mu0 / sigma**2 + sum(p * x for p, x in zip(resps, xs, strict=True)))
                       / precision) == 0
    # log r_ik = E_{q(mu_k)}[log N(x_i | mu_k, 1)] + const: the k-dependent part is
    # x_i m_k - (m_k^2 + s_k^2) / 2
    e_log_lik = expect(log_density(sps.Normal("x", mu_k, 1), xs[0]), {mu_k: (m_k, s2_k)})
    k_free = e_log_lik.subs({m_k: 0, s2_k: 0})
    assert sp.simplify(e_log_lik - k_free - (xs[0] * m_k - (m_k**2 + s2_k) / 2)) == 0

    # the package, one sweep in d = 1, K = 1 (r = 1): q(mu) is the conjugate posterior
    data = np.array([[0.3], [1.9], [-0.4]])
    fit = fit_sweeps(cavi.gmm, data, 1, prior_std=2.0, m0=[0.7], max_iter=1, seed=0)
    values = {mu0: 0.7, sigma: 2.0} | dict(zip(xs, data[:, 0], strict=True)) | dict.fromkeys(resps, 1)
    assert fit.mean_precision[0] == pytest.approx(float(precision.subs(values)), rel=1e-13)
    assert fit.means[0, 0] == pytest.approx(float(mean.subs(values)), rel=1e-13)
