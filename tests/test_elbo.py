"""Chapter 1: the ELBO of a discrete q and the Monte Carlo ELBO."""

import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    meta_tensors,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
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
    with pytest.raises(ValueError, match="probs puts mass"):
        discrete_elbo(log_joint, [0.5, 0.5])


PROBS = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
LOG_JOINT = np.log(PROBS + 0.1)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(3, 2)),
                     st.sampled_from([PROBS * 1.5, PROBS - 0.5, PROBS[:2], PROBS[:, :1],
                                      np.array([[1.5, -0.5], [1.0, 0.0], [0.5, 0.5]])])))
def test_discrete_elbo_rejects_bad_probabilities(bad):
    assert_rejects(lambda: discrete_elbo(LOG_JOINT, bad), "probs")


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(not_numbers(), meta_tensors((3, 2)), st.just(np.full((3, 2), "1.0")),
                     st.just(np.ones((3, 2), dtype=bool)), st.just(LOG_JOINT[:2]),
                     st.just(np.where(PROBS > 0, np.nan, 0.0)),
                     st.just(np.where(PROBS > 0, np.inf, 0.0)),
                     st.just(np.where(PROBS > 0, -np.inf, 0.0))))
def test_discrete_elbo_rejects_bad_log_joint(bad):
    # NaN and +inf are refused even where probs puts no mass; -inf (p = 0) is
    # refused only where probs puts mass, since the ELBO is then -inf.
    assert_rejects(lambda: discrete_elbo(bad, PROBS), "log_joint")


MODEL = ConjugateGaussian(m0=0.0, s0=1.5, sigma=1.0)
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


def test_the_model_callable_gives_the_same_estimate_as_an_independent_one():
    q = torch.distributions.Normal(torch.tensor(0.7, dtype=torch.float64),
                                   torch.tensor(0.6, dtype=torch.float64))
    a = monte_carlo_elbo(MODEL.log_joint_callable(X), q, 50, torch.Generator().manual_seed(4))
    b = monte_carlo_elbo(model_log_joint, q, 50, torch.Generator().manual_seed(4))
    np.testing.assert_allclose(a, b, rtol=1e-12)


Q = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                               torch.tensor(1.0, dtype=torch.float64))


def standard_log_joint(z):
    return -0.5 * z**2


@settings(max_examples=40, deadline=None)
@given(bad=bad_ints(minimum=2))
def test_monte_carlo_elbo_rejects_bad_num_samples(bad):
    assert_rejects(lambda: monte_carlo_elbo(standard_log_joint, Q, bad), "num_samples")


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers(), st.sampled_from([
    torch.distributions.Normal(torch.zeros(3), 1.0),              # batch_shape (3,)
    torch.distributions.Normal(torch.zeros((), device="meta"), torch.ones((), device="meta"),
                               validate_args=False),
    torch.distributions.Normal(torch.tensor(0.0), torch.tensor(float("inf")),
                               validate_args=False),
    "normal",
])))
def test_monte_carlo_elbo_rejects_bad_q(bad):
    assert_rejects(lambda: monte_carlo_elbo(standard_log_joint, bad, 10), "q")


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(bad_callables(expected_rows=10),
                     # finite values whose average overflows float64
                     st.just(lambda z: torch.full((z.shape[0],), 1e308, dtype=z.dtype))))
def test_monte_carlo_elbo_rejects_bad_log_joint(bad):
    # A 2-D q, so that draws have shape (S, d) as the strategy's callables assume.
    q = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                               torch.eye(2, dtype=torch.float64))
    assert_rejects(lambda: monte_carlo_elbo(bad, q, 10), "log_joint")


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers().filter(lambda v: v is not None), st.just(0),
                     st.just(np.random.default_rng(0))))
def test_monte_carlo_elbo_rejects_bad_generator(bad):
    assert_rejects(lambda: monte_carlo_elbo(standard_log_joint, Q, 10, generator=bad), "generator")


def test_monte_carlo_elbo_refuses_more_draws_than_fit_in_memory():
    q = torch.distributions.MultivariateNormal(torch.zeros(1000), torch.eye(1000))
    assert_rejects(lambda: monte_carlo_elbo(lambda z: z.sum(-1), q, 10**6), "num_samples")
