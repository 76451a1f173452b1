"""Tests of vicourse.estimators (Chapter 5): each estimator against exact gradients."""

import math

import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    bad_scalars,
    huge_values,
    meta_tensors,
    nan_gradient,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.distributions import MultivariateNormal, Normal, constraints, transform_to

from vicourse.estimators import optimal_baseline, reparam_grads, score_function_grads

LOC = np.array([0.5, -1.0, 0.3])
LOG_SCALE = np.array([0.2, -0.4, 0.0])
DIAG_TRIL = np.diag(np.exp(LOG_SCALE))
FULL_TRIL = np.array([[1.2, 0.0, 0.0], [0.4, 0.7, 0.0], [-0.3, 0.2, 1.1]])
A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]], dtype=torch.float64)
M = torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64)
C = torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64)
ESTIMATORS = [score_function_grads, reparam_grads]
FUNCTIONS = [score_function_grads, reparam_grads, optimal_baseline]
LOWER_CHOLESKY = transform_to(constraints.lower_cholesky)


def _quadratic(z):
    d = z - M
    return -0.5 * ((d @ A) * d).sum(-1)


# Each case: f, and E_q[f] in closed form as a function of (loc, Sigma) in torch.
CASES = {
    "linear": (lambda z: (z * C).sum(-1), lambda mu, cov: (mu * C).sum()),
    # E[(z - m)^T A (z - m)] = (mu - m)^T A (mu - m) + tr(A Sigma)
    "quadratic": (_quadratic, lambda mu, cov: -0.5 * ((mu - M) @ A @ (mu - M) + (A * cov).sum())),
    # log-normal moment: E[exp(c^T z)] = exp(c^T mu + c^T Sigma c / 2)
    "exp": (lambda z: torch.exp(z @ C), lambda mu, cov: torch.exp(mu @ C + 0.5 * C @ cov @ C)),
    # E[sin z_i] = sin(mu_i) exp(-Sigma_ii / 2)
    "sin": (lambda z: torch.sin(z).sum(-1),
            lambda mu, cov: (torch.sin(mu) * torch.exp(-cov.diagonal() / 2)).sum()),
}


def _exact_grads(expectation, covariance_type):
    """Gradient of the closed-form expectation in (loc, unconstrained scale), by autograd."""
    loc = torch.tensor(LOC, requires_grad=True)
    if covariance_type == "diag":
        param = torch.tensor(LOG_SCALE, requires_grad=True)
        tril = torch.diag(param.exp())
    else:
        param = LOWER_CHOLESKY.inv(torch.tensor(FULL_TRIL)).requires_grad_(True)
        tril = LOWER_CHOLESKY(param)
    value = expectation(loc, tril @ tril.T)
    grads = torch.autograd.grad(value, (loc, param), allow_unused=True)
    # A linear f does not depend on the scale: its gradient there is zero.
    return tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, (loc, param),
                                                                            strict=True))


def _assert_unbiased(estimates, exact, n_se=4.0):
    for est, ex in zip(estimates, exact, strict=True):
        mean = est.mean(0)
        se = est.std(0) / math.sqrt(est.shape[0])
        assert torch.all((mean - ex).abs() <= n_se * se + 1e-12), (mean, ex, se)


def _tril(covariance_type):
    return DIAG_TRIL if covariance_type == "diag" else FULL_TRIL


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_are_unbiased_for_known_gradients(name, estimator, covariance_type):
    f, expectation = CASES[name]
    gen = torch.Generator().manual_seed(1)
    estimates = estimator(f, LOC, _tril(covariance_type), 40_000, covariance_type=covariance_type,
                          generator=gen)
    shape = (40_000, 3) if covariance_type == "diag" else (40_000, 3, 3)
    assert estimates[0].shape == (40_000, 3) and estimates[1].shape == shape
    _assert_unbiased(estimates, _exact_grads(expectation, covariance_type))


def test_score_function_is_unbiased_for_a_step_function():
    # f(z) = 1[z_0 > 0] is not differentiable; E_q[f] = Phi(mu / s), checked with scipy.stats.
    def step(z):
        return (z[:, 0] > 0).double()

    gen = torch.Generator().manual_seed(2)
    grad_loc, grad_log_scale = score_function_grads(step, LOC, DIAG_TRIL, 40_000,
                                                    covariance_type="diag", generator=gen)
    mu, s = LOC[0], np.exp(LOG_SCALE[0])
    density = stats.norm.pdf(mu / s)
    exact_loc = np.array([density / s, 0.0, 0.0])        # d/dmu Phi(mu/s)
    exact_log_scale = np.array([-density * mu / s, 0.0, 0.0])  # d/dlog s Phi(mu/s)
    _assert_unbiased((grad_loc, grad_log_scale),
                     (torch.from_numpy(exact_loc), torch.from_numpy(exact_log_scale)))


def _noise(num, seed):
    return torch.randn(num, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _autograd_scores(tril, covariance_type, num, seed):
    """The draws ``z`` of a generator seeded with ``seed`` and the gradients of torch's
    ``log_prob`` at each of them, by autograd: ``(z, jac_loc, jac_scale)``."""
    loc = torch.tensor(LOC)
    z = loc + _noise(num, seed) @ tril.T
    if covariance_type == "diag":
        def log_prob(loc, log_scale):
            return Normal(loc, log_scale.exp()).log_prob(z).sum(-1)
        param = torch.tensor(LOG_SCALE)
    else:
        def log_prob(loc, raw):
            return MultivariateNormal(loc, scale_tril=LOWER_CHOLESKY(raw)).log_prob(z)
        param = LOWER_CHOLESKY.inv(tril)
    return (z, *torch.func.jacrev(log_prob, argnums=(0, 1))(loc, param))


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_score_matches_autograd_of_torch_log_prob(covariance_type):
    # With f = 1 and no baseline, each estimate is the score itself.
    num = 50
    tril = torch.tensor(_tril(covariance_type))
    grad_loc, grad_scale = score_function_grads(
        lambda z: torch.ones(z.shape[0], dtype=z.dtype), LOC, tril, num,
        covariance_type=covariance_type, generator=torch.Generator().manual_seed(3))
    _, jac_loc, jac_scale = _autograd_scores(tril, covariance_type, num, 3)
    torch.testing.assert_close(grad_loc, jac_loc)
    # The Jacobian in the strictly upper entries is zero: they do not enter L.
    torch.testing.assert_close(grad_scale, jac_scale)


def _f2(z):
    return torch.sin(z[:, 0]) * z[:, 1] - 0.5 * z[:, 1] ** 2 + z[:, 2] * z[:, 0]


@settings(max_examples=20, deadline=None)
@given(loc=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
       log_diag=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
       below=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
       covariance_type=st.sampled_from(["diag", "full"]),
       seed=st.integers(0, 1000))
def test_reparam_per_sample_matches_autograd_through_the_sampler(loc, log_diag, below,
                                                                 covariance_type, seed):
    num = 8
    param = torch.diag(torch.tensor(log_diag, dtype=torch.float64))
    if covariance_type == "full":
        param[1, 0], param[2, 0], param[2, 1] = below
    tril = LOWER_CHOLESKY(param)
    grad_loc, grad_scale = reparam_grads(_f2, loc, tril, num, covariance_type=covariance_type,
                                         generator=torch.Generator().manual_seed(seed))
    eps = _noise(num, seed)

    def per_sample(loc, raw):
        scale_tril = torch.diag(raw.exp()) if covariance_type == "diag" else LOWER_CHOLESKY(raw)
        return _f2(loc + eps @ scale_tril.T)

    raw = param.diagonal().clone() if covariance_type == "diag" else param
    jac_loc, jac_scale = torch.func.jacrev(per_sample, argnums=(0, 1))(
        torch.tensor(loc, dtype=torch.float64), raw)
    # The Jacobian of the S outputs: row s is sample s's gradient.
    torch.testing.assert_close(grad_loc, jac_loc)
    torch.testing.assert_close(grad_scale, jac_scale)


def test_reparam_has_lower_variance_than_score_on_the_quadratic():
    for covariance_type in ("diag", "full"):
        tril = _tril(covariance_type)
        score = score_function_grads(_quadratic, LOC, tril, 5000, covariance_type=covariance_type,
                                     generator=torch.Generator().manual_seed(4))
        reparam = reparam_grads(_quadratic, LOC, tril, 5000, covariance_type=covariance_type,
                                generator=torch.Generator().manual_seed(5))
        for s, r in zip(score, reparam, strict=True):
            lower = torch.ones(s.shape[1:], dtype=torch.bool).tril() if s.dim() == 3 else True
            assert torch.all((r.var(0) < s.var(0)) | ~torch.as_tensor(lower))


def test_baseline_lowers_score_variance_and_optimum_matches_brute_force():
    b_star = optimal_baseline(_quadratic, LOC, DIAG_TRIL, 20_000, covariance_type="diag",
                              generator=torch.Generator().manual_seed(6))

    def total_variance(b):
        grads = score_function_grads(_quadratic, LOC, DIAG_TRIL, 20_000, baseline=b,
                                     covariance_type="diag",
                                     generator=torch.Generator().manual_seed(7))
        return sum(float(g.var(0).sum()) for g in grads)

    assert total_variance(b_star) < 0.5 * total_variance(None)
    # Independent route: the total variance is a quadratic in b; minimise it on a grid
    # over the same samples. The estimate from other samples lands near the minimiser.
    grid = np.linspace(b_star - 3.0, b_star + 3.0, 61)
    brute = grid[np.argmin([total_variance(b) for b in grid])]
    assert abs(brute - b_star) <= 0.3


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_optimal_baseline_is_the_score_weighted_mean_with_scores_from_autograd(covariance_type):
    # b* = E[f ||h||^2] / E[||h||^2] with h = grad_lambda log q(z), here computed on the same
    # draws by autograd of torch's log_prob (not the closed-form score): a wrong scaling
    # of either half of h (sigma for 1/sigma, a missing -1) changes b*.
    num = 200
    tril = torch.tensor(_tril(covariance_type))
    b_star = optimal_baseline(_quadratic, LOC, tril, num, covariance_type=covariance_type,
                              generator=torch.Generator().manual_seed(12))
    z, jac_loc, jac_scale = _autograd_scores(tril, covariance_type, num, 12)
    h_sq = jac_loc.square().sum(-1) + jac_scale.square().flatten(1).sum(-1)
    expected = float((_quadratic(z) * h_sq).mean() / h_sq.mean())
    assert b_star == pytest.approx(expected, rel=1e-12)


def test_optimal_baseline_of_a_constant_is_the_constant():
    b = optimal_baseline(lambda z: torch.full((z.shape[0],), 2.5, dtype=z.dtype), LOC, FULL_TRIL,
                         100, generator=torch.Generator().manual_seed(8))
    assert b == pytest.approx(2.5, rel=1e-12)


def test_same_generator_state_gives_the_same_estimates():
    a = reparam_grads(_quadratic, LOC, FULL_TRIL, 10, generator=torch.Generator().manual_seed(9))
    b = reparam_grads(_quadratic, LOC, FULL_TRIL, 10, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_far_narrow_gaussian_gives_exact_pathwise_gradients_of_a_linear_f():
    # Extreme but valid: q centred at 1e8 with scale 1e-6. For f(z) = c^T z every
    # single-sample pathwise estimate is exactly c in mu, and E[f] = c^T mu has zero
    # gradient in the scale: the estimates there are c_i sigma_i eps_i, mean zero.
    loc = np.full(3, 1e8)
    tril = np.diag([1e-6, 2e-6, 1e-6])
    grad_loc, grad_scale = reparam_grads(CASES["linear"][0], loc, tril, 20_000,
                                         covariance_type="diag",
                                         generator=torch.Generator().manual_seed(10))
    assert torch.equal(grad_loc, C.expand(20_000, 3))
    _assert_unbiased((grad_scale,), (torch.zeros(3, dtype=torch.float64),))


# ----------------------------------------------------------------- bad input, as properties

def _call(fn, **change):
    args = {"f": _quadratic, "loc": LOC, "scale_tril": FULL_TRIL, "num_samples": 10}
    options = {"covariance_type": "full", "generator": None}
    for key, value in change.items():
        (args if key in args else options)[key] = value
    return lambda: fn(args["f"], args["loc"], args["scale_tril"], args["num_samples"], **options)


def _meta_output(z):
    return torch.empty(z.shape[0], device="meta")


@settings(max_examples=40, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS),
       bad=st.one_of(bad_callables(expected_rows=10), st.just(_meta_output),
                     st.just(lambda z: torch.full((z.shape[0],), -float("inf"), dtype=z.dtype))))
def test_every_estimator_rejects_a_bad_f(fn, bad):
    assert_rejects(_call(fn, f=bad), "f", exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS), bad=bad_arrays(shape=(3,)))
def test_every_estimator_rejects_a_bad_loc(fn, bad):
    assert_rejects(_call(fn, loc=bad), "loc", exceptions=ValueError)


_BAD_TRIL = st.one_of(
    bad_arrays(shape=(3, 3)),
    st.just(FULL_TRIL.T),                       # upper triangular
    st.just(-FULL_TRIL),                        # negative diagonal
    st.just(FULL_TRIL[:2, :2]),                 # does not match loc
    st.just(np.diag([1.0, 0.0, 1.0])),          # singular
    meta_tensors((3, 3)),
)


@settings(max_examples=60, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS), bad=_BAD_TRIL)
def test_every_estimator_rejects_a_bad_scale_tril(fn, bad):
    assert_rejects(_call(fn, scale_tril=bad), "scale_tril", exceptions=ValueError)
    # A full factor in the diagonal family is refused too.
    assert_rejects(_call(fn, covariance_type="diag"), "scale_tril", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS),
       bad=st.one_of(bad_ints(minimum=1), st.just(2**27)))  # 2**27 x 3 x 3 exceeds 2 GiB
def test_every_estimator_rejects_a_bad_num_samples(fn, bad):
    assert_rejects(_call(fn, num_samples=bad), "num_samples", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS),
       bad=st.one_of(not_numbers(), st.sampled_from(["diagonal", "Full", "spherical", 1])))
def test_every_estimator_rejects_a_bad_covariance_type(fn, bad):
    assert_rejects(_call(fn, covariance_type=bad), "covariance_type", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(fn=st.sampled_from(FUNCTIONS),
       bad=st.one_of(not_numbers().filter(lambda v: v is not None), st.integers(),
                     st.just(np.random.default_rng(0))))
def test_every_estimator_rejects_a_bad_generator(fn, bad):
    assert_rejects(_call(fn, generator=bad), "generator", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=bad_scalars().filter(lambda v: v is not None))
def test_score_function_rejects_a_bad_baseline(bad):
    assert_rejects(_call(score_function_grads, baseline=bad), "baseline", exceptions=ValueError)


def test_reparam_rejects_a_function_torch_cannot_differentiate():
    def numpy_f(z):
        return torch.from_numpy(-0.5 * (z.detach().numpy() ** 2).sum(-1))

    assert_rejects(_call(reparam_grads, f=numpy_f), "f", exceptions=ValueError)
    with pytest.raises(ValueError, match="f must be differentiable"):
        _call(reparam_grads, f=numpy_f)()
    # ... which the score-function estimator accepts: it needs values only.
    grads = _call(score_function_grads, f=numpy_f)()
    assert grads[0].shape == (10, 3)


@settings(max_examples=20, deadline=None)
@given(case=st.sampled_from([(reparam_grads, nan_gradient), (score_function_grads, huge_values),
                             (optimal_baseline, huge_values)]),
       seed=st.integers(0, 2**32))
def test_an_f_whose_estimates_are_not_finite_is_rejected_by_name(case, seed):
    # Values are finite, so f passes the check of its output; the estimates are not (a NaN
    # gradient at z_1 < 0, or 1e300 times a score of about 1e10): an error, not a NaN.
    fn, f = case
    call = _call(fn, f=f, scale_tril=np.diag([1e-10, 1e-10, 1e-10]), covariance_type="diag",
                 generator=torch.Generator().manual_seed(seed))
    assert_rejects(call, "f", exceptions=ValueError)
