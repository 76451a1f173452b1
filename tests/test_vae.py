"""Chapter 6: the VAE's KL term, its ELBO estimators, the IWAE bound and training.

The independent routes: ``torch.distributions`` for the KL divergence and the
densities, mpmath at 50 digits for the precision of the KL term, and, for a
model with a one-dimensional latent variable, the exact ELBO and log evidence
by quadrature on a dense grid.
"""

import math

import mpmath
import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_ints,
    bad_scalars,
    bad_seeds,
    meta_tensors,
    non_finite_arrays,
    not_bools,
    not_numbers,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vicourse.datasets import load_digits
from vicourse.vae import VAE, TrainingHistory, gaussian_kl_to_standard_normal, train

TRAIN, TEST = load_digits()


def rejects(call, name):
    """``call()`` raises a ValueError (not a TypeError) whose message names ``name``."""
    assert_rejects(call, name, exceptions=ValueError)


# -- the KL term -------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), latent=st.integers(1, 6),
       spread=st.floats(0.1, 4.0))
def test_gaussian_kl_matches_torch_distributions(seed, n, latent, spread):
    gen = torch.Generator().manual_seed(seed)
    loc = spread * torch.randn(n, latent, generator=gen, dtype=torch.float64)
    logvar = spread * torch.randn(n, latent, generator=gen, dtype=torch.float64)
    q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    expected = kl_divergence(q, prior)
    torch.testing.assert_close(gaussian_kl_to_standard_normal(loc, logvar), expected,
                               rtol=1e-12, atol=1e-12)


def exact_kl(loc, logvar):
    """The KL divergence at 50 significant digits, from the float inputs taken exactly."""
    with mpmath.workdps(50):
        total = mpmath.mpf(0)
        for m, lv in zip(np.asarray(loc, dtype=np.float64).ravel(),
                         np.asarray(logvar, dtype=np.float64).ravel(), strict=True):
            m, lv = mpmath.mpf(float(m)), mpmath.mpf(float(lv))
            total += m**2 + mpmath.expm1(lv) - lv
        return total / 2


# Magnitudes of log sigma^2 from 1e-12 to 100 (beyond float32's range), both signs, and means from 0 to 1e3.
LOGVARS = st.one_of(st.just(0.0), st.builds(lambda s, e: s * 10.0**e, st.sampled_from([-1, 1]),
                                            st.floats(-12, 2)))
LOCS = st.one_of(st.just(0.0), st.floats(-1e3, 1e3))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.tuples(LOCS, LOGVARS), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_gaussian_kl_error_is_a_few_roundings_of_its_terms(values, dtype):
    # Each term mu^2 + (sigma^2 - 1) - log sigma^2 computed in the dtype is off by a few
    # roundings of the magnitudes it adds up: |error| <= c eps sum_j (mu_j^2 +
    # |sigma_j^2 - 1| + |log sigma_j^2|). The textbook form exp(logvar) - 1 - logvar is
    # off by about eps * (sigma^2 + 1) instead, far more when |log sigma^2| << 1.
    loc = torch.tensor([v[0] for v in values], dtype=dtype)
    logvar = torch.tensor([v[1] for v in values], dtype=dtype)
    got = float(gaussian_kl_to_standard_normal(loc, logvar))
    exact = exact_kl(loc, logvar)
    if exact > mpmath.mpf(float(torch.finfo(dtype).max)):
        assert got == math.inf       # the exact value overflows the dtype
        return
    eps = torch.finfo(dtype).eps
    scale = sum(float(m) ** 2 + abs(math.expm1(float(lv))) + abs(float(lv))
                for m, lv in zip(loc, logvar, strict=True))
    assert abs(got - float(exact)) <= (4 + len(values)) * eps * scale + torch.finfo(dtype).tiny


@pytest.mark.parametrize("logvar", [1e-6, -1e-6, 3e-7, -2e-5])
def test_gaussian_kl_keeps_relative_precision_for_a_variance_near_one(logvar):
    # At mu = 0 the KL is about logvar^2 / 4; expm1 keeps a relative error of at most
    # about eps / |logvar| (2e-10 at 1e-6 in float64; twice that for an expm1 accurate to
    # one unit in the last place), where exp(logvar) - 1 - logvar loses up to about
    # eps / logvar^2 (2e-4 at 1e-6).
    loc, lv = torch.zeros(1, dtype=torch.float64), torch.tensor([logvar], dtype=torch.float64)
    exact = float(exact_kl(loc, lv))
    got = float(gaussian_kl_to_standard_normal(loc, lv))
    bound = 2 * torch.finfo(torch.float64).eps / abs(logvar)
    assert abs(got / exact - 1) <= bound
    textbook = float(0.5 * (lv.exp() - 1 - lv).sum())
    assert abs(textbook / exact - 1) > bound      # the rewrite is what makes the difference


def test_gaussian_kl_is_positive_and_zero_only_at_the_standard_normal():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(1000, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(1000, 3, generator=gen, dtype=torch.float64)
    assert bool((gaussian_kl_to_standard_normal(loc, logvar) > 0).all())
    at_prior = gaussian_kl_to_standard_normal(torch.zeros(4), torch.zeros(4))
    assert float(at_prior) == 0.0 and at_prior.dtype == torch.float32   # dtype kept


def test_gaussian_kl_is_the_mean_of_its_monte_carlo_estimate():
    loc = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
    logvar = torch.tensor([-0.4, 0.3, -1.5], dtype=torch.float64)
    q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    # Seeded draws (Normal.sample takes no generator): z = mu + sigma * eps.
    eps = torch.randn(100_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = loc + torch.exp(0.5 * logvar) * eps
    terms = q.log_prob(z) - prior.log_prob(z)
    se = float(terms.std() / math.sqrt(len(terms)))
    assert abs(float(terms.mean() - gaussian_kl_to_standard_normal(loc, logvar))) < 4 * se


def test_gaussian_kl_gradient_matches_torch_distributions():
    gen = torch.Generator().manual_seed(3)
    loc = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(gaussian_kl_to_standard_normal(loc, logvar).sum(), (loc, logvar))
    q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    theirs = torch.autograd.grad(kl_divergence(q, prior).sum(), (loc, logvar))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(bad=bad_arrays((2, 3)), which=st.sampled_from(["loc", "logvar"]))
def test_gaussian_kl_rejects_bad_parameters(bad, which):
    args = {"loc": torch.zeros(2, 3), "logvar": torch.zeros(2, 3), which: bad}
    # A 0-d or 1-d array is a valid parameter of its own shape, but not beside a (2, 3) one.
    rejects(lambda: gaussian_kl_to_standard_normal(**args), which)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
def test_gaussian_kl_rejects_parameters_of_different_shapes(shape):
    other = (*shape[:-1], shape[-1] + 1)
    rejects(lambda: gaussian_kl_to_standard_normal(torch.zeros(shape), torch.zeros(other)),
            "logvar")


# -- exact answers for a one-dimensional latent variable, by quadrature -------------------

GRID = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
DZ = float(GRID[1] - GRID[0])


def one_d_model(seed=0):
    """An untrained VAE with one latent dimension, in float64."""
    return VAE(64, 1, 16, generator=torch.Generator().manual_seed(seed)).double()


def exact_elbo_and_log_evidence(model, X):
    """ELBO and log p(x) of each row of X by the rectangle rule on a dense grid of z.

    Written with torch.distributions, not with the package's formulas.
    """
    with torch.no_grad():
        loc, logvar = model.encode(X)
        logits = model.decoder(GRID[:, None])                            # (G, 64)
        log_lik = Bernoulli(logits=logits[:, None, :]).log_prob(X).sum(-1)  # (G, n)
        log_prior = Normal(0.0, 1.0).log_prob(GRID)[:, None]             # (G, 1)
        q = Normal(loc[:, 0], torch.exp(0.5 * logvar[:, 0]))
        log_q = q.log_prob(GRID[:, None])                                 # (G, n)
        elbo = (torch.exp(log_q) * (log_lik + log_prior - log_q)).sum(0) * DZ
        log_evidence = torch.logsumexp(log_lik + log_prior, dim=0) + math.log(DZ)
    return elbo, log_evidence


def replicated(fn, X, reps):
    """Mean and standard error over ``reps`` independent draws of ``fn``, per row of X."""
    values = fn(X.repeat(reps, 1)).detach().reshape(reps, X.shape[0])
    return values.mean(0), values.std(0) / math.sqrt(reps)


X_SMALL = TEST[:6].double()


def test_quadrature_is_accurate_enough_to_serve_as_the_reference():
    # The grid must cover q and the posterior: the ELBO of q computed on it must not
    # exceed the log evidence, and q's mass on the grid must be 1.
    model = one_d_model()
    elbo, log_evidence = exact_elbo_and_log_evidence(model, X_SMALL)
    assert bool((elbo <= log_evidence).all())
    loc, logvar = model.encode(X_SMALL)
    mass = torch.exp(Normal(loc[:, 0], torch.exp(0.5 * logvar[:, 0])).log_prob(GRID[:, None]))
    torch.testing.assert_close(mass.sum(0) * DZ, torch.ones(6, dtype=torch.float64),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_estimate_is_unbiased_for_the_exact_elbo(analytic_kl):
    model = one_d_model()
    exact, _ = exact_elbo_and_log_evidence(model, X_SMALL)
    gen = torch.Generator().manual_seed(1)
    mean, se = replicated(
        lambda X: model.elbo(X, analytic_kl=analytic_kl, generator=gen), X_SMALL, 4000)
    assert bool((torch.abs(mean - exact) < 4 * se).all()), (mean, exact, se)


def test_iwae_bounds_rise_with_k_towards_the_log_evidence():
    model = one_d_model()
    exact_elbo, log_evidence = exact_elbo_and_log_evidence(model, X_SMALL)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        bounds = {k: replicated(lambda X, k=k: model.iwae_bound(X, k, generator=gen), X_SMALL, 2000)
                  for k in (1, 5, 50)}
    # L_1 is the ELBO in expectation.
    mean_1, se_1 = bounds[1]
    assert bool((torch.abs(mean_1 - exact_elbo) < 4 * se_1).all())
    # Each bound lies below log p(x) (within 4 standard errors of its estimate) ...
    for mean, se in bounds.values():
        assert bool((mean < log_evidence + 4 * se).all())
    # ... each step up in k lowers it for no digit by more than 4 standard errors of the
    # difference, and raises their sum by more than 4 standard errors (a step can be tiny
    # for a digit whose posterior q already matches well).
    for small, large in [(1, 5), (5, 50)]:
        (m_s, se_s), (m_l, se_l) = bounds[small], bounds[large]
        se = torch.sqrt(se_s**2 + se_l**2)
        assert bool((m_l - m_s > -4 * se).all())
        assert float((m_l - m_s).sum()) > 4 * float(se.square().sum().sqrt())
    # With k = 50 the gap to log p(x) has shrunk below a tenth of the ELBO's.
    assert bool((log_evidence - bounds[50][0] < 0.1 * (log_evidence - exact_elbo)).all())


def test_log_importance_weights_are_log_joint_minus_log_q_by_torch_distributions():
    # The same draws z = mu + sigma * eps, scored with torch.distributions.
    model = VAE(64, 3, 16, generator=torch.Generator().manual_seed(2)).double()
    X = TEST[:7].double()
    with torch.no_grad():
        log_w = model.log_importance_weights(X, 5, generator=torch.Generator().manual_seed(9))
        loc, logvar = model.encode(X)
        eps = torch.randn((5, *loc.shape), generator=torch.Generator().manual_seed(9),
                          dtype=torch.float64)
        q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
        z = loc + torch.exp(0.5 * logvar) * eps
        prior = Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
        expected = (Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(X)
                    + prior.log_prob(z) - q.log_prob(z))
    assert log_w.shape == (5, 7)
    torch.testing.assert_close(log_w, expected, rtol=1e-12, atol=1e-10)


def test_iwae_bound_is_logsumexp_of_the_log_weights_minus_log_k_with_the_same_noise():
    model = VAE(64, 4, 32, generator=torch.Generator().manual_seed(0)).double()
    X = TEST[:10].double()
    log_w = model.log_importance_weights(X, 20, generator=torch.Generator().manual_seed(5))
    bound = model.iwae_bound(X, 20, generator=torch.Generator().manual_seed(5))
    # scipy's logsumexp, an implementation independent of torch's.
    from scipy.special import logsumexp
    expected = logsumexp(log_w.detach().numpy(), axis=0) - math.log(20)
    np.testing.assert_allclose(bound.detach().numpy(), expected, rtol=1e-13, atol=1e-12)


def test_iwae_bound_with_one_sample_is_the_monte_carlo_kl_elbo_with_the_same_noise():
    # Both equal log Bernoulli(x | decode(z)) + log N(z | 0, I) - log q(z | x), scored with
    # torch.distributions at the same draw z = mu + sigma * eps.
    model = VAE(64, 4, 32, generator=torch.Generator().manual_seed(0)).double()
    X = TEST[:10].double()
    with torch.no_grad():
        a = model.iwae_bound(X, 1, generator=torch.Generator().manual_seed(5))
        b = model.elbo(X, analytic_kl=False, generator=torch.Generator().manual_seed(5))
        loc, logvar = model.encode(X)
        eps = torch.randn(loc.shape, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)
        q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
        z = q.mean + q.stddev * eps
        prior = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
        expected = (Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(X)
                    + prior.log_prob(z) - q.log_prob(z))
    torch.testing.assert_close(a, expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(b, expected, rtol=1e-12, atol=1e-10)


def test_analytic_and_monte_carlo_kl_elbos_agree_in_expectation_on_digits():
    model = VAE(64, 8, 32, generator=torch.Generator().manual_seed(0)).double()
    X = TEST[:20].double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m_a, se_a = replicated(lambda v: model.elbo(v, generator=gen), X, 2000)
        m_mc, se_mc = replicated(lambda v: model.elbo(v, analytic_kl=False, generator=gen), X, 2000)
    assert bool((torch.abs(m_a - m_mc) < 4 * torch.sqrt(se_a**2 + se_mc**2)).all())


@pytest.mark.parametrize("num_samples", [1, 3])
def test_elbo_matches_torch_distributions_with_the_same_noise(num_samples):
    # One draw (the training step's fast path) and several (the general path) both
    # equal log Bernoulli(x | decode(z)) - KL(q || p) evaluated with torch.distributions
    # at the same reparameterised draws z = mu + sigma * eps.
    model = VAE(64, 3, 16, generator=torch.Generator().manual_seed(1))
    X = TEST[:20]
    with torch.no_grad():
        got = model.elbo(X, num_samples=num_samples, generator=torch.Generator().manual_seed(5))
        loc, logvar = model.encode(X)
        eps = torch.randn((num_samples, *loc.shape), generator=torch.Generator().manual_seed(5))
        z = loc + (0.5 * logvar).exp() * eps
        log_lik = Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(X)
        kl = kl_divergence(Normal(loc, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(got, log_lik.mean(0) - kl, rtol=1e-5, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.sampled_from([-300.0, -90.0, 0.0, 20.0, 300.0]),
       rows=st.sampled_from(["digits", "zeros", "ones"]))
def test_elbo_is_right_for_extreme_logits_and_extreme_images(seed, shift, rows):
    # Decoder logits of +-300 (pixel probabilities that round to 0 or 1 even in float64)
    # and all-black or all-white images: the ELBO still equals a reference with the same
    # noise, x eta - log(1 + e^eta) by numpy's logaddexp in float64 minus the KL term of
    # torch.distributions, where log(sigmoid(eta)) would be -inf and 0 * log(0) NaN.
    model = VAE(64, 2, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.decoder[-1].bias.add_(shift)
    X = {"digits": TEST[:5], "zeros": torch.zeros(5, 64), "ones": torch.ones(5, 64)}[rows]
    with torch.no_grad():
        got = model.elbo(X, generator=torch.Generator().manual_seed(seed))
        loc, logvar = model.encode(X)
        eps = torch.randn(loc.shape, generator=torch.Generator().manual_seed(seed))
        z = loc + (0.5 * logvar).exp() * eps
        logits = model.decode(z).double().numpy()
        kl = kl_divergence(Normal(loc, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    x = X.double().numpy()
    log_lik = (x * logits - np.logaddexp(0.0, logits)).sum(-1)
    assert bool(torch.isfinite(got).all())
    np.testing.assert_allclose(got.numpy(), log_lik - kl.double().numpy(), rtol=1e-5, atol=1e-3)


def test_elbo_averages_num_samples_draws():
    # The average of S draws has standard error 1/sqrt(S) of a single draw's.
    model = VAE(64, 8, 32, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(4)
    X = TEST[:1]
    with torch.no_grad():
        single = model.elbo(X.repeat(400, 1), generator=gen)
        batched = model.elbo(X.repeat(400, 1), num_samples=16, generator=gen)
    # The spread of 400 draws is itself uncertain by about 1/sqrt(2 * 399) = 3.5%.
    assert float(batched.std() * 4 / single.std()) == pytest.approx(1.0, rel=0.15)


def test_the_generator_fixes_the_draws_and_the_initial_weights():
    a = VAE(64, 2, 8, generator=torch.Generator().manual_seed(7))
    b = VAE(64, 2, 8, generator=torch.Generator().manual_seed(7))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    state = torch.get_rng_state()
    e1 = a.elbo(TEST[:5], generator=torch.Generator().manual_seed(8))
    e2 = b.elbo(TEST[:5], generator=torch.Generator().manual_seed(8))
    assert torch.equal(e1, e2)
    assert torch.equal(state, torch.get_rng_state())


def test_initial_weights_follow_torch_default_range():
    model = VAE(64, 2, 8, generator=torch.Generator().manual_seed(0))
    for layer in (model.encoder[0], model.encoder[2], model.decoder[0], model.decoder[2]):
        bound = 1 / math.sqrt(layer.in_features)
        weight = layer.weight.detach()
        assert float(weight.abs().max()) <= bound
        # Spread over the range, not a constant: std of U(-b, b) is b / sqrt(3).
        assert float(weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.3)


def test_encode_and_decode_shapes():
    model = VAE(64, 3, 8)
    loc, logvar = model.encode(TEST[:7])
    assert loc.shape == logvar.shape == (7, 3)
    assert model.decode(torch.zeros(5, 4, 3)).shape == (5, 4, 64)
    assert model.log_importance_weights(TEST[:7], 4).shape == (4, 7)


# -- training ------------------------------------------------------------------------------


def fresh_model():
    return VAE(64, 4, 32, generator=torch.Generator().manual_seed(0))


def test_training_from_the_same_seed_gives_identical_histories():
    runs = []
    for _ in range(2):
        model = fresh_model()
        history = train(model, TRAIN[:300], epochs=3, batch_size=50, lr=1e-2, seed=11,
                        X_test=TEST[:100], progress=False)
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert isinstance(h1, TrainingHistory)
    assert h1 == h2 and len(h1.train_elbo) == len(h1.test_elbo) == 3
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))


def test_training_path_does_not_depend_on_the_held_out_data():
    with_test, without_test = fresh_model(), fresh_model()
    h1 = train(with_test, TRAIN[:300], epochs=2, batch_size=50, lr=1e-2, seed=1,
               X_test=TEST[:50], progress=False)
    h2 = train(without_test, TRAIN[:300], epochs=2, batch_size=50, lr=1e-2, seed=1,
               progress=False)
    assert h1.train_elbo == h2.train_elbo and h2.test_elbo is None
    for p, q in zip(with_test.parameters(), without_test.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_short_training_run_raises_the_held_out_elbo():
    model = fresh_model()
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        before, se_before = replicated(lambda v: model.elbo(v, generator=gen), TEST, 5)
    train(model, TRAIN, epochs=5, batch_size=64, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():
        after, se_after = replicated(lambda v: model.elbo(v, generator=gen), TEST, 5)
    # Averaged over the held-out set; the standard error of the difference of the means.
    diff = after - before
    se = float(diff.std() / math.sqrt(len(diff)))
    assert float(diff.mean()) > 4 * se


def test_recorded_elbos_are_per_example_averages_of_one_sample_estimates():
    # With a learning rate far below float32 resolution the weights never move, so an epoch's
    # train_elbo is the average over the training examples (each seen once) of a one-sample,
    # analytic-KL ELBO, and test_elbo the same over the held-out data.  The reference is the
    # average of many such draws from VAE.elbo; the tolerance is 4 standard errors of the
    # recorded value, whose noise variance is sum_i Var_i / n^2 (Var_i per example).
    model = fresh_model()
    initial = [p.detach().clone() for p in model.parameters()]
    train_x, test_x = TRAIN[:150], TEST[:100]
    history = train(model, train_x, epochs=1, batch_size=64, lr=1e-30, seed=3,
                    X_test=test_x, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))
    gen = torch.Generator().manual_seed(4)
    reps = 40
    for recorded, X in ((history.train_elbo[0], train_x), (history.test_elbo[0], test_x)):
        with torch.no_grad():
            draws = model.elbo(X.repeat(reps, 1), generator=gen)
        draws = draws.double().reshape(reps, X.shape[0])
        reference = float(draws.mean())
        se = math.sqrt(float(draws.var(0).sum()) / X.shape[0] ** 2
                       + float(draws.var(0).sum()) / (reps * X.shape[0] ** 2))
        assert abs(recorded - reference) < 4 * se, (recorded, reference, se)


def test_training_progress_bar_goes_to_stderr(capsys):
    train(fresh_model(), TRAIN[:64], epochs=2, batch_size=64, lr=1e-3, seed=0, progress=True)
    captured = capsys.readouterr()
    assert "2/2" in captured.err and captured.out == ""


def test_training_that_diverges_raises_naming_the_epoch_the_step_and_lr():
    # Adam moves each weight by about lr per step: with lr = 10 the log variances leave
    # float32's range within the first epoch and the minibatch ELBO becomes NaN or -inf.
    with pytest.raises(ValueError, match=r"epoch 1, step \d+ of 6 is (nan|-inf).*smaller lr "
                                         r"\(it was 10\)"):
        train(fresh_model(), TRAIN[:300], epochs=3, batch_size=50, lr=10.0, seed=0,
              progress=False)


def test_a_non_finite_gradient_in_the_last_step_of_an_epoch_is_caught():
    # The minibatch ELBO of the only step is finite, but an infinite gradient (injected
    # by a hook) makes Adam write NaN weights, which only the end-of-epoch check sees.
    model = fresh_model()
    model.decoder[-1].bias.register_hook(lambda grad: grad * math.inf)
    with pytest.raises(ValueError, match=r"weight of the model is NaN or infinite after epoch 1"):
        train(model, TRAIN[:64], epochs=2, batch_size=64, lr=1e-3, seed=0, progress=False)


def test_a_non_finite_held_out_elbo_is_caught():
    # Pixel 0 is black in every training image, white in the held-out ones, and the encoder
    # maps a white pixel 0 to log sigma^2 = 200: the held-out KL term overflows to inf
    # while training (lr far below float32 resolution) stays finite.
    model = VAE(64, 1, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()
        model.encoder[0].weight[0, 0] = 50.0       # hidden unit 0 = tanh(50 x_0)
        model.encoder[2].weight[1, 0] = 200.0      # logvar = 200 * hidden unit 0
    X = torch.zeros(10, 64)
    X_test = X.clone()
    X_test[:, 0] = 1.0
    with pytest.raises(ValueError, match=r"held-out ELBO after epoch 1 is -inf"):
        train(model, X, epochs=1, batch_size=10, lr=1e-30, seed=0, X_test=X_test,
              progress=False)


# -- bad input: one property per kind of argument -------------------------------------------

MODEL = VAE(64, 2, 8, generator=torch.Generator().manual_seed(0))
METHODS = {
    "encode": lambda X: MODEL.encode(X),
    "elbo": lambda X: MODEL.elbo(X),
    "elbo, Monte Carlo KL": lambda X: MODEL.elbo(X, num_samples=2, analytic_kl=False),
    "iwae_bound": lambda X: MODEL.iwae_bound(X, 3),
    "log_importance_weights": lambda X: MODEL.log_importance_weights(X, 3),
    "train": lambda X: train(MODEL, X, epochs=1, batch_size=2, lr=1e-3, seed=0, progress=False),
}


def _with_entry(index, value):
    X = TEST[:4].double().flatten()
    X[index] = value
    return X.reshape(4, 64)


def out_of_range_data():
    """Finite data of the right shape with one entry outside [0, 1], beyond float32 rounding."""
    return st.builds(_with_entry, st.integers(0, 4 * 64 - 1),
                     st.one_of(st.floats(1.0 + 1e-6, 1e300),
                               st.floats(-1e300, -1e-6)))


def bad_data():
    """Every kind of bad data matrix for a 64-pixel model."""
    return st.one_of(bad_arrays((4, 64)), out_of_range_data(),
                     st.sampled_from([TEST[:4, :63], TEST[:4].reshape(4, 8, 8), TEST[0],
                                      torch.zeros(0, 64)]))


@settings(max_examples=40, deadline=None)
@given(bad=bad_data(), method=st.sampled_from(sorted(METHODS)))
def test_methods_reject_bad_data(bad, method):
    rejects(lambda: METHODS[method](bad), "X")


@settings(max_examples=40, deadline=None)
@given(bad=bad_data().filter(lambda v: v is not None))   # None: no held-out data
def test_train_rejects_bad_held_out_data(bad):
    rejects(lambda: train(MODEL, TEST[:4], epochs=1, batch_size=2, lr=1e-3, seed=0,
                          X_test=bad, progress=False), "X_test")


def bad_num_samples():
    # Too many draws for the memory budget (from 2**20 draws of 4 digits, which would take
    # about 4 GiB at once) as well as wrong types and ranges.
    return st.one_of(bad_ints(minimum=1), st.integers(2**20, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(bad=bad_num_samples(),
       method=st.sampled_from(["elbo", "iwae_bound", "log_importance_weights"]))
def test_methods_reject_bad_num_samples(bad, method):
    X = TEST[:4]
    call = {"elbo": lambda: MODEL.elbo(X, num_samples=bad),
            "iwae_bound": lambda: MODEL.iwae_bound(X, bad),
            "log_importance_weights": lambda: MODEL.log_importance_weights(X, bad)}[method]
    rejects(call, "num_samples")


def bad_generators():
    return st.one_of(not_numbers().filter(lambda v: v is not None), st.integers(0, 10),
                     st.just(np.random.default_rng(0)))


@settings(max_examples=40, deadline=None)
@given(bad=bad_generators(),
       method=st.sampled_from(["VAE", "elbo", "iwae_bound", "log_importance_weights"]))
def test_everything_rejects_a_generator_that_is_not_a_torch_generator(bad, method):
    X = TEST[:4]
    call = {"VAE": lambda: VAE(64, 2, 8, generator=bad),
            "elbo": lambda: MODEL.elbo(X, generator=bad),
            "iwae_bound": lambda: MODEL.iwae_bound(X, 2, generator=bad),
            "log_importance_weights": lambda: MODEL.log_importance_weights(X, 2, generator=bad)}
    rejects(call[method], "generator")


@settings(max_examples=30, deadline=None)
@given(bad=not_bools())
def test_elbo_rejects_an_analytic_kl_that_is_not_a_bool(bad):
    rejects(lambda: MODEL.elbo(TEST[:4], analytic_kl=bad), "analytic_kl")


def broken_model():
    """A VAE whose weights hold a NaN, as train leaves one that broke down."""
    model = VAE(64, 2, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = math.nan
    return model


BROKEN = broken_model()


@pytest.mark.parametrize("method", ["encode", "decode", "elbo", "iwae_bound",
                                    "log_importance_weights", "train"])
def test_every_method_refuses_a_model_whose_weights_are_not_finite(method):
    # Rather than return NaN (decode, elbo, ...) or blame the learning rate (train).
    X = TEST[:4]
    call = {"encode": lambda: BROKEN.encode(X), "decode": lambda: BROKEN.decode(torch.zeros(3, 2)),
            "elbo": lambda: BROKEN.elbo(X), "iwae_bound": lambda: BROKEN.iwae_bound(X, 2),
            "log_importance_weights": lambda: BROKEN.log_importance_weights(X, 2),
            "train": lambda: train(BROKEN, X, epochs=1, batch_size=2, lr=1e-3, seed=0,
                                   progress=False)}[method]
    with pytest.raises(ValueError, match=r"weights must be finite; some are NaN or infinite"):
        call()


def bad_latents():
    """Every kind of bad z for a model with latent_dim = 2 (a 1-d z of length 2 is valid)."""
    return st.one_of(not_numbers(), non_finite_arrays((3, 2)), meta_tensors((3, 2)),
                     st.just(np.full((3, 2), 1 + 1j)), st.just(np.ones((3, 2), dtype=bool)),
                     st.just(np.empty((0,))), st.just(0.5), st.just(torch.zeros(3, 5)),
                     st.just(torch.zeros(3)))


@settings(max_examples=40, deadline=None)
@given(bad=bad_latents())
def test_decode_rejects_bad_latents(bad):
    rejects(lambda: MODEL.decode(bad), "z")


@settings(max_examples=60, deadline=None)
@given(bad=bad_ints(minimum=1), which=st.sampled_from(["data_dim", "latent_dim", "hidden_dim"]))
def test_vae_rejects_bad_dimensions(bad, which):
    args = {"data_dim": 64, "latent_dim": 2, "hidden_dim": 8, which: bad}
    rejects(lambda: VAE(**args), which)


def test_vae_refuses_layers_too_large_to_allocate():
    # Each dimension is allowed, but together they would need 8 TiB of weights.
    with pytest.raises(ValueError, match=r"hidden_dim=1048576 make .* GiB in float32"):
        VAE(2**20, 2, 2**20)


def train_with(**changes):
    args = {"epochs": 1, "batch_size": 2, "lr": 1e-3, "seed": 0, "progress": False, **changes}
    return lambda: train(MODEL, TEST[:4], **args)


@settings(max_examples=60, deadline=None)
@given(bad=bad_ints(minimum=1), which=st.sampled_from(["epochs", "batch_size"]))
def test_train_rejects_bad_counts(bad, which):
    rejects(train_with(**{which: bad}), which)


@settings(max_examples=40, deadline=None)
@given(bad=bad_scalars(positive=True))
def test_train_rejects_a_bad_learning_rate(bad):
    rejects(train_with(lr=bad), "lr")


@settings(max_examples=40, deadline=None)
@given(bad=bad_seeds())
def test_train_rejects_a_bad_seed(bad):
    rejects(train_with(seed=bad), "seed")


@settings(max_examples=30, deadline=None)
@given(bad=not_bools())
def test_train_rejects_a_progress_flag_that_is_not_a_bool(bad):
    rejects(train_with(progress=bad), "progress")


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(torch.nn.Linear(64, 2))))
def test_train_rejects_a_model_that_is_not_a_vae(bad):
    rejects(lambda: train(bad, TEST[:4], epochs=1, batch_size=2, lr=1e-3, seed=0,
                          progress=False), "model")


def test_train_accepts_the_largest_seed():
    history = train(fresh_model(), TRAIN[:20], epochs=1, batch_size=10, lr=1e-3,
                    seed=2**63 - 1, progress=False)
    assert len(history.train_elbo) == 1 and math.isfinite(history.train_elbo[0])
