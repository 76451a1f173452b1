"""Chapter 2, the algebra checked with sympy: the E-step and the M-step of a Gaussian mixture.

The M-step is derived as the chapter derives it, from the stationarity of the
ELBO in each parameter: on symbolic data (three points in two dimensions with
symbolic coordinates and responsibilities) for the mean and the covariance,
and with symbolic effective counts for the weights.  The package's
``em.m_step`` and ``em.e_step`` are then compared with the symbolic solutions
at random numerical points.
"""

import numpy as np
import pytest
import sympy as sp

from vicourse import em

N_POINTS, DIM = 3, 2
X = sp.Matrix(N_POINTS, DIM, lambda i, a: sp.Symbol(f"x_{i}{a}", real=True))
R = sp.symbols(f"r_0:{N_POINTS}", positive=True)          # r_ik of one component
MU = sp.Matrix(sp.symbols(f"mu_0:{DIM}", real=True))
p, q, t = sp.symbols("p q t", real=True)
LAMBDA = sp.Matrix([[p, q], [q, t]])                        # the precision Sigma_k^{-1}
N_K = sum(R)


def component_terms(mu, precision):
    """The terms of the ELBO that depend on component k's mean and precision (eq-em-elbo)."""
    total = 0
    for i in range(N_POINTS):
        diff = X[i, :].T - mu
        total += R[i] * (sp.log(precision.det()) / 2 - (diff.T * precision * diff)[0, 0] / 2)
    return total


def weighted_mean():
    return sum((R[i] * X[i, :].T for i in range(N_POINTS)), sp.zeros(DIM, 1)) / N_K


def normalised_scatter(x_bar):
    """S_k of eq-scatter."""
    return sum(((X[i, :].T - x_bar) * (X[i, :].T - x_bar).T * R[i] for i in range(N_POINTS)),
               sp.zeros(DIM, DIM)) / N_K


def numeric(expr, values):
    return np.array(sp.Matrix(expr).subs(values).evalf(), dtype=float)


def random_values(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(N_POINTS, DIM))
    resp = rng.uniform(0.1, 1.0, size=N_POINTS)
    values = {X[i, a]: points[i, a] for i in range(N_POINTS) for a in range(DIM)}
    values.update({R[i]: resp[i] for i in range(N_POINTS)})
    return points, resp, values


@pytest.mark.verifies("eq-em-mstep")
def test_the_mean_solves_the_stationarity_condition():
    objective = component_terms(MU, LAMBDA)
    gradient = [sp.diff(objective, mu_a) for mu_a in MU]
    solution = sp.solve(gradient, list(MU), dict=True)
    assert len(solution) == 1
    mu_star = sp.Matrix([solution[0][mu_a] for mu_a in MU])
    assert sp.simplify(mu_star - weighted_mean()) == sp.zeros(DIM, 1)


@pytest.mark.verifies("eq-em-mstep")
@pytest.mark.verifies("eq-scatter")
def test_the_covariance_solves_the_stationarity_condition_and_is_a_maximum():
    x_bar = weighted_mean()
    scatter = normalised_scatter(x_bar)
    # Step 1: at mu = x_bar, sum_i r_i (x_i - mu)^T Lambda (x_i - mu) = N_k tr(Lambda S_k).
    quadratic = sum(R[i] * ((X[i, :].T - x_bar).T * LAMBDA * (X[i, :].T - x_bar))[0, 0]
                    for i in range(N_POINTS))
    assert sp.simplify(quadratic - N_K * (LAMBDA * scatter).trace()) == 0
    # The moments form used by the package equals the centred definition of eq-scatter.
    second_moment = sum((X[i, :].T * X[i, :] * R[i] for i in range(N_POINTS)),
                        sp.zeros(DIM, DIM)) / N_K
    assert sp.simplify(second_moment - x_bar * x_bar.T - scatter) == sp.zeros(DIM, DIM)
    # Step 2: so the terms of Lambda are N/2 log|Lambda| - N/2 tr(Lambda S) for a symmetric
    # positive definite S = [[a, b], [b, c]], that is a > 0 and D = ac - b^2 > 0 (written
    # c = (b^2 + D) / a so that sympy knows it); stationary at Lambda = S^{-1}.
    a, count, D = sp.symbols("a N D", positive=True)
    b = sp.Symbol("b", real=True)
    S = sp.Matrix([[a, b], [b, (b**2 + D) / a]])
    objective = count * sp.log(LAMBDA.det()) / 2 - count * (LAMBDA * S).trace() / 2
    gradient = sp.Matrix([sp.diff(objective, v) for v in (p, q, t)])
    inverse = S.inv()
    at_inverse = {p: inverse[0, 0], q: inverse[0, 1], t: inverse[1, 1]}
    assert sp.simplify(gradient.subs(at_inverse)) == sp.zeros(3, 1)
    # Step 3: a maximum: the Hessian in (p, q, t) is negative definite there, for every
    # positive definite S (Sylvester: leading principal minors negative, positive, negative).
    hessian = sp.hessian(objective, (p, q, t)).subs(at_inverse)
    minors = [sp.simplify(hessian[:k, :k].det()) for k in (1, 2, 3)]
    assert minors[0].is_negative and minors[1].is_positive and minors[2].is_negative


@pytest.mark.verifies("eq-em-mstep")
def test_the_weights_maximise_the_expected_log_prior_on_the_simplex():
    counts = sp.symbols("N_0:3", positive=True)
    weights = sp.symbols("pi_0:3", positive=True)
    lagrange = sp.Symbol("lambda")
    lagrangian = (sum(c * sp.log(w) for c, w in zip(counts, weights, strict=True))
                  - lagrange * (sum(weights) - 1))
    equations = [sp.diff(lagrangian, v) for v in (*weights, lagrange)]
    solution = sp.solve(equations, [*weights, lagrange], dict=True)
    assert len(solution) == 1
    for c, w in zip(counts, weights, strict=True):
        assert sp.simplify(solution[0][w] - c / sum(counts)) == 0
    # The stationary point is the maximum: the gap to any pi on the simplex is
    # n KL(N / n || pi) >= 0 (the chapter's exercise), so no random pi does better.
    rng = np.random.default_rng(3)
    n_k = rng.uniform(0.5, 20.0, size=3)
    best = float(sum(c * sp.log(solution[0][w]) for c, w in zip(counts, weights, strict=True))
                 .subs(dict(zip(counts, n_k, strict=True))))
    others = rng.dirichlet(np.ones(3), size=1000)
    assert np.all(np.log(others) @ n_k < best)


@pytest.mark.verifies("eq-em-mstep")
@pytest.mark.verifies("eq-scatter")
def test_m_step_of_the_package_is_the_symbolic_solution():
    # Two components: component 0 has the symbolic responsibilities R, component 1 the rest.
    x_bar = weighted_mean()
    scatter = normalised_scatter(x_bar)
    for seed in range(4):
        points, resp, values = random_values(seed)
        resp_both = np.column_stack([resp, 1 - resp])
        weights, means, covariances = em.m_step(points, resp_both, reg_covar=0.0)
        assert weights[0] == pytest.approx(resp.sum() / N_POINTS, rel=1e-12)
        np.testing.assert_allclose(means[0], numeric(x_bar, values)[:, 0], rtol=1e-11)
        np.testing.assert_allclose(covariances[0], numeric(scatter, values), rtol=1e-9,
                                   atol=1e-12)


@pytest.mark.verifies("eq-em-estep")
def test_e_step_maximises_the_elbo_of_one_point_over_q():
    # max over q on the simplex of sum_k q_k (l_k - log q_k): q_k = exp(l_k) / sum_j exp(l_j).
    log_joint = sp.symbols("l_0:3", real=True)
    probs = sp.symbols("q_0:3", positive=True)
    lagrange = sp.Symbol("lambda")
    lagrangian = (sum(pk * (lk - sp.log(pk)) for pk, lk in zip(probs, log_joint, strict=True))
                  - lagrange * (sum(probs) - 1))
    stationary = sp.solve([sp.diff(lagrangian, pk) for pk in probs], list(probs), dict=True)[0]
    # Each q_k is exp(l_k - 1 - lambda): proportional to exp(l_k), so normalising gives
    # the posterior; eliminating lambda with the constraint:
    total = sum(stationary[pk] for pk in probs)
    posterior = [sp.simplify(stationary[pk] / total) for pk in probs]
    softmax = [sp.exp(lk) / sum(sp.exp(lj) for lj in log_joint) for lk in log_joint]
    for a, b in zip(posterior, softmax, strict=True):
        assert sp.simplify(a - b) == 0
    # The package's E-step at random parameters: log r_ik = l_ik - logsumexp_j l_ij.
    rng = np.random.default_rng(5)
    X_num = rng.normal(size=(6, 2))
    weights = np.array([0.2, 0.3, 0.5])
    means = rng.normal(size=(3, 2))
    covariances = np.stack([np.eye(2) * v for v in (0.5, 1.0, 2.0)])
    l_num = em.log_joint(X_num, weights, means, covariances)
    log_resp = em.e_step(X_num, weights, means, covariances)
    for i in range(6):
        expected = [float(sp.log(r.subs(dict(zip(log_joint, l_num[i], strict=True)))))
                    for r in softmax]
        np.testing.assert_allclose(log_resp[i], expected, rtol=1e-12, atol=1e-12)
