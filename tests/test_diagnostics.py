"""Chapter 7: importance sampling with q, PSIS and k-hat, VSBC, NUTS as a gold standard."""

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from bad_inputs import (
    assert_rejects,
    bad_arrays,
    bad_callables,
    bad_ints,
    bad_scalars,
    meta_tensors,
    not_numbers,
    wrong_ndim_arrays,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import digamma, logsumexp, polygamma

from vicourse import cavi, diagnostics
from vicourse.diagnostics import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    effective_sample_size,
    eight_schools_log_joint,
    importance_log_evidence,
    importance_sample,
    nuts,
    pareto_k_threshold,
    psis,
    vsbc_probabilities,
    vsbc_test,
)
from vicourse.models import ConjugateGaussian

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)   # ArviZ announces its coming refactor
    import arviz


def gaussian_log_weights(s, num, rng, loc=0.0):
    """log N(z | 0, 1) - log N(z | loc, s^2) at z ~ N(loc, s^2): target N(0, 1), proposal q."""
    z = rng.normal(loc, s, num)
    return stats.norm.logpdf(z) - stats.norm.logpdf(z, loc, s)


# --------------------------------------------------------------------------- PSIS against ArviZ


@pytest.mark.parametrize("s, num", [(0.3, 200), (0.5, 4000), (0.7, 100_000), (0.9, 1000),
                                    (1.5, 5000), (3.0, 21)])
def test_psis_matches_arviz_on_the_same_log_weights(s, num):
    """k-hat and the smoothed weights agree with ArviZ's psislw, heavy and light tails alike."""
    rng = np.random.default_rng(int(100 * s) + num)
    log_weights = gaussian_log_weights(s, num, rng) + 123.4   # an unnormalised offset
    smoothed, k_hat = psis(log_weights)
    expected, expected_k = arviz.psislw(log_weights.copy())
    assert k_hat == pytest.approx(float(expected_k), abs=1e-10)
    np.testing.assert_allclose(smoothed, expected, rtol=0, atol=1e-10)


def test_psis_matches_arviz_with_zero_weights():
    """Log weights of -inf (the target rules a draw out) stay zero weights in both."""
    rng = np.random.default_rng(5)
    log_weights = gaussian_log_weights(0.6, 3000, rng)
    log_weights[rng.choice(3000, 500, replace=False)] = -np.inf
    smoothed, k_hat = psis(log_weights)
    expected, expected_k = arviz.psislw(log_weights.copy())
    assert k_hat == pytest.approx(float(expected_k), abs=1e-10)
    assert np.array_equal(np.isneginf(smoothed), np.isneginf(log_weights))
    finite = np.isfinite(smoothed)
    np.testing.assert_allclose(smoothed[finite], expected[finite], rtol=0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), num=st.integers(21, 3000), s=st.floats(0.2, 3.0),
       shift=st.floats(-50.0, 50.0))
def test_psis_normalises_caps_and_ignores_a_common_factor(seed, num, s, shift):
    """Smoothed weights sum to one, none exceeds the largest raw weight before they are
    normalised, and multiplying every weight by one constant changes neither them nor k-hat."""
    log_weights = gaussian_log_weights(s, num, np.random.default_rng(seed))
    smoothed, k_hat = psis(log_weights)
    assert math.fsum(np.exp(smoothed)) == pytest.approx(1.0, abs=1e-12)
    # The smallest weight is in the body, which only the normalisation moves.
    low = np.argmin(log_weights)
    log_normaliser = log_weights[low] - log_weights.max() - smoothed[low]
    assert smoothed.max() + log_normaliser <= 1e-12
    shifted, k_shifted = psis(log_weights + shift)
    assert k_shifted == pytest.approx(k_hat, abs=1e-8)
    np.testing.assert_allclose(shifted, smoothed, rtol=0, atol=1e-8)


def test_psis_of_weights_dominated_beyond_the_float_range_has_infinite_khat_as_in_arviz():
    """Log weights spread over 10^5 nats: all but a few lie below e^-708 times the largest,
    the floor of the cutoff, so no tail can be fitted.  Like ArviZ, psis answers k-hat = inf
    and returns the weights normalised, unsmoothed."""
    log_weights = np.random.default_rng(4).normal(size=1000) * 1e5
    smoothed, k_hat = psis(log_weights)
    expected, expected_k = arviz.psislw(log_weights.copy())
    assert k_hat == np.inf and float(expected_k) == np.inf
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12, atol=0)
    assert smoothed.max() == 0.0


def test_psis_leaves_the_body_of_the_weights_unchanged():
    """Only the M = ceil(min(S/5, 3 sqrt(S))) largest weights are replaced (Vehtari et al. 2024)."""
    rng = np.random.default_rng(11)
    num = 10_000
    log_weights = gaussian_log_weights(0.7, num, rng)
    smoothed, _ = psis(log_weights)
    tail_len = math.ceil(min(num / 5, 3 * math.sqrt(num)))
    body = np.argsort(log_weights)[:-tail_len]
    raw_normalised = log_weights - logsumexp(log_weights)
    # The body moves only by the change of the normaliser: one constant for all of it.
    offset = smoothed[body] - raw_normalised[body]
    assert np.ptp(offset) < 1e-12
    assert not np.allclose(smoothed[np.argsort(log_weights)[-tail_len:]],
                           raw_normalised[np.argsort(log_weights)[-tail_len:]] + offset[0])


@pytest.mark.parametrize("k", [-1.5, -0.2, 0.0, 1e-14, 0.3, 0.9, 2.0])
def test_generalized_pareto_quantile_matches_scipy(k):
    """The quantiles that replace the tail are scipy's genpareto.ppf, for every sign of k."""
    probs = (np.arange(50) + 0.5) / 50
    np.testing.assert_allclose(diagnostics._gpd_quantile(probs, k, 2.5),
                               stats.genpareto.ppf(probs, k, scale=2.5), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- k-hat and the tail index


def test_khat_approaches_one_minus_s_squared_as_draws_grow():
    """Target N(0, 1), proposal N(0, s^2), s < 1: the weights' tail index is k = 1 - s^2.

    Error budget: over R repeats, the root-mean-square error of k-hat shrinks by at least a
    factor 1.5 from S = 10^3 to S = 10^5 draws and is below 0.12 there; the mean at 10^5 is
    within 3 standard errors (from the repeats) plus 0.05 of 1 - s^2, the 0.05 allowing
    for the slow, downward finite-sample bias of the estimate at these tails.
    """
    rng = np.random.default_rng(2024)
    for s in [0.6, 0.7, 0.8, 0.9]:
        k = 1 - s**2
        rmse, mean, se = {}, {}, {}
        for num, repeats in [(1000, 16), (100_000, 8)]:
            k_hats = np.array([psis(gaussian_log_weights(s, num, rng))[1] for _ in range(repeats)])
            rmse[num] = np.sqrt(np.mean((k_hats - k) ** 2))
            mean[num], se[num] = k_hats.mean(), k_hats.std(ddof=1) / np.sqrt(repeats)
        assert rmse[100_000] < rmse[1000] / 1.5, (s, rmse)
        assert rmse[100_000] < 0.12, (s, rmse)
        assert abs(mean[100_000] - k) < 3 * se[100_000] + 0.05, (s, mean, se)


def test_khat_is_small_for_an_overdispersed_proposal():
    """For s > 1 the weights are bounded (by s), so their tail has no Pareto part: k-hat < 0."""
    rng = np.random.default_rng(3)
    for s in [1.2, 2.0]:
        log_weights = gaussian_log_weights(s, 20_000, rng)
        assert log_weights.max() <= math.log(s) + 1e-12
        assert psis(log_weights)[1] < 0


def test_khat_of_a_mean_field_fit_to_a_correlated_gaussian_is_the_correlation():
    """The corollary of Chapter 7: CAVI's factorised fit of a bivariate Gaussian with
    correlation rho has weights of tail index k = |rho|.  Budget as for the 1-D case: the
    mean of five k-hats from 10^5 draws is within 3 standard errors plus 0.05 of |rho|."""
    gen = torch.Generator().manual_seed(0)
    for rho in [0.4, 0.6, -0.8]:
        cov = np.array([[1.0, 2 * rho], [2 * rho, 4.0]])
        target = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                        torch.from_numpy(cov))
        precision = np.linalg.inv(cov)
        q = torch.distributions.MultivariateNormal(
            torch.zeros(2, dtype=torch.float64),
            torch.diag(torch.from_numpy(1 / np.diag(precision))))   # CAVI's fixed point
        k_hats = np.array([psis(importance_sample(target.log_prob, q, 100_000,
                                                  generator=gen)[1])[1] for _ in range(5)])
        se = k_hats.std(ddof=1) / np.sqrt(5)
        assert abs(k_hats.mean() - abs(rho)) < 3 * se + 0.05, (rho, k_hats)


def test_pareto_k_threshold_follows_vehtari_et_al():
    """min(1 - 1/log10(S), 0.7): 2/3 at S = 1000, 0.5 at S = 100, capped at 0.7."""
    assert pareto_k_threshold(1000) == pytest.approx(2 / 3)
    assert pareto_k_threshold(100) == pytest.approx(0.5)
    assert pareto_k_threshold(10**4) == pytest.approx(0.7)
    assert pareto_k_threshold(10**9) == pytest.approx(0.7)


# --------------------------------------------------------------------------- effective sample size


@settings(max_examples=40, deadline=None)
@given(log_weights=st.lists(st.floats(-30, 30), min_size=1, max_size=50))
def test_effective_sample_size_is_kish_formula(log_weights):
    """(sum w)^2 / sum w^2, computed directly in 50-digit arithmetic."""
    w = [mpmath.e ** mpmath.mpf(v) for v in log_weights]
    with mpmath.workdps(50):
        expected = float(mpmath.fsum(w) ** 2 / mpmath.fsum([v * v for v in w]))
    assert effective_sample_size(log_weights) == pytest.approx(expected, rel=1e-10)


def test_effective_sample_size_extremes():
    """S for equal weights, 1 when one weight dominates; huge log weights do not overflow."""
    assert effective_sample_size(np.full(500, 812.5)) == pytest.approx(500.0, rel=1e-12)
    assert effective_sample_size(np.r_[1000.0, np.zeros(99)]) == pytest.approx(1.0, rel=1e-12)
    assert effective_sample_size(np.r_[0.0, np.full(9, -np.inf)]) == pytest.approx(1.0)
    # Log weights near the float64 limit: doubling them must not overflow into NaN.
    assert effective_sample_size(np.array([1e308, -1e308])) == pytest.approx(1.0, rel=1e-12)
    assert effective_sample_size(np.array([1e308, 1e308, 1e308])) == pytest.approx(3.0, rel=1e-12)


# --------------------------------------------------------------------------- importance sampling


def conjugate_problem():
    model = ConjugateGaussian(m0=0.5, s0=2.0, sigma=1.5)
    x = np.random.default_rng(7).normal(1.2, 1.5, size=25)

    def log_joint(z):   # through numpy: the weights are checked against scipy below
        return torch.from_numpy(model.log_joint(x, z.numpy()))

    return model, x, log_joint


def test_importance_sample_returns_the_draws_and_their_log_ratio():
    model, x, log_joint = conjugate_problem()
    q = torch.distributions.Normal(torch.tensor(1.0, dtype=torch.float64), 0.3)
    z, log_weights = importance_sample(log_joint, q, 1000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1000,) and log_weights.shape == (1000,)
    expected = model.log_joint(x, z.numpy()) - stats.norm.logpdf(z.numpy(), 1.0, 0.3)
    np.testing.assert_allclose(log_weights, expected, rtol=1e-12, atol=1e-10)


def test_importance_sample_takes_a_float32_proposal():
    """A float32 q (as a network's encoder gives) is drawn and evaluated in its own dtype;
    the draws and the weights come back in float64 and match scipy's densities."""
    q = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2) * 0.5)
    target = stats.multivariate_normal(np.zeros(2), np.eye(2))
    z, log_weights = importance_sample(lambda z: torch.from_numpy(target.logpdf(z.numpy())),
                                       q, 100, generator=torch.Generator().manual_seed(0))
    assert z.dtype == torch.float64 and log_weights.dtype == np.float64
    expected = target.logpdf(z.numpy()) - stats.multivariate_normal(np.zeros(2),
                                                                    0.5 * np.eye(2)).logpdf(z.numpy())
    np.testing.assert_allclose(log_weights, expected, rtol=0, atol=1e-5)


def test_importance_sample_uses_the_generator_and_leaves_global_state_alone():
    _, _, log_joint = conjugate_problem()
    q = torch.distributions.Normal(torch.tensor(1.0, dtype=torch.float64), 0.3)
    state = torch.get_rng_state()
    a = importance_sample(log_joint, q, 50, generator=torch.Generator().manual_seed(3))
    b = importance_sample(log_joint, q, 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_importance_log_evidence_of_the_conjugate_gaussian_is_within_its_standard_error():
    """Proposal: the exact posterior, shifted by half a standard deviation and 20 % too wide.

    Over 40 independent estimates of S = 2000 draws, each lies within 4 standard deviations
    (the spread of the 40) of the exact log evidence, and their mean within 4 standard errors
    (plus the Jensen bias of the log, about Var(w)/(2 S p^2) < 2e-4 here).
    """
    model, x, log_joint = conjugate_problem()
    exact = model.log_evidence(x)
    mean, std = model.posterior(x)
    q = torch.distributions.Normal(torch.tensor(mean + 0.5 * std), 1.2 * std)
    gen = torch.Generator().manual_seed(1)
    results = np.array([importance_log_evidence(log_joint, q, 2000, generator=gen)
                        for _ in range(40)])
    estimates, k_hats = results[:, 0], results[:, 1]
    spread = estimates.std(ddof=1)
    assert np.all(np.abs(estimates - exact) < 4 * spread)
    assert abs(estimates.mean() - exact) < 4 * spread / np.sqrt(40) + 2e-4
    assert spread < 0.02                      # a good proposal: a precise estimate
    assert np.all(k_hats < 0.5)


def normal_gamma_problem():
    """The Normal-Gamma model on (mu, log tau), written with torch.distributions."""
    prior = dict(mu0=0.0, lambda0=1.0, a0=2.0, b0=2.0)
    x = np.random.default_rng(12).normal(0.5, 0.7, size=15)
    x_t = torch.from_numpy(x)

    def log_joint(z):
        mu, log_tau = z[:, 0], z[:, 1]
        tau = log_tau.exp()
        log_prior_tau = torch.distributions.Gamma(torch.tensor(prior["a0"], dtype=torch.float64),
                                                  prior["b0"]).log_prob(tau)
        log_prior_mu = torch.distributions.Normal(prior["mu0"],
                                                  (prior["lambda0"] * tau).rsqrt()).log_prob(mu)
        log_lik = torch.distributions.Normal(mu[:, None], tau.rsqrt()[:, None]).log_prob(x_t)
        return log_prior_tau + log_prior_mu + log_lik.sum(-1) + log_tau   # + log-Jacobian

    mu_n, lambda_n, a_n, b_n = cavi.normal_gamma_posterior(x, **prior)
    # Exact posterior moments: mu is Student-t, log tau is log-Gamma, uncorrelated.
    moments = dict(mean=np.array([mu_n, digamma(a_n) - np.log(b_n)]),
                   var=np.array([b_n / (lambda_n * (a_n - 1)), polygamma(1, a_n)]))
    return prior, x, log_joint, moments


def test_importance_log_evidence_of_the_normal_gamma_model_is_within_its_standard_error():
    """Proposal: independent Student-t (5 degrees of freedom) on (mu, log tau) with the exact
    posterior's means and standard deviations as locations and scales: heavier-tailed than
    the posterior (whose mu-marginal is a Student-t with 2 a_n = 19 degrees of freedom)."""
    prior, x, log_joint, moments = normal_gamma_problem()
    exact = cavi.normal_gamma_log_evidence(x, **prior)
    q = torch.distributions.Independent(torch.distributions.StudentT(
        5.0, torch.from_numpy(moments["mean"]), torch.from_numpy(np.sqrt(moments["var"]))), 1)
    gen = torch.Generator().manual_seed(2)
    results = np.array([importance_log_evidence(log_joint, q, 2000, generator=gen)
                        for _ in range(40)])
    estimates = results[:, 0]
    spread = estimates.std(ddof=1)
    assert np.all(np.abs(estimates - exact) < 4 * spread)
    assert abs(estimates.mean() - exact) < 4 * spread / np.sqrt(40) + 1e-3
    assert spread < 0.05
    assert np.all(results[:, 1] < 0.5)


def test_self_normalised_posterior_mean_converges_to_the_exact_mean():
    """PSIS weights from a poor proposal (Student-t, shifted by one posterior sd, scales 30 %
    too small): the root-mean-square error of the self-normalised posterior mean falls at
    least fivefold from S = 300 to S = 10^5, and at 10^5 the mean error of ten repeats is
    within four standard errors of zero."""
    _, log_joint, moments = normal_gamma_problem()[1:]
    mean, sd = moments["mean"], np.sqrt(moments["var"])
    q = torch.distributions.Independent(torch.distributions.StudentT(
        5.0, torch.from_numpy(mean + sd), torch.from_numpy(0.7 * sd)), 1)
    gen = torch.Generator().manual_seed(4)
    errors = {}
    for num in [300, 100_000]:
        runs = []
        for _ in range(10):
            z, log_weights = importance_sample(log_joint, q, num, generator=gen)
            smoothed, _ = psis(log_weights)
            runs.append(np.exp(smoothed) @ z.numpy() - mean)
        errors[num] = np.array(runs)
    rmse = {num: np.sqrt((e**2).mean(0)) for num, e in errors.items()}
    assert np.all(rmse[100_000] < rmse[300] / 5), rmse
    big = errors[100_000]
    assert np.all(np.abs(big.mean(0)) < 4 * big.std(0, ddof=1) / np.sqrt(10))


# --------------------------------------------------------------------------- NUTS


def test_nuts_matches_the_exact_normal_gamma_posterior():
    """The gold standard is checked on a conjugate model first: the NUTS means of mu and
    log tau are within 4 Monte Carlo standard errors (from NUTS's own ESS) of the exact ones,
    and the standard deviations within 15 %."""
    _, _, log_joint, moments = normal_gamma_problem()
    result = nuts(log_joint, np.zeros(2), num_samples=600, warmup_steps=200, seed=0)
    draws = result.draws
    assert draws.shape == (600, 2) and result.num_divergences == 0
    mcse = draws.std(0) / np.sqrt(result.ess)
    assert np.all(np.abs(draws.mean(0) - moments["mean"]) < 4 * mcse)
    np.testing.assert_allclose(draws.std(0), np.sqrt(moments["var"]), rtol=0.15)
    assert np.all(result.ess > 150)


def test_nuts_is_reproducible_from_its_seed_and_leaves_global_state_alone():
    state = torch.get_rng_state()
    target = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                    torch.tensor([[1.0, 0.5], [0.5, 2.0]],
                                                                 dtype=torch.float64))
    a = nuts(target.log_prob, [0.1, -0.2], num_samples=50, warmup_steps=50, seed=7)
    b = nuts(target.log_prob, [0.1, -0.2], num_samples=50, warmup_steps=50, seed=7)
    c = nuts(target.log_prob, [0.1, -0.2], num_samples=50, warmup_steps=50, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(a.draws, b.draws) and a.step_size == b.step_size
    assert not np.array_equal(a.draws, c.draws)


# --------------------------------------------------------------------------- VSBC


def test_vsbc_probabilities_are_the_normal_cdf():
    rng = np.random.default_rng(0)
    truth, loc, scale = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.uniform(0.1, 3, (6, 3))
    np.testing.assert_allclose(vsbc_probabilities(truth, loc, scale),
                               stats.norm.cdf(truth, loc, scale), rtol=1e-12)


def simulate_conjugate(num_sets, rng):
    """M data sets from the conjugate Gaussian model, with the parameter each came from."""
    model = ConjugateGaussian(m0=0.0, s0=1.0, sigma=2.0)
    z = rng.normal(0.0, 1.0, num_sets)
    x = rng.normal(z[:, None], 2.0, (num_sets, 10))
    posteriors = np.array([model.posterior(row) for row in x])
    return z, posteriors[:, 0], posteriors[:, 1]


def test_vsbc_of_the_exact_posterior_is_uniform_and_passes():
    """Were q the exact posterior, p would be uniform (the argument of simulation-based
    calibration): a Kolmogorov-Smirnov test against U(0, 1) and the symmetry test both pass."""
    z, mean, std = simulate_conjugate(1000, np.random.default_rng(1))
    p = vsbc_probabilities(z[:, None], mean[:, None], std[:, None])
    assert stats.kstest(p[:, 0], "uniform").pvalue > 0.05
    statistic, pvalue = vsbc_test(p)
    assert pvalue[0] > 0.05


def test_vsbc_test_keeps_its_level_where_the_mirrored_ks_test_does_not():
    """Over 1000 symmetric samples of M = 200 (uniform, and U-shaped as from too-narrow fits),
    the signed-rank test rejects at 5 % within binomial error (3 sd) of 5 %; the two-sample
    Kolmogorov-Smirnov test of p against 1 - p rejects more than 7.5 % of them."""
    rng = np.random.default_rng(8)
    for width in [1.0, 0.5]:
        p = stats.norm.cdf(rng.normal(size=(200, 1000)) / width)
        _, pvalue = vsbc_test(p)
        rate = np.mean(pvalue < 0.05)
        assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 1000), rate
        ks_rate = np.mean([stats.ks_2samp(col, 1 - col).pvalue < 0.05 for col in p.T])
        assert ks_rate > 0.075, ks_rate


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vsbc_test_statistic_is_the_signed_rank_sum(seed):
    """W = W+ - W-: scipy's two-sided statistic is min(W+, W-) = (n(n + 1)/2 - |W|)/2 with n
    the non-zero differences (ties and exact halves included), its p-value is scipy's, and
    the sign of W is the side the mass leans to (columns shifted up, down, not at all)."""
    rng = np.random.default_rng(seed)
    p = stats.norm.cdf(rng.normal(size=(60, 3)) + np.array([0.8, -0.8, 0.0]))
    p[:4, 0] = 0.5                                      # exact halves are dropped
    p[10:16, 2] = p[10, 2]                              # tied ranks share their mean
    statistic, pvalue = vsbc_test(p)
    expected = stats.wilcoxon(p - 0.5, axis=0)
    n = np.count_nonzero(p != 0.5, axis=0)
    np.testing.assert_allclose((n * (n + 1) / 2 - np.abs(statistic)) / 2, expected.statistic,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(pvalue, expected.pvalue, rtol=1e-12)
    assert statistic[0] > 0 and statistic[1] < 0


def test_vsbc_detects_a_biased_point_estimate_and_its_direction():
    """A fit whose mean sits half a posterior sd too low puts p near 1 (truth above the fit);
    too high, near 0; an under-dispersed but unbiased fit stays symmetric."""
    z, mean, std = simulate_conjugate(500, np.random.default_rng(2))
    truth = np.column_stack([z, z, z])
    loc = np.column_stack([mean - 0.5 * std, mean + 0.5 * std, mean])
    scale = np.column_stack([std, std, 0.5 * std])
    p = vsbc_probabilities(truth, loc, scale)
    _, pvalue = vsbc_test(p)
    assert pvalue[0] < 1e-3 and np.median(p[:, 0]) > 0.6
    assert pvalue[1] < 1e-3 and np.median(p[:, 1]) < 0.4
    assert pvalue[2] > 0.05
    assert stats.kstest(p[:, 2], "uniform").pvalue < 1e-3   # not calibrated, yet symmetric


# --------------------------------------------------------------------------- eight schools


def scipy_eight_schools(mu, tau, theta, y=EIGHT_SCHOOLS_Y, sigma=EIGHT_SCHOOLS_SIGMA):
    """log p(y, mu, tau, theta) from scipy.stats, on the natural (constrained) scale."""
    return (stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5)
            + stats.norm.logpdf(theta, mu, tau).sum() + stats.norm.logpdf(y, theta, sigma).sum())


def test_eight_schools_log_joint_matches_scipy_in_both_parameterisations():
    rng = np.random.default_rng(0)
    centred = eight_schools_log_joint(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, centered=True)
    non_centred = eight_schools_log_joint(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, centered=False)
    points = rng.normal(size=(20, 10)) * 2
    eta = points[:, 2:]
    theta = points[:, :1] + np.exp(points[:, 1:2]) * eta
    z_centred = np.column_stack([points[:, :2], theta])
    got_c = centred(torch.from_numpy(z_centred)).numpy()
    got_nc = non_centred(torch.from_numpy(points)).numpy()
    for i in range(20):
        mu, log_tau = points[i, 0], points[i, 1]
        natural = scipy_eight_schools(mu, np.exp(log_tau), theta[i])
        # Jacobians: tau = exp(log tau) gives log tau; theta = mu + tau eta gives 8 log tau.
        assert got_c[i] == pytest.approx(natural + log_tau, rel=1e-12)
        assert got_nc[i] == pytest.approx(natural + log_tau + 8 * log_tau, rel=1e-12)


def test_eight_schools_log_joint_of_a_batch_is_the_sum_over_data_sets():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 10, size=(3, 8))
    batch = eight_schools_log_joint(y, EIGHT_SCHOOLS_SIGMA, centered=True)
    z = torch.from_numpy(rng.normal(size=(5, 30)))
    singles = sum(eight_schools_log_joint(y[m], EIGHT_SCHOOLS_SIGMA, centered=True)(
        z[:, 10 * m:10 * (m + 1)]) for m in range(3))
    torch.testing.assert_close(batch(z), singles, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------- bad input


def bad_log_weights():
    """Every kind of bad 1-D log-weight array: wrong types and shapes, NaN, +inf, too few,
    all zero weights. (A -inf entry alone is a valid zero weight.)"""
    def with_bad_entry(args):
        values, index, bad = args
        out = np.asarray(values, dtype=float)
        out[index % out.size] = bad
        return out

    return st.one_of(
        not_numbers(),
        wrong_ndim_arrays(1),
        meta_tensors((30,)),
        st.just(np.full(30, 1 + 1j)),
        st.just(np.ones(30, dtype=bool)),
        st.just(np.empty(0)),
        st.just(np.zeros(diagnostics.MIN_PSIS_SAMPLES - 1)),
        st.just(np.full(30, -np.inf)),
        st.tuples(st.lists(st.floats(-10, 10), min_size=30, max_size=60), st.integers(0, 10**6),
                  st.sampled_from([np.nan, np.inf])).map(with_bad_entry),
    )


@settings(max_examples=60, deadline=None)
@given(bad=bad_log_weights())
def test_psis_and_effective_sample_size_reject_bad_log_weights(bad):
    assert_rejects(lambda: psis(bad), "log_weights")
    too_few = isinstance(bad, np.ndarray) and bad.ndim == 1 and 0 < bad.size < 21 \
        and np.isfinite(bad).all()
    if not too_few:   # any positive number of weights has an effective sample size
        assert_rejects(lambda: effective_sample_size(bad), "log_weights")


def test_psis_rejects_tied_weights_with_no_tail():
    assert_rejects(lambda: psis(np.r_[np.zeros(100), 1.0, 1.0]), "log_weights")


def test_psis_of_constant_weights_is_uniform_with_no_tail():
    """q proportional to the target: every weight equal (zero weights aside), k-hat = -inf."""
    smoothed, k_hat = psis(np.r_[np.full(40, 3.5), -np.inf])
    assert k_hat == -np.inf
    np.testing.assert_allclose(np.exp(smoothed[:40]), 1 / 40, rtol=1e-13)
    assert smoothed[40] == -np.inf


def good_q():
    return torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                  torch.eye(2, dtype=torch.float64))


def standard_log_joint(z):
    return -0.5 * (z**2).sum(-1)


@settings(max_examples=30, deadline=None)
@given(bad=bad_callables(expected_rows=True))
def test_importance_functions_reject_bad_log_joints(bad):
    assert_rejects(lambda: importance_sample(bad, good_q(), 30), "log_joint")
    assert_rejects(lambda: importance_log_evidence(bad, good_q(), 30), "log_joint")


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(not_numbers(), st.just(torch.distributions.Normal(torch.zeros(3), 1.0)),
                     st.just(np.zeros(2))))
def test_importance_functions_reject_bad_proposals(bad):
    assert_rejects(lambda: importance_sample(standard_log_joint, bad, 30), "q")
    assert_rejects(lambda: importance_log_evidence(standard_log_joint, bad, 30), "q")


@settings(max_examples=40, deadline=None)
@given(bad=bad_ints(minimum=1))
def test_importance_functions_reject_bad_sample_counts(bad):
    assert_rejects(lambda: importance_sample(standard_log_joint, good_q(), bad), "num_samples")
    assert_rejects(lambda: importance_log_evidence(standard_log_joint, good_q(), bad),
                   "num_samples")


def test_importance_functions_reject_too_few_or_too_many_draws():
    assert_rejects(lambda: importance_log_evidence(standard_log_joint, good_q(), 20), "num_samples")
    assert_rejects(lambda: importance_sample(standard_log_joint, good_q(), 2**27), "num_samples")


@settings(max_examples=20, deadline=None)
@given(bad=not_numbers().filter(lambda v: v is not None))
def test_importance_functions_reject_bad_generators(bad):
    assert_rejects(lambda: importance_sample(standard_log_joint, good_q(), 30, generator=bad),
                   "generator")


def test_importance_log_evidence_rejects_a_target_with_no_mass_under_q():
    def nowhere(z):
        return torch.full((z.shape[0],), -torch.inf, dtype=torch.float64)
    assert_rejects(lambda: importance_log_evidence(nowhere, good_q(), 30), "log_joint")


@settings(max_examples=40, deadline=None)
@given(bad=bad_arrays(shape=(4, 2)), which=st.sampled_from(["true_values", "loc", "scale"]))
def test_vsbc_probabilities_rejects_bad_arrays(bad, which):
    args = {"true_values": np.zeros((4, 2)), "loc": np.zeros((4, 2)), "scale": np.ones((4, 2))}
    args[which] = bad
    assert_rejects(lambda: vsbc_probabilities(**args), which)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(bad_arrays(shape=(4, 2)), st.just(np.full((4, 2), 1.5)),
                     st.just(np.full((1, 2), 0.3)), st.just(np.full((4, 2), 0.5))))
def test_vsbc_test_rejects_bad_probabilities(bad):
    assert_rejects(lambda: vsbc_test(bad), "probabilities")


def test_vsbc_probabilities_rejects_non_positive_scales_and_mismatched_shapes():
    assert_rejects(lambda: vsbc_probabilities(np.zeros((3, 2)), np.zeros((3, 2)),
                                              np.zeros((3, 2))), "scale")
    assert_rejects(lambda: vsbc_probabilities(np.zeros((3, 2)), np.zeros((2, 2)),
                                              np.ones((3, 2))), "loc")


@settings(max_examples=30, deadline=None)
@given(bad=bad_arrays(shape=(2,)))
def test_nuts_rejects_bad_starting_points(bad):
    assert_rejects(lambda: nuts(standard_log_joint, bad, num_samples=10, warmup_steps=10, seed=0),
                   "init")


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from([("num_samples", 2), ("warmup_steps", 1), ("seed", 0),
                             ("max_tree_depth", 1)]).flatmap(
    lambda case: st.tuples(st.just(case[0]), bad_ints(minimum=case[1]))))
def test_nuts_rejects_bad_integers(case):
    which, bad = case
    if which == "seed" and type(bad) is int and 0 <= bad <= 2**63 - 1:
        bad = 2**63   # a large integer that is still a valid torch seed is not bad
    args = dict(num_samples=10, warmup_steps=10, seed=0, max_tree_depth=5)
    args[which] = bad
    assert_rejects(lambda: nuts(standard_log_joint, np.zeros(2), **args), which)


@settings(max_examples=20, deadline=None)
@given(bad=st.one_of(bad_scalars(), st.sampled_from([0.0, 1.0, -0.5, 1.5])))
def test_nuts_rejects_bad_acceptance_targets(bad):
    assert_rejects(lambda: nuts(standard_log_joint, np.zeros(2), num_samples=10, warmup_steps=10,
                                seed=0, target_accept_prob=bad), "target_accept_prob")


@settings(max_examples=20, deadline=None)
@given(bad=bad_callables(expected_rows=True))
def test_nuts_rejects_bad_log_joints(bad):
    assert_rejects(lambda: nuts(bad, np.zeros(2), num_samples=10, warmup_steps=10, seed=0),
                   "log_joint")


@settings(max_examples=30, deadline=None)
@given(bad=bad_arrays(shape=(8,)), which=st.sampled_from(["y", "sigma"]))
def test_eight_schools_log_joint_rejects_bad_data(bad, which):
    args = {"y": EIGHT_SCHOOLS_Y, "sigma": EIGHT_SCHOOLS_SIGMA}
    args[which] = bad
    assert_rejects(lambda: eight_schools_log_joint(**args, centered=True), which)


def test_eight_schools_log_joint_rejects_mismatched_lengths_and_bad_flags():
    assert_rejects(lambda: eight_schools_log_joint(np.zeros(8), np.ones(7), centered=True), "sigma")
    assert_rejects(lambda: eight_schools_log_joint(np.zeros(8), -np.ones(8), centered=True), "sigma")
    for bad in [1, "yes", None]:
        assert_rejects(lambda bad=bad: eight_schools_log_joint(np.zeros(8), np.ones(8),
                                                               centered=bad), "centered")
