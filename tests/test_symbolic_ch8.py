"""The algebra of Chapter 8, step by step with sympy, and checked against vicourse.

Each test redoes a step of the chapter's derivations symbolically: the natural
gradient of the ELBO for an exponential family (a generic one-parameter family
and the Dirichlet, the global factor of the mixture's weights and of LDA's
topics), the unbiasedness of the minibatch scaling, the step that interpolates
natural parameters and its form as a merge of statistics, and the Robbins–Monro
conditions on the step sizes.  Where the package implements the step, the
symbolic result is compared with it at numerical values.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from vicourse import _vbgmm, svi

# ---------------------------------------------------------------------------
# the natural gradient
# ---------------------------------------------------------------------------


@pytest.mark.verifies("eq-svi-natgrad")
def test_natural_gradient_is_lambda_hat_minus_lambda_for_any_one_parameter_family():
    lam, lam_hat, beta = sp.symbols("lambda lambda_hat beta", real=True)
    a = sp.Function("a")            # the log normaliser, left unspecified
    h = sp.Function("h")
    T = sp.Function("T")            # the sufficient statistic t(beta)
    # q(beta | lambda) = h(beta) exp(lambda T(beta) - a(lambda)); E_q[T] = a'(lambda)
    log_q = sp.log(h(beta)) + lam * T(beta) - a(lam)
    e_t = sp.diff(a(lam), lam)
    # the terms of the ELBO in lambda: E_q[log p(beta | z, x)] - E_q[log q(beta)], with the
    # conditional's natural parameter replaced by its expectation lambda_hat
    elbo = lam_hat * e_t - (lam * e_t - a(lam))
    assert sp.simplify(elbo - ((lam_hat - lam) * e_t + a(lam))) == 0
    gradient = sp.diff(elbo, lam)
    fisher = -sp.diff(log_q, lam, 2)           # not random: the Fisher information itself
    assert sp.simplify(gradient - fisher * (lam_hat - lam)) == 0
    assert sp.simplify(gradient / fisher - (lam_hat - lam)) == 0


@pytest.mark.verifies("eq-svi-natgrad", "eq-svi-lda-global")
def test_natural_gradient_of_a_dirichlet_factor_is_lambda_hat_minus_lambda():
    # q(pi) = Dir(lambda), K = 3; the ELBO terms in lambda for a model whose conditional for pi is
    # Dir(lambda_hat) (mixture weights: alpha0 + N_k; LDA topics: eta + sum_d n_dw phi_dwk)
    lam = sp.symbols("lambda1:4", positive=True)
    lam_hat = sp.symbols("lambdahat1:4", positive=True)
    total = sum(lam)
    log_normaliser = sum(sp.loggamma(x) for x in lam) - sp.loggamma(total)
    e_log_pi = [sp.diff(log_normaliser, x) for x in lam]            # psi(lambda_k) - psi(sum)
    assert all(sp.simplify(e - (sp.polygamma(0, x) - sp.polygamma(0, total))) == 0
               for e, x in zip(e_log_pi, lam, strict=True))
    # E_q[log p(pi | ...)] - E_q[log q(pi)], constants dropped
    elbo = (sum((lh - 1) * e for lh, e in zip(lam_hat, e_log_pi, strict=True))
            - (-log_normaliser + sum((x - 1) * e for x, e in zip(lam, e_log_pi, strict=True))))
    gradient = sp.Matrix([sp.diff(elbo, x) for x in lam])
    fisher = sp.hessian(log_normaliser, lam)
    step = sp.Matrix([lh - x for lh, x in zip(lam_hat, lam, strict=True)])
    assert sp.simplify(gradient - fisher * step) == sp.zeros(3, 1)
    # and at numbers, the natural gradient solves fisher * g = gradient with g = lambda_hat - lambda
    values = dict(zip(lam + lam_hat, [1.5, 4.0, 0.7, 2.0, 9.0, 1.1], strict=True))
    F = np.array(fisher.subs(values).evalf(), dtype=float)
    g = np.array(gradient.subs(values).evalf(), dtype=float).ravel()
    np.testing.assert_allclose(np.linalg.solve(F, g), [0.5, 5.0, 0.4], rtol=1e-12)


# ---------------------------------------------------------------------------
# minibatches
# ---------------------------------------------------------------------------


@pytest.mark.verifies("eq-svi-lambda-hat", "eq-svi-dsvi")
@pytest.mark.parametrize("n, m", [(4, 2), (5, 3), (5, 1)])
def test_minibatch_sums_scaled_by_n_over_b_are_unbiased(n, m):
    # every subset of m of the n points is equally likely; averaging (n/m) sum_{i in B} t_i over
    # them gives the whole sum, for numbers t_i and for functions f_i(z) of the global variables
    t = sp.symbols(f"t1:{n + 1}", real=True)
    z = sp.symbols("z", real=True)
    f = [sp.Function(f"f{i}")(z) for i in range(n)]
    subsets = list(itertools.combinations(range(n), m))
    for terms in (t, f):
        mean = sum(sp.Rational(n, m) * sum(terms[i] for i in b) for b in subsets) / len(subsets)
        assert sp.simplify(mean - sum(terms)) == 0
    # the variance of exercise ex-svi-unbiased: n^2/m (n - m)/(n - 1) sigma_t^2
    estimates = [sp.Rational(n, m) * sum(t[i] for i in b) for b in subsets]
    variance = sum((e - sum(t)) ** 2 for e in estimates) / len(subsets)
    t_bar = sum(t) / n
    sigma2 = sum((x - t_bar) ** 2 for x in t) / n
    assert sp.simplify(variance - sp.Rational(n**2, m) * sp.Rational(n - m, n - 1) * sigma2) == 0


# ---------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------


@pytest.mark.verifies("eq-svi-step")
def test_interpolating_natural_parameters_is_a_natural_gradient_step_and_a_merge_of_statistics():
    rho, lam, lam_hat = sp.symbols("rho lambda lambda_hat", real=True)
    assert sp.expand((1 - rho) * lam + rho * lam_hat - (lam + rho * (lam_hat - lam))) == 0
    assert ((1 - rho) * lam + rho * lam_hat).subs(rho, 1) == lam_hat
    # The mixture's natural parameters are the prior's plus raw moments (N, sum x, sum x^2); the
    # step (1 - rho) s_a + rho c s_b of raw moments, written as counts, means and scatters, is
    # the pairwise update that _vbgmm.combine implements (one dimension here).
    wa, wb, na, nb, ma, mb, ca, cb = sp.symbols("w_a w_b N_a N_b m_a m_b C_a C_b", positive=True)
    raw = [wa * na + wb * nb, wa * na * ma + wb * nb * mb,
           wa * (ca + na * ma**2) + wb * (cb + nb * mb**2)]          # N, sum x, sum x^2
    n = raw[0]
    mean = raw[1] / n
    scatter = raw[2] - n * mean**2
    chan_mean = ma + (wb * nb / n) * (mb - ma)
    chan_scatter = wa * ca + wb * cb + (wa * na * wb * nb / n) * (mb - ma) ** 2
    assert sp.simplify(mean - chan_mean) == 0
    assert sp.simplify(scatter - chan_scatter) == 0
    # ... and the package computes the same numbers
    values = {wa: 0.3, wb: 2.5, na: 7.0, nb: 4.0, ma: -1.2, mb: 0.8, ca: 3.1, cb: 0.6}
    a = _vbgmm.Stats(np.array([7.0]), np.array([[-1.2]]), np.array([[[3.1]]]))
    b = _vbgmm.Stats(np.array([4.0]), np.array([[0.8]]), np.array([[[0.6]]]))
    merged = _vbgmm.combine(a, b, 0.3, 2.5)
    np.testing.assert_allclose(merged.nk, float(n.subs(values)), rtol=1e-14)
    np.testing.assert_allclose(merged.mean, float(mean.subs(values)), rtol=1e-14)
    np.testing.assert_allclose(merged.scatter, float(scatter.subs(values)), rtol=1e-14)


@pytest.mark.verifies("eq-svi-rho")
@pytest.mark.parametrize("kappa, sum_diverges, squares_converge", [
    (sp.Rational(1, 2), True, False), (sp.Rational(7, 10), True, True), (1, True, True),
    (sp.Rational(3, 2), False, True), (sp.Rational(1, 4), True, False),
])
def test_robbins_monro_conditions_hold_exactly_for_kappa_in_half_to_one(kappa, sum_diverges,
                                                                         squares_converge):
    t = sp.symbols("t", integer=True, positive=True)
    tau0 = 3
    steps = (t + tau0) ** -kappa
    assert (sp.Sum(steps, (t, 1, sp.oo)).is_convergent() is sp.false) == sum_diverges
    assert (sp.Sum(steps**2, (t, 1, sp.oo)).is_convergent() is sp.true) == squares_converge
    assert (sum_diverges and squares_converge) == (sp.Rational(1, 2) < kappa <= 1)
    # the package's schedule is this sequence, t counted from 1 (kappa in [0, 1] only)
    if kappa <= 1:
        np.testing.assert_allclose(svi.step_sizes(5, tau0=tau0, kappa=float(kappa)),
                                   [float(steps.subs(t, k)) for k in range(1, 6)], rtol=1e-14)
