"""The algebra of Chapter 9, step by step with sympy, and checked against vicourse.flows.

Each test derives a closed form of the chapter (a Jacobian determinant, the
constraint that keeps a planar layer invertible, the inverse of a coupling
layer) with sympy doing the differentiation and simplification, and then
compares the result with what the package computes at numerical values.
"""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from vicourse.flows import AffineCoupling, Flow, PlanarFlow

F64 = torch.float64
z = sp.symbols("z1:4", real=True)
w = sp.symbols("w1:4", real=True)
u = sp.symbols("u1:4", real=True)
b = sp.Symbol("b", real=True)
Z, W, U = sp.Matrix(z), sp.Matrix(w), sp.Matrix(u)


def _planar_map(u_vector):
    return Z + u_vector * sp.tanh((W.T * Z)[0, 0] + b)


def _numbers(seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(10, generator=gen, dtype=F64).tolist()
    return dict(zip([*z, *w, *u, b], values, strict=True))


@pytest.mark.verifies("eq-flow-planar-logdet")
def test_planar_jacobian_determinant_is_one_plus_psi_dot_u():
    f = _planar_map(U)
    jac = f.jacobian(Z)
    a = (W.T * Z)[0, 0] + b
    # the matrix determinant lemma: det(I + u psi') = 1 + psi' u, psi = h'(a) w
    lemma = 1 + (1 - sp.tanh(a) ** 2) * (W.T * U)[0, 0]
    assert sp.simplify(sp.expand(jac.det() - lemma)) == 0
    # the package, whose u is replaced by u_hat, at random numbers: the same determinant
    values = _numbers()
    layer = PlanarFlow(3)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([values[s] for s in w], dtype=F64))
        layer.u.copy_(torch.tensor([values[s] for s in u], dtype=F64))
        layer.bias.fill_(values[b])
        u_hat = layer.u_hat.tolist()
        point = torch.tensor([[values[s] for s in z]], dtype=F64)
        _, log_det = layer(point)
    at = {**values, **dict(zip(u, u_hat, strict=True))}
    det = float(jac.det().subs(at))
    assert det > 0
    assert math.isclose(float(log_det[0]), math.log(det), rel_tol=0, abs_tol=1e-12)


@pytest.mark.verifies("eq-flow-planar-uhat")
def test_u_hat_has_w_dot_u_hat_equal_to_m_of_w_dot_u_and_keeps_the_orthogonal_part():
    alpha = (W.T * U)[0, 0]
    m = -1 + sp.log(1 + sp.exp(alpha))
    u_hat = U + (m - alpha) * W / (W.T * W)[0, 0]
    assert sp.simplify((W.T * u_hat)[0, 0] - m) == 0
    # the part of u orthogonal to w is unchanged: u_hat - u is parallel to w
    assert sp.simplify((u_hat - U).cross(W)) == sp.zeros(3, 1)
    # m(a) > -1 for every real a: log(1 + e^a) > 0
    a = sp.Symbol("a", real=True)
    assert sp.log(1 + sp.exp(a)).is_positive
    # the package's u_hat, at random numbers
    values = _numbers(1)
    layer = PlanarFlow(3)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([values[s] for s in w], dtype=F64))
        layer.u.copy_(torch.tensor([values[s] for s in u], dtype=F64))
        ours = layer.u_hat.tolist()
    theirs = [float(v) for v in u_hat.subs(values)]
    assert all(math.isclose(x, y, rel_tol=0, abs_tol=1e-12) for x, y in zip(ours, theirs,
                                                                           strict=True))


@pytest.mark.verifies("eq-flow-planar-invertible")
def test_a_planar_map_is_monotone_along_w_exactly_when_w_dot_u_is_at_least_minus_one():
    # Along w the map is one-dimensional: a = w'z goes to g(a) = a + c tanh(a + b), c = w'u.
    a, c = sp.symbols("a c", real=True)
    g = a + c * sp.tanh(a + b)
    slope = sp.diff(g, a)
    assert sp.simplify(slope - (1 + c * (1 - sp.tanh(a + b) ** 2))) == 0
    # For c < 0 the slope is smallest where tanh' is largest, at a = -b, where it is 1 + c.
    assert sp.simplify(slope.subs(a, -b) - (1 + c)) == 0
    assert sp.solve(sp.Eq(slope.subs(a, -b), 0), c) == [-1]
    # so c = -1.5 gives a negative slope there (g folds over: not invertible) ...
    assert slope.subs({a: -b, c: sp.Rational(-3, 2)}) < 0
    # ... and in general the slope is 1 + c t with t = 1 - tanh^2(a + b), which takes the
    # values in (0, 1]: linear in t, so its lowest value is at an end, min(1, 1 + c),
    # and it is >= 0 for every a exactly when c >= -1.
    t = sp.Symbol("t", real=True)
    line = 1 + c * t
    assert sp.diff(line, t, 2) == 0
    low = sp.Min(line.subs(t, 0), line.subs(t, 1))
    assert sp.solve_univariate_inequality(low >= 0, c, relational=False) == sp.Interval(-1, sp.oo)
    # The package's layers satisfy it whatever u is (eq-flow-planar-uhat).
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        layer = PlanarFlow(3, generator=gen)
        with torch.no_grad():
            layer.u.copy_(5 * torch.randn(3, generator=gen, dtype=F64))
            assert float(layer.w @ layer.u_hat) > -1


@pytest.mark.verifies("eq-flow-coupling-logdet")
def test_a_coupling_layers_jacobian_is_triangular_with_determinant_exp_of_the_sum_of_s():
    z1, z2, z3 = z
    s2, t2, s3, t3 = (sp.Function(name)(z1) for name in ("s2", "t2", "s3", "t3"))
    # mask (1, 0, 0): z1 passes unchanged and sets the scale and shift of z2 and z3
    y = sp.Matrix([z1, z2 * sp.exp(s2) + t2, z3 * sp.exp(s3) + t3])
    jac = y.jacobian(Z)
    assert all(jac[i, j] == 0 for i in range(3) for j in range(3) if j > i)  # triangular
    assert sp.simplify(jac.det() - sp.exp(s2 + s3)) == 0
    # the inverse, solved by sympy, is (y - t) exp(-s) on the transformed coordinates
    y2, y3 = sp.symbols("y2 y3", real=True)
    solution = sp.solve([sp.Eq(y[1], y2), sp.Eq(y[2], y3)], [z2, z3], dict=True)[0]
    assert sp.simplify(solution[z2] - (y2 - t2) * sp.exp(-s2)) == 0
    assert sp.simplify(solution[z3] - (y3 - t3) * sp.exp(-s3)) == 0
    # the package: its log-determinant is the sum of the network's log-scales
    gen = torch.Generator().manual_seed(3)
    layer = AffineCoupling(3, 5, [1, 0, 0], generator=gen)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
        point = torch.randn(4, 3, generator=gen, dtype=F64)
        _, log_det = layer(point)
        _, log_scale = layer.shift_and_log_scale(point[:, :1])
    torch.testing.assert_close(log_det, log_scale.sum(-1), rtol=0, atol=1e-14)


@pytest.mark.verifies("eq-flow-density")
def test_change_of_variables_of_an_affine_map_gives_the_gaussian_density():
    eps, x, mu = sp.symbols("epsilon x mu", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    log_q0 = -eps**2 / 2 - sp.log(2 * sp.pi) / 2
    f = mu + sigma * eps
    log_q = log_q0 - sp.log(sp.diff(f, eps))         # eq-flow-density, one layer
    at_x = log_q.subs(eps, sp.solve(sp.Eq(f, x), eps)[0])
    gaussian = sp.log(sp.exp(-(x - mu) ** 2 / (2 * sigma**2)) / sp.sqrt(2 * sp.pi * sigma**2))
    assert sp.simplify(sp.expand_log(at_x - gaussian, force=True)) == 0
    # the package's flow with no layers is that Gaussian (d = 1)
    flow = Flow(1)
    with torch.no_grad():
        flow.loc.fill_(0.3)
        flow.scale_param.fill_(math.log(1.7))
        point, log_q_value = flow.rsample(5, torch.Generator().manual_seed(4))
    expected = [float(gaussian.subs({x: v, mu: 0.3, sigma: 1.7})) for v in point[:, 0].tolist()]
    torch.testing.assert_close(log_q_value, torch.tensor(expected, dtype=F64), rtol=0,
                               atol=1e-12)
