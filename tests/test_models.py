"""Chapter 1: the conjugate Gaussian model, checked against independent routes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from vicourse.models import ConjugateGaussian

MODEL = ConjugateGaussian(prior_mean=0.5, prior_std=2.0, noise_std=1.3)
X = np.array([1.2, 2.5, 0.3, 1.9, 3.1])


def log_joint_scipy(model, x, z):
    """log p(x, z) written with scipy.stats, independently of the package."""
    return (stats.norm.logpdf(z, model.prior_mean, model.prior_std)
            + stats.norm.logpdf(x[:, None], z, model.noise_std).sum(axis=0))


def quad(f, model, x, width=1.0):
    """Integrate f(z) over +-40 ``width`` around the posterior mean, where all its mass lies."""
    mean, std = model.posterior(x)
    half = 40 * max(std, width)
    return integrate.quad(f, mean - half, mean + half, epsabs=1e-13, epsrel=1e-12,
                          limit=400)[0]


def test_log_evidence_matches_the_gaussian_marginal():
    # x ~ N(m0 1, sigma^2 I + s0^2 1 1^T) after integrating z out.
    n = X.size
    cov = MODEL.noise_std**2 * np.eye(n) + MODEL.prior_std**2 * np.ones((n, n))
    expected = stats.multivariate_normal(np.full(n, MODEL.prior_mean), cov).logpdf(X)
    assert MODEL.log_evidence(X) == pytest.approx(expected, rel=1e-12)


def test_log_evidence_matches_quadrature():
    evidence = quad(lambda z: np.exp(log_joint_scipy(MODEL, X, np.atleast_1d(z))[0]), MODEL, X)
    assert MODEL.log_evidence(X) == pytest.approx(np.log(evidence), rel=1e-9)


def test_posterior_moments_match_quadrature():
    log_ev = MODEL.log_evidence(X)
    def density(z):
        return np.exp(log_joint_scipy(MODEL, X, np.atleast_1d(z))[0] - log_ev)
    mean = quad(lambda z: z * density(z), MODEL, X)
    var = quad(lambda z: (z - mean) ** 2 * density(z), MODEL, X)
    post_mean, post_std = MODEL.posterior(X)
    assert post_mean == pytest.approx(mean, rel=1e-9)
    assert post_std == pytest.approx(np.sqrt(var), rel=1e-8)


def test_log_joint_matches_scipy():
    z = np.linspace(-3, 4, 7)
    np.testing.assert_allclose(MODEL.log_joint(X, z), log_joint_scipy(MODEL, X, z), rtol=1e-12)


@pytest.mark.parametrize(("q_mean", "q_std"), [(0.0, 1.0), (1.7, 0.2), (-2.0, 3.0)])
def test_elbo_matches_quadrature(q_mean, q_std):
    q = stats.norm(q_mean, q_std)
    expected = quad(lambda z: q.pdf(z) * (log_joint_scipy(MODEL, X, np.atleast_1d(z))[0]
                                          - q.logpdf(z)), MODEL, X, width=q_std)
    assert MODEL.elbo(X, q_mean, q_std) == pytest.approx(expected, rel=1e-9)


def test_kl_to_posterior_matches_torch():
    post_mean, post_std = MODEL.posterior(X)
    q_mean, q_std = np.array([-1.0, 0.4, 2.0]), np.array([0.5, 1.0, 0.1])
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(q_mean), torch.tensor(q_std)),
        torch.distributions.Normal(torch.tensor(post_mean, dtype=torch.float64),
                                   torch.tensor(post_std, dtype=torch.float64)),
    ).numpy()
    np.testing.assert_allclose(MODEL.kl_to_posterior(X, q_mean, q_std), expected, rtol=1e-12)


model_params = st.tuples(st.floats(-5, 5), st.floats(0.1, 5), st.floats(0.1, 5))
data = st.lists(st.floats(-10, 10), min_size=1, max_size=30)
q_params = st.tuples(st.floats(-10, 10), st.floats(0.01, 10))


@settings(max_examples=60, deadline=None)
@given(model_params, data, q_params)
def test_elbo_plus_kl_is_log_evidence(params, x, q):
    model, x = ConjugateGaussian(*params), np.array(x)
    log_ev = model.log_evidence(x)
    elbo, kl = model.elbo(x, *q), model.kl_to_posterior(x, *q)
    assert kl >= 0
    assert elbo <= log_ev + 1e-9 * max(1.0, abs(log_ev))
    assert elbo + kl == pytest.approx(log_ev, rel=1e-10, abs=1e-10)


@settings(max_examples=30, deadline=None)
@given(model_params, data)
def test_gap_vanishes_at_the_posterior(params, x):
    model, x = ConjugateGaussian(*params), np.array(x)
    post = model.posterior(x)
    assert model.kl_to_posterior(x, *post) == pytest.approx(0.0, abs=1e-12)
    assert model.elbo(x, *post) == pytest.approx(model.log_evidence(x), rel=1e-12, abs=1e-10)


def test_elbo_broadcasts_over_a_grid_of_q():
    means, stds = np.meshgrid(np.linspace(-1, 3, 4), np.linspace(0.1, 2, 3))
    grid = MODEL.elbo(X, means, stds)
    assert grid.shape == (3, 4)
    assert grid[1, 2] == pytest.approx(MODEL.elbo(X, means[1, 2], stds[1, 2]), rel=1e-14)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"prior_mean": 0.0, "prior_std": 0.0, "noise_std": 1.0}, "prior_std"),
    ({"prior_mean": 0.0, "prior_std": 1.0, "noise_std": -1.0}, "noise_std"),
    ({"prior_mean": np.nan, "prior_std": 1.0, "noise_std": 1.0}, "prior_mean"),
    ({"prior_mean": [0.0, 1.0], "prior_std": 1.0, "noise_std": 1.0}, "prior_mean"),
])
def test_bad_model_parameters_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConjugateGaussian(**kwargs)


@pytest.mark.parametrize("x", [[], [1.0, np.nan], [[1.0, 2.0]], [np.inf]])
def test_bad_data_is_rejected(x):
    with pytest.raises(ValueError, match="x must"):
        MODEL.log_evidence(x)


@pytest.mark.parametrize("method", ["elbo", "kl_to_posterior"])
def test_bad_q_is_rejected(method):
    with pytest.raises(ValueError, match="q_std must be > 0"):
        getattr(MODEL, method)(X, 0.0, 0.0)
    with pytest.raises(ValueError, match="q_mean must be finite"):
        getattr(MODEL, method)(X, np.nan, 1.0)
