"""Tests of vicourse.flows and vicourse.vi.fit_flow (Chapter 9).

Independent routes: log-determinants against ``torch.logdet`` of the Jacobian
that autograd computes; densities and samples against Pyro's planar and affine
coupling transforms composed in a ``TransformedDistribution``; the fitting
loop against a plain PyTorch loop; fits against targets whose normaliser and
KL divergence are known.
"""

import copy
import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    bad_scalars,
    bad_seeds,
    not_bools,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.distributions import TransformedDistribution
from pyro.distributions.transforms import AffineCoupling as PyroAffineCoupling
from pyro.distributions.transforms import LowerCholeskyAffine, Permute, Planar
from pyro.nn import DenseNN
from torch.distributions import Independent, MultivariateNormal, Normal

from vicourse import ConvergenceWarning, FlowFit
from vicourse.flows import (
    AffineCoupling,
    Flow,
    PlanarFlow,
    coupling_flow,
    planar_flow,
)
from vicourse.vi import fit_flow

F64 = torch.float64


def randomise(module, generator, scale=1.0):
    """Give every parameter of ``module`` random values (a layer starts as the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=F64))
    return module


def autograd_log_det(fn, points):
    """log |det J| at each row of ``points``, with J from torch.autograd.functional.jacobian."""
    out = []
    for x in points:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0].squeeze(0), x)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


# --------------------------------------------------------------------------- log-determinants


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("seed", range(3))
def test_planar_log_det_is_the_log_det_of_the_autograd_jacobian(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    layer = randomise(PlanarFlow(dim, generator=gen), gen, scale=1.5)
    z = 2.0 * torch.randn(6, dim, generator=gen, dtype=F64)
    _, log_det = layer(z)
    expected = autograd_log_det(lambda v: layer(v), z)
    torch.testing.assert_close(log_det, expected, rtol=0, atol=1e-10)


def test_planar_u_hat_satisfies_the_invertibility_condition_even_when_u_does_not():
    gen = torch.Generator().manual_seed(0)
    layer = PlanarFlow(3, generator=gen)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
        layer.u.copy_(-3.0 * layer.w)            # w'u = -15.75 < -1: not invertible as given
    w_dot = float(layer.w.detach() @ layer.u_hat.detach())
    assert w_dot > -1.0
    # m(a) = -1 + log(1 + e^a), by scipy-free arithmetic in float64
    assert math.isclose(w_dot, -1.0 + math.log1p(math.exp(-15.75)), rel_tol=1e-12)
    # the component of u orthogonal to w is kept
    w = layer.w.detach()
    orth = lambda v: v - (v @ w) / (w @ w) * w  # noqa: E731
    torch.testing.assert_close(orth(layer.u_hat.detach()), orth(layer.u.detach()), rtol=0,
                               atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(alpha=st.floats(-700.0, 700.0), a=st.floats(-20.0, 20.0))
def test_planar_log_det_keeps_its_precision_when_w_dot_u_is_far_below_minus_one(alpha, a):
    # At w'u = alpha and w'z + b = a, eq-flow-planar-logdet is log(1 + h'(a) m(alpha)); near
    # w'u_hat = -1 it is the logarithm of a tiny number, which 1 + h' m computes as 0 when
    # m rounds to -1. The reference is mpmath, from the formula as printed, at 400 digits:
    # 1 + m(alpha) is about e^alpha, down to e^-700, so the sum 1 + m needs over 300 digits
    # before the cancellation leaves the 16 that the comparison uses.
    layer = PlanarFlow(2)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 0.0], dtype=F64))
        layer.u.copy_(torch.tensor([alpha, 0.0], dtype=F64))
        _, log_det = layer(torch.tensor([[a, 0.0]], dtype=F64))
    with mpmath.workdps(400):
        m = -1 + mpmath.log(1 + mpmath.exp(alpha))
        exact = mpmath.log(1 + (1 - mpmath.tanh(a) ** 2) * m)
    assert math.isfinite(float(log_det[0]))
    assert abs(float(log_det[0]) - float(exact)) <= 1e-12 * max(1.0, abs(float(exact)))


def test_a_planar_layer_with_w_zero_says_why_it_cannot_be_applied():
    layer = PlanarFlow(2)
    with torch.no_grad():
        layer.w.zero_()
    assert_rejects(lambda: layer(torch.zeros(3, 2, dtype=F64)), "w")
    assert_rejects(lambda: layer.u_hat, "w")


def test_layers_built_from_a_generator_leave_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    planar_flow(3, 2, generator=gen)
    coupling_flow(3, 2, (4, 4), generator=gen)
    flow = coupling_flow(2, 1, 4, generator=gen)
    flow.rsample(5, gen)
    assert torch.equal(torch.random.get_rng_state(), before)
    # and the same generator state gives the same layers
    one = coupling_flow(3, 2, 5, generator=torch.Generator().manual_seed(1))
    two = coupling_flow(3, 2, 5, generator=torch.Generator().manual_seed(1))
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_new_layer_is_the_identity():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, generator=gen, dtype=F64)
    for layer in (PlanarFlow(3, generator=gen), AffineCoupling(3, 8, [1, 0, 1], generator=gen)):
        out, log_det = layer(z)
        torch.testing.assert_close(out, z, rtol=0, atol=1e-15)
        torch.testing.assert_close(log_det, torch.zeros(5, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.parametrize(("dim", "mask", "hidden"), [
    (2, [1, 0], 8), (2, [0, 1], (4, 5)), (3, [1, 0, 1], 6), (5, [0, 1, 1, 0, 0], (7, 3))])
def test_coupling_log_det_is_the_log_det_of_the_autograd_jacobian(dim, mask, hidden):
    gen = torch.Generator().manual_seed(dim)
    layer = randomise(AffineCoupling(dim, hidden, mask, generator=gen), gen, scale=0.7)
    z = 2.0 * torch.randn(6, dim, generator=gen, dtype=F64)
    out, log_det = layer(z)
    expected = autograd_log_det(lambda v: layer(v), z)
    torch.testing.assert_close(log_det, expected, rtol=0, atol=1e-10)
    kept = torch.tensor(mask, dtype=torch.bool)
    torch.testing.assert_close(out[:, kept], z[:, kept], rtol=0, atol=0)


@pytest.mark.parametrize(("dim", "mask"), [(2, [1, 0]), (4, [0, 1, 1, 0])])
def test_coupling_inverse_inverts_the_forward_map(dim, mask):
    gen = torch.Generator().manual_seed(3)
    layer = randomise(AffineCoupling(dim, (16, 16), mask, generator=gen), gen, scale=0.5)
    z = 3.0 * torch.randn(50, dim, generator=gen, dtype=F64)
    y, log_det = layer(z)
    back, inverse_log_det = layer.inverse(y)
    torch.testing.assert_close(back, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)
    again, _ = layer(layer.inverse(z)[0])
    torch.testing.assert_close(again, z, rtol=0, atol=1e-10)
    # and the inverse's log-determinant is that of its own Jacobian
    expected = autograd_log_det(lambda v: layer.inverse(v), y[:5])
    torch.testing.assert_close(inverse_log_det[:5], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("kind", ["planar", "coupling", "mixed"])
def test_flow_log_q_is_the_change_of_variables_with_the_autograd_jacobian(kind, covariance_type):
    gen = torch.Generator().manual_seed(4)
    dim = 3
    layers = {"planar": [PlanarFlow(dim, generator=gen) for _ in range(3)],
              "coupling": [AffineCoupling(dim, 8, m, generator=gen) for m in ([1, 0, 0], [0, 1, 1])],
              "mixed": [PlanarFlow(dim, generator=gen), AffineCoupling(dim, 8, [0, 1, 0],
                                                                       generator=gen)]}[kind]
    flow = randomise(Flow(dim, layers, covariance_type=covariance_type), gen, scale=0.6)
    eps = torch.randn(5, dim, generator=gen, dtype=F64)
    z, log_q = flow(eps)
    base = Independent(Normal(torch.zeros(dim, dtype=F64), torch.ones(dim, dtype=F64)), 1)
    expected = base.log_prob(eps) - autograd_log_det(lambda v: flow(v), eps)
    torch.testing.assert_close(log_q, expected, rtol=0, atol=1e-10)


def test_a_flow_without_layers_is_its_gaussian_base():
    gen = torch.Generator().manual_seed(5)
    flow = randomise(Flow(3), gen, scale=0.5)
    z, log_q = flow.rsample(20, gen)
    q = MultivariateNormal(flow.loc.detach(), scale_tril=flow.scale_tril.detach())
    torch.testing.assert_close(log_q.detach(), q.log_prob(z.detach()), rtol=0, atol=1e-10)
    assert flow.num_parameters == 3 + 6


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_prob_of_its_own_samples_is_the_log_q_that_rsample_returned(covariance_type):
    gen = torch.Generator().manual_seed(6)
    flow = randomise(coupling_flow(3, 4, (8, 8), covariance_type=covariance_type, generator=gen),
                     gen, scale=0.5)
    z, log_q = flow.rsample(200, gen)
    torch.testing.assert_close(flow.log_prob(z), log_q, rtol=0, atol=1e-10)


def test_log_prob_of_a_planar_flow_says_why_it_is_not_available():
    flow = planar_flow(2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NotImplementedError, match=r"layers\[0\].*PlanarFlow.*rsample"):
        flow.log_prob(torch.zeros(3, 2, dtype=F64))


def test_a_coupling_flow_is_a_normalised_density():
    # Integrate exp(log q) over a grid in 2-D: a check that no log-determinant is off.
    gen = torch.Generator().manual_seed(7)
    flow = randomise(coupling_flow(2, 3, 8, generator=gen), gen, scale=0.4)
    grid = torch.linspace(-15, 15, 1201, dtype=F64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1.0) < 1e-4


def _pyro_base(flow):
    dim = flow.dim
    base = Independent(Normal(torch.zeros(dim, dtype=F64), torch.ones(dim, dtype=F64)), 1)
    affine = LowerCholeskyAffine(flow.loc.detach(), flow.scale_tril.detach())
    return base, affine


def _pyro_planar(layer):
    twin = Planar(layer.dim).double()
    with torch.no_grad():
        twin.w.copy_(layer.w)
        twin.u.copy_(layer.u)
        twin.bias.copy_(layer.bias.reshape(1))
    return [twin]


def _pyro_coupling(layer):
    """Pyro's coupling keeps the first coordinates: permute the kept ones first, and back."""
    kept, changed = layer.kept, layer.changed
    order = torch.cat([kept, changed])
    widths = [m.out_features for m in layer.net if isinstance(m, torch.nn.Linear)][:-1]
    net = DenseNN(len(kept), widths, param_dims=[len(changed), len(changed)],
                  nonlinearity=torch.nn.Tanh()).double()
    ours = [m for m in layer.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for theirs, mine in zip(net.layers, ours, strict=True):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    coupling = PyroAffineCoupling(len(kept), net, log_scale_min_clip=-math.inf,
                                  log_scale_max_clip=math.inf)
    return [Permute(order), coupling, Permute(torch.argsort(order))]


def test_a_planar_flow_matches_pyros_planar_transforms_on_samples_and_densities():
    gen = torch.Generator().manual_seed(8)
    flow = randomise(planar_flow(3, 5, generator=gen), gen, scale=0.8)
    base, affine = _pyro_base(flow)
    transforms = [affine] + [t for layer in flow.layers for t in _pyro_planar(layer)]
    twin = TransformedDistribution(base, transforms)
    eps = torch.randn(100, 3, generator=gen, dtype=F64)
    with torch.no_grad():
        z, log_q = flow(eps)
        z_pyro = eps
        for t in transforms:
            z_pyro = t(z_pyro)          # Pyro caches each input, so log_prob can score z_pyro
        log_q_pyro = twin.log_prob(z_pyro)
    torch.testing.assert_close(z, z_pyro, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_q, log_q_pyro, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_coupling_flow_matches_pyros_affine_coupling_on_samples_and_densities(covariance_type):
    gen = torch.Generator().manual_seed(9)
    flow = randomise(coupling_flow(4, 3, (6, 5), covariance_type=covariance_type, generator=gen),
                     gen, scale=0.5)
    base, affine = _pyro_base(flow)
    transforms = [affine] + [t for layer in flow.layers for t in _pyro_coupling(layer)]
    eps = torch.randn(100, 4, generator=gen, dtype=F64)
    with torch.no_grad():
        z, _ = flow(eps)
        z_pyro = eps
        for t in transforms:
            z_pyro = t(z_pyro)
        torch.testing.assert_close(z, z_pyro, rtol=0, atol=1e-12)
        # densities at fresh points, not the samples: Pyro must invert every layer itself
        points = 2.0 * torch.randn(100, 4, generator=gen, dtype=F64)
        fresh = TransformedDistribution(base, [_pyro_base(flow)[1]] + [
            t for layer in flow.layers for t in _pyro_coupling(layer)])
        torch.testing.assert_close(flow.log_prob(points), fresh.log_prob(points), rtol=0,
                                   atol=1e-10)


def test_samples_have_the_moments_pyro_gives():
    # Not the same draws: Pyro samples from torch's global generator, inside a fork.
    gen = torch.Generator().manual_seed(10)
    flow = randomise(coupling_flow(2, 2, 8, generator=gen), gen, scale=0.4)
    base, affine = _pyro_base(flow)
    twin = TransformedDistribution(base, [affine] + [t for layer in flow.layers
                                                      for t in _pyro_coupling(layer)])
    n = 200_000
    with torch.no_grad():
        z, _ = flow.rsample(n, gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            z_pyro = twin.sample((n,))
    se = torch.sqrt(z.var(0) / n + z_pyro.var(0) / n)
    assert torch.all((z.mean(0) - z_pyro.mean(0)).abs() < 4 * se)


# --------------------------------------------------------------------------- fitting


def _correlated_gaussian():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=F64)
    target = MultivariateNormal(torch.tensor([1.0, -0.5], dtype=F64), covariance_matrix=cov)
    return target, lambda z: target.log_prob(z) + 3.0  # unnormalised: log Z = 3


def _gap(flow, log_joint, log_z, gen, n=100_000):
    """log Z - ELBO by Monte Carlo, with its standard error."""
    with torch.no_grad():
        z, log_q = flow.rsample(n, gen)
        terms = log_joint(z) - log_q
    return log_z - float(terms.mean()), float(terms.std() / math.sqrt(n))


@pytest.mark.parametrize("kind", ["planar", "coupling"])
def test_a_flow_fit_to_a_gaussian_target_reaches_the_exact_answer(kind):
    target, log_joint = _correlated_gaussian()
    gen = torch.Generator().manual_seed(11)
    flow = planar_flow(2, 2, generator=gen) if kind == "planar" else coupling_flow(2, 2, 8,
                                                                                  generator=gen)
    fit = fit_flow(log_joint, flow, num_samples=32, steps=600, lr=0.05, kappa=0.6, tau0=100.0,
                   average=True, tol=0, seed=0)
    gap, se = _gap(fit.flow, log_joint, 3.0, gen)
    # The gap is KL(q || p) >= 0, and what remains of it is optimisation noise: over seeds
    # 0-2 it was below 0.004 nats for both families at this budget (standard errors of the
    # estimate about 3e-4), so 0.01 leaves a margin of 2.5. A Gaussian base alone reaches it.
    assert -4 * se < gap < 0.01
    with torch.no_grad():
        z, _ = fit.flow.rsample(100_000, gen)
    se_mean = z.std(0) / math.sqrt(z.shape[0])
    assert torch.all((z.mean(0) - target.mean).abs() < 4 * se_mean + 0.01)
    # A 5 % error in a variance costs only about 1e-3 nats of KL: the gap is the sharper test.
    torch.testing.assert_close(torch.cov(z.T), target.covariance_matrix, rtol=0, atol=0.1)


def test_on_the_banana_a_coupling_flow_leaves_a_smaller_gap_than_the_full_gaussian():
    z1 = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.5, dtype=F64))

    def banana(z):  # normalised: log Z = 0
        return z1.log_prob(z[:, 0]) + Normal(0.5 * z[:, 0] ** 2 + 0.8 * z[:, 0] - 1.0,
                                             0.5).log_prob(z[:, 1])

    gen = torch.Generator().manual_seed(12)
    settings_ = dict(num_samples=64, steps=1000, lr=0.05, kappa=0.6, tau0=100.0, average=True,
                     tol=0, seed=1)
    gaussian = fit_flow(banana, Flow(2), **settings_)
    flow = fit_flow(banana, coupling_flow(2, 4, 16, generator=gen), **settings_)
    gap_gaussian, se_gaussian = _gap(gaussian.flow, banana, 0.0, gen)
    gap_flow, se_flow = _gap(flow.flow, banana, 0.0, gen)
    assert gap_flow + 4 * se_flow < gap_gaussian - 4 * se_gaussian


def test_fit_flow_takes_the_steps_of_a_plain_pytorch_loop():
    """Same seed, same draws, same Adam, LambdaLR for the schedule, a running mean for averaging."""
    target, log_joint = _correlated_gaussian()
    gen = torch.Generator().manual_seed(13)
    start = randomise(coupling_flow(2, 2, 8, generator=gen), gen, scale=0.3)
    steps, window, lr, tau0, kappa = 120, 20, 0.01, 10.0, 0.7
    fit = fit_flow(log_joint, start, num_samples=16, steps=steps, lr=lr, tau0=tau0, kappa=kappa,
                   average=True, tol=0, eval_window=window, seed=5)

    flow = copy.deepcopy(start)
    noise = torch.Generator().manual_seed(5)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (tau0 / (tau0 + t)) ** kappa)
    elbos, running = [], [torch.zeros_like(p) for p in flow.parameters()]
    for step in range(steps):
        eps = torch.randn(16, 2, generator=noise, dtype=F64)
        z, log_q = flow(eps)
        elbo = (log_joint(z) - log_q).mean()
        optimizer.zero_grad()
        (-elbo).backward()
        optimizer.step()
        schedule.step()
        elbos.append(float(elbo.detach()))
        if step >= steps // 2:   # the last half of the windows: the last 3 of 6
            for acc, p in zip(running, flow.parameters(), strict=True):
                acc += p.detach()
    np.testing.assert_allclose(fit.elbos, elbos, rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(fit.info["last_flow"].parameters(), flow.parameters(), strict=True):
        torch.testing.assert_close(mine.detach(), theirs.detach(), rtol=1e-10, atol=1e-12)
    for mine, acc in zip(fit.flow.parameters(), running, strict=True):
        torch.testing.assert_close(mine.detach(), acc / (steps - steps // 2), rtol=1e-10,
                                   atol=1e-12)
    assert isinstance(fit, FlowFit) and fit.n_iter == steps and not fit.converged


def test_fit_flow_leaves_the_flow_it_was_given_unchanged():
    _, log_joint = _correlated_gaussian()
    gen = torch.Generator().manual_seed(14)
    start = planar_flow(2, 2, generator=gen)
    before = [p.detach().clone() for p in start.parameters()]
    fit = fit_flow(log_joint, start, num_samples=8, steps=50, lr=0.05, tol=0, seed=0)
    for p, b in zip(start.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)
    assert not torch.equal(fit.flow.loc.detach(), start.loc.detach())


def test_frozen_parameters_stay_where_they_are():
    _, log_joint = _correlated_gaussian()
    flow = coupling_flow(2, 1, 4, generator=torch.Generator().manual_seed(0))
    flow.loc.requires_grad_(False)
    fit = fit_flow(log_joint, flow, num_samples=8, steps=30, lr=0.05, average=True, tol=0,
                   seed=0)
    assert torch.equal(fit.flow.loc, torch.zeros(2, dtype=F64))
    assert not torch.equal(fit.flow.scale_param.detach(), flow.scale_param.detach())
    flow.requires_grad_(False)
    assert_rejects(lambda: fit_flow(log_joint, flow, num_samples=8, steps=3, lr=0.05, tol=0,
                                    seed=0), "flow")


def test_a_fit_that_stops_by_its_rule_converges_and_one_that_does_not_warns():
    _, log_joint = _correlated_gaussian()
    flow = planar_flow(2, 1, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_flow(log_joint, flow, num_samples=32, steps=5000, lr=0.05, tol=1e-2,
                       eval_window=50, seed=0)
    assert fit.converged and fit.n_iter < 5000 and fit.n_iter % 50 == 0
    assert fit.info["relative_changes"][-1] < 1e-2
    with pytest.warns(ConvergenceWarning, match=r"fit_flow did not converge in 30 steps"):
        short = fit_flow(log_joint, flow, num_samples=8, steps=30, lr=0.05, tol=1e-6,
                         eval_window=10, seed=0)
    assert not short.converged and short.n_iter == 30


def test_a_fit_that_diverges_raises_naming_the_step_and_the_step_size():
    def quartic(z):  # finite everywhere, but z**4 overflows once q has moved far enough
        return -(z**4).sum(-1)

    # At this step size the base's scale is driven to zero: refused, not returned.
    with pytest.raises(ValueError, match=r"fit_flow diverged.*scale.*smaller lr"):
        fit_flow(quartic, planar_flow(2, 2, generator=torch.Generator().manual_seed(0)),
                 num_samples=4, steps=500, lr=1e3, seed=0, tol=0)


def test_a_gradient_that_becomes_nan_raises_naming_the_step():
    def nan_gradient(z):  # finite values, but the gradient of the unused branch is NaN
        hidden = torch.where(z > 1e9, torch.sqrt(z), torch.zeros_like(z)).sum(-1)
        return -0.5 * (z**2).sum(-1) + hidden

    with pytest.raises(ValueError, match=r"broke down at step 0: its gradient is not finite"):
        fit_flow(nan_gradient, coupling_flow(2, 2, 4), num_samples=4, steps=10, lr=0.1, seed=0,
                 tol=0)


# --------------------------------------------------------------------------- bad input


GOOD_FLOW = planar_flow(2, 1, generator=torch.Generator().manual_seed(0))


def _log_joint(z):
    return -0.5 * (z**2).sum(-1)


def _fit(**kwargs):
    args = dict(num_samples=4, steps=3, lr=0.01, tol=0, seed=0)
    args.update(kwargs)
    log_joint = args.pop("log_joint", _log_joint)
    flow = args.pop("flow", GOOD_FLOW)
    return fit_flow(log_joint, flow, **args)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(minimum=1), st.just(2**13 + 1)),
       build=st.sampled_from([
           lambda d: PlanarFlow(d), lambda d: AffineCoupling(d, 4, [1, 0]), lambda d: Flow(d),
           lambda d: planar_flow(d, 1), lambda d: coupling_flow(d, 2, 4)]))
def test_a_bad_dim_is_rejected_by_name(bad, build):
    assert_rejects(lambda: build(bad), "dim")


def test_a_coupling_needs_two_dimensions():
    assert_rejects(lambda: AffineCoupling(1, 4, [1]), "dim")
    assert_rejects(lambda: coupling_flow(1, 2, 4), "dim")


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(minimum=1), st.just([]), st.just((4, 0)), st.just((4, "8"))),
       build=st.sampled_from([lambda h: AffineCoupling(2, h, [1, 0]),
                              lambda h: coupling_flow(2, 2, h)]))
def test_a_bad_hidden_is_rejected_by_name(bad, build):
    assert_rejects(lambda: build(bad), "hidden")


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(3,)), st.just([1, 1, 1]), st.just([0, 0, 0]),
                     st.just([1, 0, 2]), st.just([1, 0]), st.just([0.5, 0, 1])))
def test_a_bad_mask_is_rejected_by_name(bad):
    assert_rejects(lambda: AffineCoupling(3, 4, bad), "mask")


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(minimum=0), st.just(2**12 + 1)),
       build=st.sampled_from([lambda n: planar_flow(2, n), lambda n: coupling_flow(2, n, 4)]))
def test_a_bad_number_of_layers_is_rejected_by_name(bad, build):
    assert_rejects(lambda: build(bad), "n_layers")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers().filter(lambda v: v is not None), st.integers()),
       build=st.sampled_from([
           lambda g: PlanarFlow(2, generator=g), lambda g: AffineCoupling(2, 4, [1, 0], generator=g),
           lambda g: planar_flow(2, 1, generator=g), lambda g: coupling_flow(2, 1, 4, generator=g),
           lambda g: GOOD_FLOW.rsample(3, g)]))
def test_a_bad_generator_is_rejected_by_name(bad, build):
    assert_rejects(lambda: build(bad), "generator")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(torch.nn.Linear(2, 2)), st.just(PlanarFlow(2)),
                     st.just([PlanarFlow(3)]), st.just([torch.nn.Linear(2, 2)]), st.just(["a"])))
def test_bad_layers_are_rejected_by_name(bad):
    assert_rejects(lambda: Flow(2, bad), "layers")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.sampled_from(["spherical", "tied", "FULL"])),
       build=st.sampled_from([lambda c: Flow(2, covariance_type=c),
                              lambda c: planar_flow(2, 1, covariance_type=c),
                              lambda c: coupling_flow(2, 1, 4, covariance_type=c)]))
def test_a_bad_covariance_type_is_rejected_by_name(bad, build):
    assert_rejects(lambda: build(bad), "covariance_type")


BAD_POINTS = st.one_of(
    bad_arrays(shape=(4, 2)),
    st.just(np.zeros((4, 2))),                               # not a tensor
    st.just(torch.zeros(4, 2, dtype=torch.float32)),          # not float64
    st.just(torch.zeros(4, 3, dtype=F64)),                    # wrong dimension
    st.just(torch.zeros(0, 2, dtype=F64)),                    # no rows
    st.just(torch.zeros(2, dtype=F64)),                       # one point, not a batch
    st.just(torch.tensor([[0.0, math.nan]], dtype=F64)),
    st.just(torch.tensor([[math.inf, 0.0]], dtype=F64)),
    st.just(torch.empty(4, 2, dtype=F64, device="meta")),
)
COUPLING = AffineCoupling(2, 4, [1, 0], generator=torch.Generator().manual_seed(0))
COUPLING_FLOW = coupling_flow(2, 2, 4, generator=torch.Generator().manual_seed(0))


@settings(max_examples=60, deadline=None)
@given(bad=BAD_POINTS, call=st.sampled_from([
    ("z", lambda z: GOOD_FLOW.layers[0](z)), ("z", lambda z: COUPLING(z)),
    ("y", lambda z: COUPLING.inverse(z)), ("eps", lambda z: GOOD_FLOW(z)),
    ("z", lambda z: COUPLING_FLOW.log_prob(z))]))
def test_bad_points_are_rejected_by_name(bad, call):
    name, fn = call
    assert_rejects(lambda: fn(bad), name)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(minimum=1), st.just(2**27 + 1)),
       call=st.sampled_from([lambda n: GOOD_FLOW.rsample(n), lambda n: _fit(num_samples=n)]))
def test_a_bad_num_samples_is_rejected_by_name(bad, call):
    assert_rejects(lambda: call(bad), "num_samples")


@settings(max_examples=40, deadline=None)
@given(bad=bad_callables(4))
def test_a_bad_log_joint_is_rejected_by_name(bad):
    assert_rejects(lambda: _fit(log_joint=bad), "log_joint")


def test_a_log_joint_that_is_not_differentiable_is_rejected_by_name():
    assert_rejects(lambda: _fit(log_joint=lambda z: torch.zeros(z.shape[0], dtype=F64)),
                   "log_joint")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(PlanarFlow(2)), st.just(torch.nn.Linear(2, 2))))
def test_a_bad_flow_is_rejected_by_name(bad):
    assert_rejects(lambda: _fit(flow=bad), "flow")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["steps", "eval_window"]), bad=bad_ints(minimum=1))
def test_a_bad_count_is_rejected_by_name(name, bad):
    assert_rejects(lambda: _fit(**{name: bad}), name)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["lr", "tau0"]), bad=bad_scalars(positive=True))
def test_a_bad_step_size_is_rejected_by_name(name, bad):
    assert_rejects(lambda: _fit(**{name: bad}), name)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["kappa", "tol"]),
       bad=st.one_of(bad_scalars(), st.sampled_from([-0.1, 1.5, 1e9])))
def test_a_bad_rate_or_tolerance_is_rejected_by_name(name, bad):
    assert_rejects(lambda: _fit(**{name: bad}), name)


@settings(max_examples=30, deadline=None)
@given(bad=not_bools())
def test_an_average_that_is_not_a_bool_is_rejected_by_name(bad):
    assert_rejects(lambda: _fit(average=bad), "average")


@settings(max_examples=30, deadline=None)
@given(bad=bad_seeds())
def test_a_bad_seed_is_rejected_by_name(bad):
    assert_rejects(lambda: _fit(seed=bad), "seed")
