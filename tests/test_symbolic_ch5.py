"""The algebra of Chapter 5, checked with sympy: the score-function identity, the
Gaussian score that the code writes in closed form, the pathwise gradient, the
optimal baseline, and the two facts the ELBO estimators rest on."""

import functools

import numpy as np
import pytest
import sympy as sp
import torch

from vicourse.estimators import score_function_grads

z, eps = sp.symbols("z epsilon", real=True)
mu, b = sp.symbols("mu b", real=True)
sigma = sp.symbols("sigma", positive=True)
LOG_Q = -sp.log(2 * sp.pi) / 2 - sp.log(sigma) - (z - mu) ** 2 / (2 * sigma**2)
Q = sp.exp(LOG_Q)


def d_mu(expr):
    return sp.diff(expr, mu)


def d_log_sigma(expr):
    """The derivative in log sigma, the parameter of the code: sigma d/dsigma."""
    return sigma * sp.diff(expr, sigma)


DERIVATIVES = [d_mu, d_log_sigma]
STANDARD_NORMAL = sp.exp(-eps**2 / 2) / sp.sqrt(2 * sp.pi)
# Functions whose Gaussian expectations sympy integrates in closed form; a is a parameter.
a = sp.symbols("a", real=True)
FUNCTIONS = [z, z**2, z**3 - 2 * z, sp.exp(a * z)]


@functools.cache
def _moment(k):
    """E[eps^k] for eps ~ N(0, 1), by symbolic integration over the real line."""
    return sp.integrate(eps**k * STANDARD_NORMAL, (eps, -sp.oo, sp.oo))


def expect_eps(g):
    """E[g(eps)] for eps ~ N(0, 1), by symbolic integration over the real line.

    A polynomial in eps is integrated monomial by monomial (each integral once), which
    is what keeps these tests fast; anything else is integrated as it stands.
    """
    g = sp.expand(g)
    if g.is_polynomial(eps):
        return sum(coeff * _moment(k) for (k,), coeff in sp.Poly(g, eps).terms())
    return sp.integrate(g * STANDARD_NORMAL, (eps, -sp.oo, sp.oo), conds="none")


def expect(g):
    """E_q[g(z)] for q = N(mu, sigma^2): the integral against q, written over eps.

    The substitution z = mu + sigma eps (dz = sigma d eps) turns the integral of g q over z
    into that of g(mu + sigma eps) against the standard normal, which sympy does quickly;
    the first test checks that the two integrals agree.
    """
    return expect_eps(g.subs(z, mu + sigma * eps))


def test_the_substitution_used_for_expectations_is_the_integral_against_q():
    for g in (z**2, z**3 - 2 * z):
        direct = sp.integrate(g * Q, (z, -sp.oo, sp.oo), conds="none")
        assert is_zero(direct - expect(g))


def is_zero(expr):
    return sp.simplify(sp.expand(expr)) == 0


@pytest.mark.verifies("eq-grad-score")
@pytest.mark.parametrize("f", FUNCTIONS, ids=str)
def test_score_function_identity_holds_for_the_gaussian_family(f):
    # d/dlambda E_q[f] = E_q[f d/dlambda log q], for lambda = mu and lambda = log sigma.
    mean = expect(f)
    for derivative in DERIVATIVES:
        assert is_zero(derivative(mean) - expect(f * derivative(LOG_Q)))


@pytest.mark.verifies("eq-grad-score")
@pytest.mark.parametrize("derivative", DERIVATIVES, ids=lambda d: d.__name__)
def test_the_score_has_mean_zero_so_any_constant_baseline_is_unbiased(derivative):
    score = derivative(LOG_Q)
    assert is_zero(expect(score))
    # hence E_q[(f - b) score] = E_q[f score] for a constant b
    f = z**2
    assert is_zero(expect((f - b) * score) - expect(f * score))


@pytest.mark.verifies("eq-grad-gaussian-score")
def test_closed_form_score_is_the_derivative_of_log_q():
    # d log q / d mu = eps / sigma and d log q / d log sigma = eps^2 - 1 at z = mu + sigma eps.
    on_path = {z: mu + sigma * eps}
    assert is_zero(d_mu(LOG_Q).subs(on_path) - eps / sigma)
    assert is_zero(d_log_sigma(LOG_Q).subs(on_path) - (eps**2 - 1))


@pytest.mark.verifies("eq-grad-gaussian-score")
def test_the_code_computes_sympys_derivative_of_log_q_in_the_diagonal_family():
    # With f = 1 the score-function estimates are the scores themselves.
    locs, log_scales = np.array([0.3, -1.2]), np.array([-0.4, 0.5])
    grad_loc, grad_log_scale = score_function_grads(
        lambda x: torch.ones(x.shape[0], dtype=x.dtype), locs, np.diag(np.exp(log_scales)), 7,
        covariance_type="diag", generator=torch.Generator().manual_seed(0))
    noise = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score_mu = sp.lambdify((z, mu, sigma), d_mu(LOG_Q))
    score_log_sigma = sp.lambdify((z, mu, sigma), d_log_sigma(LOG_Q))
    scales = np.exp(log_scales)
    points = locs + scales * noise.numpy()
    np.testing.assert_allclose(grad_loc.numpy(), score_mu(points, locs, scales), rtol=1e-12)
    np.testing.assert_allclose(grad_log_scale.numpy(), score_log_sigma(points, locs, scales),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.verifies("eq-grad-gaussian-score")
def test_the_code_computes_sympys_derivative_of_log_q_in_the_full_family():
    # q = N(m, L L^T) in 2-D with L = [[e^p, 0], [c, e^r]]: the unconstrained parameters
    # (m1, m2, p, c, r) of CONTRIBUTING.md, and log q differentiated by sympy.
    z1, z2, m1, m2, p, c, r = sp.symbols("z1 z2 m1 m2 p c r", real=True)
    L = sp.Matrix([[sp.exp(p), 0], [c, sp.exp(r)]])
    w = L.solve(sp.Matrix([z1 - m1, z2 - m2]))
    log_q = -sp.log(2 * sp.pi) - p - r - (w.T * w)[0] / 2
    grads = [sp.lambdify((z1, z2, m1, m2, p, c, r), sp.diff(log_q, v))
             for v in (m1, m2, p, c, r)]
    loc, raw = np.array([0.4, -0.7]), np.array([0.2, 0.6, -0.3])   # p, c, r
    tril = np.array([[np.exp(raw[0]), 0.0], [raw[1], np.exp(raw[2])]])
    grad_loc, grad_tril = score_function_grads(
        lambda x: torch.ones(x.shape[0], dtype=x.dtype), loc, tril, 5,
        generator=torch.Generator().manual_seed(1))
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    points = loc + noise.numpy() @ tril.T
    args = (points[:, 0], points[:, 1], *loc, *raw)
    expected = [np.broadcast_to(g(*args), (5,)) for g in grads]
    np.testing.assert_allclose(grad_loc.numpy(), np.stack(expected[:2], 1), rtol=1e-11)
    np.testing.assert_allclose(grad_tril[:, 0, 0].numpy(), expected[2], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grad_tril[:, 1, 0].numpy(), expected[3], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grad_tril[:, 1, 1].numpy(), expected[4], rtol=1e-11, atol=1e-13)
    assert torch.all(grad_tril[:, 0, 1] == 0)


@pytest.mark.verifies("eq-grad-reparam")
@pytest.mark.parametrize("f", FUNCTIONS, ids=str)
def test_pathwise_gradient_equals_the_gradient_of_the_expectation(f):
    # d/dlambda E_q[f] = E_eps[f'(g(eps)) dg/dlambda] with g = mu + sigma eps.
    path = mu + sigma * eps
    slope = sp.diff(f, z).subs(z, path)
    mean = expect(f)
    for derivative in DERIVATIVES:
        assert is_zero(derivative(mean) - expect_eps(slope * derivative(path)))


@pytest.mark.verifies("eq-grad-optimal-baseline")
def test_optimal_baseline_minimises_the_total_variance():
    # V(b) = sum_j E[(f - b)^2 h_j^2] - const; its stationary point is E[f |h|^2] / E[|h|^2].
    f = z**2 + z
    h = [derivative(LOG_Q) for derivative in DERIVATIVES]
    h_sq = sum(hj**2 for hj in h)
    variance = expect((f - b) ** 2 * h_sq)
    (b_star,) = sp.solve(sp.diff(variance, b), b)
    assert is_zero(b_star - expect(f * h_sq) / expect(h_sq))
    assert sp.simplify(sp.diff(variance, b, 2)).is_positive


@pytest.mark.verifies("eq-grad-reparam-elbo")
def test_the_pathwise_derivative_of_minus_log_q_is_one_in_log_sigma():
    # Along z = mu + sigma eps, -log q is log sigma + constants: the Monte Carlo entropy's
    # pathwise gradient is the closed-form one, 1 in log sigma and 0 in mu, for every eps.
    on_path = -LOG_Q.subs(z, mu + sigma * eps)
    assert is_zero(d_log_sigma(on_path) - 1)
    assert is_zero(d_mu(on_path))
    # ... and the closed-form entropy is E_q[-log q] = (1 + log 2 pi) / 2 + log sigma.
    assert is_zero(expect(-LOG_Q) - ((1 + sp.log(2 * sp.pi)) / 2 + sp.log(sigma)))


@pytest.mark.verifies("eq-grad-stl")
def test_the_path_derivative_vanishes_when_q_is_the_target():
    # log p - log q for p = q (same mu, sigma) is constant in z: its z-gradient is zero,
    # so every STL estimate is zero; for p with another mean it is not.
    m = sp.symbols("m", real=True)
    log_p = LOG_Q.subs(mu, m)
    assert is_zero(sp.diff((log_p - LOG_Q).subs(m, mu), z))
    assert not is_zero(sp.diff(log_p - LOG_Q, z))


@pytest.mark.verifies("eq-grad-total-derivative")
def test_the_total_derivative_is_the_path_derivative_minus_the_score():
    # For any log p (an undefined function here) and z = g(eps, lambda) = mu + sigma eps,
    # d/dlambda [log p(g) - log q_lambda(g)] = (d/dz [log p - log q_lambda])(g) dg/dlambda
    # - (d/dlambda log q_lambda)(z) at z = g, for lambda = mu and lambda = log sigma.
    log_p = sp.Function("log_p")
    path = mu + sigma * eps
    for derivative in DERIVATIVES:
        total = derivative(log_p(path) - LOG_Q.subs(z, path))
        slope = sp.diff(log_p(z) - LOG_Q, z).subs(z, path)
        score = derivative(LOG_Q).subs(z, path)
        assert is_zero((total - (slope * derivative(path) - score)).doit())


@pytest.mark.verifies("eq-grad-logreg")
def test_the_bernoulli_log_likelihood_of_a_logit_is_y_a_minus_softplus():
    # y log sigmoid(a) + (1 - y) log(1 - sigmoid(a)) = y a - log(1 + e^a), for y in {0, 1};
    # and log N(z | 0, I) in d = 2 is -|z|^2 / 2 - log 2 pi: the two parts of eq-grad-logreg.
    logit = sp.symbols("a", real=True)
    sigmoid = 1 / (1 + sp.exp(-logit))
    for label in (0, 1):
        bernoulli = label * sp.log(sigmoid) + (1 - label) * sp.log(1 - sigmoid)
        difference = bernoulli - (label * logit - sp.log(1 + sp.exp(logit)))
        assert sp.simplify(sp.expand_log(sp.simplify(difference), force=True)) == 0
    z1, z2 = sp.symbols("z1 z2", real=True)
    prior = sp.exp(-z1**2 / 2) * sp.exp(-z2**2 / 2) / (2 * sp.pi)
    assert is_zero(sp.expand_log(sp.log(prior), force=True)
                   - (-(z1**2 + z2**2) / 2 - sp.log(2 * sp.pi)))
