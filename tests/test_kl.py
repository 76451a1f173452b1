"""Tests for vicourse.kl (Chapter 4): each against an independent route."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from vicourse import kl
from vicourse._random import sample


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def mixture(separation):
    """The two-component 2-D mixture of Chapter 4."""
    weights = np.array([0.5, 0.5])
    means = np.array([[separation, separation], [-separation, -separation]])
    covs = np.array([[[0.5, 0.25], [0.25, 1.0]], [[0.5, -0.25], [-0.25, 1.0]]])
    dist = MixtureSameFamily(Categorical(torch.from_numpy(weights)),
                             MultivariateNormal(torch.from_numpy(means), torch.from_numpy(covs)))
    return weights, means, covs, dist


def grid_reverse_kl(log_p, mean, cov, num=601, width=9.0):
    """KL(q || p_hat) by a Riemann sum over a fine grid in q's whitened coordinates."""
    chol = np.linalg.cholesky(cov)
    u = np.linspace(-width, width, num)
    step = u[1] - u[0]
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_q_white = -0.5 * np.sum(grid**2, axis=1) - math.log(2 * math.pi)
    z = mean + grid @ chol.T
    log_q = log_q_white - np.sum(np.log(np.diag(chol)))
    log_p_z = log_p(torch.from_numpy(z)).numpy()
    return float(np.sum(np.exp(log_q_white) * (log_q - log_p_z)) * step**2)


# --------------------------------------------------------------------------- kl_gaussian


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_kl_gaussian_matches_torch_kl_divergence(d, seed):
    rng = np.random.default_rng(seed)
    mp, mq = rng.normal(size=d), rng.normal(size=d)
    sp, sq = random_spd(rng, d), random_spd(rng, d)
    expected = torch.distributions.kl_divergence(
        MultivariateNormal(torch.from_numpy(mp), torch.from_numpy(sp)),
        MultivariateNormal(torch.from_numpy(mq), torch.from_numpy(sq))).item()
    got = kl.kl_gaussian(mp, sp, mq, sq)
    assert got >= 0
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 4), seed=st.integers(0, 2**31), shift=st.floats(1e-3, 2.0))
def test_kl_gaussian_is_zero_iff_the_gaussians_are_equal(d, seed, shift):
    rng = np.random.default_rng(seed)
    m, s = rng.normal(size=d), random_spd(rng, d)
    assert kl.kl_gaussian(m, s, m, s) == pytest.approx(0.0, abs=1e-10)
    assert kl.kl_gaussian(m, s, m + shift, s) > 0
    assert kl.kl_gaussian(m, s, m, s * (1 + shift)) > 0


def test_kl_gaussian_is_not_symmetric():
    m, s1, s2 = np.zeros(2), np.eye(2), np.diag([4.0, 1.0])
    assert abs(kl.kl_gaussian(m, s1, m, s2) - kl.kl_gaussian(m, s2, m, s1)) > 0.1


def test_gaussian_entropy_matches_torch():
    cov = random_spd(np.random.default_rng(1), 3)
    expected = MultivariateNormal(torch.zeros(3, dtype=torch.float64),
                                  torch.from_numpy(cov)).entropy().item()
    assert kl.gaussian_entropy(cov) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- kl_monte_carlo


def test_kl_monte_carlo_agrees_with_closed_form_within_standard_errors():
    rng = np.random.default_rng(2)
    mp, mq, sp, sq = rng.normal(size=3), rng.normal(size=3), random_spd(rng, 3), random_spd(rng, 3)
    p = MultivariateNormal(torch.from_numpy(mp), torch.from_numpy(sp))
    q = MultivariateNormal(torch.from_numpy(mq), torch.from_numpy(sq))
    estimate, se = kl.kl_monte_carlo(p.log_prob, q.log_prob, p, 20_000,
                                     torch.Generator().manual_seed(0))
    assert abs(estimate - kl.kl_gaussian(mp, sp, mq, sq)) < 4 * se


def test_kl_monte_carlo_accepts_a_sampling_callable_and_is_reproducible():
    p, q = Normal(0.0, 1.0), Normal(1.0, 2.0)

    def sample_p(n, generator):
        return torch.randn(n, generator=generator)

    first = kl.kl_monte_carlo(p.log_prob, q.log_prob, sample_p, 5000, torch.Generator().manual_seed(3))
    again = kl.kl_monte_carlo(p.log_prob, q.log_prob, sample_p, 5000, torch.Generator().manual_seed(3))
    assert first == again
    exact = torch.distributions.kl_divergence(p, q).item()
    assert abs(first[0] - exact) < 4 * first[1]


# --------------------------------------------------------------------------- expectations


def test_quadrature_is_exact_for_polynomials():
    mean, cov = np.array([0.3, -1.0]), np.array([[1.0, 0.4], [0.4, 2.0]])
    second = kl.gaussian_expectation(lambda z: z[:, 0] * z[:, 1], mean, cov, num_nodes=3)
    assert second == pytest.approx(cov[0, 1] + mean[0] * mean[1], rel=1e-12)
    # E (z - m)^4 = 3 s^4 for a univariate Gaussian: degree 4 needs 3 nodes.
    fourth = kl.gaussian_expectation(lambda z: (z[:, 0] - 2.0) ** 4, [2.0], [[1.5]], num_nodes=3)
    assert fourth == pytest.approx(3 * 1.5**2, rel=1e-12)


def test_cubature_is_exact_for_a_gaussian_log_density():
    rng = np.random.default_rng(4)
    d = 6
    mq, sq, mp, sp = rng.normal(size=d), random_spd(rng, d), rng.normal(size=d), random_spd(rng, d)
    p = MultivariateNormal(torch.from_numpy(mp), torch.from_numpy(sp))
    # E_q log p = -H[q] - KL(q || p), from torch's closed forms.
    expected = -kl.gaussian_entropy(sq) - kl.kl_gaussian(mq, sq, mp, sp)
    got = kl.gaussian_expectation(p.log_prob, mq, sq, method="cubature")
    assert got == pytest.approx(expected, rel=1e-10)


def test_monte_carlo_expectation_within_standard_errors():
    mean, cov = np.array([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 1.0]])
    n = 20_000
    got = kl.gaussian_expectation(lambda z: z[:, 0] ** 2, mean, cov, method="monte_carlo",
                                  num_samples=n, generator=torch.Generator().manual_seed(5))
    # Var z^2 = 2 s^4 + 4 m^2 s^2 for z ~ N(m, s^2).
    se = math.sqrt((2 + 4 * mean[0] ** 2) / n)
    assert abs(got - (cov[0, 0] + mean[0] ** 2)) < 4 * se


def test_gaussian_elbo_is_minus_infinity_when_q_covers_a_zero_of_p():
    def log_p(z):
        return torch.where(z[:, 0] >= 0, -z[:, 0], -math.inf)

    assert kl.gaussian_elbo(log_p, [1.0], [[1.0]], num_nodes=20) == -math.inf


# --------------------------------------------------------------------------- m_projection


def test_m_projection_matches_moments_of_a_large_sample():
    weights, means, covs, dist = mixture(2.0)
    mean, cov = kl.m_projection(weights, means, covs)
    n = 200_000
    z = sample(dist, (n,), torch.Generator().manual_seed(6)).numpy()
    sample_mean = z.mean(axis=0)
    assert np.all(np.abs(sample_mean - mean) < 4 * z.std(axis=0, ddof=1) / math.sqrt(n))
    centred = z - mean
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - cov) < 4 * se)


def test_m_projection_of_one_gaussian_is_that_gaussian():
    mean, cov = kl.m_projection([1.0], [[1.0, -2.0]], [[[2.0, 0.3], [0.3, 1.0]]])
    np.testing.assert_allclose(mean, [1.0, -2.0])
    np.testing.assert_allclose(cov, [[2.0, 0.3], [0.3, 1.0]])


@pytest.mark.parametrize("separation", [1.0, 2.0])
def test_m_projection_minimises_forward_kl_against_perturbations(separation):
    weights, means, covs, dist = mixture(separation)
    mean, cov = kl.m_projection(weights, means, covs)
    # KL(p || q) by a Riemann sum on a fine grid (H[p] is part of it and cancels in comparisons).
    u = np.linspace(-9, 9, 361)
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_p = dist.log_prob(torch.from_numpy(grid)).numpy()
    weight = np.exp(log_p) * (u[1] - u[0]) ** 2

    def forward_kl(m, s):
        q = MultivariateNormal(torch.from_numpy(m), torch.from_numpy(s))
        return float(np.sum(weight * (log_p - q.log_prob(torch.from_numpy(grid)).numpy())))

    best = forward_kl(mean, cov)
    for delta_mean in ([0.05, 0], [0, -0.05]):
        assert forward_kl(mean + np.array(delta_mean), cov) > best
    for delta_cov in ([[0.05, 0], [0, 0]], [[0, 0.05], [0.05, 0]], [[0, -0.05], [-0.05, 0]],
                      [[0, 0], [0, -0.05]]):
        assert forward_kl(mean, cov + np.array(delta_cov)) > best


# --------------------------------------------------------------------------- i_projection


def test_i_projection_recovers_a_gaussian_target():
    mean, cov = np.array([1.0, -0.5]), np.array([[1.0, 0.8], [0.8, 2.0]])
    target = MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(cov))
    fit = kl.i_projection(target.log_prob, np.zeros(2), np.eye(2), num_nodes=6)
    np.testing.assert_allclose(fit.mean, mean, atol=1e-6)
    np.testing.assert_allclose(fit.cov, cov, atol=1e-6)
    assert fit.converged and abs(fit.objective) < 1e-9


def test_i_projection_by_cubature_recovers_a_gaussian_target_in_six_dimensions():
    rng = np.random.default_rng(7)
    mean, cov = rng.normal(size=6), random_spd(rng, 6)
    target = MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(cov))
    fit = kl.i_projection(target.log_prob, np.zeros(6), np.eye(6), method="cubature")
    assert kl.kl_gaussian(fit.mean, fit.cov, mean, cov) < 1e-8


def test_i_projection_by_monte_carlo_is_close_to_a_gaussian_target():
    mean, cov = np.array([1.0, -0.5]), np.array([[1.0, 0.8], [0.8, 2.0]])
    target = MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(cov))
    fit = kl.i_projection(target.log_prob, np.zeros(2), np.eye(2), method="monte_carlo",
                          num_samples=4000, generator=torch.Generator().manual_seed(9))
    # With S fixed draws the fitted mean is off by O(S^-1/2) standard deviations.
    assert np.all(np.abs(fit.mean - mean) < 4 * np.sqrt(np.diag(cov) / 4000))
    assert kl.kl_gaussian(fit.mean, fit.cov, mean, cov) < 0.01


def test_diagonal_i_projection_of_a_gaussian_has_variances_one_over_the_precision_diagonal():
    # Bishop (2006), Section 10.1.2: the factorised q has precision diag(Lambda).
    mean, cov = np.array([0.5, 1.0]), np.array([[1.0, 0.9], [0.9, 2.0]])
    target = MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(cov))
    fit = kl.i_projection(target.log_prob, np.zeros(2), np.eye(2), covariance_type="diag",
                          num_nodes=4)
    expected_cov = np.diag(1.0 / np.diag(np.linalg.inv(cov)))
    np.testing.assert_allclose(fit.mean, mean, atol=1e-6)
    np.testing.assert_allclose(fit.cov, expected_cov, atol=1e-6)
    assert fit.objective == pytest.approx(kl.kl_gaussian(mean, expected_cov, mean, cov), abs=1e-9)


def test_i_projection_objective_on_unnormalised_target_differs_by_log_z():
    _, _, _, dist = mixture(1.0)
    log_z = 2.5

    def log_p_hat(z):
        return dist.log_prob(z) + log_z

    start = (np.array([0.5, 0.0]), np.eye(2))
    normalised = kl.i_projection(dist.log_prob, *start)
    unnormalised = kl.i_projection(log_p_hat, *start)
    assert normalised.objective - unnormalised.objective == pytest.approx(log_z, abs=1e-9)
    np.testing.assert_allclose(unnormalised.mean, normalised.mean, atol=1e-5)
    np.testing.assert_allclose(unnormalised.cov, normalised.cov, atol=1e-5)


@pytest.mark.parametrize("separation, start", [(1.0, [0.0, 0.0]), (2.0, [1.0, 1.0]),
                                               (2.0, [-1.0, -1.0])])
def test_i_projection_objective_is_accurate_to_1e3_on_the_chapter_mixtures(separation, start):
    _, _, _, dist = mixture(separation)
    fit = kl.i_projection(dist.log_prob, np.array(start), np.eye(2))
    assert fit.converged
    reference = grid_reverse_kl(dist.log_prob, fit.mean, fit.cov)
    assert abs(fit.objective - reference) < 1e-3
    # A local minimum of the fine-grid objective too.
    for delta in ([0.05, 0.0], [0.0, -0.05]):
        assert grid_reverse_kl(dist.log_prob, fit.mean + np.array(delta), fit.cov) > reference
    assert grid_reverse_kl(dist.log_prob, fit.mean, 1.1 * fit.cov) > reference


@pytest.mark.parametrize("x", [-1.0, 0.5, 2.0, 3.7])
def test_worked_example_optimal_mean_is_x_minus_one(x):
    # log p_hat(x, z) = -z + log N(x | z, 1) on the whole real line (an improper prior).
    def log_joint(z):
        return -z[:, 0] + Normal(z[:, 0], 1.0).log_prob(torch.tensor(x, dtype=torch.float64))

    fit = kl.i_projection(log_joint, [0.0], [[1.0]], learn_cov=False, num_nodes=8)
    assert fit.mean[0] == pytest.approx(x - 1, abs=1e-6)
    np.testing.assert_array_equal(fit.cov, [[1.0]])
    # Closed form of the chapter: KL(q || p_hat) = mu + (x - mu)^2 / 2, minimum x - 1/2.
    assert fit.objective == pytest.approx(x - 0.5, abs=1e-9)


def test_i_projection_refuses_a_gaussian_q_for_a_target_with_restricted_support():
    def log_p(z):
        return torch.where(z[:, 0] >= 0, -z[:, 0], -math.inf)

    with pytest.raises(ValueError, match="log_p is -inf"):
        kl.i_projection(log_p, [1.0], [[1.0]])


# --------------------------------------------------------------------------- Jensen-Shannon


def _grid(width=8.0, num=161):
    u = np.linspace(-width, width, num)
    return np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_js_divergence_on_a_grid_matches_scipy_and_its_bounds(seed):
    rng = np.random.default_rng(seed)
    grid = _grid(num=81)
    p = MultivariateNormal(torch.from_numpy(rng.normal(size=2)), torch.from_numpy(random_spd(rng, 2)))
    q = MultivariateNormal(torch.from_numpy(2 * rng.normal(size=2)),
                           torch.from_numpy(random_spd(rng, 2)))
    js = kl.js_divergence(p.log_prob, q.log_prob, points=grid)
    pv = np.exp(p.log_prob(torch.from_numpy(grid)).numpy())
    qv = np.exp(q.log_prob(torch.from_numpy(grid)).numpy())
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence.
    assert js == pytest.approx(jensenshannon(pv, qv) ** 2, rel=1e-8, abs=1e-12)
    assert 0.0 <= js <= math.log(2)
    assert kl.js_divergence(q.log_prob, p.log_prob, points=grid) == pytest.approx(js, rel=1e-10)


def test_js_divergence_is_zero_for_equal_and_log_two_for_disjoint_densities():
    grid = _grid()
    p = MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    assert kl.js_divergence(p.log_prob, p.log_prob, points=grid) == pytest.approx(0.0, abs=1e-12)

    def left(z):
        return torch.where(z[:, 0] < 0, 0.0, -math.inf).to(torch.float64)

    def right(z):
        return torch.where(z[:, 0] > 0, 0.0, -math.inf).to(torch.float64)

    assert kl.js_divergence(left, right, points=grid) == pytest.approx(math.log(2), rel=1e-12)


def test_js_divergence_by_monte_carlo_agrees_with_a_fine_grid():
    p = MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    q = MultivariateNormal(torch.tensor([1.5, 0.0], dtype=torch.float64),
                           torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64))
    grid_value = kl.js_divergence(p.log_prob, q.log_prob, points=_grid(width=10, num=401))
    estimate, se = kl.js_divergence(p.log_prob, q.log_prob, method="monte_carlo", sample_p=p,
                                    sample_q=q, num_samples=20_000,
                                    generator=torch.Generator().manual_seed(8))
    assert abs(estimate - grid_value) < 4 * se


def test_js_projection_recovers_a_gaussian_and_beats_both_kl_fits_on_a_mixture():
    grid = _grid(width=7.0, num=121)
    mean, cov = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])
    target = MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(cov))
    fit = kl.js_projection(target.log_prob, grid, np.zeros(2), np.eye(2))
    np.testing.assert_allclose(fit.mean, mean, atol=1e-4)
    np.testing.assert_allclose(fit.cov, cov, atol=1e-3)

    weights, means, covs, dist = mixture(2.0)
    js_fit = kl.js_projection(dist.log_prob, grid, np.zeros(2), np.eye(2))
    m_mean, m_cov = kl.m_projection(weights, means, covs)
    i_fit = kl.i_projection(dist.log_prob, np.array([1.0, 1.0]), np.eye(2))
    for other_mean, other_cov in ((m_mean, m_cov), (i_fit.mean, i_fit.cov)):
        other = MultivariateNormal(torch.from_numpy(other_mean), torch.from_numpy(other_cov))
        assert js_fit.objective < kl.js_divergence(dist.log_prob, other.log_prob, points=grid)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_naming_the_argument():
    eye, zero = np.eye(2), np.zeros(2)
    not_pd = np.array([[1.0, 2.0], [2.0, 1.0]])
    asymmetric = np.array([[1.0, 0.5], [0.0, 1.0]])
    gauss = MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="cov_p"):
        kl.kl_gaussian(zero, not_pd, zero, eye)
    with pytest.raises(ValueError, match="cov_q"):
        kl.kl_gaussian(zero, eye, zero, asymmetric)
    with pytest.raises(ValueError, match="mean_q"):
        kl.kl_gaussian(zero, eye, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="mean_q"):
        kl.kl_gaussian(zero, eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="mean_p"):
        kl.kl_gaussian([0.0, np.nan], eye, zero, eye)
    with pytest.raises(ValueError, match="cov"):
        kl.gaussian_entropy(not_pd)
    with pytest.raises(ValueError, match="weights"):
        kl.m_projection([0.6, 0.6], np.zeros((2, 2)), np.stack([eye, eye]))
    with pytest.raises(ValueError, match="weights"):
        kl.m_projection([1.5, -0.5], np.zeros((2, 2)), np.stack([eye, eye]))
    with pytest.raises(ValueError, match="weights"):
        kl.m_projection([1.0], np.zeros((2, 2)), np.stack([eye, eye]))
    with pytest.raises(ValueError, match="covs"):
        kl.m_projection([0.5, 0.5], np.zeros((2, 2)), np.stack([eye, not_pd]))
    with pytest.raises(ValueError, match="covs"):
        kl.m_projection([0.5, 0.5], np.zeros((2, 2)), np.stack([eye, eye, eye]))
    with pytest.raises(ValueError, match="log_p"):
        kl.i_projection("not callable", zero, eye)
    with pytest.raises(ValueError, match="init_cov"):
        kl.i_projection(gauss.log_prob, zero, not_pd)
    with pytest.raises(ValueError, match="init_cov"):
        kl.i_projection(gauss.log_prob, zero, np.eye(3))
    with pytest.raises(ValueError, match="covariance_type"):
        kl.i_projection(gauss.log_prob, zero, eye, covariance_type="spherical")
    with pytest.raises(ValueError, match="method"):
        kl.i_projection(gauss.log_prob, zero, eye, method="laplace")
    with pytest.raises(ValueError, match="num_nodes"):
        kl.i_projection(gauss.log_prob, zero, eye, num_nodes=0)
    with pytest.raises(ValueError, match="num_nodes"):
        kl.gaussian_expectation(lambda z: z[:, 0], np.zeros(8), np.eye(8), num_nodes=10)
    with pytest.raises(ValueError, match="tol"):
        kl.i_projection(gauss.log_prob, zero, eye, tol=0.0)
    with pytest.raises(ValueError, match="tol must be a scalar"):
        kl.i_projection(gauss.log_prob, zero, eye, tol=[1e-9, 1e-9])
    with pytest.raises(ValueError, match="learn_cov"):
        kl.i_projection(gauss.log_prob, zero, eye, learn_cov="yes")
    with pytest.raises(ValueError, match="log_p must be differentiable"):
        kl.i_projection(lambda z: -0.5 * np.sum(np.asarray(z) ** 2, axis=1), zero, eye)
    with pytest.raises(ValueError, match="log_p must return shape"):
        kl.gaussian_elbo(lambda z: torch.zeros(3), zero, eye)
    with pytest.raises(ValueError, match="f must return"):
        kl.gaussian_expectation(lambda z: torch.full((z.shape[0],), math.nan), zero, eye)
    with pytest.raises(ValueError, match="num_samples"):
        kl.kl_monte_carlo(gauss.log_prob, gauss.log_prob, gauss, 1)
    with pytest.raises(ValueError, match="sample_p"):
        kl.kl_monte_carlo(gauss.log_prob, gauss.log_prob, "gauss", 10)
    with pytest.raises(ValueError, match="generator"):
        kl.kl_monte_carlo(gauss.log_prob, gauss.log_prob, gauss, 10, generator=0)
    with pytest.raises(ValueError, match="log_q"):
        kl.kl_monte_carlo(gauss.log_prob, None, gauss, 10)
    with pytest.raises(ValueError, match="method"):
        kl.js_divergence(gauss.log_prob, gauss.log_prob, method="exact")
    with pytest.raises(ValueError, match="points"):
        kl.js_divergence(gauss.log_prob, gauss.log_prob)
    with pytest.raises(ValueError, match="sample_q"):
        kl.js_divergence(gauss.log_prob, gauss.log_prob, method="monte_carlo", sample_p=gauss)
    with pytest.raises(ValueError, match="points"):
        kl.js_projection(gauss.log_prob, np.zeros((5, 3)), zero, eye)
    with pytest.raises(ValueError, match="tol must be > 0"):
        kl.js_projection(gauss.log_prob, np.zeros((5, 2)), zero, eye, tol=-1.0)


def test_error_paths_the_sweep_above_does_not_reach():
    eye, zero = np.eye(2), np.zeros(2)
    stack = np.stack([eye, eye])
    gauss = MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    grid = _grid(num=11)

    def nowhere(z):
        return torch.full((z.shape[0],), -math.inf, dtype=torch.float64)

    with pytest.raises(ValueError, match=r"cov_p must be a single \(d, d\) matrix"):
        kl.kl_gaussian(zero, stack, zero, eye)
    with pytest.raises(ValueError, match=r"cov_q must be 2 x 2 to match mean_q"):
        kl.kl_gaussian(zero, eye, zero, np.eye(3))
    with pytest.raises(ValueError, match=r"cov must be a single \(d, d\) matrix"):
        kl.gaussian_entropy(stack)
    with pytest.raises(ValueError, match="weights must be a 1-D array"):
        kl.m_projection([[0.5, 0.5]], np.zeros((2, 2)), stack)
    with pytest.raises(ValueError, match="f must be callable"):
        kl.gaussian_expectation("f", zero, eye)
    with pytest.raises(ValueError, match="f must return numbers"):
        kl.gaussian_expectation(lambda z: ["a"] * z.shape[0], zero, eye, num_nodes=3)
    with pytest.raises(ValueError, match=r"sample_p must have batch_shape \(\)"):
        kl.kl_monte_carlo(gauss.log_prob, gauss.log_prob,
                          MultivariateNormal(torch.zeros(3, 2, dtype=torch.float64),
                                             torch.eye(2, dtype=torch.float64)), 10)
    with pytest.raises(ValueError, match="sample_p must return 10 samples"):
        kl.kl_monte_carlo(gauss.log_prob, gauss.log_prob,
                          lambda n, generator: torch.zeros(n - 1, 2, dtype=torch.float64), 10)
    with pytest.raises(ValueError, match="log_p must return finite values"):
        kl.kl_monte_carlo(nowhere, gauss.log_prob, gauss, 10)
    with pytest.raises(ValueError, match="log_p and log_q must each be finite somewhere"):
        kl.js_divergence(gauss.log_prob, nowhere, points=grid)
    with pytest.raises(ValueError, match="sample_p must be a torch distribution"):
        kl.js_divergence(gauss.log_prob, gauss.log_prob, method="monte_carlo", sample_q=gauss)
    with pytest.raises(ValueError, match="log_p must be finite somewhere on points"):
        kl.js_projection(nowhere, grid, zero, eye)
    with pytest.raises(ValueError, match="max_iter"):
        kl.js_projection(gauss.log_prob, grid, zero, eye, max_iter=0)
    with pytest.raises(ValueError, match="max_iter"):
        kl.i_projection(gauss.log_prob, zero, eye, max_iter=0)
