"""The algebra of Chapter 7, checked with sympy: the moments of importance weights between
two Gaussians and the tail index they give, its corollary for a mean-field fit, the
generalised Pareto identities behind Zhang and Stephens' estimator, and the
Jacobian between the two parameterisations of the eight schools model."""

import numpy as np
import pytest
import sympy as sp
import torch

from vicourse.diagnostics import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y, eight_schools_log_joint

z, m = sp.symbols("z m", real=True)
s, r = sp.symbols("s r", positive=True)


def log_normal(x, mean, sd):
    return -sp.log(2 * sp.pi) / 2 - sp.log(sd) - (x - mean) ** 2 / (2 * sd**2)


def weight_moment(r_, s_, m_):
    """The closed form of eq-diag-weight-moments."""
    a = 1 - r_ * (1 - s_**2)
    return s_**r_ / sp.sqrt(a) * sp.exp(-r_ * (1 - r_) * m_**2 / (2 * a))


@pytest.mark.verifies("eq-diag-weight-moments")
def test_weight_moments_complete_the_square():
    """r log N(z | 0, 1) + (1 - r) log N(z | m, s^2) is a Gaussian kernel of precision
    A = r + (1 - r)/s^2 = (1 - r(1 - s^2))/s^2 plus a constant; integrating it over z gives
    sqrt(2 pi / A) times the exponential of that constant, which is the closed form."""
    exponent = r * log_normal(z, 0, 1) + (1 - r) * log_normal(z, m, s)
    precision = r + (1 - r) / s**2
    assert sp.simplify(precision - (1 - r * (1 - s**2)) / s**2) == 0
    centre = (1 - r) * m / (s**2 * precision)
    constant = sp.log(weight_moment(r, s, m)) - sp.log(2 * sp.pi / precision) / 2
    difference = exponent + precision * (z - centre) ** 2 / 2 - constant
    assert sp.simplify(sp.expand_log(difference, force=True)) == 0


@pytest.mark.verifies("eq-diag-weight-moments")
@pytest.mark.parametrize("r_, s_, m_", [(2, sp.Rational(4, 5), sp.Rational(1, 2)),
                                         (sp.Rational(5, 4), sp.Rational(1, 2), 0),
                                         (1, sp.Rational(1, 3), 2)])
def test_weight_moments_by_direct_integration(r_, s_, m_):
    """E_q[w^r] = integral of p^r q^(1-r), integrated by sympy, at values where it is finite;
    at r = 1 it is 1: the weights of a normalised target average to one."""
    p = sp.exp(log_normal(z, 0, 1))
    q = sp.exp(log_normal(z, m_, s_))
    integral = sp.integrate(sp.powsimp(p**r_ * q ** (1 - r_), force=True), (z, -sp.oo, sp.oo))
    assert sp.simplify((integral - weight_moment(r_, s_, m_)).rewrite(sp.erf)) == 0
    if r_ == 1:
        assert sp.simplify(integral) == 1


@pytest.mark.verifies("eq-diag-weight-moments")
def test_weight_moments_diverge_beyond_the_tail_index():
    """For r (1 - s^2) >= 1 the integrand's precision is <= 0: the moment is infinite."""
    p = sp.exp(log_normal(z, 0, 1))
    q = sp.exp(log_normal(z, 0, sp.Rational(1, 2)))    # s = 1/2: moments exist for r < 4/3
    assert sp.integrate(sp.powsimp(p**2 * q ** (-1), force=True), (z, -sp.oo, sp.oo)) == sp.oo
    precision = r + (1 - r) / s**2
    assert sp.simplify(precision - (1 - r * (1 - s**2)) / s**2) == 0


@pytest.mark.verifies("eq-diag-tail-index")
def test_tail_of_the_weights_has_index_one_over_one_minus_s_squared():
    """With z = s u, u ~ N(0, 1): log w = log s + (1 - s^2) u^2 / 2, so P(w > t) = P(|u| > a)
    with a^2 / 2 = (log t - log s) / (1 - s^2), and log P(w > t) / log t tends to
    -1/(1 - s^2): a Pareto tail of index alpha = 1/(1 - s^2), shape k = 1/alpha = 1 - s^2."""
    u, t, x = sp.symbols("u t x", positive=True)
    log_w = log_normal(s * u, 0, 1) - log_normal(s * u, 0, s)
    assert sp.simplify(log_w - (sp.log(s) + (1 - s**2) * u**2 / 2)) == 0
    # P(|u| > a) = erfc(a / sqrt 2) for u ~ N(0, 1), and log w > log t <=> u^2 > 2 (log t - log s)/(1 - s^2)
    a = sp.symbols("a", positive=True)
    two_sided = 2 * sp.integrate(sp.exp(-u**2 / 2) / sp.sqrt(2 * sp.pi), (u, a, sp.oo))
    assert sp.simplify((two_sided - sp.erfc(a / sp.sqrt(2))).rewrite(sp.erf)) == 0
    # Mills' bounds a phi(a) / (1 + a^2) <= P(u > a) <= phi(a) / a: the upper one is the
    # integral of (u / a) phi(u) over u > a; the lower one because their difference
    # decreases to 0 (its derivative is -2 phi(a) / (1 + a^2)^2).
    phi = sp.exp(-a**2 / 2) / sp.sqrt(2 * sp.pi)
    upper = sp.integrate(u / a * sp.exp(-u**2 / 2) / sp.sqrt(2 * sp.pi), (u, a, sp.oo))
    assert sp.simplify(upper - phi / a) == 0
    lower = a * phi / (1 + a**2)
    assert sp.simplify(sp.diff(-lower, a) - phi + 2 * phi / (1 + a**2) ** 2) == 0
    # Both bounds have log(bound) / (a^2 / 2) -> -1, so log P(|u| > a) / (a^2 / 2) -> -1.
    for bound in (phi / a, lower):
        ratio = sp.expand_log(sp.log(2 * bound.subs(a, sp.sqrt(2 * x))), force=True) / x
        assert sp.limit(ratio, x, sp.oo) == -1
    # With x = (log t - log s)/(1 - s^2), log P / log t -> -1/(1 - s^2) as t -> oo.
    s_half = sp.Rational(1, 2)
    x_of_t = (sp.log(t) - sp.log(s_half)) / (1 - s_half**2)
    assert sp.limit(-x_of_t / sp.log(t), t, sp.oo) == -1 / (1 - s_half**2)


@pytest.mark.verifies("eq-diag-mean-field-k")
def test_mean_field_fit_of_a_correlated_gaussian_has_k_equal_to_rho():
    """CAVI's factorised fit of N(0, [[1, rho], [rho, 1]]) has variances 1 - rho^2; the
    eigenvalues of Sigma_q Sigma^{-1} are 1 - rho and 1 + rho, so the weights' log is
    (rho v_1^2 - rho v_2^2)/2 in q's whitened coordinates and k = 1 - (1 - |rho|) = |rho|."""
    rho = sp.symbols("rho", real=True)
    cov = sp.Matrix([[1, rho], [rho, 1]])
    precision = cov.inv()
    q_cov = sp.diag(1 / precision[0, 0], 1 / precision[1, 1])
    assert sp.simplify(q_cov - (1 - rho**2) * sp.eye(2)) == sp.zeros(2)
    eigenvalues = {sp.simplify(e) for e in (q_cov * precision).eigenvals()}
    assert eigenvalues == {1 - rho, 1 + rho}
    # The smallest eigenvalue plays s^2 of the 1-D theorem: k = 1 - lambda_min = |rho|,
    # for either sign of the correlation.
    for value in (sp.Rational(3, 5), -sp.Rational(3, 5), sp.Rational(9, 10)):
        smallest = min(e.subs(rho, value) for e in eigenvalues)
        assert 1 - smallest == abs(value)


@pytest.mark.verifies("eq-diag-zhang-stephens")
def test_profile_likelihood_of_the_generalized_pareto():
    """With sigma = -k/theta and k = mean log(1 - theta x), the GPD log-likelihood of n points
    is n (log(-theta/k) - k - 1), the profile that Zhang and Stephens' estimator weights.
    (Written for a heavy tail, k > 0 and theta < 0; minus_theta = -theta.)"""
    k, minus_theta, n = sp.symbols("k minus_theta n", positive=True)
    sum_log = sp.symbols("L", real=True)          # sum_i log(1 - theta x_i), = n k at the profile
    sigma = k / minus_theta
    # log f(x) = -log sigma - (1 + 1/k) log(1 + k x / sigma), and k x / sigma = -theta x
    log_lik = -n * sp.log(sigma) - (1 + 1 / k) * sum_log
    profile = log_lik.subs(sum_log, n * k)
    expected = n * (sp.log(minus_theta / k) - k - 1)
    assert sp.simplify(sp.expand_log(profile - expected, force=True)) == 0


@pytest.mark.verifies("eq-diag-zhang-stephens")
def test_mean_log_of_the_scaled_exceedance_is_k():
    """For X from a generalised Pareto distribution with k > 0, E log(1 + k X / sigma) = k:
    with X = sigma ((1 - U)^(-k) - 1)/k, the log is -k log(1 - U), whose mean is k."""
    k, sigma, uu = sp.symbols("k sigma U", positive=True)
    x_of_u = sigma * ((1 - uu) ** (-k) - 1) / k
    cdf = 1 - (1 + k * x_of_u / sigma) ** (-1 / k)
    assert sp.simplify(sp.powdenest(cdf, force=True) - uu) == 0   # the quantile inverts F
    log_term = sp.simplify(sp.expand_log(sp.log(1 + k * x_of_u / sigma), force=True))
    assert sp.integrate(log_term, (uu, 0, 1)) == k


@pytest.mark.verifies("eq-diag-eight-schools")
def test_eight_schools_parameterisations_differ_by_the_jacobian_of_theta():
    """theta_j = mu + tau eta_j has Jacobian tau^J: the non-centred log density is the
    centred one plus J log tau, symbolically and in the code."""
    mu_, lt, e1, y1 = sp.symbols("mu ell eta y", real=True)
    sig = sp.symbols("sigma", positive=True)
    tau = sp.exp(lt)
    theta = mu_ + tau * e1
    centred = log_normal(theta, mu_, tau) + log_normal(y1, theta, sig)
    non_centred = log_normal(e1, 0, 1) + log_normal(y1, theta, sig)
    jacobian = sp.log(sp.diff(theta, e1))
    assert sp.simplify(non_centred - (centred + jacobian)) == 0
    # The code agrees at random points, school by school summed (J = 8).
    rng = np.random.default_rng(0)
    point = rng.normal(size=(4, 10))
    nc = eight_schools_log_joint(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, centered=False)
    c = eight_schools_log_joint(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, centered=True)
    thetas = point[:, :1] + np.exp(point[:, 1:2]) * point[:, 2:]
    centred_point = np.column_stack([point[:, :2], thetas])
    difference = nc(torch.from_numpy(point)) - c(torch.from_numpy(centred_point))
    np.testing.assert_allclose(difference.numpy(), 8 * point[:, 1], rtol=1e-12)
