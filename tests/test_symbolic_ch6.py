"""Chapter 6: the algebra of the VAE's derivations, step by step, with sympy.

Each test is marked with the equation of the chapter it verifies; the
equation index (``appendix/equations.md``) lists them.  Where the package
implements a formula, the test also evaluates the package's code against the
symbolic result at 50 significant digits.
"""

import itertools
import math

import mpmath
import pytest
import sympy as sp
import torch

from vicourse.vae import _bernoulli_log_lik, gaussian_kl_to_standard_normal

z, eps, mu = sp.symbols("z epsilon mu", real=True)
sigma = sp.symbols("sigma", positive=True)


def log_normal(x, mean, sd):
    """log N(x | mean, sd^2), written out."""
    return -sp.log(2 * sp.pi * sd**2) / 2 - (x - mean) ** 2 / (2 * sd**2)


def closed_form_kl(m, s):
    """The right-hand side of eq-vae-gaussian-kl for one coordinate."""
    return (m**2 + s**2 - 1 - sp.log(s**2)) / 2


@pytest.fixture(scope="module")
def kl_one_coordinate():
    """KL(N(mu, sigma^2) || N(0, 1)) by symbolic integration over z."""
    q = sp.exp(log_normal(z, mu, sigma))
    integrand = sp.expand(q * (log_normal(z, mu, sigma) - log_normal(z, 0, 1)))
    return sp.simplify(sp.integrate(integrand, (z, -sp.oo, sp.oo)))


@pytest.mark.verifies("eq-vae-gaussian-kl")
def test_gaussian_kl_integral_is_the_closed_form(kl_one_coordinate):
    assert sp.simplify(kl_one_coordinate - closed_form_kl(mu, sigma)) == 0


@pytest.mark.verifies("eq-vae-gaussian-kl")
def test_gaussian_kl_in_the_code_matches_the_integral_at_50_digits(kl_one_coordinate):
    # The package takes log sigma^2 and computes sigma^2 - 1 as expm1(logvar); compare it
    # in float64 with the integral evaluated at 50 digits, at points from the prior's
    # neighbourhood to variances 1e-6 away from one. Tolerance: a few float64 roundings
    # of the magnitudes summed (mu^2, |sigma^2 - 1|, |log sigma^2|).
    integral = sp.lambdify((mu, sigma), kl_one_coordinate, "mpmath")
    points = [(0.0, 1e-6), (0.0, -3e-8), (0.5, -0.4), (-2.0, 3.0), (1e-3, -20.0), (7.0, 1e-9)]
    for m, logvar in points:
        with mpmath.workdps(50):
            exact = float(integral(mpmath.mpf(m), mpmath.exp(mpmath.mpf(logvar) / 2)))
        got = float(gaussian_kl_to_standard_normal(torch.tensor([m], dtype=torch.float64),
                                                   torch.tensor([logvar], dtype=torch.float64)))
        scale = m**2 + abs(math.expm1(logvar)) + abs(logvar)
        # At mu = 0 this is a relative error of at most 64 eps / |logvar|.
        assert abs(got - exact) <= 8 * 2.0**-52 * scale, (m, logvar, got, exact)


@pytest.mark.verifies("eq-vae-estimators")
def test_reparameterised_kl_terms_have_minus_the_closed_form_as_their_mean():
    # The Monte Carlo-KL estimator draws z = mu + sigma * eps with eps ~ N(0, 1); averaged
    # over eps (not z), log p(z) - log q(z | x) has mean -KL, so the two estimators of
    # eq-vae-estimators share their mean. log q at z is log N(eps | 0, 1) - log sigma.
    z_of_eps = mu + sigma * eps
    log_ratio = log_normal(z_of_eps, 0, 1) - (log_normal(eps, 0, 1) - sp.log(sigma))
    mean = sp.integrate(sp.expand(sp.exp(log_normal(eps, 0, 1)) * log_ratio),
                        (eps, -sp.oo, sp.oo))
    assert sp.simplify(mean + closed_form_kl(mu, sigma)) == 0


x, eta = sp.symbols("x eta", real=True)


@pytest.mark.verifies("eq-vae-bernoulli-logits")
def test_bernoulli_log_likelihood_from_the_logits():
    # x log sigmoid(eta) + (1 - x) log(1 - sigmoid(eta)) = x eta - log(1 + e^eta).
    sigmoid = 1 / (1 + sp.exp(-eta))
    textbook = x * sp.log(sigmoid) + (1 - x) * sp.log(1 - sigmoid)
    assert sp.simplify(textbook - (x * eta - sp.log(1 + sp.exp(eta)))) == 0


@pytest.mark.verifies("eq-vae-bernoulli-logits")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_likelihood_in_the_code_is_right_for_extreme_logits(dtype):
    # Logits far beyond where sigmoid rounds to 0 or 1; the reference is the textbook
    # form at 400 digits (1 - sigmoid(800) is about e^-800), for a black and a white pixel.
    logits = [-800.0, -120.0, -30.0, -1.0, 0.0, 2.5, 17.0, 40.0, 800.0]
    for value in (0.0, 1.0):
        got = _bernoulli_log_lik(torch.tensor([logits], dtype=dtype),
                                 torch.full((1, len(logits)), value, dtype=dtype))
        with mpmath.workdps(400):
            exact = 0
            for e in logits:
                s = 1 / (1 + mpmath.exp(-mpmath.mpf(e)))
                exact += value * mpmath.log(s) + (1 - value) * mpmath.log(1 - s)
        assert float(got) == pytest.approx(float(exact), rel=4 * torch.finfo(dtype).eps)


@pytest.mark.verifies("eq-vae-iwae-subsets")
def test_average_over_random_subsets_of_the_weights_is_the_average_of_all():
    # The step of the monotonicity proof: for a uniformly random subset I of size m of
    # {1..k}, E_I[(1/m) sum_{i in I} w_i] = (1/k) sum_i w_i, for every k <= 7 and m <= k.
    for k in range(1, 8):
        w = sp.symbols(f"w1:{k + 1}", positive=True)
        for m in range(1, k + 1):
            subsets = list(itertools.combinations(range(k), m))
            average = sum(sum(w[i] for i in subset) / m for subset in subsets) / len(subsets)
            assert sp.expand(average - sum(w) / k) == 0


@pytest.mark.verifies("eq-vae-iwae-gap")
def test_second_order_expansion_of_the_gap():
    # log(p + d) = log p + d / p - d^2 / (2 p^2) + O(d^3). Taking expectations with
    # E[d] = 0 and E[d^2] = Var[w] / k (d = the mean of k weights minus p) leaves
    # log p - Var[w] / (2 k p^2): the gap of eq-vae-iwae-gap.
    p, d, v, k = sp.symbols("p d v k", positive=True)
    series = sp.Poly(sp.series(sp.log(p + d), d, 0, 3).removeO(), d)
    moments = {0: 1, 1: 0, 2: v / k}                 # E[d^0], E[d^1], E[d^2]
    expectation = sum(coeff * moments[power] for (power,), coeff in series.terms())
    assert sp.simplify(sp.log(p) - expectation - v / (2 * k * p**2)) == 0
    # E[d^2] = Var[w] / k: with d_i = w_i - p independent with mean 0 and variance v,
    # expand (sum_i d_i / k)^2 and take expectations term by term (k = 1, ..., 6).
    for n in range(1, 7):
        ds = sp.symbols(f"d1:{n + 1}", real=True)
        square = sp.Poly(sp.expand((sum(ds) / n) ** 2), *ds)
        # A monomial with a power-one factor has mean 0; d_i^2 has mean v.
        mean = sum(coeff * (0 if 1 in powers else v) for powers, coeff in square.terms())
        assert sp.simplify(mean - v / n) == 0


@pytest.mark.verifies("eq-vae-iwae-gap")
def test_weights_have_infinite_variance_when_q_is_too_narrow():
    # The condition of eq-vae-iwae-gap can fail: for the posterior N(0, 1) and
    # q = N(0, s^2), E_q[w^2] = int p(z)^2 / q(z) dz is finite exactly when s^2 > 1/2.
    s2 = sp.symbols("s2", positive=True)
    second_moment = sp.exp(2 * log_normal(z, 0, 1) - log_normal(z, 0, sp.sqrt(s2)))
    for value, finite in [(sp.Rational(1, 4), False), (sp.Rational(1, 2), False),
                          (sp.Rational(3, 5), True), (1, True), (2, True)]:
        integral = sp.integrate(second_moment.subs(s2, value), (z, -sp.oo, sp.oo))
        assert integral.is_finite is finite, (value, integral)
        if finite:
            # ... and then it equals s^2 / sqrt(2 s^2 - 1), so Var[w] = that - 1.
            assert sp.simplify(integral - value / sp.sqrt(2 * value - 1)) == 0
