"""The algebra of Chapter 4, step by step in sympy, and the package's formulas against it.

Each test is marked with the equation of the chapter it verifies; the equation
index (appendix/equations.md) lists them.
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy import stats
from sympy.stats import E, Normal

from vicourse import kl

HALF = sp.Rational(1, 2)


def log_normal_density(z, loc, cov):
    """log N(z | loc, cov) written out, for a sympy column vector z."""
    r = z - loc
    d = loc.shape[0]
    return -HALF * (d * sp.log(2 * sp.pi) + sp.log(cov.det()) + (r.T * cov.inv() * r)[0])


def gaussian_2d(names="m1 m2 a b c"):
    """A general 2-D Gaussian in symbols: its mean and its Cholesky factor (positive diagonal).

    Returns the mean, the covariance, the factor and the symbols in the order of ``names``.
    """
    m1, m2, a, b, c = sp.symbols(names, real=True)
    a, c = sp.Symbol(a.name, positive=True), sp.Symbol(c.name, positive=True)
    tril = sp.Matrix([[a, 0], [b, c]])
    return sp.Matrix([m1, m2]), tril * tril.T, tril, (m1, m2, a, b, c)


def kl_gaussian_closed_form(loc_p, cov_p, loc_q, cov_q):
    """eq-kl-gaussian as the chapter writes it."""
    d = loc_p.shape[0]
    diff = loc_q - loc_p
    return HALF * ((cov_q.inv() * cov_p).trace() + (diff.T * cov_q.inv() * diff)[0] - d
                   + sp.log(cov_q.det()) - sp.log(cov_p.det()))


@pytest.mark.verifies("eq-kl-gaussian")
def test_gaussian_kl_closed_form_step_by_step():
    loc_p, cov_p, tril_p, p_symbols = gaussian_2d("m1 m2 a b c")
    loc_q, cov_q, _, q_symbols = gaussian_2d("n1 n2 e f g")
    # z ~ p written as z = loc_p + L_p eps with independent standard normals eps.
    eps = sp.Matrix([Normal("eps1", 0, 1), Normal("eps2", 0, 1)])
    z = loc_p + tril_p * eps

    # Step 1: E_p[(z - m)^T A (z - m)] = tr(A Sigma_p) + (mu_p - m)^T A (mu_p - m).
    a11, a12, a22, k1, k2 = sp.symbols("A11 A12 A22 k1 k2", real=True)
    sym_a, m = sp.Matrix([[a11, a12], [a12, a22]]), sp.Matrix([k1, k2])
    quadratic = E(sp.expand(((z - m).T * sym_a * (z - m))[0]))
    expected = (sym_a * cov_p).trace() + ((loc_p - m).T * sym_a * (loc_p - m))[0]
    assert sp.simplify(quadratic - expected) == 0

    # Step 2: E_p[log p(z)] = -(d log 2 pi + log det Sigma_p + d) / 2 (with A = Sigma_p^-1).
    e_log_p = E(sp.expand(log_normal_density(z, loc_p, cov_p)))
    assert sp.simplify(e_log_p + HALF * (2 * sp.log(2 * sp.pi) + sp.log(cov_p.det()) + 2)) == 0

    # Step 3: E_p[log q(z)] with the trace and the Mahalanobis term.
    e_log_q = E(sp.expand(log_normal_density(z, loc_q, cov_q)))
    diff = loc_q - loc_p
    assert sp.simplify(e_log_q + HALF * (2 * sp.log(2 * sp.pi) + sp.log(cov_q.det())
                                         + (cov_q.inv() * cov_p).trace()
                                         + (diff.T * cov_q.inv() * diff)[0])) == 0

    # Step 4: the difference is eq-kl-gaussian; the log 2 pi terms cancel.
    closed = kl_gaussian_closed_form(loc_p, cov_p, loc_q, cov_q)
    assert sp.simplify(e_log_p - e_log_q - closed) == 0

    # The package's kl_gaussian against sympy's expression at random values.
    value = sp.lambdify([*p_symbols, *q_symbols], closed, "math")
    rng = np.random.default_rng(0)
    for _ in range(5):
        m1, m2, n1, n2, b_, f_ = rng.normal(size=6)
        a_, c_, e_, g_ = rng.uniform(0.3, 2.0, size=4)
        lp, lq = np.array([[a_, 0], [b_, c_]]), np.array([[e_, 0], [f_, g_]])
        ours = kl.kl_gaussian([m1, m2], lp @ lp.T, [n1, n2], lq @ lq.T)
        assert ours == pytest.approx(value(m1, m2, a_, b_, c_, n1, n2, e_, f_, g_), rel=1e-12)


@pytest.mark.verifies("eq-kl-gaussian")
def test_the_two_directions_agree_for_equal_covariances_and_not_only_then():
    loc_p, cov, _, _ = gaussian_2d()
    loc_q = sp.Matrix(sp.symbols("n1 n2", real=True))
    forward = kl_gaussian_closed_form(loc_p, cov, loc_q, cov)
    reverse = kl_gaussian_closed_form(loc_q, cov, loc_p, cov)
    assert sp.simplify(forward - reverse) == 0
    # Equal means, Sigma_p = diag(2, 1/2), Sigma_q = I: both directions are exactly 1/4.
    zero, eye = sp.zeros(2, 1), sp.eye(2)
    sigma_p = sp.diag(2, HALF)
    assert sp.simplify(kl_gaussian_closed_form(zero, sigma_p, zero, eye)) == sp.Rational(1, 4)
    assert sp.simplify(kl_gaussian_closed_form(zero, eye, zero, sigma_p)) == sp.Rational(1, 4)
    # ...whereas Sigma_p = diag(2, 1) and Sigma_q = I differ.
    sigma_p = sp.diag(2, 1)
    assert sp.simplify(kl_gaussian_closed_form(zero, sigma_p, zero, eye)
                       - kl_gaussian_closed_form(zero, eye, zero, sigma_p)) != 0


def worked_example_symbols():
    z, x, mu = sp.symbols("z x mu", real=True)
    s = sp.Symbol("s", positive=True)
    q = sp.exp(-(z - mu) ** 2 / (2 * s**2)) / (s * sp.sqrt(2 * sp.pi))
    log_q = -(z - mu) ** 2 / (2 * s**2) - sp.log(s) - HALF * sp.log(2 * sp.pi)
    # The improper prior e^-z on the whole line times the likelihood N(x | z, 1).
    log_p_hat = -z - (x - z) ** 2 / 2 - HALF * sp.log(2 * sp.pi)
    return z, x, mu, s, q, log_q, log_p_hat


def expectation(f, z, mu, s):
    """E_q[f(z)] for q = N(mu, s^2) and f a polynomial in z: z = mu + s eps, eps ~ N(0, 1)."""
    return sp.expand(E(sp.expand(f.subs(z, mu + s * Normal("eps", 0, 1)))))


@pytest.mark.verifies("eq-kl-unnormalised")
def test_the_normaliser_is_a_constant_offset():
    z, x, mu, s, q, log_q, log_p_hat = worked_example_symbols()
    assert sp.simplify(sp.integrate(q, (z, -sp.oo, sp.oo))) == 1     # so E_q[log Z] = log Z
    z_integral = sp.integrate(sp.exp(log_p_hat), (z, -sp.oo, sp.oo))
    log_z = sp.simplify(sp.log(sp.simplify(z_integral.rewrite(sp.erf))))
    assert sp.simplify(log_z - (HALF - x)) == 0                       # Z = exp(-x + 1/2)
    kl_to_unnormalised = expectation(log_q - log_p_hat, z, mu, s)
    kl_to_posterior = expectation(log_q - (log_p_hat - log_z), z, mu, s)
    assert sp.simplify(kl_to_posterior - (kl_to_unnormalised + log_z)) == 0
    # The posterior itself is N(x - 1, 1): the KL to it vanishes there.
    assert sp.simplify(kl_to_posterior.subs({mu: x - 1, s: 1})) == 0

    # The package's ELBO is -KL(q || p_hat) of sympy's expression.
    value = sp.lambdify((x, mu, s), kl_to_unnormalised, "math")
    for x_, mu_, s_ in ((2.0, 0.3, 0.7), (-1.0, 1.5, 2.0), (0.5, -2.0, 1.0)):
        def log_joint(points, x_=x_):
            return (-points[:, 0] - 0.5 * (x_ - points[:, 0]) ** 2
                    - 0.5 * math.log(2 * math.pi))

        elbo = kl.gaussian_elbo(log_joint, [mu_], [[s_**2]], num_nodes=8)
        assert elbo == pytest.approx(-value(x_, mu_, s_), rel=1e-12)


@pytest.mark.verifies("eq-kl-worked")
def test_worked_example_optimum_is_x_minus_one_on_the_whole_line():
    z, x, mu, s, q, log_q, log_p_hat = worked_example_symbols()
    objective = expectation((log_q - log_p_hat).subs(s, 1), z, mu, 1)
    assert sp.simplify(objective - (mu + (x - mu) ** 2 / 2)) == 0    # eq-kl-worked
    (mu_star,) = sp.solve(sp.diff(objective, mu), mu)
    assert sp.simplify(mu_star - (x - 1)) == 0
    assert sp.diff(objective, mu, 2) == 1                             # a minimum
    assert sp.simplify(objective.subs(mu, mu_star) - (x - HALF)) == 0

    # With the variance free too, the optimum is the exact posterior N(x - 1, 1).
    free = expectation(log_q - log_p_hat, z, mu, s)
    solutions = sp.solve([sp.diff(free, mu), sp.diff(free, s)], [mu, s], dict=True)
    assert solutions == [{mu: x - 1, s: 1}]

    # The package's I-projection finds the same optimum.
    for x_ in (-1.0, 2.0):
        def log_joint(points, x_=x_):
            return -points[:, 0] - 0.5 * (x_ - points[:, 0]) ** 2

        fit = kl.i_projection(log_joint, [0.0], [[1.0]], learn_scale=False, num_nodes=8)
        assert fit.loc[0] == pytest.approx(float(mu_star.subs(x, x_)), abs=1e-6)


def test_with_the_prior_on_z_at_least_zero_every_gaussian_has_infinite_kl():
    # The proper prior e^-z on z >= 0 makes log p_hat = -inf on z < 0. Every Gaussian q
    # puts positive mass there (its density is positive everywhere), so the integrand
    # q (log q - log p_hat) is +inf on a set of positive q-probability.
    z, x, mu, s, q, _, _ = worked_example_symbols()
    assert q.is_positive
    mass_below_zero = sp.simplify(sp.integrate(q, (z, -sp.oo, 0)))
    assert sp.simplify(mass_below_zero - sp.erfc(mu / (sp.sqrt(2) * s)) / 2) == 0
    for mu_, s_ in ((1.0, 1.0), (5.0, 0.5), (-2.0, 3.0)):
        value = float(mass_below_zero.subs({mu: mu_, s: s_}))
        assert value == pytest.approx(stats.norm(mu_, s_).cdf(0.0), rel=1e-12) and value > 0

    def proper_log_joint(points):
        z_ = points[:, 0]
        return torch.where(z_ >= 0, -z_, -math.inf) - 0.5 * (2.0 - z_) ** 2

    for mu_, var in ((1.0, 1.0), (5.0, 0.25)):
        assert kl.gaussian_elbo(proper_log_joint, [mu_], [[var]]) == -math.inf


@pytest.mark.verifies("eq-kl-moment-matching")
def test_moment_matching_minimises_the_forward_kl_and_gives_the_mixtures_moments():
    # Over q = N(mu, v), -E_p log q(z) = (log 2 pi v + (s + (m - mu)^2) / v) / 2 for any p
    # of mean m and variance s: its only stationary point is mu = m, v = s, a minimum.
    mu, m = sp.symbols("mu m", real=True)
    v, s = sp.symbols("v s", positive=True)
    cross_entropy = (sp.log(2 * sp.pi * v) + (s + (m - mu) ** 2) / v) / 2
    gradient = [sp.diff(cross_entropy, t) for t in (mu, v)]
    assert sp.solve(gradient, [mu, v], dict=True) == [{mu: m, v: s}]
    hessian = sp.hessian(cross_entropy, (mu, v)).subs({mu: m, v: s})
    assert all(sp.simplify(e) > 0 for e in hessian.eigenvals())

    # The mixture's mean and variance by integration, against eq-kl-moment-matching (1-D).
    z = sp.Symbol("z", real=True)
    w = sp.Symbol("w", positive=True)
    a, b = sp.symbols("a b", real=True)
    sa, sb = sp.symbols("s_a s_b", positive=True)

    def density(loc, var):
        return sp.exp(-(z - loc) ** 2 / (2 * var)) / sp.sqrt(2 * sp.pi * var)

    mixture = w * density(a, sa) + (1 - w) * density(b, sb)
    mean = sp.simplify(sp.integrate(z * mixture, (z, -sp.oo, sp.oo)))
    second = sp.simplify(sp.integrate(z**2 * mixture, (z, -sp.oo, sp.oo)))
    loc = w * a + (1 - w) * b
    assert sp.simplify(mean - loc) == 0
    formula = w * (sa + (a - loc) ** 2) + (1 - w) * (sb + (b - loc) ** 2)
    assert sp.simplify(second - mean**2 - formula) == 0

    # The package's m_projection against sympy's moments at random values.
    rng = np.random.default_rng(1)
    for _ in range(5):
        w_, a_, b_ = rng.uniform(0.1, 0.9), *rng.normal(size=2)
        sa_, sb_ = rng.uniform(0.2, 2.0, size=2)
        values = {w: w_, a: a_, b: b_, sa: sa_, sb: sb_}
        got_loc, got_cov = kl.m_projection([w_, 1 - w_], [[a_], [b_]], [[[sa_]], [[sb_]]])
        assert got_loc[0] == pytest.approx(float(mean.subs(values)), rel=1e-12, abs=1e-12)
        assert got_cov[0, 0] == pytest.approx(float((second - mean**2).subs(values)),
                                              rel=1e-12)


@pytest.mark.verifies("eq-kl-js")
def test_kl_to_the_sum_p_plus_q_is_js_minus_log_two_and_the_package_agrees():
    # Two distributions on two points: p = (a, 1 - a), q = (b, 1 - b).
    # The midpoint is kept as symbols m1, m2 for the algebra and substituted afterwards.
    a, b, m1, m2 = sp.symbols("a b m1 m2", positive=True)
    p, q, m = (a, 1 - a), (b, 1 - b), (m1, m2)

    def kl_to(first, second):
        return sum(f * sp.log(f / g) for f, g in zip(first, second, strict=True))

    js_m = (kl_to(p, m) + kl_to(q, m)) / 2                                # eq-kl-js
    with_sum = (kl_to(p, [2 * mi for mi in m]) + kl_to(q, [2 * mi for mi in m])) / 2
    assert sp.simplify(sp.expand_log(with_sum - (js_m - sp.log(2)), force=True)) == 0
    js = js_m.subs({m1: (a + b) / 2, m2: (2 - a - b) / 2})
    assert sp.simplify(js.subs({a: b})) == 0
    # Disjoint supports in the limit: JS -> log 2.
    assert sp.limit(sp.limit(js, a, 1, "-"), b, 0, "+") == sp.log(2)

    # js_divergence on a two-point grid is this discrete JS.
    value = sp.lambdify((a, b), js, "math")
    points = np.array([[0.0], [1.0]])
    for a_, b_ in ((0.3, 0.6), (0.9, 0.05), (0.5, 0.5)):
        def log_p(z, a_=a_):   # z is float64; the values stay float64
            return torch.where(z[:, 0] == 0, math.log(a_), math.log(1 - a_) + 0 * z[:, 0])

        def log_q(z, b_=b_):
            return torch.where(z[:, 0] == 0, math.log(b_), math.log(1 - b_) + 0 * z[:, 0])

        got = kl.js_divergence(log_p, log_q, points=points)
        assert got == pytest.approx(value(a_, b_), rel=1e-12, abs=1e-15)


@pytest.mark.verifies("eq-kl-jacobian")
def test_the_target_in_w_is_the_target_in_z_plus_the_log_jacobian():
    # For z = exp(w), a log-normal density in z becomes a normal density in w once the
    # log-Jacobian w is added: log q_z(e^w) + w = log N(w | m, s^2).
    w, m = sp.symbols("w m", real=True)
    s, z = sp.symbols("s z", positive=True)
    log_normal_in_z = (-sp.log(z) - sp.log(s) - sp.log(2 * sp.pi) / 2
                       - (sp.log(z) - m) ** 2 / (2 * s**2))
    assert sp.simplify(log_normal_in_z.subs(z, sp.exp(w)) + w
                       - (-sp.log(s) - sp.log(2 * sp.pi) / 2 - (w - m) ** 2 / (2 * s**2))) == 0
    # ... and the formula in z is scipy's log-normal.
    density = sp.lambdify((z, m, s), log_normal_in_z, "math")
    for z_, m_, s_ in ((0.5, 0.3, 0.5), (2.0, -0.2, 0.8), (7.0, 1.0, 1.5)):
        expected = stats.lognorm(s=s_, scale=math.exp(m_)).logpdf(z_)
        assert density(z_, m_, s_) == pytest.approx(expected, rel=1e-12)

    # So KL is the same in both variables: two log-normals by quadrature in z against the
    # closed form for the two normals in w.
    from scipy import integrate

    (m1, s1), (m2, s2) = (0.3, 0.5), (-0.2, 0.8)
    q_z, p_z = stats.lognorm(s=s1, scale=math.exp(m1)), stats.lognorm(s=s2, scale=math.exp(m2))
    in_z, _ = integrate.quad(lambda t: q_z.pdf(t) * (q_z.logpdf(t) - p_z.logpdf(t)), 0, np.inf,
                             limit=200)
    in_w = kl.kl_gaussian([m1], [[s1**2]], [m2], [[s2**2]])
    assert in_z == pytest.approx(in_w, rel=1e-9)
