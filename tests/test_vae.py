"""Chapter 6: the VAE's KL term, its ELBO estimators, the IWAE bound and training.

The independent routes: ``torch.distributions`` for the KL divergence and the
densities, and, for a model with a one-dimensional latent variable, the exact
ELBO and log evidence by quadrature on a dense grid.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vicourse.datasets import load_digits
from vicourse.vae import VAE, TrainingHistory, gaussian_kl_to_standard_normal, train

TRAIN, TEST = load_digits()


# -- the KL term -------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), latent=st.integers(1, 6),
       spread=st.floats(0.1, 4.0))
def test_gaussian_kl_matches_torch_distributions(seed, n, latent, spread):
    gen = torch.Generator().manual_seed(seed)
    mu = spread * torch.randn(n, latent, generator=gen, dtype=torch.float64)
    logvar = spread * torch.randn(n, latent, generator=gen, dtype=torch.float64)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    expected = kl_divergence(q, prior)
    torch.testing.assert_close(gaussian_kl_to_standard_normal(mu, logvar), expected,
                               rtol=1e-12, atol=1e-12)


def test_gaussian_kl_is_positive_and_zero_only_at_the_standard_normal():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(1000, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(1000, 3, generator=gen, dtype=torch.float64)
    assert bool((gaussian_kl_to_standard_normal(mu, logvar) > 0).all())
    assert float(gaussian_kl_to_standard_normal(torch.zeros(4), torch.zeros(4))) == 0.0


def test_gaussian_kl_is_the_mean_of_its_monte_carlo_estimate():
    mu = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
    logvar = torch.tensor([-0.4, 0.3, -1.5], dtype=torch.float64)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    # Seeded draws (Normal.sample takes no generator): z = mu + sigma * eps.
    eps = torch.randn(100_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * eps
    terms = q.log_prob(z) - prior.log_prob(z)
    se = float(terms.std() / math.sqrt(len(terms)))
    assert abs(float(terms.mean() - gaussian_kl_to_standard_normal(mu, logvar))) < 4 * se


def test_gaussian_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="mu must be finite"):
        gaussian_kl_to_standard_normal(torch.tensor([float("nan")]), torch.zeros(1))
    with pytest.raises(ValueError, match="logvar must be finite"):
        gaussian_kl_to_standard_normal(torch.zeros(1), torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="mu must have at least one dimension"):
        gaussian_kl_to_standard_normal(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="logvar must be a numeric"):
        gaussian_kl_to_standard_normal(torch.zeros(2), ["a", "b"])


# -- exact answers for a one-dimensional latent variable, by quadrature -------------------

GRID = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
DZ = float(GRID[1] - GRID[0])


def one_d_model(seed=0):
    """An untrained VAE with one latent dimension, in float64."""
    return VAE(64, 1, 16, generator=torch.Generator().manual_seed(seed)).double()


def exact_elbo_and_log_evidence(model, x):
    """ELBO and log p(x) of each row of x by the rectangle rule on a dense grid of z.

    Written with torch.distributions, not with the package's formulas.
    """
    with torch.no_grad():
        mu, logvar = model.encode(x)
        logits = model.decoder(GRID[:, None])                            # (G, 64)
        log_lik = Bernoulli(logits=logits[:, None, :]).log_prob(x).sum(-1)  # (G, n)
        log_prior = Normal(0.0, 1.0).log_prob(GRID)[:, None]             # (G, 1)
        q = Normal(mu[:, 0], torch.exp(0.5 * logvar[:, 0]))
        log_q = q.log_prob(GRID[:, None])                                 # (G, n)
        elbo = (torch.exp(log_q) * (log_lik + log_prior - log_q)).sum(0) * DZ
        log_evidence = torch.logsumexp(log_lik + log_prior, dim=0) + math.log(DZ)
    return elbo, log_evidence


def replicated(fn, x, reps):
    """Mean and standard error over ``reps`` independent draws of ``fn``, per row of x."""
    values = fn(x.repeat(reps, 1)).detach().reshape(reps, x.shape[0])
    return values.mean(0), values.std(0) / math.sqrt(reps)


X_SMALL = TEST[:6].double()


def test_quadrature_is_accurate_enough_to_serve_as_the_reference():
    # The grid must cover q and the posterior: the ELBO of q computed on it must not
    # exceed the log evidence, and q's mass on the grid must be 1.
    model = one_d_model()
    elbo, log_evidence = exact_elbo_and_log_evidence(model, X_SMALL)
    assert bool((elbo <= log_evidence).all())
    mu, logvar = model.encode(X_SMALL)
    mass = torch.exp(Normal(mu[:, 0], torch.exp(0.5 * logvar[:, 0])).log_prob(GRID[:, None]))
    torch.testing.assert_close(mass.sum(0) * DZ, torch.ones(6, dtype=torch.float64),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_estimate_is_unbiased_for_the_exact_elbo(analytic_kl):
    model = one_d_model()
    exact, _ = exact_elbo_and_log_evidence(model, X_SMALL)
    gen = torch.Generator().manual_seed(1)
    mean, se = replicated(
        lambda x: model.elbo(x, analytic_kl=analytic_kl, generator=gen), X_SMALL, 4000)
    assert bool((torch.abs(mean - exact) < 4 * se).all()), (mean, exact, se)


def test_iwae_bounds_rise_with_k_towards_the_log_evidence():
    model = one_d_model()
    exact_elbo, log_evidence = exact_elbo_and_log_evidence(model, X_SMALL)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        bounds = {k: replicated(lambda x, k=k: model.iwae_bound(x, k, generator=gen), X_SMALL, 2000)
                  for k in (1, 5, 50)}
    # L_1 is the ELBO in expectation.
    mean_1, se_1 = bounds[1]
    assert bool((torch.abs(mean_1 - exact_elbo) < 4 * se_1).all())
    # Each bound lies below log p(x) (within 4 standard errors of its estimate) ...
    for mean, se in bounds.values():
        assert bool((mean < log_evidence + 4 * se).all())
    # ... and each step up in k raises it by more than 4 standard errors of the difference.
    for small, large in [(1, 5), (5, 50)]:
        (m_s, se_s), (m_l, se_l) = bounds[small], bounds[large]
        assert bool((m_l - m_s > 4 * torch.sqrt(se_s**2 + se_l**2)).all())
    # With k = 50 the gap to log p(x) has shrunk below a tenth of the ELBO's.
    assert bool((log_evidence - bounds[50][0] < 0.1 * (log_evidence - exact_elbo)).all())


def test_iwae_bound_with_one_sample_is_the_monte_carlo_kl_elbo_with_the_same_noise():
    model = VAE(64, 4, 32, generator=torch.Generator().manual_seed(0))
    a = model.iwae_bound(TEST[:10], 1, generator=torch.Generator().manual_seed(5))
    b = model.elbo(TEST[:10], analytic_kl=False, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_analytic_and_monte_carlo_kl_elbos_agree_in_expectation_on_digits():
    model = VAE(64, 8, 32, generator=torch.Generator().manual_seed(0)).double()
    x = TEST[:20].double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m_a, se_a = replicated(lambda v: model.elbo(v, generator=gen), x, 2000)
        m_mc, se_mc = replicated(lambda v: model.elbo(v, analytic_kl=False, generator=gen), x, 2000)
    assert bool((torch.abs(m_a - m_mc) < 4 * torch.sqrt(se_a**2 + se_mc**2)).all())


@pytest.mark.parametrize("num_samples", [1, 3])
def test_elbo_matches_torch_distributions_with_the_same_noise(num_samples):
    # One draw (the training step's fast path) and several (the general path) both
    # equal log Bernoulli(x | decode(z)) - KL(q || p) evaluated with torch.distributions
    # at the same reparameterised draws z = mu + sigma * eps.
    model = VAE(64, 3, 16, generator=torch.Generator().manual_seed(1))
    x = TEST[:20]
    with torch.no_grad():
        got = model.elbo(x, num_samples=num_samples, generator=torch.Generator().manual_seed(5))
        mu, logvar = model.encode(x)
        eps = torch.randn((num_samples, *mu.shape), generator=torch.Generator().manual_seed(5))
        z = mu + (0.5 * logvar).exp() * eps
        log_lik = Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(x)
        kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(got, log_lik.mean(0) - kl, rtol=1e-5, atol=1e-4)


def test_elbo_averages_num_samples_draws():
    # The average of S draws has standard error 1/sqrt(S) of a single draw's.
    model = VAE(64, 8, 32, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(4)
    x = TEST[:1]
    with torch.no_grad():
        single = model.elbo(x.repeat(400, 1), generator=gen)
        batched = model.elbo(x.repeat(400, 1), num_samples=16, generator=gen)
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
    mu, logvar = model.encode(TEST[:7])
    assert mu.shape == logvar.shape == (7, 3)
    assert model.decode(torch.zeros(5, 4, 3)).shape == (5, 4, 64)


# -- training ------------------------------------------------------------------------------


def fresh_model():
    return VAE(64, 4, 32, generator=torch.Generator().manual_seed(0))


def test_training_from_the_same_seed_gives_identical_histories():
    runs = []
    for _ in range(2):
        model = fresh_model()
        history = train(model, TRAIN[:300], epochs=3, batch_size=50, lr=1e-2, seed=11,
                        test_data=TEST[:100], progress=False)
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert isinstance(h1, TrainingHistory)
    assert h1 == h2 and len(h1.train_elbo) == len(h1.test_elbo) == 3
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))


def test_training_path_does_not_depend_on_the_held_out_data():
    with_test, without_test = fresh_model(), fresh_model()
    h1 = train(with_test, TRAIN[:300], epochs=2, batch_size=50, lr=1e-2, seed=1,
               test_data=TEST[:50], progress=False)
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
                    test_data=test_x, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))
    gen = torch.Generator().manual_seed(4)
    reps = 40
    for recorded, x in ((history.train_elbo[0], train_x), (history.test_elbo[0], test_x)):
        with torch.no_grad():
            draws = model.elbo(x.repeat(reps, 1), generator=gen)
        draws = draws.double().reshape(reps, x.shape[0])
        reference = float(draws.mean())
        se = math.sqrt(float(draws.var(0).sum()) / x.shape[0] ** 2
                       + float(draws.var(0).sum()) / (reps * x.shape[0] ** 2))
        assert abs(recorded - reference) < 4 * se, (recorded, reference, se)


def test_training_progress_bar_goes_to_stderr(capsys):
    train(fresh_model(), TRAIN[:64], epochs=2, batch_size=64, lr=1e-3, seed=0, progress=True)
    captured = capsys.readouterr()
    assert "2/2" in captured.err and captured.out == ""


# -- bad input -----------------------------------------------------------------------------


def test_vae_rejects_bad_dimensions_and_generator():
    for name in ("data_dim", "latent_dim", "hidden_dim"):
        args = {"data_dim": 64, "latent_dim": 2, "hidden_dim": 8, name: 0}
        with pytest.raises(ValueError, match=name):
            VAE(**args)
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(64, 2.0, 8)
    with pytest.raises(ValueError, match="generator"):
        VAE(64, 2, 8, generator=0)


def test_bounds_reject_bad_data_and_sample_counts():
    model = VAE(64, 2, 8)
    x = TEST[:4]
    for method in (model.elbo, lambda v, **kw: model.iwae_bound(v, 3, **kw), model.encode):
        with pytest.raises(ValueError, match=r"x must have shape \(n, 64\)"):
            method(x[:, :63])
        with pytest.raises(ValueError, match=r"x must have shape"):
            method(x[0])
        with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
            method(x * 2)
        with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
            method(x - 0.5)
        with pytest.raises(ValueError, match="x must be finite"):
            method(torch.full((2, 64), float("nan")))
        with pytest.raises(ValueError, match="x must hold at least one"):
            method(torch.zeros(0, 64))
        with pytest.raises(ValueError, match="x must be a numeric"):
            method("digits")
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_samples"):
            model.elbo(x, num_samples=k)
        with pytest.raises(ValueError, match="num_samples"):
            model.iwae_bound(x, k)
    with pytest.raises(ValueError, match="analytic_kl"):
        model.elbo(x, analytic_kl="yes")
    with pytest.raises(ValueError, match="generator"):
        model.elbo(x, generator=1)
    with pytest.raises(ValueError, match="generator"):
        model.iwae_bound(x, 2, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        model.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="z must be finite"):
        model.decode(torch.full((3, 2), float("inf")))
    with pytest.raises(ValueError, match="z must be a numeric"):
        model.decode("latent")
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        model.decode(torch.tensor(0.0))


def test_train_rejects_bad_settings():
    model = VAE(64, 2, 8)
    data = TRAIN[:20]
    ok = {"epochs": 1, "batch_size": 10, "lr": 1e-3, "seed": 0, "progress": False}
    bad = {"epochs": [0, 1.5], "batch_size": [0, None], "lr": [0.0, -1e-3, float("nan"), "1e-3"],
           "seed": [-1, 0.5], "progress": ["no"]}
    for name, values in bad.items():
        for value in values:
            with pytest.raises(ValueError, match=name):
                train(model, data, **{**ok, name: value})
    with pytest.raises(ValueError, match="model"):
        train(torch.nn.Linear(64, 2), data, **ok)
    with pytest.raises(ValueError, match="train_data must lie in"):
        train(model, data + 1, **ok)
    with pytest.raises(ValueError, match=r"test_data must have shape \(n, 64\)"):
        train(model, data, test_data=TEST[:5, :10], **ok)
