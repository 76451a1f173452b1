"""Mean-field variational inference by coordinate ascent, CAVI (Chapter 3).

Each fit maximises the evidence lower bound over a factorised family
:math:`q(z) = \\prod_j q_j(z_j)` by the mean-field update
:math:`\\log q_j^*(z_j) = \\mathbb E_{-j} \\log p(x, z) + \\text{const}`
({eq}`eq-mf-update`), one factor at a time.  Every fit stores the ELBO after
every sweep (``elbos``), *including all constants*, so that it can be compared
with a log evidence, and returns ``n_iter`` and ``converged``.

=========================  ============================================================
function                   model
=========================  ============================================================
:func:`gaussian_2d`        a correlated 2-D Gaussian target (Bishop 2006, Section 10.1.2)
:func:`normal_gamma`       a Gaussian with unknown mean and precision (Section 10.1.3)
:func:`gmm`                the Bayesian mixture of Blei et al. (2017), Section 3
:func:`bayesian_gmm`       the variational Gaussian mixture of Bishop, Section 10.2
=========================  ============================================================

The Normal-Gamma model also has its exact posterior, log evidence and the
ELBO of any member of the factorised family (:func:`normal_gamma_posterior`,
:func:`normal_gamma_log_evidence`, :func:`normal_gamma_elbo`), so that the
chapter can compare CAVI with the exact answer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma, gammaln, logsumexp

from vicourse import _vbgmm
from vicourse._validation import (
    as_float_array,
    as_rng,
    check_int,
    check_scalar,
    check_spd,
)

__all__ = [
    "BayesianGMMFit",
    "GMMResult",
    "Gaussian2DResult",
    "NormalGammaResult",
    "bayesian_gmm",
    "gaussian_2d",
    "gmm",
    "normal_gamma",
    "normal_gamma_elbo",
    "normal_gamma_log_evidence",
    "normal_gamma_posterior",
]

_LOG_2PI = np.log(2.0 * np.pi)


# ----------------------------------------------------------------------------
# Shared piece: the one loop shape of every fit
# ----------------------------------------------------------------------------

def _iterate(sweep, max_iter: int, tol: float, what: str):
    """Call ``sweep()`` (which updates every factor once and returns the ELBO)
    until the ELBO changes by less than ``tol`` or ``max_iter`` sweeps are done.

    Returns ``(elbos, n_iter, converged)``; warns if not converged.
    """
    elbos = []
    converged = False
    for _ in range(max_iter):
        elbos.append(float(sweep()))
        if len(elbos) > 1 and abs(elbos[-1] - elbos[-2]) < tol:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"{what}: CAVI did not converge in max_iter={max_iter} sweeps (last ELBO change "
            f"{elbos[-1] - elbos[-2] if len(elbos) > 1 else float('nan'):.3g}, tol={tol:g}); "
            "increase max_iter or tol, or try another initialisation.",
            UserWarning,
            stacklevel=3,
        )
    return np.asarray(elbos), len(elbos), converged


# ----------------------------------------------------------------------------
# 1. A correlated Gaussian target (Bishop 2006, Section 10.1.2)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Gaussian2DResult:
    """The factorised fit ``q(z1) q(z2)`` of a 2-D Gaussian, returned by :func:`gaussian_2d`.

    Attributes
    ----------
    means : ndarray of shape (2,)
        Means of the two factors.
    variances : ndarray of shape (2,)
        Variances of the two factors, :math:`1 / \\Lambda_{ii}`.
    elbos : ndarray of shape (n_iter,)
        The ELBO after every sweep; the target is normalised, so its log
        evidence is 0 and ``elbos = -KL(q || p)``.
    n_iter : int
    converged : bool
    """

    means: np.ndarray
    variances: np.ndarray
    elbos: np.ndarray
    n_iter: int
    converged: bool


def gaussian_2d(mean, cov, *, init=None, max_iter: int = 100, tol: float = 1e-12) -> Gaussian2DResult:
    r"""CAVI for a factorised Gaussian fit :math:`q(z_1) q(z_2)` of :math:`p(z) = \mathcal N(\mu, \Sigma)`.

    Implements {eq}`eq-mf-gauss-update` of Chapter 3: with
    :math:`\Lambda = \Sigma^{-1}`, the optimal factors are Gaussians

    .. math::

        q^*(z_1) = \mathcal N\big(m_1, \Lambda_{11}^{-1}\big), \qquad
        m_1 = \mu_1 - \Lambda_{11}^{-1} \Lambda_{12} (m_2 - \mu_2),

    and symmetrically for :math:`z_2`; one sweep updates :math:`m_1` then
    :math:`m_2`.  The ELBO is
    :math:`\mathbb E_q \log p(z) + \mathbb H[q] = -\mathrm{KL}(q \,\|\, p)`
    ({eq}`eq-mf-gauss-elbo`), because the target is normalised.

    Parameters
    ----------
    mean : array of shape (2,)
        :math:`\mu`.
    cov : array of shape (2, 2), symmetric positive definite
        :math:`\Sigma`.
    init : array of shape (2,), optional
        Starting means of the factors; default ``(0, 0)``.
    max_iter : int, >= 1
    tol : float, >= 0
        Stop when the ELBO changes by less than ``tol`` in one sweep.

    Returns
    -------
    Gaussian2DResult

    Raises
    ------
    ValueError
        If ``mean`` or ``init`` is not a finite 2-vector, ``cov`` is not
        symmetric positive definite, or ``max_iter``/``tol`` are invalid.

    References
    ----------
    Bishop (2006), Section 10.1.2, equations (10.11)-(10.15).
    """
    mean = as_float_array(mean, "mean", ndim=1)
    if mean.shape != (2,):
        raise ValueError(f"mean must have shape (2,); got {mean.shape}")
    cov = check_spd(cov, "cov", dim=2)
    m = np.zeros(2) if init is None else as_float_array(init, "init", ndim=1).copy()
    if m.shape != (2,):
        raise ValueError(f"init must have shape (2,); got {m.shape}")
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)

    prec = np.linalg.inv(cov)
    variances = 1.0 / np.diag(prec)
    _, logdet_cov = np.linalg.slogdet(cov)

    def sweep():
        m[0] = mean[0] - prec[0, 1] / prec[0, 0] * (m[1] - mean[1])
        m[1] = mean[1] - prec[1, 0] / prec[1, 1] * (m[0] - mean[0])
        diff = m - mean
        # E_q log p(z) = -log|2 pi Sigma|/2 - (tr(Lambda diag v) + diff' Lambda diff) / 2
        expected_log_p = -0.5 * (2 * _LOG_2PI + logdet_cov + prec.diagonal() @ variances
                                 + diff @ prec @ diff)
        entropy = 0.5 * np.sum(_LOG_2PI + 1.0 + np.log(variances))
        return expected_log_p + entropy

    elbos, n_iter, converged = _iterate(sweep, max_iter, tol, "gaussian_2d")
    return Gaussian2DResult(m.copy(), variances, elbos, n_iter, converged)


# ----------------------------------------------------------------------------
# 2. A Gaussian with unknown mean and precision (Bishop 2006, Section 10.1.3)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NormalGammaResult:
    r"""The fit :math:`q(\mu) q(\tau)` returned by :func:`normal_gamma`.

    :math:`q(\mu) = \mathcal N(\mu_N, \lambda_N^{-1})` and
    :math:`q(\tau) = \mathrm{Gam}(a_N, b_N)` (shape, rate), Bishop's
    parameterisation.

    Attributes
    ----------
    mu_n, lambda_n, a_n, b_n : float
    elbos : ndarray of shape (n_iter,)
        The ELBO after every sweep, with every constant, so that it is
        directly comparable with :func:`normal_gamma_log_evidence`.
    n_iter : int
    converged : bool
    path : ndarray of shape (n_iter + 1, 4)
        ``(mu_n, lambda_n, a_n, b_n)`` at the start (row 0) and after every sweep.
    """

    mu_n: float
    lambda_n: float
    a_n: float
    b_n: float
    elbos: np.ndarray
    n_iter: int
    converged: bool
    path: np.ndarray


def _normal_gamma_prior(mu0, lambda0, a0, b0):
    return (check_scalar(mu0, "mu0"), check_scalar(lambda0, "lambda0", positive=True),
            check_scalar(a0, "a0", positive=True), check_scalar(b0, "b0", positive=True))


def _data_1d(x) -> np.ndarray:
    return as_float_array(x, "x", ndim=1)


def normal_gamma_posterior(x, *, mu0, lambda0, a0, b0) -> tuple[float, float, float, float]:
    r"""The exact Normal-Gamma posterior :math:`p(\mu, \tau \mid x)`.

    Implements {eq}`eq-mf-ng-exact` of Chapter 3.  For the model
    :math:`\tau \sim \mathrm{Gam}(a_0, b_0)`,
    :math:`\mu \mid \tau \sim \mathcal N(\mu_0, (\lambda_0 \tau)^{-1})`,
    :math:`x_i \mid \mu, \tau \sim \mathcal N(\mu, \tau^{-1})`, the posterior
    is :math:`\mathcal N(\mu \mid \mu_n, (\lambda_n \tau)^{-1})\,\mathrm{Gam}(\tau \mid a_n, b_n)` with

    .. math::

        \lambda_n = \lambda_0 + n, \quad
        \mu_n = \frac{\lambda_0 \mu_0 + n \bar x}{\lambda_n}, \quad
        a_n = a_0 + \frac n2, \quad
        b_n = b_0 + \frac12 \sum_i (x_i - \bar x)^2
              + \frac{\lambda_0 n (\bar x - \mu_0)^2}{2 \lambda_n}.

    (Here :math:`\lambda_n` multiplies :math:`\tau`; in the mean-field fit
    ``lambda_n`` is the precision of :math:`q(\mu)` itself.)

    Parameters
    ----------
    x : array of shape (n,)
    mu0 : float
    lambda0, a0, b0 : float, > 0

    Returns
    -------
    mu_n, lambda_n, a_n, b_n : float

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array or a prior parameter is invalid.

    References
    ----------
    Bishop (2006), Section 2.3.6 and Exercise 2.44; Murphy (2012), Section 4.6.3.
    """
    x = _data_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    n, xbar = x.size, x.mean()
    lambda_n = lambda0 + n
    mu_n = (lambda0 * mu0 + n * xbar) / lambda_n
    a_n = a0 + 0.5 * n
    b_n = b0 + 0.5 * np.sum((x - xbar) ** 2) + lambda0 * n * (xbar - mu0) ** 2 / (2 * lambda_n)
    return float(mu_n), float(lambda_n), float(a_n), float(b_n)


def normal_gamma_log_evidence(x, *, mu0, lambda0, a0, b0) -> float:
    r"""The exact log evidence :math:`\log p(x)` of the Normal-Gamma model.

    Implements {eq}`eq-mf-ng-evidence` of Chapter 3, the ratio of the prior's
    and the posterior's normalisers:

    .. math::

        \log p(x) = \log\Gamma(a_n) - \log\Gamma(a_0) + a_0 \log b_0 - a_n \log b_n
                    + \tfrac12 \log\frac{\lambda_0}{\lambda_n} - \tfrac n2 \log 2\pi,

    with :math:`a_n, b_n, \lambda_n` from :func:`normal_gamma_posterior`.

    Parameters
    ----------
    x : array of shape (n,)
    mu0 : float
    lambda0, a0, b0 : float, > 0

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`normal_gamma_posterior`.

    References
    ----------
    Murphy (2012), Section 4.6.3.7 (the marginal likelihood of the NIG model).
    """
    _, lambda_n, a_n, b_n = normal_gamma_posterior(x, mu0=mu0, lambda0=lambda0, a0=a0, b0=b0)
    n = np.size(x)
    return float(gammaln(a_n) - gammaln(a0) + a0 * np.log(b0) - a_n * np.log(b_n)
                 + 0.5 * np.log(lambda0 / lambda_n) - 0.5 * n * _LOG_2PI)


def _normal_gamma_elbo(n, xbar, ss, mu_n, lambda_n, a_n, b_n, mu0, lambda0, a0, b0):
    """The ELBO from the data's sufficient statistics (n, mean, sum of squares about the mean)."""
    e_tau = a_n / b_n
    e_log_tau = digamma(a_n) - np.log(b_n)
    # E_q sum_i (x_i - mu)^2 and E_q (mu - mu0)^2
    e_sq_data = ss + n * ((xbar - mu_n) ** 2 + 1.0 / lambda_n)
    e_sq_prior = (mu_n - mu0) ** 2 + 1.0 / lambda_n
    e_log_lik = 0.5 * n * (e_log_tau - _LOG_2PI) - 0.5 * e_tau * e_sq_data
    e_log_p_mu = 0.5 * (np.log(lambda0) + e_log_tau - _LOG_2PI) - 0.5 * lambda0 * e_tau * e_sq_prior
    e_log_p_tau = a0 * np.log(b0) - gammaln(a0) + (a0 - 1.0) * e_log_tau - b0 * e_tau
    entropy_mu = 0.5 * (_LOG_2PI + 1.0 - np.log(lambda_n))
    entropy_tau = a_n - np.log(b_n) + gammaln(a_n) + (1.0 - a_n) * digamma(a_n)
    return e_log_lik + e_log_p_mu + e_log_p_tau + entropy_mu + entropy_tau


def normal_gamma_elbo(x, mu_n, lambda_n, a_n, b_n, *, mu0, lambda0, a0, b0) -> float:
    r"""The ELBO of :math:`q(\mu) q(\tau) = \mathcal N(\mu_N, \lambda_N^{-1})\,\mathrm{Gam}(a_N, b_N)`.

    Implements {eq}`eq-mf-ng-elbo` of Chapter 3, with every constant:

    .. math::

        \mathcal L = \mathbb E_q[\log p(x \mid \mu, \tau) + \log p(\mu \mid \tau)
                     + \log p(\tau)] + \mathbb H[q(\mu)] + \mathbb H[q(\tau)],

    using :math:`\mathbb E[\tau] = a_N / b_N`,
    :math:`\mathbb E[\log \tau] = \psi(a_N) - \log b_N` and
    :math:`\mathbb E[(x_i - \mu)^2] = (x_i - \mu_N)^2 + \lambda_N^{-1}`.

    Parameters
    ----------
    x : array of shape (n,)
    mu_n : float
    lambda_n, a_n, b_n : float, > 0
        The variational parameters (any member of the family, not only the optimum).
    mu0 : float
    lambda0, a0, b0 : float, > 0
        The prior.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array or a parameter is invalid.
    """
    x = _data_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    mu_n = check_scalar(mu_n, "mu_n")
    lambda_n = check_scalar(lambda_n, "lambda_n", positive=True)
    a_n = check_scalar(a_n, "a_n", positive=True)
    b_n = check_scalar(b_n, "b_n", positive=True)
    xbar = x.mean()
    return float(_normal_gamma_elbo(x.size, xbar, np.sum((x - xbar) ** 2), mu_n, lambda_n, a_n, b_n,
                                    mu0, lambda0, a0, b0))


def normal_gamma(x, *, mu0, lambda0, a0, b0, init_precision=None, max_iter: int = 100,
                 tol: float = 1e-10) -> NormalGammaResult:
    r"""CAVI for :math:`q(\mu) q(\tau)` in the Normal-Gamma model.

    Implements {eq}`eq-mf-ng-qmu` and {eq}`eq-mf-ng-qtau` of Chapter 3: each
    sweep sets

    .. math::

        \mu_N = \frac{\lambda_0 \mu_0 + n \bar x}{\lambda_0 + n}, \qquad
        \lambda_N = (\lambda_0 + n)\, \mathbb E[\tau],

    then

    .. math::

        a_N = a_0 + \frac{n + 1}{2}, \qquad
        b_N = b_0 + \frac12 \mathbb E_\mu\Big[\sum_i (x_i - \mu)^2
              + \lambda_0 (\mu - \mu_0)^2\Big],

    and records the ELBO {eq}`eq-mf-ng-elbo`.

    Parameters
    ----------
    x : array of shape (n,)
        The observations.
    mu0 : float
    lambda0, a0, b0 : float, > 0
        The prior :math:`\mathcal N(\mu \mid \mu_0, (\lambda_0\tau)^{-1})\,\mathrm{Gam}(\tau \mid a_0, b_0)`.
    init_precision : float, > 0, optional
        :math:`\mathbb E[\tau]` at the start, before the first update of
        :math:`q(\mu)`; default the reciprocal of the sample variance (or 1
        if the data are constant).  The starting :math:`q(\tau)` recorded in
        ``path[0]`` is :math:`\mathrm{Gam}(a_N, a_N / \text{init\_precision})`
        and the starting :math:`q(\mu)` is :math:`\mathcal N(\mu_0, (\lambda_0
        \,\text{init\_precision})^{-1})`, the prior's conditional.
    max_iter : int, >= 1
    tol : float, >= 0

    Returns
    -------
    NormalGammaResult

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array, a prior parameter is invalid
        (``lambda0``, ``a0``, ``b0`` must be > 0), or ``init_precision``,
        ``max_iter`` or ``tol`` are invalid.

    References
    ----------
    Bishop (2006), Section 10.1.3, equations (10.25)-(10.30).
    """
    x = _data_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    n, xbar = x.size, float(x.mean())
    ss = float(np.sum((x - xbar) ** 2))
    if init_precision is None:
        init_precision = n / ss if ss > 0 else 1.0
    e_tau = check_scalar(init_precision, "init_precision", positive=True)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)

    a_n = a0 + 0.5 * (n + 1)                      # (10.29): fixed from the first sweep on
    mu_n = (lambda0 * mu0 + n * xbar) / (lambda0 + n)   # (10.26): does not depend on q(tau)
    state = {"lambda_n": lambda0 * e_tau, "b_n": a_n / e_tau}
    path = [(mu0, state["lambda_n"], a_n, state["b_n"])]

    def sweep():
        e_tau = a_n / state["b_n"]
        lambda_n = (lambda0 + n) * e_tau                                       # (10.27)
        e_sq = ss + n * ((xbar - mu_n) ** 2 + 1.0 / lambda_n) \
            + lambda0 * ((mu_n - mu0) ** 2 + 1.0 / lambda_n)
        b_n = b0 + 0.5 * e_sq                                                  # (10.30)
        state.update(lambda_n=lambda_n, b_n=b_n)
        path.append((mu_n, lambda_n, a_n, b_n))
        return _normal_gamma_elbo(n, xbar, ss, mu_n, lambda_n, a_n, b_n, mu0, lambda0, a0, b0)

    elbos, n_iter, converged = _iterate(sweep, max_iter, tol, "normal_gamma")
    return NormalGammaResult(float(mu_n), float(state["lambda_n"]), float(a_n), float(state["b_n"]),
                             elbos, n_iter, converged, np.asarray(path))


# ----------------------------------------------------------------------------
# 3. The Bayesian mixture of unit-variance Gaussians (Blei et al. 2017, Section 3)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GMMResult:
    r"""The fit returned by :func:`gmm`.

    Attributes
    ----------
    phi : ndarray of shape (n, K)
        :math:`\varphi_{ik} = q(c_i = k)`.
    m : ndarray of shape (K, d)
        Means of :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`.
    s2 : ndarray of shape (K,)
        Variances :math:`s_k^2`.
    elbos : ndarray of shape (n_iter,)
        The ELBO after every sweep, with every constant.
    n_iter : int
    converged : bool
    """

    phi: np.ndarray
    m: np.ndarray
    s2: np.ndarray
    elbos: np.ndarray
    n_iter: int
    converged: bool


def _data_2d(X, name: str = "X") -> np.ndarray:
    X = as_float_array(X, name, ndim=2)
    if X.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows; got shape {X.shape}")
    return X


def gmm(X, n_components: int, *, prior_std: float, max_iter: int = 200, tol: float = 1e-8,
        seed=None) -> GMMResult:
    r"""CAVI for the Bayesian mixture of unit-variance Gaussians of Blei et al. (2017).

    The model is :math:`\mu_k \sim \mathcal N(0, \sigma^2 I)`,
    :math:`c_i \sim \mathrm{Uniform}\{1, \dots, K\}`,
    :math:`x_i \mid c_i, \mu \sim \mathcal N(\mu_{c_i}, I)`, and the family
    :math:`q = \prod_k \mathcal N(\mu_k \mid m_k, s_k^2 I) \prod_i \mathrm{Cat}(c_i \mid \varphi_i)`.
    Implements {eq}`eq-mf-gmm-phi` and {eq}`eq-mf-gmm-m` of Chapter 3; each
    sweep updates every :math:`\varphi_i` (all at once: they do not depend on
    each other), then every :math:`(m_k, s_k^2)`:

    .. math::

        \log \varphi_{ik} = x_i^\top m_k - \tfrac12 \big(\lVert m_k \rVert^2 + d s_k^2\big)
                            + \text{const}, \qquad
        s_k^2 = \Big(\frac1{\sigma^2} + \sum_i \varphi_{ik}\Big)^{-1}, \quad
        m_k = s_k^2 \sum_i \varphi_{ik} x_i .

    The ELBO {eq}`eq-mf-gmm-elbo` keeps every constant.

    Parameters
    ----------
    X : array of shape (n, d)
    n_components : int, >= 1
        :math:`K`.
    prior_std : float, > 0
        :math:`\sigma`, the prior standard deviation of each coordinate of a mean.
    max_iter : int, >= 1
    tol : float, >= 0
    seed : int, numpy.random.Generator or None
        Chooses the starting means: ``n_components`` distinct rows of ``X``
        (with :math:`s_k^2 = 1`).  Run several seeds and keep the largest
        final ELBO to restart.

    Returns
    -------
    GMMResult

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array with at least 2 rows, ``n_components``
        is not an integer in ``[1, n]``, ``prior_std`` is not positive, or
        ``max_iter``, ``tol`` or ``seed`` are invalid.

    References
    ----------
    Blei, Kucukelbir and McAuliffe (2017), Section 3 and Algorithm 2.
    """
    X = _data_2d(X)
    n, d = X.shape
    K = check_int(n_components, "n_components")
    if K > n:
        raise ValueError(f"n_components must be <= the number of rows of X ({n}); got {K}")
    sigma2 = check_scalar(prior_std, "prior_std", positive=True) ** 2
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)
    rng = as_rng(seed)

    m = X[rng.choice(n, size=K, replace=False)].copy()
    s2 = np.ones(K)
    sq_norm_x = np.einsum("ij,ij->i", X, X)
    state = {}

    def sweep():
        nonlocal m, s2
        # (eq-mf-gmm-phi): log phi_ik = x_i' m_k - E[mu_k' mu_k] / 2 + const
        e_mu_sq = np.einsum("kj,kj->k", m, m) + d * s2
        log_phi = X @ m.T - 0.5 * e_mu_sq
        log_phi -= logsumexp(log_phi, axis=1, keepdims=True)
        phi = np.exp(log_phi)
        # (eq-mf-gmm-m)
        nk = phi.sum(axis=0)
        s2 = 1.0 / (1.0 / sigma2 + nk)
        m = s2[:, None] * (phi.T @ X)
        state["phi"] = phi
        # (eq-mf-gmm-elbo), every constant kept
        e_mu_sq = np.einsum("kj,kj->k", m, m) + d * s2
        e_log_prior_mu = np.sum(-0.5 * d * np.log(2 * np.pi * sigma2) - 0.5 * e_mu_sq / sigma2)
        e_log_prior_c = -n * np.log(K)
        e_sq = sq_norm_x[:, None] - 2 * X @ m.T + e_mu_sq                 # E ||x_i - mu_k||^2
        e_log_lik = np.sum(phi * (-0.5 * d * _LOG_2PI - 0.5 * e_sq))
        entropy_c = -np.sum(phi * log_phi)
        entropy_mu = np.sum(0.5 * d * (_LOG_2PI + 1.0 + np.log(s2)))
        return e_log_prior_mu + e_log_prior_c + e_log_lik + entropy_c + entropy_mu

    elbos, n_iter, converged = _iterate(sweep, max_iter, tol, "gmm")
    return GMMResult(state["phi"], m, s2, elbos, n_iter, converged)


# ----------------------------------------------------------------------------
# 4. The variational Gaussian mixture (Bishop 2006, Section 10.2)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BayesianGMMFit:
    r"""A fitted variational Gaussian mixture, in Bishop's parameterisation.

    Returned by :func:`bayesian_gmm` (batch CAVI) and by
    :func:`vicourse.svi.bayesian_gmm` (stochastic VI).
    :math:`q(\pi) = \mathrm{Dir}(\alpha)` and
    :math:`q(\mu_k, \Lambda_k) = \mathcal N(\mu_k \mid m_k, (\beta_k \Lambda_k)^{-1})\,
    \mathcal W(\Lambda_k \mid W_k, \nu_k)`.  The fields keep Bishop's symbols;
    scikit-learn's ``BayesianGaussianMixture`` names them
    ``weight_concentration_`` (:math:`\alpha`), ``mean_precision_``
    (:math:`\beta`), ``means_`` (:math:`m`), ``degrees_of_freedom_``
    (:math:`\nu`) and ``precisions_`` (:math:`\nu_k W_k`, so
    ``W = precisions_ / nu``).

    Attributes
    ----------
    alpha, beta, nu : ndarray of shape (K,)
    m : ndarray of shape (K, d)
    W : ndarray of shape (K, d, d)
    resp : ndarray of shape (n, K), or None
        :math:`r_{nk} = q(z_n = k)`.  For CAVI, the responsibilities from
        which the parameters above were computed; for SVI, those that the
        returned parameters give every point.  None in the snapshots of an
        SVI run (``info["snapshots"]``).
    elbos : ndarray of shape (n_iter,)
        The recorded bound, in nats, with every constant.  CAVI: the ELBO after
        every sweep, so ``elbos[-1]`` is the ELBO of the returned fit.  SVI:
        one minibatch estimate per step (see :func:`vicourse.svi.bayesian_gmm`).
    n_iter : int
        Sweeps (CAVI) or steps (SVI) run.
    converged : bool
        Whether the stopping rule was met.
    alpha0, beta0, m0, W0, nu0
        The prior the fit was made with, defaults resolved (scikit-learn's
        ``weight_concentration_prior_``, ``mean_precision_prior_``,
        ``mean_prior_``, and ``covariance_prior_`` :math:`= W_0^{-1}`,
        ``degrees_of_freedom_prior_``).
    info : dict
        What only one routine records; :func:`vicourse.svi.bayesian_gmm` lists its keys.
    """

    alpha: np.ndarray
    beta: np.ndarray
    m: np.ndarray
    W: np.ndarray
    nu: np.ndarray
    resp: np.ndarray | None
    elbos: np.ndarray
    n_iter: int
    converged: bool
    alpha0: float
    beta0: float
    m0: np.ndarray
    W0: np.ndarray
    nu0: float
    info: dict = field(default_factory=dict)

    @property
    def weights(self) -> np.ndarray:
        r""":math:`\mathbb E_q[\pi_k] = \alpha_k / \sum_j \alpha_j`, shape (K,)."""
        return self.alpha / self.alpha.sum()

    @property
    def means(self) -> np.ndarray:
        r""":math:`\mathbb E_q[\mu_k] = m_k`, shape (K, d) (scikit-learn's ``means_``)."""
        return self.m

    @property
    def covariances(self) -> np.ndarray:
        r""":math:`\mathbb E_q[\Lambda_k]^{-1} = (\nu_k W_k)^{-1}`, shape (K, d, d) (``covariances_``)."""
        return np.linalg.inv(self.nu[:, None, None] * self.W)


def _bayesian_gmm_fit(prior, params, resp, elbos, n_iter, converged, info=None) -> BayesianGMMFit:
    """Pack the shared implementation's parameters (centred) into the public result."""
    return BayesianGMMFit(
        alpha=params.alpha, beta=params.beta, m=params.m + prior.shift, W=params.W, nu=params.nu,
        resp=resp, elbos=np.asarray(elbos), n_iter=n_iter, converged=converged,
        alpha0=prior.alpha0, beta0=prior.beta0, m0=prior.m0, W0=prior.W0, nu0=prior.nu0,
        info={} if info is None else info)


def bayesian_gmm(X, resp_init, *, alpha0=None, beta0: float = 1.0, m0=None, W0=None, nu0=None,
                 reg_covar: float = 1e-6, max_iter: int = 100, tol: float = 1e-6) -> BayesianGMMFit:
    r"""CAVI for the variational Gaussian mixture of Bishop (2006), Section 10.2.

    The model: :math:`\pi \sim \mathrm{Dir}(\alpha_0 \mathbf 1)`;
    :math:`\Lambda_k \sim \mathcal W(W_0, \nu_0)`,
    :math:`\mu_k \mid \Lambda_k \sim \mathcal N(m_0, (\beta_0 \Lambda_k)^{-1})`;
    :math:`z_n \sim \mathrm{Cat}(\pi)`,
    :math:`x_n \mid z_n = k \sim \mathcal N(\mu_k, \Lambda_k^{-1})`.  The
    family :math:`q(Z)\, q(\pi, \mu, \Lambda)` factorises only between the
    assignments and the parameters; the rest follows.  Implements
    {eq}`eq-mf-bgmm-estep` and {eq}`eq-mf-bgmm-mstep` of Chapter 3.

    Starting from ``resp_init``, the parameter factor is updated first (the
    "M-step", Bishop's (10.58)-(10.63) with :math:`\nu_k = \nu_0 + N_k`),
    then every sweep updates the responsibilities (the "E-step", (10.64)-(10.67))
    and then the parameter factor again, and records the ELBO (10.70)-(10.77)
    with every constant.  This is scikit-learn's order: its
    ``BayesianGaussianMixture`` also runs an M-step from the initial
    responsibilities and then ``max_iter`` E/M sweeps.  The updates are those
    of :func:`vicourse.svi.bayesian_gmm`, from one implementation.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        At least 2 rows.
    resp_init : array of shape (n_samples, K)
        Initial responsibilities; each row sums to one.
    alpha0 : float, > 0, optional
        Dirichlet concentration of every component; default ``1 / K`` (as
        scikit-learn's ``weight_concentration_prior``).
    beta0 : float, > 0
        Scale of the precision of :math:`\mu_k` (``mean_precision_prior``); default 1.
    m0 : array of shape (n_features,), optional
        Prior mean of :math:`\mu_k` (``mean_prior``); default the mean of ``X``.
    W0 : array of shape (n_features, n_features), symmetric positive definite, optional
        Wishart scale matrix.  Default: the inverse of the sample covariance
        of ``X`` plus ``reg_covar`` on its diagonal (scikit-learn's
        ``covariance_prior`` is :math:`W_0^{-1}` and defaults to the sample
        covariance).
    nu0 : float, > n_features - 1, optional
        Wishart degrees of freedom (``degrees_of_freedom_prior``); default ``n_features``.
    reg_covar : float, >= 0
        Added to the diagonal of the default :math:`W_0^{-1}`, so that it
        exists when the points are identical or ``n_features >= n_samples``.
        Every component's :math:`W_k^{-1}` is at least :math:`W_0^{-1}`
        (Bishop's (10.62) only adds positive semi-definite terms), so this
        also floors every component's scale: the prior is the model's
        safeguard against components that collapse onto a point.  Not used
        when ``W0`` is given.
    max_iter : int, >= 1
        Sweeps.
    tol : float, >= 0
        Stop when the ELBO changes by less than ``tol`` per data point in one
        sweep, ``abs(elbos[t] - elbos[t-1]) < tol * n_samples``; ``tol=0``
        runs ``max_iter`` sweeps.

    Returns
    -------
    BayesianGMMFit

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array with at least 2 rows, ``resp_init``
        is not an (n_samples, K) array whose rows sum to one, a prior
        parameter is not positive, ``m0`` or ``W0`` have the wrong shape,
        ``W0`` is not positive definite, ``nu0 <= n_features - 1``, the default
        ``W0`` does not exist (``reg_covar=0`` with identical points or
        ``n_features >= n_samples``), or ``max_iter``/``tol`` are invalid; and
        if the bound becomes non-finite (data too extreme for float64).

    Warns
    -----
    vicourse.ConvergenceWarning
        If ``tol > 0`` and the fit stops at ``max_iter`` without converging,
        or if the ELBO decreases between sweeps by more than rounding (CAVI
        never decreases it: the symptom of a wrong update).

    Notes
    -----
    Each sweep is a few matrix products over blocks of rows: the E-step
    writes :math:`(x_n - m_k)^\top W_k (x_n - m_k) = \lVert P_k (x_n - m_k) \rVert^2`
    with :math:`W_k = P_k^\top P_k` as one product for all components, and
    the statistics :math:`N_k, \bar x_k, N_k S_k` of each block are merged
    into the total in mean-and-scatter form (Chan, Golub and LeVeque's
    pairwise update), never as raw second moments, whose difference loses
    the scatter to rounding when a point lies far from the rest.  Working
    memory beyond the returned responsibilities does not grow with
    ``n_samples``.

    References
    ----------
    Bishop (2006), Section 10.2, equations (10.46)-(10.77) (with the erratum
    :math:`\nu_k = \nu_0 + N_k` in (10.63)); scikit-learn's
    ``sklearn/mixture/_bayesian_mixture.py``; Chan, Golub and LeVeque (1979),
    "Updating formulae and a pairwise algorithm for computing sample variances".
    """
    X, resp, prior = _vbgmm.check_problem(X, resp_init, alpha0=alpha0, beta0=beta0, m0=m0, W0=W0,
                                          nu0=nu0, reg_covar=reg_covar)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)
    params, resp, elbos, n_iter, converged = _vbgmm.fit_cavi(X, resp, prior, max_iter=max_iter,
                                                             tol=tol)
    return _bayesian_gmm_fit(prior, params, resp, elbos, n_iter, converged)
