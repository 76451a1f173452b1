"""Chapter 1: the ELBO of a discrete q and the Monte Carlo ELBO."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, rel_entr, softmax
from scipy.stats import norm

from vicourse.elbo import discrete_elbo, monte_carlo_elbo
from vicourse.models import ConjugateGaussian


def mixture_log_joint(x):
    """log p(x, z=k) for a two-component Gaussian mixture and one observation x."""
    weights, means, stds = np.array([0.3, 0.7]), np.array([-1.0, 2.0]), np.array([1.0, 0.5])
    return np.log(weights) + norm.logpdf(x, means, stds)


def test_discrete_elbo_plus_kl_is_log_evidence():
    log_joint = mixture_log_joint(0.4)
    log_evidence = logsumexp(log_joint)
    posterior = softmax(log_joint)
    for q1 in [0.0, 0.1, 0.5, 0.93, 1.0]:
        q = np.array([q1, 1 - q1])
        kl = rel_entr(q, posterior).sum()
        assert discrete_elbo(log_joint, q) + kl == pytest.approx(log_evidence, abs=1e-12)


def test_discrete_elbo_equals_log_evidence_at_the_posterior():
    log_joint = np.stack([mixture_log_joint(x) for x in [-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(discrete_elbo(log_joint, softmax(log_joint, axis=-1)),
                               logsumexp(log_joint, axis=-1), rtol=1e-13)


def test_discrete_elbo_allows_impossible_values_that_q_avoids():
    log_joint = np.array([np.log(0.5), -np.inf])
    assert discrete_elbo(log_joint, [1.0, 0.0]) == pytest.approx(np.log(0.5))
    with pytest.raises(ValueError, match="q puts mass"):
        discrete_elbo(log_joint, [0.5, 0.5])


def test_discrete_elbo_rejects_bad_q():
    with pytest.raises(ValueError, match="q must sum to 1"):
        discrete_elbo([0.0, 0.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="q must be non-negative"):
        discrete_elbo([0.0, 0.0], [1.5, -0.5])
    with pytest.raises(ValueError, match="log_joint and q must have the same shape"):
        discrete_elbo([0.0, 0.0, 0.0], [0.5, 0.5])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_discrete_elbo_rejects_nan_or_plus_inf_in_log_joint(bad):
    # Even where q puts no mass: -inf is the only non-finite value with a meaning (p = 0).
    with pytest.raises(ValueError, match="log_joint must not contain NaN or \\+inf"):
        discrete_elbo([0.0, bad], [1.0, 0.0])


MODEL = ConjugateGaussian(prior_mean=0.0, prior_std=1.5, noise_std=1.0)
X = np.array([0.8, 1.9, 1.1, 2.4])


def model_log_joint(z):
    """log p(x, z) for a batch z of shape (S,), in torch, written independently."""
    one = torch.tensor(1.0, dtype=torch.float64)
    prior = torch.distributions.Normal(0 * one, 1.5 * one).log_prob(z)
    lik = torch.distributions.Normal(z[:, None], one).log_prob(torch.tensor(X)).sum(-1)
    return prior + lik


def test_monte_carlo_elbo_agrees_with_closed_form_within_its_standard_error():
    q = torch.distributions.Normal(torch.tensor(0.7, dtype=torch.float64),
                                   torch.tensor(0.6, dtype=torch.float64))
    estimate, se = monte_carlo_elbo(model_log_joint, q, 4000,
                                    generator=torch.Generator().manual_seed(0))
    exact = MODEL.elbo(X, 0.7, 0.6)
    assert abs(estimate - exact) < 4 * se


def test_standard_error_matches_the_spread_of_repeated_estimates():
    q = torch.distributions.Normal(torch.tensor(0.7, dtype=torch.float64),
                                   torch.tensor(0.6, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    runs = [monte_carlo_elbo(model_log_joint, q, 50, generator=gen) for _ in range(400)]
    estimates, ses = np.array(runs).T
    # The spread of 400 estimates is itself uncertain by about 1/sqrt(2 * 399) = 3.5%.
    assert np.std(estimates, ddof=1) == pytest.approx(np.mean(ses), rel=0.15)


def test_monte_carlo_elbo_has_zero_variance_at_the_exact_posterior():
    mean, std = MODEL.posterior(X)
    q = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64),
                                   torch.tensor(std, dtype=torch.float64))
    estimate, se = monte_carlo_elbo(model_log_joint, q, 100,
                                    generator=torch.Generator().manual_seed(2))
    assert estimate == pytest.approx(MODEL.log_evidence(X), abs=1e-10)
    assert se < 1e-10


def test_monte_carlo_elbo_uses_the_generator_and_leaves_global_state_alone():
    q = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    def log_joint(z):
        return -0.5 * (z**2).sum(-1)
    state = torch.get_rng_state()
    a = monte_carlo_elbo(log_joint, q, 10, generator=torch.Generator().manual_seed(3))
    b = monte_carlo_elbo(log_joint, q, 10, generator=torch.Generator().manual_seed(3))
    assert a == b
    assert torch.equal(state, torch.get_rng_state())


def test_monte_carlo_elbo_rejects_bad_input():
    q = torch.distributions.Normal(0.0, 1.0)
    def log_joint(z):
        return -0.5 * z**2
    with pytest.raises(ValueError, match="num_samples"):
        monte_carlo_elbo(log_joint, q, 0)
    with pytest.raises(ValueError, match="num_samples"):
        monte_carlo_elbo(log_joint, q, 1)
    with pytest.raises(ValueError, match="q must be a torch.distributions"):
        monte_carlo_elbo(log_joint, "normal", 10)
    with pytest.raises(ValueError, match="batch_shape"):
        monte_carlo_elbo(log_joint, torch.distributions.Normal(torch.zeros(3), 1.0), 10)
    with pytest.raises(ValueError, match=r"log_joint must return shape \(10,\)"):
        monte_carlo_elbo(lambda z: z.sum(), q, 10)
    with pytest.raises(ValueError, match="log_joint must be callable"):
        monte_carlo_elbo(3.0, q, 10)
    with pytest.raises(ValueError, match="finite"):
        monte_carlo_elbo(lambda z: torch.full_like(z, float("nan")), q, 10)
    with pytest.raises(ValueError, match="generator"):
        monte_carlo_elbo(log_joint, q, 10, generator=0)
