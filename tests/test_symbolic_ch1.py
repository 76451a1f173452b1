"""Chapter 1, the algebra checked with sympy: the conjugate Gaussian model.

Each test follows the chapter's derivation step by step on symbols, then
compares the result with the package's formula at random numerical points.
The data enter through n, their sum and their sum of squares, so the
derivations hold for every data set of every size.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from sympy.stats import E, Normal, variance

from vicourse.elbo import monte_carlo_elbo
from vicourse.models import ConjugateGaussian

z, m, m0, m_n = sp.symbols("z m m_0 m_n", real=True)
s, s0, s_n, sigma = sp.symbols("s s_0 s_n sigma", positive=True)
n = sp.symbols("n", positive=True, integer=True)
sum_x, sum_x2 = sp.symbols("S_1 S_2", real=True)      # sum_i x_i and sum_i x_i^2


def log_normal(v, mean, std):
    return -sp.log(2 * sp.pi * std**2) / 2 - (v - mean) ** 2 / (2 * std**2)


# log p(x, z): the prior plus sum_i log N(x_i | z, sigma^2), with
# sum_i (x_i - z)^2 = S_2 - 2 z S_1 + n z^2.
LOG_JOINT = (log_normal(z, m0, s0) - n * sp.log(2 * sp.pi * sigma**2) / 2
             - (sum_x2 - 2 * z * sum_x + n * z**2) / (2 * sigma**2))
# eq-cg-posterior, as the chapter states it.
PRECISION_N = 1 / s0**2 + n / sigma**2
M_N = (m0 / s0**2 + sum_x / sigma**2) / PRECISION_N


def random_points(count=5, seed=0):
    """Random models and data sets, and the sympy substitutions that describe them."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), size=rng.integers(1, 12))
        model = ConjugateGaussian(m0=rng.uniform(-2, 2), s0=rng.uniform(0.3, 3),
                                  sigma=rng.uniform(0.3, 3))
        values = {m0: model.m0, s0: model.s0, sigma: model.sigma, n: x.size,
                  sum_x: float(x.sum()), sum_x2: float((x**2).sum())}
        yield model, x, values


@pytest.mark.verifies("eq-cg-posterior")
def test_posterior_by_matching_the_coefficients_of_a_quadratic():
    # Step 1: log p(x, z) is a quadratic in z.
    poly = sp.Poly(sp.expand(LOG_JOINT), z)
    assert poly.degree() == 2
    a2, a1, _ = poly.all_coeffs()
    # Step 2: N(m_n, s_n^2) has log density -z^2 / (2 s_n^2) + z m_n / s_n^2 + const;
    # matching the coefficients gives the precision and the mean of eq-cg-posterior.
    assert sp.simplify(a2 + PRECISION_N / 2) == 0
    assert sp.simplify(a1 / (-2 * a2) - M_N) == 0
    # Step 3: log p(x, z) - log N(z | m_n, s_n^2) does not depend on z, so the posterior
    # is that Gaussian (the difference is log p(x)).
    residual = LOG_JOINT - log_normal(z, M_N, 1 / sp.sqrt(PRECISION_N))
    assert sp.simplify(sp.diff(residual, z)) == 0
    # The package's formula at random points.
    for model, x, values in random_points():
        loc, scale = model.posterior(x)
        assert loc == pytest.approx(float(M_N.subs(values)), rel=1e-12, abs=1e-12)
        assert scale == pytest.approx(float((1 / sp.sqrt(PRECISION_N)).subs(values)), rel=1e-12)


@pytest.mark.verifies("eq-cg-evidence")
def test_evidence_is_the_integral_of_the_joint_and_the_identity_of_the_chapter():
    # Integrate z out of p(x, z) = exp(a2 z^2 + a1 z + a0): sympy's Gaussian integral of
    # exp(-A z^2 + B z) for A > 0 (the result, sqrt(pi / A) exp(B^2 / 4A), holds for every
    # real B), then A = -a2 (half the posterior precision), B = a1.
    A, B = sp.symbols("A B", positive=True)
    gaussian_integral = sp.integrate(sp.exp(-A * z**2 + B * z), (z, -sp.oo, sp.oo))
    a2, a1, a0 = sp.Poly(sp.expand(LOG_JOINT), z).all_coeffs()
    log_evidence = a0 + sp.log(gaussian_integral.subs({A: -a2, B: a1}))
    # ... and compare with eq-cg-evidence: log p(x, z) - log N(z | m_n, s_n^2), at any z.
    identity = LOG_JOINT - log_normal(z, M_N, 1 / sp.sqrt(PRECISION_N))
    for model, x, values in random_points(seed=1):
        expected = float(log_evidence.subs(values).evalf(30))
        assert float(identity.subs(values).subs(z, 0.37)) == pytest.approx(expected, rel=1e-12)
        assert model.log_evidence(x) == pytest.approx(expected, rel=1e-12)


@pytest.mark.verifies("eq-cg-elbo")
def test_elbo_of_a_gaussian_q_term_by_term():
    Z = Normal("Z", m, s)
    # Step 1: E_q (x_i - z)^2 = (x_i - m)^2 + s^2, so E_q sum_i (x_i - z)^2 = S_2 - 2 m S_1
    # + n (m^2 + s^2).
    assert sp.simplify(E(Z**2) - (m**2 + s**2)) == 0
    # Step 2: the expected log joint, and the entropy of q, by sympy's own integrals.
    expected_log_joint = E(LOG_JOINT.subs(z, Z))
    entropy = -E(log_normal(Z, m, s))
    assert sp.simplify(entropy - sp.log(2 * sp.pi * sp.E * s**2) / 2) == 0
    elbo = sp.simplify(expected_log_joint + entropy)
    # Step 3: the chapter's eq-cg-elbo, written with sum_i (x_i - m)^2 = S_2 - 2 m S_1 + n m^2.
    chapter = (-n * sp.log(2 * sp.pi * sigma**2) / 2
               - (sum_x2 - 2 * m * sum_x + n * m**2 + n * s**2) / (2 * sigma**2)
               - sp.log(2 * sp.pi * s0**2) / 2 - ((m - m0) ** 2 + s**2) / (2 * s0**2)
               + sp.log(2 * sp.pi * sp.E * s**2) / 2)
    assert sp.simplify(sp.expand(elbo - chapter)) == 0
    # The package's closed form at random points and random q.
    rng = np.random.default_rng(2)
    for model, x, values in random_points(seed=2):
        loc, scale = rng.normal(), rng.uniform(0.1, 2)
        expected = float(chapter.subs(values).subs({m: loc, s: scale}))
        assert model.elbo(x, loc, scale) == pytest.approx(expected, rel=1e-12)


@pytest.mark.verifies("eq-cg-kl")
@pytest.mark.verifies("eq-elbo-identity")
def test_kl_formula_and_elbo_plus_kl_is_the_log_evidence():
    Z = Normal("Z", m, s)
    kl = sp.simplify(E(log_normal(Z, m, s) - log_normal(Z, m_n, s_n)))
    chapter = sp.log(s_n / s) + (s**2 + (m - m_n) ** 2) / (2 * s_n**2) - sp.Rational(1, 2)
    assert sp.simplify(sp.expand(kl - chapter)) == 0
    # With the posterior of the model: ELBO + KL - log p(x) simplifies to zero.
    elbo = E(LOG_JOINT.subs(z, Z)) - E(log_normal(Z, m, s))
    identity = LOG_JOINT - log_normal(z, M_N, 1 / sp.sqrt(PRECISION_N))   # log p(x)
    kl_model = chapter.subs({m_n: M_N, s_n: 1 / sp.sqrt(PRECISION_N)})
    assert sp.simplify(sp.expand(elbo + kl_model - identity)) == 0
    rng = np.random.default_rng(3)
    for model, x, values in random_points(seed=3):
        loc, scale = rng.normal(), rng.uniform(0.1, 2)
        expected = float(kl_model.subs(values).subs({m: loc, s: scale}))
        assert model.kl_to_posterior(x, loc, scale) == pytest.approx(expected, rel=1e-10)


@pytest.mark.verifies("eq-elbo-mc-variance")
def test_variance_of_one_monte_carlo_summand():
    # The summand log p(x, z) - log q(z) = log p(x) + log p(z | x) - log q(z); its
    # variance under q is that of log N(z | m_n, s_n^2) - log N(z | m, s^2).
    Z = Normal("Z", m, s)
    summand = log_normal(Z, m_n, s_n) - log_normal(Z, m, s)
    exercise = s**2 * (m - m_n) ** 2 / s_n**4 + (1 - s**2 / s_n**2) ** 2 / 2
    assert sp.simplify(sp.expand(variance(summand) - exercise)) == 0
    # Zero exactly at q = posterior.
    assert sp.simplify(exercise.subs({m: m_n, s: s_n})) == 0
    # Against the package: the standard error of monte_carlo_elbo times sqrt(S) estimates
    # the standard deviation of one summand; with S = 200 000 draws its relative error
    # is about sqrt((kurtosis - 1) / (4 S)) < 0.3 %, so 2 % is several standard errors.
    model = ConjugateGaussian(m0=0.0, s0=2.0, sigma=1.0)
    x = np.array([1.2, 0.7, 2.1, 1.6])
    post_loc, post_scale = model.posterior(x)
    loc, scale = post_loc + 0.3, 0.5 * post_scale
    q = torch.distributions.Normal(torch.tensor(loc, dtype=torch.float64),
                                   torch.tensor(scale, dtype=torch.float64))
    _, standard_error = monte_carlo_elbo(model.log_joint_callable(x), q, 200_000,
                                         torch.Generator().manual_seed(0))
    expected = float(exercise.subs({m: loc, s: scale, m_n: post_loc, s_n: post_scale}))
    assert standard_error * np.sqrt(200_000) == pytest.approx(np.sqrt(expected), rel=0.02)
