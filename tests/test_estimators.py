"""Tests of vicourse.estimators (Chapter 5): each estimator against exact gradients."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from vicourse.estimators import optimal_baseline, reparam_grads, score_function_grads

LOC = np.array([0.5, -1.0, 0.3])
LOG_SCALE = np.array([0.2, -0.4, 0.0])
A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]], dtype=torch.float64)
M = torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64)
C = torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64)


def _quadratic(z):
    d = z - M
    return -0.5 * ((d @ A) * d).sum(-1)


# Each case: f, and E_q[f] in closed form as a function of (loc, scale) in torch.
CASES = {
    "linear": (lambda z: (z * C).sum(-1), lambda mu, s: (mu * C).sum()),
    # E[(z - m)^T A (z - m)] = (mu - m)^T A (mu - m) + tr(A diag(s^2))
    "quadratic": (_quadratic,
                  lambda mu, s: -0.5 * ((mu - M) @ A @ (mu - M) + (A.diagonal() * s**2).sum())),
    # log-normal moment: E[exp(c^T z)] = exp(c^T mu + 0.5 sum c_i^2 s_i^2)
    "exp": (lambda z: torch.exp(z @ C), lambda mu, s: torch.exp(mu @ C + 0.5 * (C**2 * s**2).sum())),
    # E[sin z_i] = sin(mu_i) exp(-s_i^2 / 2)
    "sin": (lambda z: torch.sin(z).sum(-1), lambda mu, s: (torch.sin(mu) * torch.exp(-s**2 / 2)).sum()),
}


def _exact_grads(expectation):
    """Gradient of the closed-form expectation with respect to (loc, log_scale), by autograd."""
    loc = torch.tensor(LOC, requires_grad=True)
    log_scale = torch.tensor(LOG_SCALE, requires_grad=True)
    value = expectation(loc, log_scale.exp())
    grads = torch.autograd.grad(value, (loc, log_scale), allow_unused=True)
    # A linear f does not depend on the scale: its gradient there is zero.
    return tuple(torch.zeros(3, dtype=torch.float64) if g is None else g for g in grads)


def _assert_unbiased(estimates, exact, n_se=4.0):
    for est, ex in zip(estimates, exact, strict=True):
        mean = est.mean(0)
        se = est.std(0) / math.sqrt(est.shape[0])
        assert torch.all((mean - ex).abs() <= n_se * se + 1e-12), (mean, ex, se)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("estimator", [score_function_grads, reparam_grads])
def test_estimators_are_unbiased_for_known_gradients(name, estimator):
    f, expectation = CASES[name]
    gen = torch.Generator().manual_seed(1)
    estimates = estimator(f, LOC, LOG_SCALE, 40_000, generator=gen)
    assert all(e.shape == (40_000, 3) for e in estimates)
    _assert_unbiased(estimates, _exact_grads(expectation))


def test_score_function_is_unbiased_for_a_step_function():
    # f(z) = 1[z_0 > 0] is not differentiable; E_q[f] = Phi(mu / s), checked with scipy.stats.
    def step(z):
        return (z[:, 0] > 0).double()

    gen = torch.Generator().manual_seed(2)
    grad_loc, grad_log_scale = score_function_grads(step, LOC, LOG_SCALE, 40_000, generator=gen)
    mu, s = LOC[0], np.exp(LOG_SCALE[0])
    density = stats.norm.pdf(mu / s)
    exact_loc = np.array([density / s, 0.0, 0.0])        # d/dmu Phi(mu/s)
    exact_log_scale = np.array([-density * mu / s, 0.0, 0.0])  # d/dlog s Phi(mu/s)
    _assert_unbiased((grad_loc, grad_log_scale),
                     (torch.from_numpy(exact_loc), torch.from_numpy(exact_log_scale)))


def test_score_matches_autograd_of_torch_normal_log_prob():
    # With f = 1 and no baseline, each estimate is the score itself.
    num = 50
    grad_loc, grad_log_scale = score_function_grads(
        lambda z: torch.ones(z.shape[0], dtype=z.dtype), LOC, LOG_SCALE, num,
        generator=torch.Generator().manual_seed(3))
    eps = torch.randn(num, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loc, log_scale = torch.tensor(LOC), torch.tensor(LOG_SCALE)
    z = loc + log_scale.exp() * eps

    def log_prob(loc, log_scale):
        return torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).sum(-1)

    jac_loc, jac_log_scale = torch.func.jacrev(log_prob, argnums=(0, 1))(loc, log_scale)
    torch.testing.assert_close(grad_loc, jac_loc)
    torch.testing.assert_close(grad_log_scale, jac_log_scale)


@settings(max_examples=20, deadline=None)
@given(loc=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
       log_scale=st.lists(st.floats(-1.5, 1.5), min_size=2, max_size=2),
       seed=st.integers(0, 1000))
def test_reparam_per_sample_matches_autograd_through_the_sampler(loc, log_scale, seed):
    num = 8
    grad_loc, grad_log_scale = reparam_grads(_f2, loc, log_scale, num,
                                             generator=torch.Generator().manual_seed(seed))
    eps = torch.randn(num, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def per_sample(loc, log_scale):
        return _f2(loc + log_scale.exp() * eps)

    jac_loc, jac_log_scale = torch.func.jacrev(per_sample, argnums=(0, 1))(
        torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64))
    # The Jacobian of the S outputs, shape (S, d): row s is sample s's gradient.
    torch.testing.assert_close(grad_loc, jac_loc)
    torch.testing.assert_close(grad_log_scale, jac_log_scale)


def _f2(z):
    return torch.sin(z[:, 0]) * z[:, 1] - 0.5 * z[:, 1] ** 2


def test_reparam_has_lower_variance_than_score_on_the_quadratic():
    score = score_function_grads(_quadratic, LOC, LOG_SCALE, 5000,
                                 generator=torch.Generator().manual_seed(4))
    reparam = reparam_grads(_quadratic, LOC, LOG_SCALE, 5000,
                            generator=torch.Generator().manual_seed(5))
    for s, r in zip(score, reparam, strict=True):
        assert torch.all(r.var(0) < s.var(0))


def test_baseline_lowers_score_variance_and_optimum_matches_brute_force():
    b_star = optimal_baseline(_quadratic, LOC, LOG_SCALE, 20_000,
                              generator=torch.Generator().manual_seed(6))

    def total_variance(b):
        grads = score_function_grads(_quadratic, LOC, LOG_SCALE, 20_000, baseline=b,
                                     generator=torch.Generator().manual_seed(7))
        return sum(float(g.var(0).sum()) for g in grads)

    assert total_variance(b_star) < 0.5 * total_variance(None)
    # Independent route: the total variance is a quadratic in b; minimise it on a grid
    # over the same samples. The estimate from other samples lands near the minimiser.
    grid = np.linspace(b_star - 3.0, b_star + 3.0, 61)
    brute = grid[np.argmin([total_variance(b) for b in grid])]
    assert abs(brute - b_star) <= 0.3


def test_optimal_baseline_is_the_score_weighted_mean_with_scores_from_autograd():
    # b* = E[f ||h||^2] / E[||h||^2] with h = grad_lambda log q(z), here computed on the same
    # draws by autograd of torch.distributions.Normal.log_prob (not the closed-form score):
    # a wrong scaling of either half of h (sigma for 1/sigma, a missing -1) changes b*.
    num = 200
    b_star = optimal_baseline(_quadratic, LOC, LOG_SCALE, num,
                              generator=torch.Generator().manual_seed(12))
    eps = torch.randn(num, 3, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    loc, log_scale = torch.tensor(LOC), torch.tensor(LOG_SCALE)
    z = loc + log_scale.exp() * eps

    def log_prob(loc, log_scale):
        return torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).sum(-1)

    jac_loc, jac_log_scale = torch.func.jacrev(log_prob, argnums=(0, 1))(loc, log_scale)
    h_sq = jac_loc.square().sum(-1) + jac_log_scale.square().sum(-1)
    expected = float((_quadratic(z) * h_sq).mean() / h_sq.mean())
    assert b_star == pytest.approx(expected, rel=1e-12)


def test_optimal_baseline_of_a_constant_is_the_constant():
    b = optimal_baseline(lambda z: torch.full((z.shape[0],), 2.5, dtype=z.dtype), LOC, LOG_SCALE,
                         100, generator=torch.Generator().manual_seed(8))
    assert b == pytest.approx(2.5, rel=1e-12)


def test_same_generator_state_gives_the_same_estimates():
    a = reparam_grads(_quadratic, LOC, LOG_SCALE, 10, generator=torch.Generator().manual_seed(9))
    b = reparam_grads(_quadratic, LOC, LOG_SCALE, 10, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("fn", [score_function_grads, reparam_grads, optimal_baseline])
def test_bad_arguments_raise_value_error_naming_them(fn):
    with pytest.raises(ValueError, match="f must be callable"):
        fn(3.0, LOC, LOG_SCALE, 10)
    with pytest.raises(ValueError, match="f must map"):
        fn(lambda z: z, LOC, LOG_SCALE, 10)
    with pytest.raises(ValueError, match="f returned NaN"):
        fn(lambda z: z.sum(-1) * float("nan"), LOC, LOG_SCALE, 10)
    with pytest.raises(ValueError, match="loc"):
        fn(_quadratic, LOC[None], LOG_SCALE, 10)
    with pytest.raises(ValueError, match="log_scale"):
        fn(_quadratic, LOC, [0.0, float("inf"), 0.0], 10)
    with pytest.raises(ValueError, match="loc and log_scale"):
        fn(_quadratic, LOC, LOG_SCALE[:2], 10)
    with pytest.raises(ValueError, match="num_samples"):
        fn(_quadratic, LOC, LOG_SCALE, 0)
    with pytest.raises(ValueError, match="num_samples"):
        fn(_quadratic, LOC, LOG_SCALE, 2.5)
    with pytest.raises(ValueError, match="generator"):
        fn(_quadratic, LOC, LOG_SCALE, 10, generator=0)


def test_bad_baseline_raises():
    for bad in ["mean", float("nan"), True, [1.0]]:
        with pytest.raises(ValueError, match="baseline"):
            score_function_grads(_quadratic, LOC, LOG_SCALE, 10, baseline=bad)


def test_reparam_rejects_a_function_torch_cannot_differentiate():
    def numpy_f(z):
        return torch.from_numpy(-0.5 * (z.detach().numpy() ** 2).sum(-1))

    with pytest.raises(ValueError, match="f must be differentiable"):
        reparam_grads(numpy_f, LOC, LOG_SCALE, 10)
    # ... which the score-function estimator accepts: it needs values only.
    grads = score_function_grads(numpy_f, LOC, LOG_SCALE, 10)
    assert grads[0].shape == (10, 3)
