"""Tests for vicourse.kl (Chapter 4): each against an independent route."""

import math
import warnings

import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    bad_scalars,
    huge_ints,
    meta_tensors,
    non_finite_arrays,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.linalg import toeplitz
from scipy.spatial.distance import jensenshannon
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vicourse import ConvergenceWarning, GaussianFit, kl
from vicourse._random import sample


def random_spd(rng, d, batch=()):
    a = rng.normal(size=(*batch, d, d))
    return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)


def mixture_parameters(dist):
    return (dist.mixture_distribution.probs.numpy(), dist.component_distribution.loc.numpy(),
            dist.component_distribution.covariance_matrix.numpy())


def grid_reverse_kl(log_p, loc, cov, num=601, width=9.0):
    """KL(q || p_hat) by a Riemann sum over a fine grid in q's whitened coordinates."""
    chol = np.linalg.cholesky(cov)
    u = np.linspace(-width, width, num)
    step = u[1] - u[0]
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_q_white = -0.5 * np.sum(grid**2, axis=1) - math.log(2 * math.pi)
    z = loc + grid @ chol.T
    log_q = log_q_white - np.sum(np.log(np.diag(chol)))
    log_p_z = log_p(torch.from_numpy(z)).numpy()
    return float(np.sum(np.exp(log_q_white) * (log_q - log_p_z)) * step**2)


def _grid(width=8.0, num=161):
    u = np.linspace(-width, width, num)
    return np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)


def gaussian(loc, cov):
    return MultivariateNormal(torch.as_tensor(loc, dtype=torch.float64),
                              torch.as_tensor(cov, dtype=torch.float64))


# --------------------------------------------------------------------------- kl_gaussian


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 4), batch_p=st.sampled_from([(), (3,), (2, 3)]),
       batch_q=st.sampled_from([(), (3,), (1, 3)]), seed=st.integers(0, 2**31))
def test_kl_gaussian_matches_torch_kl_divergence_on_batches(d, batch_p, batch_q, seed):
    rng = np.random.default_rng(seed)
    loc_p, loc_q = rng.normal(size=(*batch_p, d)), rng.normal(size=(*batch_q, d))
    cov_p, cov_q = random_spd(rng, d, batch_p), random_spd(rng, d, batch_q)
    expected = kl_divergence(gaussian(loc_p, cov_p), gaussian(loc_q, cov_q))
    got = kl.kl_gaussian(*(torch.from_numpy(a) for a in (loc_p, cov_p, loc_q, cov_q)))
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    assert torch.all(got >= 0)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
    # Array-likes in, NumPy out (a float without batch dimensions).
    from_arrays = kl.kl_gaussian(loc_p, cov_p, loc_q, cov_q)
    if expected.ndim == 0:
        assert isinstance(from_arrays, float)
    np.testing.assert_allclose(from_arrays, expected.numpy(), rtol=1e-8, atol=1e-10)


def test_kl_gaussian_gradients_match_torch_kl_divergence():
    rng = np.random.default_rng(0)
    d = 3
    leaves = [torch.tensor(rng.normal(size=s), requires_grad=True)
              for s in ((4, d), (4, d, d), (d,), (d, d))]

    def covariance(a):   # symmetric positive definite, differentiable in a
        return a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)

    ours = kl.kl_gaussian(leaves[0], covariance(leaves[1]), leaves[2], covariance(leaves[3]))
    grads_ours = torch.autograd.grad(ours.sum(), leaves)
    theirs = kl_divergence(MultivariateNormal(leaves[0], covariance(leaves[1])),
                           MultivariateNormal(leaves[2], covariance(leaves[3])))
    grads_theirs = torch.autograd.grad(theirs.sum(), leaves)
    for mine, reference in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-7, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 4), seed=st.integers(0, 2**31), shift=st.floats(1e-3, 2.0))
def test_kl_gaussian_is_zero_iff_the_gaussians_are_equal(d, seed, shift):
    rng = np.random.default_rng(seed)
    m, s = rng.normal(size=d), random_spd(rng, d)
    assert kl.kl_gaussian(m, s, m, s) == pytest.approx(0.0, abs=1e-10)
    assert kl.kl_gaussian(m, s, m + shift, s) > 0
    assert kl.kl_gaussian(m, s, m, s * (1 + shift)) > 0


def test_kl_gaussian_far_from_the_origin_is_the_kl_near_it():
    rng = np.random.default_rng(3)
    loc_p, loc_q, cov_p, cov_q = rng.normal(size=2), rng.normal(size=2), random_spd(rng, 2), \
        random_spd(rng, 2)
    near = kl_divergence(gaussian(loc_p, cov_p), gaussian(loc_q, cov_q)).item()
    far = kl.kl_gaussian(loc_p + 1e8, cov_p, loc_q + 1e8, cov_q)
    assert far == pytest.approx(near, rel=1e-6)


def test_gaussian_entropy_matches_torch():
    cov = random_spd(np.random.default_rng(1), 3)
    expected = gaussian(np.zeros(3), cov).entropy().item()
    assert kl.gaussian_entropy(cov) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- kl_monte_carlo


def test_kl_monte_carlo_agrees_with_torch_within_standard_errors():
    rng = np.random.default_rng(2)
    p = gaussian(rng.normal(size=3), random_spd(rng, 3))
    q = gaussian(rng.normal(size=3), random_spd(rng, 3))
    estimate, se = kl.kl_monte_carlo(p.log_prob, q.log_prob, p, 20_000,
                                     torch.Generator().manual_seed(0))
    assert abs(estimate - kl_divergence(p, q).item()) < 4 * se


def test_kl_monte_carlo_accepts_a_sampling_callable_and_is_reproducible():
    p, q = Normal(0.0, 1.0), Normal(1.0, 2.0)

    def sample_p(n, generator):
        return torch.randn(n, generator=generator)

    first = kl.kl_monte_carlo(p.log_prob, q.log_prob, sample_p, 5000,
                              torch.Generator().manual_seed(3))
    again = kl.kl_monte_carlo(p.log_prob, q.log_prob, sample_p, 5000,
                              torch.Generator().manual_seed(3))
    assert first == again
    assert abs(first[0] - kl_divergence(p, q).item()) < 4 * first[1]


# --------------------------------------------------------------------------- expectations


def test_quadrature_is_exact_for_polynomials():
    loc, cov = np.array([0.3, -1.0]), np.array([[1.0, 0.4], [0.4, 2.0]])
    second = kl.gaussian_expectation(lambda z: z[:, 0] * z[:, 1], loc, cov, num_nodes=3)
    assert second == pytest.approx(cov[0, 1] + loc[0] * loc[1], rel=1e-12)
    # E (z - m)^4 = 3 s^4 for a univariate Gaussian: degree 4 needs 3 nodes.
    fourth = kl.gaussian_expectation(lambda z: (z[:, 0] - 2.0) ** 4, [2.0], [[1.5]], num_nodes=3)
    assert fourth == pytest.approx(3 * 1.5**2, rel=1e-12)


def test_cubature_is_exact_for_a_gaussian_log_density():
    rng = np.random.default_rng(4)
    d = 6
    mq, sq, mp, sp = rng.normal(size=d), random_spd(rng, d), rng.normal(size=d), random_spd(rng, d)
    p, q = gaussian(mp, sp), gaussian(mq, sq)
    # E_q log p = -H[q] - KL(q || p), from torch's closed forms.
    expected = (-q.entropy() - kl_divergence(q, p)).item()
    got = kl.gaussian_expectation(p.log_prob, mq, sq, method="cubature")
    assert got == pytest.approx(expected, rel=1e-10)


def test_monte_carlo_expectation_within_standard_errors():
    loc, cov = np.array([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 1.0]])
    n = 20_000
    got = kl.gaussian_expectation(lambda z: z[:, 0] ** 2, loc, cov, method="monte_carlo",
                                  num_samples=n, generator=torch.Generator().manual_seed(5))
    # Var z^2 = 2 s^4 + 4 m^2 s^2 for z ~ N(m, s^2).
    se = math.sqrt((2 + 4 * loc[0] ** 2) / n)
    assert abs(got - (cov[0, 0] + loc[0] ** 2)) < 4 * se


def test_gaussian_elbo_of_a_gaussian_target_is_minus_torch_kl():
    rng = np.random.default_rng(6)
    p = gaussian(rng.normal(size=2), random_spd(rng, 2))
    loc, cov = rng.normal(size=2), random_spd(rng, 2)
    expected = -kl_divergence(gaussian(loc, cov), p).item()
    assert kl.gaussian_elbo(p.log_prob, loc, cov, num_nodes=3) == pytest.approx(expected,
                                                                                rel=1e-12)


def test_gaussian_elbo_is_minus_infinity_when_q_covers_a_zero_of_p():
    def log_joint(z):
        return torch.where(z[:, 0] >= 0, -z[:, 0], -math.inf)

    assert kl.gaussian_elbo(log_joint, [1.0], [[1.0]], num_nodes=20) == -math.inf


def test_rules_larger_than_the_memory_budget_are_refused_before_allocating():
    # hermegauss(10**6) alone would need a 10**6 x 10**6 companion matrix, 8 TB.
    with pytest.raises(ValueError, match=r"num_nodes must be an integer <= 300"):
        kl.gaussian_expectation(lambda z: z[:, 0], [0.0], [[1.0]], num_nodes=10**6)
    with pytest.raises(ValueError, match=r"num_nodes asks for a rule of about .* GiB"):
        kl.gaussian_elbo(lambda z: z[:, 0], np.zeros(8), np.eye(8), num_nodes=20)
    with pytest.raises(ValueError, match="num_samples asks"):
        kl.i_projection(lambda z: -z[:, 0] ** 2, [0.0], [[1.0]], method="monte_carlo",
                        num_samples=10**9)
    with pytest.raises(ValueError, match="batch shape"):
        kl.kl_gaussian(torch.zeros(10**5, 1, 2), torch.eye(2), torch.zeros(1, 10**5, 2),
                       torch.eye(2))
    # The most nodes allowed still give an exact rule (hermegauss fails from 372 on).
    assert kl.gaussian_expectation(lambda z: z[:, 0] ** 4, [0.0], [[1.0]],
                                   num_nodes=kl.MAX_NUM_NODES) == pytest.approx(3.0, rel=1e-12)


# --------------------------------------------------------------------------- m_projection


def test_m_projection_matches_moments_of_a_large_sample():
    dist = kl.two_component_mixture(2.0)
    loc, cov = kl.m_projection(*mixture_parameters(dist))
    n = 200_000
    z = sample(dist, (n,), torch.Generator().manual_seed(6)).numpy()
    assert np.all(np.abs(z.mean(axis=0) - loc) < 4 * z.std(axis=0, ddof=1) / math.sqrt(n))
    centred = z - loc
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - cov) < 4 * se)


def test_m_projection_of_one_gaussian_is_that_gaussian():
    loc, cov = kl.m_projection([1.0], [[1.0, -2.0]], [[[2.0, 0.3], [0.3, 1.0]]])
    np.testing.assert_allclose(loc, [1.0, -2.0])
    np.testing.assert_allclose(cov, [[2.0, 0.3], [0.3, 1.0]])


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_m_projection_minimises_forward_kl_against_perturbations(shift):
    dist = kl.two_component_mixture(shift)
    loc, cov = kl.m_projection(*mixture_parameters(dist))
    # KL(p || q) by a Riemann sum on a fine grid (H[p] is part of it and cancels in comparisons).
    u = np.linspace(-9, 9, 361)
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_p = dist.log_prob(torch.from_numpy(grid)).numpy()
    weight = np.exp(log_p) * (u[1] - u[0]) ** 2

    def forward_kl(m, s):
        return float(weight @ (log_p - stats.multivariate_normal(m, s).logpdf(grid)))

    best = forward_kl(loc, cov)
    for delta in ([0.1, 0.0], [0.0, -0.1]):
        assert forward_kl(loc + np.array(delta), cov) > best
    for factor in (0.9, 1.1):
        assert forward_kl(loc, factor * cov) > best


# --------------------------------------------------------------------------- i_projection


def test_i_projection_recovers_a_gaussian_target_and_records_its_elbo():
    loc, cov = np.array([1.0, -0.5]), np.array([[1.0, 0.8], [0.8, 2.0]])
    fit = kl.i_projection(gaussian(loc, cov).log_prob, np.zeros(2), np.eye(2), num_nodes=6)
    assert isinstance(fit, GaussianFit) and fit.covariance_type == "full"
    np.testing.assert_allclose(fit.loc, loc, atol=1e-6)
    np.testing.assert_allclose(fit.covariance_matrix, cov, atol=1e-6)
    assert fit.converged and fit.elbos.shape == (fit.n_iter,)
    # The normalised target has log Z = 0: the ELBO reaches 0 from below.
    assert -1e-9 < fit.elbos[-1] <= 1e-12
    # Every recorded ELBO is that of an iterate: below log Z, and L-BFGS never goes down.
    assert np.all(fit.elbos <= 1e-12) and np.all(np.diff(fit.elbos) >= -1e-12)


def test_i_projection_records_the_elbo_of_the_returned_q_with_every_constant():
    rng = np.random.default_rng(11)
    target = gaussian(rng.normal(size=2), random_spd(rng, 2))
    fit = kl.i_projection(target.log_prob, np.zeros(2), np.eye(2), covariance_type="diag",
                          num_nodes=4)
    exact = -kl_divergence(fit.distribution(), target).item()
    assert fit.elbos[-1] == pytest.approx(exact, abs=1e-12)


def test_i_projection_by_cubature_recovers_a_gaussian_target_in_six_dimensions():
    rng = np.random.default_rng(7)
    loc, cov = rng.normal(size=6), random_spd(rng, 6)
    fit = kl.i_projection(gaussian(loc, cov).log_prob, np.zeros(6), np.eye(6), method="cubature")
    assert kl_divergence(fit.distribution(), gaussian(loc, cov)).item() < 1e-8


def test_i_projection_by_monte_carlo_is_close_to_a_gaussian_target():
    loc, cov = np.array([1.0, -0.5]), np.array([[1.0, 0.8], [0.8, 2.0]])
    fit = kl.i_projection(gaussian(loc, cov).log_prob, np.zeros(2), np.eye(2),
                          method="monte_carlo", num_samples=4000,
                          generator=torch.Generator().manual_seed(9))
    # With S fixed draws the fitted mean is off by O(S^-1/2) standard deviations.
    assert np.all(np.abs(fit.loc - loc) < 4 * np.sqrt(np.diag(cov) / 4000))
    assert kl_divergence(fit.distribution(), gaussian(loc, cov)).item() < 0.01


def test_monte_carlo_i_projection_reports_an_unbiased_elbo_where_its_draws_over_fit():
    # Ten draws per fit: the sample average the fit maximises over-states its ELBO (often
    # above log Z = 0, a "negative KL"); the recorded ELBO, on independent draws, is
    # unbiased for the fitted q, whose exact ELBO is -KL(q || p) in closed form.
    target = kl.correlated_gaussian()
    recorded, fitted_draws, exact = [], [], []
    for seed in range(40):
        fit = kl.i_projection(target.log_prob, np.zeros(2), np.eye(2), method="monte_carlo",
                              num_samples=10, generator=torch.Generator().manual_seed(seed))
        recorded.append(fit.elbos[-1])
        fitted_draws.append(fit.info["fitted_draws_elbo"])
        exact.append(-kl_divergence(fit.distribution(), target).item())
    recorded, fitted_draws, exact = map(np.array, (recorded, fitted_draws, exact))
    assert np.mean(fitted_draws > 0) > 0.3         # a "negative KL" in many runs
    assert np.mean(fitted_draws > exact) > 0.7     # over-stated in most
    error = recorded - exact
    assert abs(error.mean()) < 4 * error.std(ddof=1) / math.sqrt(error.size)


def test_diagonal_i_projection_of_a_gaussian_has_variances_one_over_the_precision_diagonal():
    # Bishop (2006), Section 10.1.2: the factorised q has precision diag(Lambda).
    loc, cov = np.array([0.5, 1.0]), np.array([[1.0, 0.9], [0.9, 2.0]])
    fit = kl.i_projection(gaussian(loc, cov).log_prob, np.zeros(2), np.eye(2),
                          covariance_type="diag", num_nodes=4)
    expected_cov = np.diag(1.0 / np.diag(np.linalg.inv(cov)))
    np.testing.assert_allclose(fit.loc, loc, atol=1e-6)
    np.testing.assert_allclose(fit.covariance_matrix, expected_cov, atol=1e-6)
    assert fit.covariance_type == "diag" and np.all(np.tril(fit.scale_tril, -1) == 0)


def test_i_projection_objective_on_unnormalised_target_differs_by_log_z():
    dist = kl.two_component_mixture(1.0)
    log_z = 2.5

    def log_p_hat(z):
        return dist.log_prob(z) + log_z

    start = (np.array([0.5, 0.0]), np.eye(2))
    normalised = kl.i_projection(dist.log_prob, *start)
    unnormalised = kl.i_projection(log_p_hat, *start)
    assert unnormalised.elbos[-1] - normalised.elbos[-1] == pytest.approx(log_z, abs=1e-9)
    np.testing.assert_allclose(unnormalised.loc, normalised.loc, atol=1e-5)
    np.testing.assert_allclose(unnormalised.scale_tril, normalised.scale_tril, atol=1e-5)


@pytest.mark.parametrize("shift, start", [(1.0, [0.0, 0.0]), (2.0, [1.0, 1.0]),
                                          (2.0, [-1.0, -1.0])])
def test_i_projection_objective_is_accurate_to_1e3_on_the_chapter_mixtures(shift, start):
    dist = kl.two_component_mixture(shift)
    fit = kl.i_projection(dist.log_prob, np.array(start), np.eye(2))
    assert fit.converged
    reference = grid_reverse_kl(dist.log_prob, fit.loc, fit.covariance_matrix)
    assert abs(-fit.elbos[-1] - reference) < 1e-3
    # A local minimum of the fine-grid objective too.
    for delta in ([0.05, 0.0], [0.0, -0.05]):
        assert grid_reverse_kl(dist.log_prob, fit.loc + np.array(delta),
                               fit.covariance_matrix) > reference
    assert grid_reverse_kl(dist.log_prob, fit.loc, 1.1 * fit.covariance_matrix) > reference


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_i_projection_of_neals_funnel_has_its_closed_form(covariance_type, scale):
    # E_q[z2^2 exp(-z1)] is closed form for a Gaussian q; maximising the ELBO by hand gives
    # loc 0, Var z1 = 2 s^2 / (2 + s^2), Var z2 = exp(-Var z1 / 2), ELBO = log(2/(2+s^2)) / 2.
    fit = kl.i_projection(kl.neal_funnel(scale).log_prob, np.array([0.5, 0.3]),
                          np.diag([0.7, 1.2]), covariance_type=covariance_type)
    var1 = 2 * scale**2 / (2 + scale**2)
    np.testing.assert_allclose(fit.loc, [0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(fit.covariance_matrix, np.diag([var1, math.exp(-var1 / 2)]),
                               atol=1e-5)
    assert fit.elbos[-1] == pytest.approx(0.5 * math.log(2 / (2 + scale**2)), abs=1e-9)


@pytest.mark.parametrize("x", [-1.0, 0.5, 2.0, 3.7])
def test_worked_example_optimal_mean_is_x_minus_one(x):
    # log p_hat(x, z) = -z + log N(x | z, 1) on the whole real line (an improper prior).
    def log_joint(z):
        return -z[:, 0] + Normal(z[:, 0], 1.0).log_prob(torch.tensor(x, dtype=torch.float64))

    fit = kl.i_projection(log_joint, [0.0], [[1.0]], learn_scale=False, num_nodes=8)
    assert fit.loc[0] == pytest.approx(x - 1, abs=1e-6)
    np.testing.assert_array_equal(fit.scale_tril, [[1.0]])
    # KL(q || p_hat) = mu + (x - mu)^2 / 2 at unit variance, minimum x - 1/2 = -log Z.
    assert -fit.elbos[-1] == pytest.approx(x - 0.5, abs=1e-9)


def test_i_projection_refuses_a_gaussian_q_for_a_target_with_restricted_support():
    def log_joint(z):
        return torch.where(z[:, 0] >= 0, -z[:, 0], -math.inf)

    with pytest.raises(ValueError, match="log_joint is -inf where the initial q puts mass"):
        kl.i_projection(log_joint, [1.0], [[1.0]])


def test_a_fit_stopped_at_max_iter_warns_and_says_so():
    dist = kl.two_component_mixture(1.0)
    with pytest.warns(ConvergenceWarning, match=r"i_projection did not converge in 2 iter"):
        fit = kl.i_projection(dist.log_prob, np.array([3.0, -2.0]), np.eye(2), max_iter=2)
    assert not fit.converged and fit.n_iter == 2 and fit.elbos.shape == (2,)
    grid = _grid(num=41)
    with pytest.warns(ConvergenceWarning, match="js_projection did not converge"):
        fit = kl.js_projection(dist.log_prob, grid, np.array([3.0, -2.0]), np.eye(2), max_iter=2)
    assert not fit.converged


def test_a_line_search_that_stalls_is_not_reported_as_convergence():
    # From a scale of 1e-200 the first steps in log-scale overflow q (an infinite
    # objective), L-BFGS-B's line search rejects them and the iterate stops moving far
    # from the optimum; an unchanged ELBO there must not count as convergence.
    def log_joint(z):   # N(0, I) up to its normaliser; -inf where q overflows to inf
        return -0.5 * (z**2).sum(1)

    target = gaussian(np.zeros(2), np.eye(2))
    with pytest.warns(ConvergenceWarning, match="i_projection did not converge"):
        fit = kl.i_projection(log_joint, np.zeros(2), 1e-200 * np.eye(2),
                              covariance_type="diag")
    assert not fit.converged
    assert kl_divergence(fit.distribution(), target).item() > 1.0   # far from the optimum


def test_a_converged_fit_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = kl.i_projection(kl.banana().log_prob, np.zeros(2), np.eye(2), num_nodes=4)
    assert fit.converged


def test_a_log_joint_that_turns_nan_during_the_fit_is_named():
    def log_joint(z):   # fine near the start, NaN where the fit wants to go
        return torch.where(z[:, 0] < 1.5, -0.5 * ((z - 3.0) ** 2).sum(1), torch.nan)

    with pytest.raises(ValueError, match="log_joint must return finite or -inf values"):
        kl.i_projection(log_joint, np.zeros(2), 0.1 * np.eye(2), num_nodes=4)


def test_a_log_joint_that_is_not_differentiable_in_torch_is_named():
    with pytest.raises(ValueError, match="log_joint"):
        kl.i_projection(lambda z: -0.5 * np.sum(np.asarray(z) ** 2, axis=1), np.zeros(2),
                        np.eye(2))
    with pytest.raises(ValueError, match="log_joint must be differentiable"):
        kl.i_projection(lambda z: -0.5 * (z.detach() ** 2).sum(1), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- Jensen-Shannon


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_js_divergence_on_a_grid_matches_scipy_and_its_bounds(seed):
    rng = np.random.default_rng(seed)
    grid = _grid(num=81)
    p = gaussian(rng.normal(size=2), random_spd(rng, 2))
    q = gaussian(2 * rng.normal(size=2), random_spd(rng, 2))
    js = kl.js_divergence(p.log_prob, q.log_prob, points=grid)
    pv = np.exp(p.log_prob(torch.from_numpy(grid)).numpy())
    qv = np.exp(q.log_prob(torch.from_numpy(grid)).numpy())
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence.
    assert js == pytest.approx(jensenshannon(pv, qv) ** 2, rel=1e-8, abs=1e-12)
    assert 0.0 <= js <= math.log(2)
    assert kl.js_divergence(q.log_prob, p.log_prob, points=grid) == pytest.approx(js, rel=1e-10)


def test_js_divergence_is_zero_for_equal_and_log_two_for_disjoint_densities():
    grid = _grid()
    p = gaussian(np.zeros(2), np.eye(2))
    assert kl.js_divergence(p.log_prob, p.log_prob, points=grid) == pytest.approx(0.0, abs=1e-12)

    def left(z):
        return torch.where(z[:, 0] < 0, 0.0, -math.inf).to(torch.float64)

    def right(z):
        return torch.where(z[:, 0] > 0, 0.0, -math.inf).to(torch.float64)

    assert kl.js_divergence(left, right, points=grid) == pytest.approx(math.log(2), rel=1e-12)


def test_js_divergence_by_monte_carlo_agrees_with_a_fine_grid():
    p = gaussian(np.zeros(2), np.eye(2))
    q = gaussian([1.5, 0.0], [[2.0, 0.5], [0.5, 1.0]])
    grid_value = kl.js_divergence(p.log_prob, q.log_prob, points=_grid(width=10, num=401))
    estimate, se = kl.js_divergence(p.log_prob, q.log_prob, method="monte_carlo", sample_p=p,
                                    sample_q=q, num_samples=20_000,
                                    generator=torch.Generator().manual_seed(8))
    assert abs(estimate - grid_value) < 4 * se


def test_js_projection_recovers_a_gaussian_and_beats_both_kl_fits_on_a_mixture():
    grid = _grid(width=7.0, num=121)
    loc, cov = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])
    target = gaussian(loc, cov)
    fit = kl.js_projection(target.log_prob, grid, np.zeros(2), np.eye(2))
    np.testing.assert_allclose(fit.loc, loc, atol=1e-4)
    np.testing.assert_allclose(fit.covariance_matrix, cov, atol=1e-3)
    # Its recorded ELBO is a Riemann sum on the grid: it agrees with Gauss-Hermite.
    assert fit.elbos[-1] == pytest.approx(
        kl.gaussian_elbo(target.log_prob, fit.loc, fit.covariance_matrix), abs=1e-6)
    assert fit.info["js"].shape == (fit.n_iter,) and fit.info["js"][-1] < 1e-8

    dist = kl.two_component_mixture(2.0)
    js_fit = kl.js_projection(dist.log_prob, grid, np.zeros(2), np.eye(2))
    m_loc, m_cov = kl.m_projection(*mixture_parameters(dist))
    i_fit = kl.i_projection(dist.log_prob, np.array([1.0, 1.0]), np.eye(2))
    for other in (gaussian(m_loc, m_cov), i_fit.distribution()):
        assert js_fit.info["js"][-1] < kl.js_divergence(dist.log_prob, other.log_prob,
                                                        points=grid)


def test_js_projection_refuses_points_that_are_not_a_regular_grid():
    target = gaussian(np.zeros(2), np.eye(2))
    uneven = np.stack(np.meshgrid([0.0, 1.0, 3.0], [0.0, 1.0], indexing="ij"), -1).reshape(-1, 2)
    for points in (uneven, _grid(num=11)[:-1], np.zeros((5, 2))):
        assert_rejects(lambda p=points: kl.js_projection(target.log_prob, p, np.zeros(2),
                                                         np.eye(2)), "points")


# --------------------------------------------------------------------------- targets


def test_correlated_gaussian_has_the_ar1_covariance():
    target = kl.correlated_gaussian(5, rho=-0.6)
    np.testing.assert_allclose(target.covariance_matrix.numpy(), toeplitz((-0.6) ** np.arange(5)),
                               rtol=1e-13, atol=1e-15)
    # Built from its closed-form Cholesky factor: fine however close |rho| is to 1.
    near_one = kl.correlated_gaussian(3, rho=1 - 1e-12)
    np.testing.assert_allclose(near_one.covariance_matrix.numpy(), np.ones((3, 3)), atol=1e-11)
    assert target.loc.dtype == torch.float64 and target.batch_shape == ()


def test_two_component_mixture_is_the_chapters_mixture():
    z = np.random.default_rng(1).normal(size=(50, 2))
    for shift in (1.0, 2.0):
        expected = np.log(
            0.5 * stats.multivariate_normal([shift, shift], [[0.5, 0.25], [0.25, 1.0]]).pdf(z)
            + 0.5 * stats.multivariate_normal([-shift, -shift], [[0.5, -0.25], [-0.25, 1.0]]).pdf(z))
        got = kl.two_component_mixture(shift).log_prob(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_banana_density_normalisation_and_moments():
    target = kl.banana()
    z = np.random.default_rng(2).normal(size=(50, 2))
    expected = (stats.norm(0, 1.5).logpdf(z[:, 0])
                + stats.norm(0.5 * z[:, 0] ** 2 + 0.8 * z[:, 0] - 1, 0.5).logpdf(z[:, 1]))
    np.testing.assert_allclose(target.log_prob(torch.from_numpy(z)).numpy(), expected, rtol=1e-12)
    u1, u2 = np.linspace(-9, 9, 601), np.linspace(-4, 45, 1201)
    grid = np.stack(np.meshgrid(u1, u2, indexing="ij"), -1).reshape(-1, 2)
    mass = np.exp(target.log_prob(torch.from_numpy(grid)).numpy()).sum() * (u1[1] - u1[0]) \
        * (u2[1] - u2[0])
    assert mass == pytest.approx(1.0, abs=1e-6)
    n = 100_000
    draws = sample(target, (n,), torch.Generator().manual_seed(3)).numpy()
    # Mean (0, 0.125); Var z2 = 0.25 + 0.5 * 1.5**4 + 0.64 * 1.5**2 = 4.22125.
    np.testing.assert_array_less(np.abs(draws.mean(0) - [0.0, 0.125]),
                                 4 * np.sqrt([2.25, 4.22125] / np.array(n)))
    assert target.has_rsample


def test_neal_funnel_density_normalisation_and_draws():
    target = kl.neal_funnel(3.0)
    z = np.random.default_rng(4).normal(size=(50, 2))
    expected = stats.norm(0, 3).logpdf(z[:, 0]) + stats.norm(0, np.exp(z[:, 0] / 2)).logpdf(z[:, 1])
    np.testing.assert_allclose(target.log_prob(torch.from_numpy(z)).numpy(), expected, rtol=1e-12)
    n = 100_000
    draws = sample(target, (n,), torch.Generator().manual_seed(5)).numpy()
    # z1 ~ N(0, 9), and z2 exp(-z1 / 2) ~ N(0, 1) independently of z1.
    white = draws[:, 1] * np.exp(-draws[:, 0] / 2)
    assert stats.kstest(draws[:, 0] / 3, "norm").pvalue > 1e-3
    assert stats.kstest(white, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(draws[:, 0], white)[0, 1]) < 4 / math.sqrt(n)


# --------------------------------------------------------------------------- bad input


def _is_batched_loc(value):
    return (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.ndim >= 1
            and value.shape[-1] == 2 and value.size > 0 and bool(np.isfinite(value).all()))


def _loc_calls(bad):
    eye = np.eye(2)
    target = kl.banana().log_prob
    calls = {
        "loc": [lambda: kl.gaussian_expectation(target, bad, eye),
                lambda: kl.gaussian_elbo(target, bad, eye)],
        "init_loc": [lambda: kl.i_projection(target, bad, eye),
                     lambda: kl.js_projection(target, _grid(num=11), bad, eye)],
    }
    if not _is_batched_loc(bad):   # kl_gaussian accepts batches (..., d)
        calls["loc_p"] = [lambda: kl.kl_gaussian(bad, eye, np.zeros(2), eye)]
        calls["loc_q"] = [lambda: kl.kl_gaussian(np.zeros(2), eye, bad, eye)]
    return calls


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays((2,)), st.just(np.zeros(3)), st.just(torch.zeros(3))))
def test_every_location_argument_rejects_bad_values(bad):
    for name, calls in _loc_calls(bad).items():
        for call in calls:
            assert_rejects(call, name, exceptions=ValueError)


NOT_PD = np.array([[1.0, 2.0], [2.0, 1.0]])
ASYMMETRIC = np.array([[1.0, 0.5], [0.0, 1.0]])


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays((2, 2)), st.sampled_from([NOT_PD, ASYMMETRIC, -np.eye(2),
                                                          np.zeros((2, 2)), np.eye(3)])))
def test_every_covariance_argument_rejects_bad_values(bad):
    target, zero, eye = kl.banana().log_prob, np.zeros(2), np.eye(2)
    batch_of_2x2 = isinstance(bad, np.ndarray) and bad.ndim == 3 and bad.shape[-2:] == (2, 2)
    calls = [("covariance_matrix", lambda: kl.gaussian_expectation(target, zero, bad)),
             ("covariance_matrix", lambda: kl.gaussian_elbo(target, zero, bad))]
    if not (isinstance(bad, np.ndarray) and bad.shape == (3, 3)):   # a valid 3-D entropy
        calls.append(("covariance_matrix", lambda: kl.gaussian_entropy(bad)))
    if not batch_of_2x2:   # kl_gaussian accepts batches (..., d, d); m_projection (K, d, d)
        stacked = np.stack([bad, bad]) if isinstance(bad, np.ndarray) and bad.ndim == 2 else bad
        calls += [("covariance_matrix_p", lambda: kl.kl_gaussian(zero, bad, zero, eye)),
                  ("covariance_matrix_q", lambda: kl.kl_gaussian(zero, eye, zero, bad)),
                  ("covariances", lambda: kl.m_projection([0.5, 0.5], np.zeros((2, 2)),
                                                          stacked))]
    for name, call in calls:
        assert_rejects(call, name, exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(bad_arrays((2, 2)), st.sampled_from(
    [np.array([[1.0, 0.5], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.5, -1.0]]),
     np.array([[0.0, 0.0], [0.5, 1.0]]), np.eye(3)])))
def test_every_starting_scale_tril_rejects_bad_values(bad):
    target = kl.banana().log_prob
    assert_rejects(lambda: kl.i_projection(target, np.zeros(2), bad), "init_scale_tril",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(target, _grid(num=11), np.zeros(2), bad),
                   "init_scale_tril", exceptions=ValueError)
    # The diagonal family takes a diagonal starting factor only.
    assert_rejects(lambda: kl.i_projection(target, np.zeros(2), [[1.0, 0.0], [0.5, 1.0]],
                                           covariance_type="diag"),
                   "init_scale_tril", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(bad_arrays((2,)), st.sampled_from(
    [np.array([0.6, 0.6]), np.array([1.5, -0.5]), np.array([1.0]), np.array([0.2, 0.3, 0.5])])))
def test_mixture_weights_reject_bad_values(bad):
    assert_rejects(lambda: kl.m_projection(bad, np.zeros((2, 2)), np.stack([np.eye(2)] * 2)),
                   "weights", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(bad_arrays((2, 2)), st.just(np.zeros((2, 3))),
                    # so far apart that the mixture's covariance overflows float64
                    st.floats(1e155, 1e300).map(lambda s: np.array([[s, s], [-s, -s]]))))
def test_mixture_means_reject_bad_values(bad):
    assert_rejects(lambda: kl.m_projection([0.5, 0.5], bad, np.stack([np.eye(2)] * 2)),
                   "means", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=bad_ints(minimum=1))
def test_every_count_rejects_bad_values(bad):
    target, zero, eye = kl.banana().log_prob, np.zeros(2), np.eye(2)
    assert_rejects(lambda: kl.gaussian_expectation(target, zero, eye, num_nodes=bad),
                   "num_nodes", exceptions=ValueError)
    assert_rejects(lambda: kl.i_projection(target, zero, eye, num_nodes=bad), "num_nodes",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.i_projection(target, zero, eye, max_iter=bad), "max_iter",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(target, _grid(num=11), zero, eye, max_iter=bad),
                   "max_iter", exceptions=ValueError)
    assert_rejects(lambda: kl.correlated_gaussian(bad), "dim", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(minimum=2), huge_ints()))
def test_every_sample_count_rejects_bad_values(bad):
    p = gaussian(np.zeros(2), np.eye(2))
    assert_rejects(lambda: kl.gaussian_elbo(p.log_prob, np.zeros(2), np.eye(2),
                                            method="monte_carlo", num_samples=bad),
                   "num_samples", exceptions=ValueError)
    assert_rejects(lambda: kl.kl_monte_carlo(p.log_prob, p.log_prob, p, bad), "num_samples",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(p.log_prob, p.log_prob, method="monte_carlo",
                                            sample_p=p, sample_q=p, num_samples=bad),
                   "num_samples", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=bad_scalars(positive=True))
def test_every_positive_scalar_rejects_bad_values(bad):
    target, zero, eye = kl.banana().log_prob, np.zeros(2), np.eye(2)
    assert_rejects(lambda: kl.i_projection(target, zero, eye, tol=bad), "tol",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(target, _grid(num=11), zero, eye, tol=bad), "tol",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.neal_funnel(bad), "scale", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(bad_scalars(), st.sampled_from([1.0, -1.0, 1.5])))
def test_target_shape_parameters_reject_bad_values(bad):
    assert_rejects(lambda: kl.correlated_gaussian(2, rho=bad), "rho", exceptions=ValueError)
    if not isinstance(bad, float) or not math.isfinite(bad):
        assert_rejects(lambda: kl.two_component_mixture(bad), "shift", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.sampled_from(["laplace", "Quadrature", 0, "grid"])))
def test_every_choice_rejects_values_outside_its_set(bad):
    target, zero, eye = kl.banana().log_prob, np.zeros(2), np.eye(2)
    assert_rejects(lambda: kl.gaussian_expectation(target, zero, eye, method=bad), "method",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.i_projection(target, zero, eye, covariance_type=bad),
                   "covariance_type", exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(target, _grid(num=11), zero, eye,
                                            covariance_type=bad), "covariance_type",
                   exceptions=ValueError)
    if bad != "grid":
        assert_rejects(lambda: kl.js_divergence(target, target, method=bad, points=_grid(num=5)),
                       "method", exceptions=ValueError)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers().filter(lambda v: not isinstance(v, bool | np.bool_)),
                     st.sampled_from([0, 1, 1.0, np.array([True])])))
def test_learn_scale_takes_a_bool_only(bad):
    assert_rejects(lambda: kl.i_projection(kl.banana().log_prob, np.zeros(2), np.eye(2),
                                           learn_scale=bad), "learn_scale", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=bad_callables(expected_rows=None))
def test_every_log_density_callable_rejects_bad_callables(bad):
    good = kl.banana()
    zero, eye, grid = np.zeros(2), np.eye(2), _grid(num=11)
    assert_rejects(lambda: kl.gaussian_expectation(bad, zero, eye, num_nodes=3), "f",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.gaussian_elbo(bad, zero, eye, num_nodes=3), "log_joint",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.i_projection(bad, zero, eye, num_nodes=3), "log_joint",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(bad, grid, zero, eye), "log_p",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(bad, good.log_prob, points=grid), "log_p",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(good.log_prob, bad, points=grid), "log_q",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.kl_monte_carlo(bad, good.log_prob, good, 10), "log_p",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.kl_monte_carlo(good.log_prob, bad, good, 10), "log_q",
                   exceptions=ValueError)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers().filter(lambda v: v is not None),   # None: torch's own
                     st.sampled_from([0, np.random.default_rng(0)])))
def test_every_generator_argument_rejects_bad_values(bad):
    p = gaussian(np.zeros(2), np.eye(2))
    assert_rejects(lambda: kl.kl_monte_carlo(p.log_prob, p.log_prob, p, 10, generator=bad),
                   "generator", exceptions=ValueError)
    assert_rejects(lambda: kl.i_projection(p.log_prob, np.zeros(2), np.eye(2),
                                           method="monte_carlo", generator=bad),
                   "generator", exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(p.log_prob, p.log_prob, method="monte_carlo",
                                            sample_p=p, sample_q=p, generator=bad),
                   "generator", exceptions=ValueError)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(MultivariateNormal(torch.zeros(3, 2),
                                                               torch.eye(2)))))
def test_every_sampling_argument_rejects_bad_values(bad):
    p = gaussian(np.zeros(2), np.eye(2))
    if not callable(bad):
        assert_rejects(lambda: kl.kl_monte_carlo(p.log_prob, p.log_prob, bad, 10), "sample_p",
                       exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(p.log_prob, p.log_prob, method="monte_carlo",
                                            sample_p=bad, sample_q=p), "sample_p",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_divergence(p.log_prob, p.log_prob, method="monte_carlo",
                                            sample_p=p, sample_q=bad), "sample_q",
                   exceptions=ValueError)


def test_a_sampling_callable_that_returns_the_wrong_number_of_draws_is_named():
    p = gaussian(np.zeros(2), np.eye(2))
    assert_rejects(lambda: kl.kl_monte_carlo(p.log_prob, p.log_prob,
                                             lambda n, g: torch.zeros(n - 1, 2), 10), "sample_p",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.kl_monte_carlo(p.log_prob, p.log_prob,
                                             lambda n, g: "draws", 10), "sample_p",
                   exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), non_finite_arrays((9, 2)), meta_tensors((9, 2)),
                     st.just(np.zeros((9, 3))), st.just(np.zeros(9)), st.just(None)))
def test_every_grid_argument_rejects_bad_values(bad):
    p = gaussian(np.zeros(2), np.eye(2))
    assert_rejects(lambda: kl.js_divergence(p.log_prob, p.log_prob, points=bad), "points",
                   exceptions=ValueError)
    assert_rejects(lambda: kl.js_projection(p.log_prob, bad, np.zeros(2), np.eye(2)), "points",
                   exceptions=ValueError)
