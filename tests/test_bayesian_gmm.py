"""Tests of vicourse.cavi.bayesian_gmm, Bishop's variational Gaussian mixture (Chapters 3 and 8).

Against scikit-learn's BayesianGaussianMixture from the same start, against a
Monte Carlo estimate of the ELBO from torch.distributions densities, and on
extreme inputs (identical points, a far outlier, more dimensions than points,
data offset by 1e8).  The stochastic fit of the same model is tested in
tests/test_svi.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from bad_inputs import assert_rejects, bad_arrays, bad_ints, bad_scalars, for_optional, huge_ints
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.mixture import BayesianGaussianMixture

from vicourse import ConvergenceWarning, _random, _vbgmm, cavi


def assert_never_decreases(elbos, rtol=1e-12):
    """Each sweep's ELBO is at least the previous one, up to rounding."""
    elbos = np.asarray(elbos)
    slack = rtol * np.maximum(1.0, np.abs(elbos[:-1]))
    assert np.all(np.diff(elbos) >= -slack), np.diff(elbos).min()


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


def _sklearn_fit(X, resp_init, priors, n_iter, *, covariance_prior=None):
    """scikit-learn's BayesianGaussianMixture from the same priors and responsibilities.

    scikit-learn initialises by computing responsibilities (k-means, random, ...)
    and passing them to ``_initialize``, which runs one M-step; then each of its
    ``max_iter`` iterations is an E-step, an M-step and the bound.  Replacing
    ``_initialize_parameters`` on the instance hands it ``resp_init`` instead,
    so its iteration t is our sweep t.  reg_covar=0 (scikit-learn's floor is added to
    every scatter matrix; ours floors the default W0^-1 only); tol=0 runs
    exactly ``n_iter`` iterations.  ``priors`` may leave out any of alpha0,
    beta0, m0, nu0 (scikit-learn's defaults, which are ours) and give
    ``covariance_prior`` = W0^-1 instead of W0.  Mapping:
    weight_concentration_prior = alpha0, mean_precision_prior = beta0,
    mean_prior = m0, covariance_prior = W0^-1, degrees_of_freedom_prior = nu0;
    and back: alpha = weight_concentration_, beta = mean_precision_,
    m = means_, nu = degrees_of_freedom_, W = precisions_ / nu (scikit-learn
    stores covariances_ = W^-1 / nu).
    """
    if covariance_prior is None and "W0" in priors:
        covariance_prior = np.linalg.inv(priors["W0"])
    model = BayesianGaussianMixture(
        n_components=resp_init.shape[1], covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=priors.get("alpha0"), mean_precision_prior=priors.get("beta0"),
        mean_prior=priors.get("m0"), covariance_prior=covariance_prior,
        degrees_of_freedom_prior=priors.get("nu0"), reg_covar=0.0, tol=0.0, max_iter=n_iter)
    model._initialize_parameters = lambda X, random_state, xp=None: model._initialize(X, resp_init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    return model


def assert_same_fit(ours, sk, rtol=1e-6):
    """Our fit and scikit-learn's have the same parameters (see _sklearn_fit for the mapping)."""
    np.testing.assert_allclose(ours.alpha, sk.weight_concentration_, rtol=rtol)
    np.testing.assert_allclose(ours.beta, sk.mean_precision_, rtol=rtol)
    np.testing.assert_allclose(ours.m, sk.means_, rtol=rtol, atol=rtol * np.abs(sk.means_).max())
    np.testing.assert_allclose(ours.nu, sk.degrees_of_freedom_, rtol=rtol)
    W_sk = sk.precisions_ / sk.degrees_of_freedom_[:, None, None]
    np.testing.assert_allclose(ours.W, W_sk, rtol=rtol, atol=rtol * np.abs(W_sk).max())


def _random_resp(n, K, seed):
    return np.random.default_rng(seed).dirichlet(np.ones(K), size=n)


# ---------------------------------------------------------------------------
# the updates and the bound, against scikit-learn and Monte Carlo
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_entries", [_vbgmm._BLOCK_ENTRIES, 5 * 3 * 7])
def test_bayesian_gmm_matches_sklearn_from_the_same_start(monkeypatch, block_entries):
    # the second case processes the data in blocks of 7 rows
    monkeypatch.setattr(_vbgmm, "_BLOCK_ENTRIES", block_entries)
    X = _mixture_data()
    K, n_iter = 5, 15
    resp_init = _random_resp(X.shape[0], K, seed=1)
    priors = _priors(X, K)
    ours = cavi.bayesian_gmm(X, resp_init, **priors, max_iter=n_iter, tol=0)
    sk = _sklearn_fit(X, resp_init, priors, n_iter)
    assert ours.n_iter == sk.n_iter_ == n_iter
    assert_same_fit(ours, sk)
    np.testing.assert_allclose(ours.covariances, sk.covariances_, rtol=1e-6)
    np.testing.assert_allclose(ours.weights, sk.weights_, rtol=1e-6)
    # scikit-learn's bound drops constants: the two differ by the same number at every iteration
    offset = ours.elbos - np.asarray(sk.lower_bounds_)
    assert np.ptp(offset) < 1e-8 * np.abs(ours.elbos).max()


def test_bayesian_gmm_default_prior_is_sklearns():
    # with reg_covar=0 the default W0 is the inverse sample covariance, scikit-learn's default
    X = _mixture_data(n=120, d=2, seed=8)
    resp_init = _random_resp(X.shape[0], 4, seed=9)
    ours = cavi.bayesian_gmm(X, resp_init, reg_covar=0.0, max_iter=5, tol=0)
    sk = _sklearn_fit(X, resp_init, {}, 5)
    assert_same_fit(ours, sk)
    assert ours.alpha0 == sk.weight_concentration_prior_ and ours.beta0 == sk.mean_precision_prior_
    assert ours.nu0 == sk.degrees_of_freedom_prior_
    np.testing.assert_allclose(ours.m0, sk.mean_prior_, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(ours.W0), sk.covariance_prior_, rtol=1e-10)


def test_bayesian_gmm_elbo_never_decreases():
    X = _mixture_data(seed=4)
    result = cavi.bayesian_gmm(X, _random_resp(X.shape[0], 6, seed=2), alpha0=1e-3, max_iter=60, tol=0)
    assert_never_decreases(result.elbos)
    np.testing.assert_allclose(result.resp.sum(axis=1), 1.0, atol=1e-12)


def test_bayesian_gmm_elbo_matches_monte_carlo_with_torch_densities():
    # Draw (pi, mu, Lambda) from q with torch.distributions and average
    # E_q(Z)[log p(X, Z, pi, mu, Lambda)] - log q(Z) - log q(pi, mu, Lambda); q(Z) is summed exactly.
    X = _mixture_data(n=40, d=2, seed=5)
    K = 3
    resp_init = np.random.default_rng(3).dirichlet(np.ones(K), size=X.shape[0])
    priors = _priors(X, K)
    fit = cavi.bayesian_gmm(X, resp_init, **priors, max_iter=2, tol=0)
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
    fit = cavi.bayesian_gmm(X, _random_resp(X.shape[0], 8, seed=4), alpha0=1e-3, max_iter=500, tol=1e-6)
    assert fit.converged
    # three clusters generated the data; the other components keep almost no weight
    assert np.sum(fit.weights > 0.01) == 3
    assert np.isclose(fit.weights.sum(), 1.0)


# ---------------------------------------------------------------------------
# the loop: tolerance per data point, warnings
# ---------------------------------------------------------------------------


def test_bayesian_gmm_tol_is_per_data_point():
    X = _blobs(n_per=50, seed=1)
    n = X.shape[0]
    resp_init = _random_resp(n, 4, seed=5)
    full = cavi.bayesian_gmm(X, resp_init, max_iter=200, tol=0)
    tol = 1e-4
    stopped = cavi.bayesian_gmm(X, resp_init, max_iter=200, tol=tol)
    first = 1 + int(np.argmax(np.abs(np.diff(full.elbos)) < tol * n))     # first sweep with a small change
    assert stopped.converged and stopped.n_iter == first + 1
    np.testing.assert_allclose(stopped.elbos, full.elbos[:first + 1], rtol=1e-12)


def test_bayesian_gmm_warns_when_it_does_not_converge_and_not_with_tol_zero():
    X = _blobs(n_per=50, seed=1)
    resp_init = _random_resp(X.shape[0], 4, seed=5)
    with pytest.warns(ConvergenceWarning, match=r"bayesian_gmm: CAVI did not converge in max_iter=2"):
        fit = cavi.bayesian_gmm(X, resp_init, max_iter=2, tol=1e-12)
    assert not fit.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cavi.bayesian_gmm(X, resp_init, max_iter=2, tol=0)


def test_bayesian_gmm_warns_when_the_elbo_decreases(monkeypatch):
    # A wrong update (here: every other parameter update moves the means away) lowers the
    # ELBO; CAVI never does, so the fit must say so.
    X = _blobs(n_per=50, seed=1)
    calls = []
    m_step = _vbgmm.m_step

    def wrong_m_step(prior, stats):
        params = m_step(prior, stats)
        calls.append(None)
        if len(calls) % 2:
            return params
        return _vbgmm.Params(**{**params.__dict__, "m": params.m + 0.5})

    monkeypatch.setattr(_vbgmm, "m_step", wrong_m_step)
    with pytest.warns(ConvergenceWarning, match=r"the ELBO decreased at \d+ of 5 sweeps beyond rounding"):
        cavi.bayesian_gmm(X, _random_resp(X.shape[0], 3, seed=0), max_iter=6, tol=0)


# ---------------------------------------------------------------------------
# extreme inputs: the right answer, not just a finite one
# ---------------------------------------------------------------------------


def test_bayesian_gmm_on_identical_points_with_the_default_prior():
    # The sample covariance is zero; the default W0^-1 is floored at reg_covar I (it used to
    # raise LinAlgError).  The answer is the model's with that prior: scikit-learn's.
    X = np.tile([2.0, -1.0], (30, 1))
    resp_init = _random_resp(30, 3, seed=2)
    ours = cavi.bayesian_gmm(X, resp_init, max_iter=10, tol=0)
    sk = _sklearn_fit(X, resp_init, {}, 10, covariance_prior=1e-6 * np.eye(2))
    assert_same_fit(ours, sk)
    np.testing.assert_allclose(ours.m, np.tile([2.0, -1.0], (3, 1)), rtol=1e-12)


def test_bayesian_gmm_with_more_dimensions_than_points():
    # d >= n: the sample covariance is singular.  The default prior is floored as above; with
    # reg_covar=0 the error says why the default W0 does not exist, instead of blaming a W0
    # that was never passed.
    X = np.random.default_rng(3).normal(size=(5, 8))
    resp_init = _random_resp(5, 2, seed=3)
    ours = cavi.bayesian_gmm(X, resp_init, max_iter=5, tol=0)
    floor = np.cov(X.T) + 1e-6 * np.eye(8)
    assert_same_fit(ours, _sklearn_fit(X, resp_init, {}, 5, covariance_prior=floor), rtol=1e-5)
    with pytest.raises(ValueError, match=r"the default W0.* does not exist: the 5 points of X span "
                                         r"fewer than d = 8 dimensions .* Pass W0, or reg_covar > 0"):
        cavi.bayesian_gmm(X, resp_init, reg_covar=0.0)


@pytest.mark.parametrize("W0", [None, np.eye(2)])
def test_bayesian_gmm_with_a_far_outlier_converges_at_a_tight_tol(W0):
    # A point 1e7 away gets a component of its own whose W_k^-1 has a condition number near
    # 1e14: its bound is known only to ~1e-2 nats, and from sweep to sweep it jitters by that
    # much.  The fit used to run to max_iter at a tight tol, and its raw-moment scatter lost
    # the other points' spread; it now stops once the change is within the bound's rounding,
    # and agrees with scikit-learn (which centres every component's scatter).
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 2)) + [3, 0], rng.normal(size=(300, 2)) - [3, 0],
                        [[1e7, 1e7]]])
    resp_init = _random_resp(X.shape[0], 3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no decrease, no convergence warning
        ours = cavi.bayesian_gmm(X, resp_init, W0=W0, max_iter=500, tol=1e-10)
    assert ours.converged and ours.n_iter < 500
    sk = _sklearn_fit(X, resp_init, {} if W0 is None else {"W0": W0}, ours.n_iter)
    np.testing.assert_allclose(ours.weights, sk.weights_, rtol=1e-6)
    np.testing.assert_allclose(ours.m, sk.means_, rtol=1e-6)
    # the outlier sits alone in its own component
    assert (ours.resp.argmax(axis=1) == ours.resp[-1].argmax()).sum() == 1


def test_bayesian_gmm_is_translation_equivariant_for_data_offset_by_1e8():
    X = _mixture_data(n=200, d=2, seed=2)
    resp_init = _random_resp(200, 3, seed=6)
    near = cavi.bayesian_gmm(X, resp_init, max_iter=20, tol=0)
    far = cavi.bayesian_gmm(X + 1e8, resp_init, max_iter=20, tol=0)
    # 1e8 + x keeps x to ~1e-8 absolute: the fits agree to that precision
    np.testing.assert_allclose(far.m - 1e8, near.m, atol=1e-6)
    np.testing.assert_allclose(far.W, near.W, rtol=1e-6)
    np.testing.assert_allclose(far.alpha, near.alpha, rtol=1e-6)
    np.testing.assert_allclose(far.elbos, near.elbos, rtol=1e-8)


# ---------------------------------------------------------------------------
# bad input: a ValueError naming the argument, one property per kind of argument
# ---------------------------------------------------------------------------

N, D, K = 10, 2, 3
_X = np.random.default_rng(0).normal(size=(N, D))
_RESP = np.full((N, K), 1.0 / K)


def _call(**change):
    args = dict(X=_X, resp_init=_RESP) | change
    return cavi.bayesian_gmm(args.pop("X"), args.pop("resp_init"), max_iter=2, **args)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays((N, D)), st.just(np.ones((1, D)))))
def test_bayesian_gmm_rejects_bad_data(bad):
    assert_rejects(lambda: _call(X=bad), "X", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_arrays((N, K)), st.just(np.full((N, K), 0.5)), st.just(np.full((N - 1, K), 1 / K)),
                     st.just(np.tile([1.5, -0.5, 0.0], (N, 1))), st.just(np.full(N, 1.0))))
def test_bayesian_gmm_rejects_bad_responsibilities(bad):
    assert_rejects(lambda: _call(resp_init=bad), "resp_init", exceptions=ValueError)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["alpha0", "beta0", "nu0"]), bad=for_optional(bad_scalars(positive=True)))
def test_bayesian_gmm_rejects_bad_positive_scalars(name, bad):
    assert_rejects(lambda: _call(**{name: bad}), name, exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=for_optional(st.one_of(bad_scalars(), st.floats(-1e6, -1e-300), st.floats(-1e300, D - 1.0))))
def test_bayesian_gmm_rejects_nu0_at_most_d_minus_one_and_negative_tolerances(bad):
    assert_rejects(lambda: _call(nu0=bad), "nu0", exceptions=ValueError)
    if not isinstance(bad, float) or bad < 0:
        assert_rejects(lambda: _call(tol=bad), "tol", exceptions=ValueError)
        assert_rejects(lambda: _call(reg_covar=bad), "reg_covar", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=for_optional(st.one_of(bad_arrays((D,)), st.just(np.zeros(D + 1)))))
def test_bayesian_gmm_rejects_bad_prior_means(bad):
    assert_rejects(lambda: _call(m0=bad), "m0", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=for_optional(st.one_of(bad_arrays((D, D)), st.just(np.eye(D + 1)), st.just(-np.eye(D)),
                               st.just(np.eye(D)[None]),
                               st.just(np.array([[1.0, 2.0], [2.0, 1.0]])),
                               st.just(np.array([[1.0, 0.5], [0.0, 1.0]])))))
def test_bayesian_gmm_rejects_bad_scale_matrices(bad):
    assert_rejects(lambda: _call(W0=bad), "W0", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(bad_ints(), huge_ints()))
def test_bayesian_gmm_rejects_bad_sweep_counts(bad):
    assert_rejects(lambda: cavi.bayesian_gmm(_X, _RESP, max_iter=bad), "max_iter", exceptions=ValueError)
