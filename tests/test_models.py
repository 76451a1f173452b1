"""Chapter 1: the conjugate Gaussian model, checked against independent routes."""

import warnings

import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_scalars,
    meta_tensors,
    non_finite,
    non_finite_arrays,
    non_positive,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from vicourse.models import ConjugateGaussian

MODEL = ConjugateGaussian(m0=0.5, s0=2.0, sigma=1.3)
X = np.array([1.2, 2.5, 0.3, 1.9, 3.1])


def log_joint_scipy(model, x, z):
    """log p(x, z) written with scipy.stats, independently of the package."""
    return (stats.norm.logpdf(z, model.m0, model.s0)
            + stats.norm.logpdf(x[:, None], z, model.sigma).sum(axis=0))


def quad(f, model, x, width=1.0):
    """Integrate f(z) over +-40 ``width`` around the posterior mean, where all its mass lies."""
    mean, std = model.posterior(x)
    half = 40 * max(std, width)
    return integrate.quad(f, mean - half, mean + half, epsabs=1e-13, epsrel=1e-12,
                          limit=400)[0]


def test_log_evidence_matches_the_gaussian_marginal():
    # x ~ N(m0 1, sigma^2 I + s0^2 1 1^T) after integrating z out.
    n = X.size
    cov = MODEL.sigma**2 * np.eye(n) + MODEL.s0**2 * np.ones((n, n))
    expected = stats.multivariate_normal(np.full(n, MODEL.m0), cov).logpdf(X)
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


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (1.7, 0.2), (-2.0, 3.0)])
def test_elbo_matches_quadrature(loc, scale):
    q = stats.norm(loc, scale)
    expected = quad(lambda z: q.pdf(z) * (log_joint_scipy(MODEL, X, np.atleast_1d(z))[0]
                                          - q.logpdf(z)), MODEL, X, width=scale)
    assert MODEL.elbo(X, loc, scale) == pytest.approx(expected, rel=1e-9)


def test_kl_to_posterior_matches_torch():
    post_mean, post_std = MODEL.posterior(X)
    loc, scale = np.array([-1.0, 0.4, 2.0]), np.array([0.5, 1.0, 0.1])
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(loc), torch.tensor(scale)),
        torch.distributions.Normal(torch.tensor(post_mean, dtype=torch.float64),
                                   torch.tensor(post_std, dtype=torch.float64)),
    ).numpy()
    np.testing.assert_allclose(MODEL.kl_to_posterior(X, loc, scale), expected, rtol=1e-12)


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


def test_elbo_over_a_grid_of_q_is_the_evidence_minus_torchs_kl():
    # A whole (3, 4) grid of q in one call, against an independent route at every
    # point: the scipy marginal's log evidence minus torch.distributions' KL.
    means, stds = np.meshgrid(np.linspace(-1, 3, 4), np.linspace(0.1, 2, 3))
    n = X.size
    cov = MODEL.sigma**2 * np.eye(n) + MODEL.s0**2 * np.ones((n, n))
    log_ev = stats.multivariate_normal(np.full(n, MODEL.m0), cov).logpdf(X)
    post_mean, post_std = MODEL.posterior(X)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(means), torch.tensor(stds)),
        torch.distributions.Normal(torch.tensor(post_mean, dtype=torch.float64),
                                   torch.tensor(post_std, dtype=torch.float64))).numpy()
    grid = MODEL.elbo(X, means, stds)
    assert grid.shape == (3, 4)
    np.testing.assert_allclose(grid, log_ev - kl, rtol=1e-12)


def test_data_offset_by_1e8_give_the_translated_posterior_and_the_same_evidence():
    # Moving the prior mean and every observation by c moves the posterior by c and
    # leaves the evidence unchanged (a density of x - c); at c = 1e8 a careless sum
    # of squares would keep no digits.  shifted - 1e8 is exact (Sterbenz).
    shifted = X + 1e8
    near = ConjugateGaussian(m0=MODEL.m0, s0=MODEL.s0, sigma=MODEL.sigma)
    far = ConjugateGaussian(m0=MODEL.m0 + 1e8, s0=MODEL.s0, sigma=MODEL.sigma)
    back = shifted - 1e8
    far_loc, far_scale = far.posterior(shifted)
    near_loc, near_scale = near.posterior(back)
    assert far_loc - 1e8 == pytest.approx(near_loc, abs=1e-7)
    assert far_scale == pytest.approx(near_scale, rel=1e-14)
    assert far.log_evidence(shifted) == pytest.approx(near.log_evidence(back), rel=1e-12)
    assert far.elbo(shifted, far_loc, 2 * far_scale) == pytest.approx(
        near.elbo(back, near_loc, 2 * near_scale), rel=1e-12)


def test_log_joint_callable_matches_the_numpy_log_joint_and_has_gradients():
    z = torch.linspace(-3, 4, 7, dtype=torch.float64, requires_grad=True)
    log_joint = MODEL.log_joint_callable(X)
    values = log_joint(z)
    np.testing.assert_allclose(values.detach().numpy(), log_joint_scipy(MODEL, X, z.detach().numpy()),
                               rtol=1e-12)
    np.testing.assert_allclose(log_joint(z.detach()[:, None]).numpy(), values.detach().numpy())
    # d/dz log p(x, z) = -(z - m0) / s0^2 + sum_i (x_i - z) / sigma^2
    values.sum().backward()
    zz = z.detach().numpy()
    expected = -(zz - MODEL.m0) / MODEL.s0**2 + (X.sum() - X.size * zz) / MODEL.sigma**2
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(c=st.floats(-250, 250).map(lambda e: 10.0**e), model=model_params, x=data, q=q_params)
def test_lengths_anywhere_in_float64s_range_give_the_rescaled_answer(c, model, x, q):
    # Measuring every length in other units (x, z, m0, s0, sigma, m, s all times c)
    # scales the posterior by c, leaves the KL alone and lowers the log evidence and
    # the ELBO by n log c (densities of n numbers, each in units 1 / c).  At c = 1e-250
    # or 1e250 a formula that squares a length or forms 1 / s0^2 overflows.
    m0, s0, sigma = model
    x, (loc, scale) = np.array(x), q
    near = ConjugateGaussian(m0, s0, sigma)
    far = ConjugateGaussian(c * m0, c * s0, c * sigma)
    shift = x.size * np.log(c)
    far_loc, far_scale = far.posterior(c * x)
    near_loc, near_scale = near.posterior(x)
    lengths = abs(m0) + np.abs(x).max() + s0 + sigma      # the problem's own scale
    assert far_loc / c == pytest.approx(near_loc, rel=1e-12, abs=1e-12 * lengths)
    assert far_scale / c == pytest.approx(near_scale, rel=1e-12)
    log_ev = near.log_evidence(x)
    tol = 1e-12 * (abs(log_ev) + abs(shift) + 1)
    assert far.log_evidence(c * x) + shift == pytest.approx(log_ev, abs=tol)
    elbo = near.elbo(x, loc, scale)
    assert far.elbo(c * x, c * loc, c * scale) + shift == pytest.approx(
        elbo, abs=1e-12 * (abs(elbo) + abs(shift) + 1))
    kl = near.kl_to_posterior(x, loc, scale)
    assert far.kl_to_posterior(c * x, c * loc, c * scale) == pytest.approx(kl, rel=1e-11, abs=1e-11)


@pytest.mark.parametrize("s0", [1e-300, 1e-160])
def test_a_prior_narrower_than_float64s_squares_gives_the_likelihood_at_m0(s0):
    # As s0 -> 0 the prior pins z to m0: the posterior is the prior and the evidence is
    # sum_i log N(x_i | m0, sigma^2) (scipy), up to terms of order n s0^2 / sigma^2.
    model = ConjugateGaussian(0.5, s0, 1.3)
    loc, scale = model.posterior(X)
    assert loc == 0.5 and scale == pytest.approx(s0, rel=1e-12)
    expected = stats.norm.logpdf(X, 0.5, 1.3).sum()
    assert model.log_evidence(X) == pytest.approx(expected, rel=1e-13)
    assert model.elbo(X, loc, scale) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("s0", [1e160, 1e300])
def test_a_prior_wider_than_float64s_squares_gives_the_flat_prior_limit(s0):
    # As s0 -> oo, p(z) -> 1 / (sqrt(2 pi) s0) near the data, so log p(x) + log s0 tends
    # to -log sqrt(2 pi) + log of the integral of the likelihood over z (quadrature).
    model = ConjugateGaussian(0.5, s0, 1.3)
    loc, scale = model.posterior(X)
    assert loc == pytest.approx(X.mean(), rel=1e-14)
    assert scale == pytest.approx(1.3 / np.sqrt(X.size), rel=1e-14)
    peak = stats.norm.logpdf(X, X.mean(), 1.3).sum()
    integral = integrate.quad(lambda z: np.exp(stats.norm.logpdf(X, z, 1.3).sum() - peak),
                              X.mean() - 20, X.mean() + 20, epsabs=0, epsrel=1e-13)[0]
    expected = -0.5 * np.log(2 * np.pi) + peak + np.log(integral)
    assert model.log_evidence(X) + np.log(s0) == pytest.approx(expected, rel=1e-12)


def test_terms_beyond_float64s_range_are_infinite_not_errors():
    # The ELBO of a q at 1e200, or of width 1e200, is below -1e308: -inf is its nearest
    # float, and the KL is +inf, with no OverflowError and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MODEL.elbo(X, 1e200, 1.0) == -np.inf
        assert MODEL.elbo(X, 0.0, 1e200) == -np.inf
        assert MODEL.kl_to_posterior(X, 1e200, 1.0) == np.inf
        assert MODEL.log_evidence(np.array([1e200, -1e200])) == -np.inf


# ---------------------------------------------------------------------- bad input, as properties

@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["m0", "s0", "sigma"]), bad=bad_scalars(positive=True))
def test_bad_model_parameters_are_rejected(name, bad):
    if name == "m0" and isinstance(bad, float) and np.isfinite(bad):
        return                              # any finite m0 is a valid prior mean
    kwargs = {"m0": 0.0, "s0": 1.0, "sigma": 1.0, name: bad}
    assert_rejects(lambda: ConjugateGaussian(**kwargs), name)


@settings(max_examples=40, deadline=None)
@given(bad=bad_arrays(shape=(5,)))
def test_every_method_rejects_bad_data(bad):
    for call in [lambda: MODEL.posterior(bad), lambda: MODEL.log_evidence(bad),
                 lambda: MODEL.log_joint(bad, 0.0), lambda: MODEL.log_joint_callable(bad),
                 lambda: MODEL.elbo(bad, 0.0, 1.0), lambda: MODEL.kl_to_posterior(bad, 0.0, 1.0)]:
        assert_rejects(call, "x")


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["loc", "scale"]),
       bad=st.one_of(not_numbers(), non_finite(), non_finite_arrays((3,)), meta_tensors((3,)),
                     non_positive()))
def test_elbo_and_kl_reject_bad_q(name, bad):
    if name == "loc" and isinstance(bad, float) and np.isfinite(bad):
        return                              # any finite loc is a valid mean
    kwargs = {"loc": 0.0, "scale": 1.0, name: bad}
    assert_rejects(lambda: MODEL.elbo(X, **kwargs), name)
    assert_rejects(lambda: MODEL.kl_to_posterior(X, **kwargs), name)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(st.just(torch.zeros(3, 2, dtype=torch.float64)),
                     st.just(torch.zeros(2, 3, 1, dtype=torch.float64)),
                     st.just(np.zeros(3)), not_numbers()))
def test_the_log_joint_callable_rejects_points_of_the_wrong_kind(bad):
    assert_rejects(lambda: MODEL.log_joint_callable(X)(bad), "z")


def test_data_beyond_float64s_range_after_centring_are_rejected():
    assert_rejects(lambda: ConjugateGaussian(-1e308, 1.0, 1.0).log_evidence([1e308]), "x")


def test_q_grids_that_do_not_broadcast_or_are_too_large_are_rejected():
    assert_rejects(lambda: MODEL.elbo(X, np.zeros(3), np.ones(2)), "scale")
    big = np.ones(2**15)
    assert_rejects(lambda: MODEL.elbo(X, big[:, None], big[None, :]), "scale")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), non_finite(), non_finite_arrays((3,)), meta_tensors((3,))))
def test_log_joint_rejects_bad_points(bad):
    assert_rejects(lambda: MODEL.log_joint(X, bad), "z")
