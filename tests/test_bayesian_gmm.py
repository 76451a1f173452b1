"""Tests of vicourse.cavi.bayesian_gmm (Chapter 3): the variational Gaussian mixture of Bishop (2006),
Section 10.2, against scikit-learn and Monte Carlo."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.mixture import BayesianGaussianMixture

from vicourse import _random, cavi


def assert_never_decreases(elbos, rtol=1e-12):
    """Each sweep's ELBO is at least the previous one, up to rounding."""
    elbos = np.asarray(elbos)
    slack = rtol * np.maximum(1.0, np.abs(elbos[:-1]))
    assert np.all(np.diff(elbos) >= -slack), np.diff(elbos).min()


def fit_quietly(fn, *args, **kwargs):
    """Run a fit with tol=0 (a fixed number of sweeps) without its non-convergence warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _blobs(n_per=60, seed=0):
    """Three well-separated round clusters in 2-D."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, -2.0]])
    return np.concatenate([rng.normal(size=(n_per, 2)) + mu for mu in centres])


def _mixture_data(n=300, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, d))
    labels = rng.integers(0, 3, size=n)
    return centres[labels] + rng.normal(size=(n, d)) @ np.diag(rng.uniform(0.5, 1.5, d))


def _priors(X, K):
    d = X.shape[1]
    return dict(alpha0=0.05, beta0=0.7, m0=np.full(d, 0.3),
                W0=np.linalg.inv(1.5 * np.cov(X.T) + 0.2 * np.eye(d)), nu0=d + 0.5)


def _sklearn_fit(X, resp_init, priors, n_iter):
    """scikit-learn's BayesianGaussianMixture from the same priors and responsibilities.

    scikit-learn initialises by computing responsibilities (k-means, random, ...)
    and passing them to ``_initialize``, which runs one M-step; then each of its
    ``max_iter`` iterations is an E-step, an M-step and the bound.  Replacing
    ``_initialize_parameters`` on the instance hands it ``resp_init`` instead,
    so its iteration t is our sweep t.  reg_covar=0 (ours adds nothing to the
    scatter matrices); tol=0 runs exactly ``n_iter`` iterations.  Mapping:
    weight_concentration_prior = alpha0, mean_precision_prior = beta0,
    mean_prior = m0, covariance_prior = W0^-1, degrees_of_freedom_prior = nu0;
    and back: alpha = weight_concentration_, beta = mean_precision_,
    m = means_, nu = degrees_of_freedom_, W = precisions_ / nu (scikit-learn
    stores covariances_ = W^-1 / nu).
    """
    model = BayesianGaussianMixture(
        n_components=resp_init.shape[1], covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=priors["alpha0"], mean_precision_prior=priors["beta0"],
        mean_prior=priors["m0"], covariance_prior=np.linalg.inv(priors["W0"]),
        degrees_of_freedom_prior=priors["nu0"], reg_covar=0.0, tol=0.0, max_iter=n_iter)
    model._initialize_parameters = lambda X, random_state, xp=None: model._initialize(X, resp_init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    return model


@pytest.mark.parametrize("blockwise", [False, True])
def test_bayesian_gmm_matches_sklearn_from_the_same_start(monkeypatch, blockwise):
    if blockwise:  # force the data products to be formed block by block
        monkeypatch.setattr(cavi, "_FEATURE_BUDGET", 6 * 50)
    X = _mixture_data()
    K, n_iter = 5, 15
    resp_init = np.random.default_rng(1).dirichlet(np.ones(K), size=X.shape[0])
    priors = _priors(X, K)
    ours = fit_quietly(cavi.bayesian_gmm, X, resp_init, **priors, max_iter=n_iter, tol=0)
    sk = _sklearn_fit(X, resp_init, priors, n_iter)
    assert ours.n_iter == sk.n_iter_ == n_iter
    rtol = 1e-6
    np.testing.assert_allclose(ours.alpha, sk.weight_concentration_, rtol=rtol)
    np.testing.assert_allclose(ours.beta, sk.mean_precision_, rtol=rtol)
    np.testing.assert_allclose(ours.m, sk.means_, rtol=rtol)
    np.testing.assert_allclose(ours.nu, sk.degrees_of_freedom_, rtol=rtol)
    np.testing.assert_allclose(ours.W, sk.precisions_ / sk.degrees_of_freedom_[:, None, None],
                               rtol=rtol, atol=rtol * np.abs(ours.W).max())
    # scikit-learn's bound drops constants: the two differ by the same number at every iteration
    offset = ours.elbos - np.asarray(sk.lower_bounds_)
    assert np.ptp(offset) < 1e-8 * np.abs(ours.elbos).max()


def test_bayesian_gmm_elbo_never_decreases():
    X = _mixture_data(seed=4)
    resp_init = np.random.default_rng(2).dirichlet(np.ones(6), size=X.shape[0])
    result = fit_quietly(cavi.bayesian_gmm, X, resp_init, alpha0=1e-3, max_iter=60, tol=0)
    assert_never_decreases(result.elbos)
    np.testing.assert_allclose(result.resp.sum(axis=1), 1.0, atol=1e-12)


def test_bayesian_gmm_elbo_matches_monte_carlo_with_torch_densities():
    # Draw (pi, mu, Lambda) from q with torch.distributions and average
    # E_q(Z)[log p(X, Z, pi, mu, Lambda)] - log q(Z) - log q(pi, mu, Lambda); q(Z) is summed exactly.
    X = _mixture_data(n=40, d=2, seed=5)
    K = 3
    resp_init = np.random.default_rng(3).dirichlet(np.ones(K), size=X.shape[0])
    priors = _priors(X, K)
    fit = fit_quietly(cavi.bayesian_gmm, X, resp_init, **priors, max_iter=2, tol=0)
    D = torch.distributions
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    S = 4000
    q_pi = D.Dirichlet(t(fit.alpha))
    q_lam = D.Wishart(t(fit.nu), covariance_matrix=t(fit.W))
    pi = _random.sample(q_pi, (S,), gen)                                        # (S, K)
    # Wishart draws from scipy (torch 2.13's Wishart.rsample warns on every batch: its singularity
    # check is inverted); their log densities from torch below.
    rng = np.random.default_rng(0)
    lam = t(np.stack([stats.wishart(df=nu, scale=W).rvs(size=S, random_state=rng)
                      for nu, W in zip(fit.nu, fit.W, strict=True)], axis=1))      # (S, K, d, d)
    q_mu = D.MultivariateNormal(t(fit.m), precision_matrix=t(fit.beta)[:, None, None] * lam)
    mu = _random.sample(q_mu, (), gen)                                          # (S, K, d)
    p_pi = D.Dirichlet(torch.full((K,), priors["alpha0"], dtype=torch.float64))
    p_lam = D.Wishart(t(priors["nu0"]), covariance_matrix=t(priors["W0"]))
    p_mu = D.MultivariateNormal(t(priors["m0"]), precision_matrix=priors["beta0"] * lam)
    lik = D.MultivariateNormal(mu[:, None], precision_matrix=lam[:, None])      # batch (S, 1, K)
    log_lik = lik.log_prob(t(X)[None, :, None, :])                               # (S, n, K)
    r = t(fit.resp)
    over_z = (r * (torch.log(pi)[:, None, :] + log_lik - torch.log(r))).sum(dim=(1, 2))
    terms = (over_z + p_pi.log_prob(pi) + p_lam.log_prob(lam).sum(-1) + p_mu.log_prob(mu).sum(-1)
             - q_pi.log_prob(pi) - q_lam.log_prob(lam).sum(-1) - q_mu.log_prob(mu).sum(-1)).numpy()
    # As for gmm, q(pi, mu, Lambda) was just set optimal given resp, so the terms are nearly
    # constant; the tolerance is 4 standard errors plus rounding.
    se = terms.std(ddof=1) / np.sqrt(S)
    assert abs(terms.mean() - fit.elbos[-1]) < 4 * se + 1e-10 * abs(fit.elbos[-1])
    # ... and that near-constancy checks the parameter update (10.58)-(10.63) itself.
    assert terms.std(ddof=1) < 1e-10 * abs(fit.elbos[-1])


def test_bayesian_gmm_switches_off_components_it_does_not_need():
    X = _blobs(n_per=100, seed=6)
    resp_init = np.random.default_rng(4).dirichlet(np.ones(8), size=X.shape[0])
    fit = cavi.bayesian_gmm(X, resp_init, alpha0=1e-3, max_iter=500, tol=1e-6)
    assert fit.converged
    # three clusters generated the data; the other components keep almost no weight
    assert np.sum(fit.weights > 0.01) == 3
    assert np.isclose(fit.weights.sum(), 1.0)


def test_bayesian_gmm_defaults_are_sklearns():
    X = _mixture_data(n=120, d=2, seed=8)
    K = 4
    resp_init = np.random.default_rng(9).dirichlet(np.ones(K), size=X.shape[0])
    ours = fit_quietly(cavi.bayesian_gmm, X, resp_init, max_iter=5, tol=0)
    sk = BayesianGaussianMixture(n_components=K, weight_concentration_prior_type="dirichlet_distribution",
                                 reg_covar=0.0, tol=0.0, max_iter=5)
    sk._initialize_parameters = lambda X, random_state, xp=None: sk._initialize(X, resp_init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
    np.testing.assert_allclose(ours.m, sk.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.alpha, sk.weight_concentration_, rtol=1e-6)


@pytest.mark.parametrize("change, name", [
    (dict(X=np.array([[0.0, np.inf]] * 10)), "X"),
    (dict(resp_init=np.full((10, 3), 0.5)), "resp_init"),
    (dict(resp_init=np.full((9, 2), 0.5)), "resp_init"),
    (dict(resp_init=np.array([[1.5, -0.5]] * 10)), "resp_init"),
    (dict(alpha0=0.0), "alpha0"), (dict(beta0=-1.0), "beta0"),
    (dict(m0=np.zeros(3)), "m0"), (dict(W0=np.array([[1.0, 2.0], [2.0, 1.0]])), "W0"),
    (dict(W0=np.eye(3)), "W0"), (dict(nu0=1.0), "nu0"), (dict(nu0=0.5), "nu0"),
    (dict(max_iter=0), "max_iter"), (dict(tol=-1e-3), "tol"),
])
def test_bayesian_gmm_rejects_bad_input(change, name):
    rng = np.random.default_rng(0)
    args = dict(X=rng.normal(size=(10, 2)), resp_init=np.full((10, 2), 0.5)) | change
    with pytest.raises(ValueError, match=name):
        cavi.bayesian_gmm(args.pop("X"), args.pop("resp_init"), **args)

