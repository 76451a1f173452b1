"""Mean-field variational inference by coordinate ascent, CAVI (Chapter 3).

Each fit maximises the evidence lower bound over a factorised family
:math:`q(w) = \\prod_j q_j(w_j)` by the mean-field update
:math:`\\log q_j^*(w_j) = \\mathbb E_{-j} \\log p(x, w) + \\text{const}`
({eq}`eq-mf-update`), one factor at a time.  Every fit follows the loop of
CONTRIBUTING.md: it stores the ELBO after every sweep (``elbos``), *with
every constant*, so that it can be compared with a log evidence; it stops
when the ELBO changes by less than ``tol`` per data point; and it returns
``n_iter`` and ``converged``.  A fit that stops at ``max_iter`` without
meeting that rule issues :class:`vicourse.ConvergenceWarning`, and so does a
fit whose ELBO decreases by more than rounding explains (coordinate ascent
never lowers it, so a decrease is the symptom of a bug).

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

Every array argument may be a NumPy array, a torch tensor or a nested
sequence of numbers; every scalar may be a Python or NumPy number or a 0-d
array or tensor (CONTRIBUTING.md, *Errors*).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma, gammaln, logsumexp

from vicourse import _vbgmm
from vicourse._gaussian import GaussianFit
from vicourse._validation import (
    _describe,
    as_float_array,
    as_rng,
    check_int,
    check_scalar,
    check_spd,
)
from vicourse.exceptions import ConvergenceWarning

__all__ = [
    "BayesianGMMFit",
    "NormalGammaFit",
    "UnitVarianceGMMFit",
    "bayesian_gmm",
    "gaussian_2d",
    "gmm",
    "normal_gamma",
    "normal_gamma_elbo",
    "normal_gamma_log_evidence",
    "normal_gamma_posterior",
]

_LOG_2PI = np.log(2.0 * np.pi)

# A decrease of the ELBO smaller than this, relative to max(1, |ELBO|), is
# rounding (the bound sums many terms of its own size); a larger one warns.
_ROUNDING_RTOL = 1e-10

# gmm keeps a few (n, K) float64 arrays; refuse n * K above this (512 MiB each).
_MAX_RESP_ENTRIES = 2**26

# ----------------------------------------------------------------------------
# Shared piece: the one loop shape of every fit
# ----------------------------------------------------------------------------

def _iterate(sweep, max_iter: int, tol: float, what: str, *, n_samples: int = 1,
             advice: str = "rescale the data or the prior"):
    """Call ``sweep()`` (which updates every factor once and returns the ELBO)
    until the ELBO changes by less than ``tol * n_samples`` or ``max_iter``
    sweeps are done.

    ``tol`` is per data point (CONTRIBUTING.md, *the tolerance*); a target with
    no data passes ``n_samples=1``.  With ``tol=0`` every one of the
    ``max_iter`` sweeps runs and no warning is given for stopping there.
    ``advice`` ends the error raised for an ELBO that is not finite: what the
    caller should change.

    Returns ``(elbos, n_iter, converged)``.

    Raises
    ------
    ValueError
        If the ELBO becomes NaN or infinite, naming the sweep.

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the rule was not met within ``max_iter`` sweeps, or
        if the ELBO decreased by more than rounding explains at some sweep.
    """
    elbos = []
    converged = False
    for sweep_number in range(1, max_iter + 1):
        value = float(sweep())
        if not math.isfinite(value):
            raise ValueError(f"{what}: the ELBO became {value} at sweep {sweep_number}; the "
                             "input is beyond what float64 arithmetic can represent here "
                             f"({advice})")
        elbos.append(value)
        if len(elbos) > 1 and abs(elbos[-1] - elbos[-2]) < tol * n_samples:
            converged = True
            break
    elbos = np.asarray(elbos)
    _warn_if_decreased(elbos, what)
    if not converged and tol > 0:
        change = (elbos[-1] - elbos[-2]) / n_samples if elbos.size > 1 else float("nan")
        per = " per data point" if n_samples > 1 else ""
        warnings.warn(
            f"{what}: CAVI did not converge in max_iter={max_iter} sweeps (last ELBO change "
            f"{change:.3g}{per}, tol={tol:g}); increase max_iter or tol, or start elsewhere.",
            ConvergenceWarning, stacklevel=3,
        )
    return elbos, int(elbos.size), converged


def _warn_if_decreased(elbos: np.ndarray, what: str) -> None:
    """Warn once if any sweep lowered the ELBO by more than rounding explains."""
    if elbos.size < 2:
        return
    drops = elbos[:-1] - elbos[1:]
    beyond = drops > _ROUNDING_RTOL * np.maximum(1.0, np.abs(elbos[:-1]))
    if beyond.any():
        worst = int(np.argmax(np.where(beyond, drops, -np.inf)))
        warnings.warn(
            f"{what}: the ELBO decreased at {int(beyond.sum())} of {elbos.size - 1} sweeps, by "
            f"up to {drops[worst]:.3g} nats (after sweep {worst + 2}). Coordinate ascent never "
            "lowers the ELBO, so an update or the bound is wrong, or float64 rounding lost "
            "the result (check for data or prior values of very different scales).",
            ConvergenceWarning, stacklevel=4,
        )


def _data_2d(X, name: str = "X") -> np.ndarray:
    X = as_float_array(X, name, ndim=2)
    if X.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows; got shape {X.shape}")
    return X


def _vector(value, name: str, d: int) -> np.ndarray:
    """A finite float vector of length ``d``."""
    vector = as_float_array(value, name, ndim=1)
    if vector.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},); got shape {vector.shape}")
    return vector


# ----------------------------------------------------------------------------
# 1. A correlated Gaussian target (Bishop 2006, Section 10.1.2)
# ----------------------------------------------------------------------------

def gaussian_2d(loc, covariance_matrix, *, init_loc=None, max_iter: int = 100,
                tol: float = 1e-12) -> GaussianFit:
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
    loc : array of shape (2,)
        :math:`\mu`, the target's mean.
    covariance_matrix : array of shape (2, 2), symmetric positive definite
        :math:`\Sigma`, the target's covariance.
    init_loc : array of shape (2,), optional
        Starting means :math:`(m_1, m_2)` of the factors; default ``(0, 0)``.
        (Only :math:`m_2` enters the first update.)
    max_iter : int, >= 1
        Largest number of sweeps.
    tol : float, >= 0
        Stop when the ELBO changes by less than ``tol`` in one sweep (the
        target has no data, so this is the change itself).  ``tol=0`` runs
        all ``max_iter`` sweeps.

    Returns
    -------
    GaussianFit
        With ``covariance_type="diag"``: ``loc`` is :math:`(m_1, m_2)`,
        ``scale_tril`` is :math:`\mathrm{diag}(\Lambda_{11}^{-1/2}, \Lambda_{22}^{-1/2})`
        (the variances are set by the first sweep and never change), and
        ``info["loc_path"]``, of shape ``(n_iter + 1, 2)``, holds the means
        at the start (row 0) and after every sweep.

    Raises
    ------
    ValueError
        If ``loc`` or ``init_loc`` is not a finite 2-vector,
        ``covariance_matrix`` is not symmetric positive definite, or
        ``max_iter``/``tol`` are invalid; or if the ELBO overflows float64
        (``init_loc`` too far from ``loc`` for the covariance).

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the ELBO still changed by ``tol`` or more in the
        last of ``max_iter`` sweeps, or if the ELBO decreased by more than
        rounding explains.

    Notes
    -----
    The updates are run on the errors :math:`e = m - \mu`, for which they
    read :math:`e_1 \leftarrow -\Lambda_{11}^{-1}\Lambda_{12} e_2`: exact
    whatever the size of :math:`\mu` (a target centred at :math:`10^8`
    gives the same fit, shifted).  Each sweep multiplies :math:`e_1` by
    :math:`\rho^2 = \Lambda_{12}^2 / (\Lambda_{11}\Lambda_{22})`, the
    squared correlation of the target ({eq}`eq-mf-gauss-rate`).  No inverse
    of :math:`\Sigma` is formed: with :math:`v_i = 1/\Lambda_{ii}` the ELBO
    is :math:`\tfrac12 \log(1 - \rho^2) - \tfrac12 e^\top \Lambda e`, and
    :math:`e^\top \Lambda e = e_1^2/\Sigma_{11} + (e_2 - \Sigma_{12} e_1 /
    \Sigma_{11})^2 / v_2`, so that a nearly singular target (:math:`|\rho|`
    within :math:`10^{-12}` of one) still gives an ELBO that never decreases.

    References
    ----------
    Bishop (2006), Section 10.1.2, equations (10.11)-(10.15).
    """
    loc = _vector(loc, "loc", 2)
    cov = check_spd(covariance_matrix, "covariance_matrix", dim=2, single=True)
    start = np.zeros(2) if init_loc is None else _vector(init_loc, "init_loc", 2)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)

    # -Lambda_11^-1 Lambda_12 = Sigma_12 / Sigma_22, and 1 / Lambda_11 is the conditional
    # variance Sigma_11 - Sigma_12^2 / Sigma_22 = Sigma_11 (1 - rho^2) (a Schur complement);
    # rho^2 is the product of the two couplings, which cannot overflow.
    coupling = np.array([cov[0, 1] / cov[1, 1], cov[0, 1] / cov[0, 0]])
    rho2 = coupling[0] * coupling[1]
    variances = np.diag(cov) * (1.0 - rho2)
    error = start - loc
    path = [start.copy()]

    def sweep():
        error[0] = coupling[0] * error[1]        # e_1 <- -Lambda_11^-1 Lambda_12 e_2
        error[1] = coupling[1] * error[0]
        path.append(loc + error)
        # E_q log p(z) + H[q] with v_i = 1 / Lambda_ii, so that tr(Lambda diag v) = 2:
        #   -log|2 pi Sigma| / 2 - (2 + e' Lambda e) / 2 + sum_i log(2 pi e v_i) / 2
        #   = log(v_1 / Sigma_11) / 2 - e' Lambda e / 2,
        # using |Sigma| = Sigma_11 v_2.  The quadratic form is written without Lambda,
        # e' Lambda e = e_1^2 / Sigma_11 + (e_2 - Sigma_12 e_1 / Sigma_11)^2 / v_2,
        # so that no entry of an inverse of a nearly singular Sigma enters.
        residual = error[1] - coupling[1] * error[0]
        quadratic = error[0] ** 2 / cov[0, 0] + residual**2 / variances[1]
        return 0.5 * np.log1p(-rho2) - 0.5 * quadratic

    elbos, n_iter, converged = _iterate(
        sweep, max_iter, tol, "gaussian_2d",
        advice="init_loc is too far from loc for this covariance_matrix: start nearer")
    return GaussianFit(loc=loc + error, scale_tril=np.diag(np.sqrt(variances)),
                       covariance_type="diag", elbos=elbos, n_iter=n_iter, converged=converged,
                       info={"loc_path": np.asarray(path)})


# ----------------------------------------------------------------------------
# 2. A Gaussian with unknown mean and precision (Bishop 2006, Section 10.1.3)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NormalGammaFit:
    r"""The fit :math:`q(\mu) q(\tau)` returned by :func:`normal_gamma`.

    :math:`q(\mu) = \mathcal N(\mu_n, \lambda_n^{-1})` and
    :math:`q(\tau) = \mathrm{Gam}(a_n, b_n)` (shape, rate), Bishop's
    parameterisation (his :math:`\mu_N, \lambda_N, a_N, b_N`).

    Attributes
    ----------
    mu_n : float
        The mean of :math:`q(\mu)`.
    lambda_n : float
        The precision of :math:`q(\mu)` itself (not a multiplier of
        :math:`\tau`, as in the exact posterior).
    a_n, b_n : float
        Shape and rate of :math:`q(\tau)`; :math:`\mathbb E_q[\tau] = a_n / b_n`.
    elbos : ndarray of shape (n_iter,)
        The ELBO after every sweep, with every constant, so that it is
        directly comparable with :func:`normal_gamma_log_evidence`.
    n_iter : int
        Sweeps run.
    converged : bool
        Whether the ELBO changed by less than ``tol`` per data point.
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


def _statistics_1d(x) -> tuple[np.ndarray, int, float, float]:
    """``x`` validated, with its size, mean and sum of squares about the mean."""
    x = as_float_array(x, "x", ndim=1)
    with np.errstate(over="ignore", invalid="ignore"):
        xbar = x.mean()
        ss = np.sum((x - xbar) ** 2)
    if not (np.isfinite(xbar) and np.isfinite(ss)):
        raise ValueError("x is beyond float64's range here: its mean, or the sum of squares of "
                         "its deviations from the mean, overflows (largest |x_i| = "
                         f"{np.abs(x).max():.3g}); rescale x")
    return x, x.size, float(xbar), float(ss)


def _exact_posterior(n, xbar, ss, mu0, lambda0, a0, b0):
    """(eq-mf-ng-exact), through xbar - mu0 only, so that a common offset of both cancels.

    Raises a ValueError naming ``mu0`` if ``b_p`` overflows (``mu0`` too far from the data).
    """
    lambda_p = lambda0 + n
    with np.errstate(over="ignore", invalid="ignore"):
        offset = np.float64(xbar) - mu0
        mu_p = mu0 + (n / lambda_p) * offset
        b_p = b0 + 0.5 * ss + 0.5 * n * (lambda0 / lambda_p) * offset**2
    if not np.isfinite(b_p):
        raise ValueError(f"mu0 = {mu0:.3g} is too far from the mean of x ({xbar:.3g}) for "
                         "float64 with these lambda0 and b0: the posterior rate b_p overflows; "
                         "rescale x and the prior")
    return float(mu_p), lambda_p, a0 + 0.5 * n, float(b_p)


def normal_gamma_posterior(x, *, mu0, lambda0, a0, b0) -> tuple[float, float, float, float]:
    r"""The exact Normal-Gamma posterior :math:`p(\mu, \tau \mid x)`.

    Implements {eq}`eq-mf-ng-exact` of Chapter 3.  For the model
    :math:`\tau \sim \mathrm{Gam}(a_0, b_0)`,
    :math:`\mu \mid \tau \sim \mathcal N(\mu_0, (\lambda_0 \tau)^{-1})`,
    :math:`x_i \mid \mu, \tau \sim \mathcal N(\mu, \tau^{-1})`, the posterior
    is :math:`\mathcal N(\mu \mid \mu_p, (\lambda_p \tau)^{-1})\,\mathrm{Gam}(\tau \mid a_p, b_p)` with

    .. math::

        \lambda_p = \lambda_0 + n, \quad
        \mu_p = \frac{\lambda_0 \mu_0 + n \bar x}{\lambda_p}, \quad
        a_p = a_0 + \frac n2, \quad
        b_p = b_0 + \frac12 \sum_i (x_i - \bar x)^2
              + \frac{\lambda_0 n (\bar x - \mu_0)^2}{2 \lambda_p}.

    (Here :math:`\lambda_p` multiplies :math:`\tau`; in the mean-field fit
    ``lambda_n`` is the precision of :math:`q(\mu)` itself.)

    Parameters
    ----------
    x : array of shape (n,)
        The data.
    mu0 : float
        :math:`\mu_0`, the prior mean of :math:`\mu`.
    lambda0, a0, b0 : float, > 0
        :math:`\lambda_0` (prior precision of :math:`\mu` in units of
        :math:`\tau`), and the shape and rate of the Gamma prior of :math:`\tau`.

    Returns
    -------
    mu_p, lambda_p, a_p, b_p : float

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array or a prior parameter is invalid, or
        if ``x``'s spread or its mean's distance from ``mu0`` overflows float64.

    References
    ----------
    Bishop (2006), Section 2.3.6 and Exercise 2.44; Murphy (2012), Section 4.6.3.
    """
    _, n, xbar, ss = _statistics_1d(x)
    prior = _normal_gamma_prior(mu0, lambda0, a0, b0)
    return tuple(float(v) for v in _exact_posterior(n, xbar, ss, *prior))


def normal_gamma_log_evidence(x, *, mu0, lambda0, a0, b0) -> float:
    r"""The exact log evidence :math:`\log p(x)` of the Normal-Gamma model.

    Implements {eq}`eq-mf-ng-evidence` of Chapter 3, the ratio of the prior's
    and the posterior's normalisers:

    .. math::

        \log p(x) = \log\Gamma(a_p) - \log\Gamma(a_0) + a_0 \log b_0 - a_p \log b_p
                    + \tfrac12 \log\frac{\lambda_0}{\lambda_p} - \tfrac n2 \log 2\pi,

    with :math:`a_p, b_p, \lambda_p` from :func:`normal_gamma_posterior`.

    Parameters
    ----------
    x : array of shape (n,)
    mu0 : float
    lambda0, a0, b0 : float, > 0
        As in :func:`normal_gamma_posterior`.

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
    _, n, xbar, ss = _statistics_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    _, lambda_p, a_p, b_p = _exact_posterior(n, xbar, ss, mu0, lambda0, a0, b0)
    return float(gammaln(a_p) - gammaln(a0) + a0 * np.log(b0) - a_p * np.log(b_p)
                 + 0.5 * np.log(lambda0 / lambda_p) - 0.5 * n * _LOG_2PI)


def _normal_gamma_elbo(n, ss, data_offset, prior_offset, lambda_n, a_n, b_n, lambda0, a0, b0):
    """The ELBO from the data's statistics: n, the sum of squares ss about the mean xbar,
    and the offsets xbar - mu_n and mu_n - mu0 (the only places the locations enter)."""
    e_tau = a_n / b_n
    e_log_tau = digamma(a_n) - np.log(b_n)
    # E_q sum_i (x_i - mu)^2 and E_q (mu - mu0)^2
    e_sq_data = ss + n * (data_offset**2 + 1.0 / lambda_n)
    e_sq_prior = prior_offset**2 + 1.0 / lambda_n
    e_log_lik = 0.5 * n * (e_log_tau - _LOG_2PI) - 0.5 * e_tau * e_sq_data
    e_log_p_mu = 0.5 * (np.log(lambda0) + e_log_tau - _LOG_2PI) - 0.5 * lambda0 * e_tau * e_sq_prior
    e_log_p_tau = a0 * np.log(b0) - gammaln(a0) + (a0 - 1.0) * e_log_tau - b0 * e_tau
    entropy_mu = 0.5 * (_LOG_2PI + 1.0 - np.log(lambda_n))
    entropy_tau = a_n - np.log(b_n) + gammaln(a_n) + (1.0 - a_n) * digamma(a_n)
    return e_log_lik + e_log_p_mu + e_log_p_tau + entropy_mu + entropy_tau


def normal_gamma_elbo(x, mu_n, lambda_n, a_n, b_n, *, mu0, lambda0, a0, b0) -> float:
    r"""The ELBO of :math:`q(\mu) q(\tau) = \mathcal N(\mu_n, \lambda_n^{-1})\,\mathrm{Gam}(a_n, b_n)`.

    Implements {eq}`eq-mf-ng-elbo` of Chapter 3, with every constant:

    .. math::

        \mathcal L = \mathbb E_q[\log p(x \mid \mu, \tau) + \log p(\mu \mid \tau)
                     + \log p(\tau)] + \mathbb H[q(\mu)] + \mathbb H[q(\tau)],

    using :math:`\mathbb E[\tau] = a_n / b_n`,
    :math:`\mathbb E[\log \tau] = \psi(a_n) - \log b_n` and
    :math:`\mathbb E[(x_i - \mu)^2] = (x_i - \mu_n)^2 + \lambda_n^{-1}`.

    Parameters
    ----------
    x : array of shape (n,)
    mu_n : float
    lambda_n, a_n, b_n : float, > 0
        The variational parameters (any member of the family, not only the optimum).
    mu0 : float
    lambda0, a0, b0 : float, > 0
        The prior, as in :func:`normal_gamma_posterior`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array or a parameter is invalid, or if
        ``x``'s spread overflows float64 or the ELBO does (``mu_n`` or ``mu0``
        too far from the data for these precisions).
    """
    _, n, xbar, ss = _statistics_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    mu_n = check_scalar(mu_n, "mu_n")
    lambda_n = check_scalar(lambda_n, "lambda_n", positive=True)
    a_n = check_scalar(a_n, "a_n", positive=True)
    b_n = check_scalar(b_n, "b_n", positive=True)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        value = _normal_gamma_elbo(n, ss, np.float64(xbar) - mu_n, np.float64(mu_n) - mu0,
                                   lambda_n, a_n, b_n, lambda0, a0, b0)
    if not np.isfinite(value):
        raise ValueError(f"the ELBO is beyond float64's range for mu_n={mu_n:.3g}, "
                         f"lambda_n={lambda_n:.3g}, a_n={a_n:.3g}, b_n={b_n:.3g} (mean of x "
                         f"{xbar:.3g}, mu0={mu0:.3g}): a squared distance or a precision overflows")
    return float(value)


def normal_gamma(x, *, mu0, lambda0, a0, b0, init_precision=None, max_iter: int = 100,
                 tol: float = 1e-10) -> NormalGammaFit:
    r"""CAVI for :math:`q(\mu) q(\tau)` in the Normal-Gamma model.

    Implements {eq}`eq-mf-ng-qmu` and {eq}`eq-mf-ng-qtau` of Chapter 3: each
    sweep sets

    .. math::

        \mu_n = \frac{\lambda_0 \mu_0 + n \bar x}{\lambda_0 + n}, \qquad
        \lambda_n = (\lambda_0 + n)\, \mathbb E[\tau],

    then

    .. math::

        a_n = a_0 + \frac{n + 1}{2}, \qquad
        b_n = b_0 + \frac12 \mathbb E_\mu\Big[\sum_i (x_i - \mu)^2 + \lambda_0 (\mu - \mu_0)^2\Big],

    and records the ELBO ({eq}`eq-mf-ng-elbo`, :func:`normal_gamma_elbo`).

    Parameters
    ----------
    x : array of shape (n,)
        The data.
    mu0 : float
    lambda0, a0, b0 : float, > 0
        The prior, as in :func:`normal_gamma_posterior`.
    init_precision : float, > 0, optional
        :math:`\mathbb E[\tau]` to start from; default ``n / sum((x - mean(x))**2)``
        (1 if all points are equal).  The start's ``q(mu)``, recorded in
        ``path[0]``, is :math:`\mathcal N(\mu_0, (\lambda_0 \mathbb E[\tau])^{-1})`;
        the first update does not use it.
    max_iter : int, >= 1
        Largest number of sweeps.
    tol : float, >= 0
        Stop when the ELBO changes by less than ``tol`` per data point
        (``tol * n`` in total) in one sweep; ``tol=0`` runs all ``max_iter`` sweeps.

    Returns
    -------
    NormalGammaFit

    Raises
    ------
    ValueError
        If ``x`` is not a finite 1-D array, a prior parameter is invalid
        (``lambda0``, ``a0``, ``b0`` must be > 0), or ``init_precision``,
        ``max_iter`` or ``tol`` are invalid; or if ``x``'s spread or its
        mean's distance from ``mu0`` overflows float64.

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the rule was not met within ``max_iter`` sweeps,
        or if the ELBO decreased by more than rounding explains.

    Notes
    -----
    Translating the data and :math:`\mu_0` together translates
    :math:`\mu_n` and leaves everything else, the ELBO included, unchanged.
    The code keeps that exact: past the data's mean and spread, the locations
    enter only through :math:`\bar x - \mu_0`, so data far from zero lose no
    precision beyond their own rounding.

    References
    ----------
    Bishop (2006), Section 10.1.3, equations (10.25)-(10.30).
    """
    _, n, xbar, ss = _statistics_1d(x)
    mu0, lambda0, a0, b0 = _normal_gamma_prior(mu0, lambda0, a0, b0)
    _exact_posterior(n, xbar, ss, mu0, lambda0, a0, b0)    # refuses a mu0 beyond float64's reach
    if init_precision is None:
        init_precision = n / ss if ss > 0 and math.isfinite(n / ss) else 1.0
    e_tau = check_scalar(init_precision, "init_precision", positive=True)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)

    a_n = a0 + 0.5 * (n + 1)                               # (10.29): fixed from the first sweep on
    # (10.26): does not depend on q(tau).  It is written through xbar - mu0, as are the
    # offsets xbar - mu_n and mu_n - mu0 that the rest uses, so a common shift cancels exactly.
    with np.errstate(over="ignore", invalid="ignore"):
        offset = np.float64(xbar) - mu0
        mu_n = mu0 + (n / (lambda0 + n)) * offset
        data_offset = (lambda0 / (lambda0 + n)) * offset       # xbar - mu_n
        prior_offset = (n / (lambda0 + n)) * offset            # mu_n - mu0
        # sum_i (x_i - mu_n)^2 + lambda0 (mu_n - mu0)^2, the part of E_mu[...] free of
        # q(mu)'s spread; it is 2 (b_p - b0), so finite where b_p is, up to rounding
        spread = ss + n * data_offset**2 + lambda0 * prior_offset**2
    if not np.isfinite(spread):
        raise ValueError(f"mu0 = {mu0:.3g} is too far from the mean of x ({xbar:.3g}) for "
                         "float64 with this lambda0; rescale x and the prior")
    state = {"lambda_n": lambda0 * e_tau, "b_n": a_n / e_tau}
    path = [(mu0, state["lambda_n"], a_n, state["b_n"])]

    def sweep():
        e_tau = a_n / state["b_n"]
        lambda_n = (lambda0 + n) * e_tau                                       # (10.27)
        b_n = b0 + 0.5 * (spread + (n + lambda0) / lambda_n)                   # (10.30)
        state.update(lambda_n=lambda_n, b_n=b_n)
        path.append((mu_n, lambda_n, a_n, b_n))
        return _normal_gamma_elbo(n, ss, data_offset, prior_offset, lambda_n, a_n, b_n,
                                  lambda0, a0, b0)

    elbos, n_iter, converged = _iterate(sweep, max_iter, tol, "normal_gamma", n_samples=n)
    return NormalGammaFit(float(mu_n), float(state["lambda_n"]), float(a_n), float(state["b_n"]),
                          elbos, n_iter, converged, np.asarray(path))


# ----------------------------------------------------------------------------
# 3. The Bayesian mixture of unit-variance Gaussians (Blei et al. 2017, Section 3)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitVarianceGMMFit:
    r"""The fit returned by :func:`gmm`, in scikit-learn's names.

    :math:`q = \prod_k \mathcal N(\mu_k \mid m_k, s_k^2 I) \prod_i \mathrm{Cat}(z_i \mid r_i)`
    (Blei et al. (2017) write :math:`c_i` for :math:`z_i` and :math:`\varphi_{ik}` for
    :math:`r_{ik}`).

    Attributes
    ----------
    resp : ndarray of shape (n, K)
        The responsibilities :math:`r_{ik} = q(z_i = k)`; rows sum to one.
    means : ndarray of shape (K, d)
        :math:`m_k`, the means of :math:`q(\mu_k)` (scikit-learn's ``means_``).
    mean_precision : ndarray of shape (K,)
        :math:`1 / s_k^2`, the precision of :math:`q(\mu_k)` in units of the
        components' precision :math:`I` (scikit-learn's ``mean_precision_``,
        :math:`\beta_k`).
    elbos : ndarray of shape (n_iter,)
        The ELBO after every sweep, with every constant.
    n_iter : int
        Sweeps run.
    converged : bool
        Whether the ELBO changed by less than ``tol`` per data point.
    """

    resp: np.ndarray
    means: np.ndarray
    mean_precision: np.ndarray
    elbos: np.ndarray
    n_iter: int
    converged: bool


def _check_prior_std(prior_std) -> float:
    sigma = check_scalar(prior_std, "prior_std", positive=True)
    # Its square and inverse square enter the updates; both must stay normal floats.
    if not 1e-150 <= sigma <= 1e150:
        raise ValueError(f"prior_std must lie in [1e-150, 1e150] (its square must be a "
                         f"finite, non-zero float64); got {_describe(prior_std)}")
    return sigma


def gmm(X, n_components: int, *, prior_std: float, m0=None, max_iter: int = 200,
        tol: float = 1e-8, seed=None) -> UnitVarianceGMMFit:
    r"""CAVI for the Bayesian mixture of unit-variance Gaussians of Blei et al. (2017).

    The model is :math:`\mu_k \sim \mathcal N(m_0, \sigma^2 I)`,
    :math:`z_i \sim \mathrm{Uniform}\{1, \dots, K\}`,
    :math:`x_i \mid z_i, \mu \sim \mathcal N(\mu_{z_i}, I)` (Blei et al. take
    :math:`m_0 = 0`), and the family
    :math:`q = \prod_k \mathcal N(\mu_k \mid m_k, s_k^2 I) \prod_i \mathrm{Cat}(z_i \mid r_i)`
    (Blei et al. write :math:`c_i` and :math:`\varphi_{ik}` for :math:`z_i` and :math:`r_{ik}`).
    Implements {eq}`eq-mf-gmm-resp` and {eq}`eq-mf-gmm-m` of Chapter 3; each
    sweep updates every :math:`r_i` (all at once: they do not depend on
    each other), then every :math:`(m_k, s_k^2)`:

    .. math::

        \log r_{ik} = x_i^\top m_k - \tfrac12 \big(\lVert m_k \rVert^2 + d s_k^2\big)
                            + \text{const}, \qquad
        s_k^2 = \Big(\frac1{\sigma^2} + \sum_i r_{ik}\Big)^{-1}, \quad
        m_k = s_k^2 \Big(\frac{m_0}{\sigma^2} + \sum_i r_{ik} x_i\Big).

    The ELBO {eq}`eq-mf-gmm-elbo` keeps every constant.

    Parameters
    ----------
    X : array of shape (n, d)
        The data, at least 2 rows.
    n_components : int, in [1, n]
        :math:`K`.
    prior_std : float, in [1e-150, 1e150]
        :math:`\sigma`, the prior standard deviation of each coordinate of a
        mean (scikit-learn's ``mean_precision_prior`` is :math:`1/\sigma^2`).
    m0 : array of shape (d,), optional
        :math:`m_0`, the prior mean of every :math:`\mu_k` (scikit-learn's
        ``mean_prior``); default the origin, as in Blei et al. (2017).
    max_iter : int, >= 1
        Largest number of sweeps.
    tol : float, >= 0
        Stop when the ELBO changes by less than ``tol`` per data point
        (``tol * n`` in total) in one sweep; ``tol=0`` runs all ``max_iter`` sweeps.
    seed : int, numpy.random.Generator or None
        Chooses the starting means: ``n_components`` rows of ``X`` drawn
        without replacement (with :math:`s_k^2 = 1`).  Run several seeds and
        keep the largest final ELBO to restart.  ``None`` draws fresh entropy.

    Returns
    -------
    UnitVarianceGMMFit

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array with at least 2 rows, ``n_components``
        is not an integer in ``[1, n]`` (or ``n * n_components`` exceeds
        :math:`2^{26}`, about 512 MiB per ``(n, K)`` array), ``prior_std`` is
        out of range, ``m0`` is not a finite vector of length ``d``, or
        ``max_iter``, ``tol`` or ``seed`` are invalid; or if the squared
        distance of a row of ``X``, or of ``m0``, from the rows' mean overflows
        float64.

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the rule was not met within ``max_iter`` sweeps,
        or if the ELBO decreased by more than rounding explains.

    Notes
    -----
    The fit is computed in coordinates centred at the data's mean
    :math:`\bar x`, with the prior mean moved with them to
    :math:`m_0 - \bar x`: the same model, but the products
    :math:`x_i^\top m_k` stay of the size of the clusters' spread, so data
    far from the origin lose no precision.  What is translation-equivariant
    is the model with its prior: translating ``X`` and ``m0`` together
    translates ``means`` and leaves ``resp``, ``mean_precision`` and the ELBO
    unchanged.  Translating ``X`` alone changes the model (the prior stays
    where it was); with :math:`\sigma` much larger than the translation the
    fit barely moves.

    References
    ----------
    Blei, Kucukelbir and McAuliffe (2017), Section 3 and Algorithm 2.
    """
    X = _data_2d(X)
    n, d = X.shape
    K = check_int(n_components, "n_components")
    if K > n:
        raise ValueError(f"n_components must be <= the number of rows of X ({n}); got {K}")
    if n * K > _MAX_RESP_ENTRIES:
        raise ValueError(f"n_components={K} with n={n} rows would need (n, K) arrays of "
                         f"{n * K} entries, more than the {_MAX_RESP_ENTRIES} allowed; "
                         "use fewer components or a subsample")
    sigma = _check_prior_std(prior_std)
    m0 = np.zeros(d) if m0 is None else _vector(m0, "m0", d)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_scalar(tol, "tol", nonnegative=True)
    rng = as_rng(seed)

    with np.errstate(over="ignore", invalid="ignore"):
        centre = X.mean(axis=0)
        Xc = X - centre
        m0c = m0 - centre
        sq_norm_x = np.einsum("ij,ij->i", Xc, Xc)
        sq_norm_m0 = m0c @ m0c
    if not np.all(np.isfinite(sq_norm_x)):
        raise ValueError("X is beyond float64's range here: the rows' mean, or the squared "
                         "distance of a row from it, overflows (largest |X_ij| = "
                         f"{np.abs(X).max():.3g}); rescale X")
    if not np.isfinite(sq_norm_m0):
        raise ValueError("m0 is too far from the mean of X for float64 (the squared distance "
                         "overflows); rescale X and m0 together")
    prior_precision = (1.0 / sigma) ** 2                       # 1 / sigma^2
    log_prior_var = 2.0 * np.log(sigma)
    rows = rng.choice(n, size=K, replace=False)
    m = Xc[rows].copy()
    precision = np.ones(K)                                     # 1 / s_k^2
    state = {}

    def sweep():
        nonlocal m, precision
        # (eq-mf-gmm-resp): log r_ik = x_i' m_k - E[mu_k' mu_k] / 2 + const
        e_mu_sq = np.einsum("kj,kj->k", m, m) + d / precision
        log_resp = Xc @ m.T - 0.5 * e_mu_sq
        log_resp -= logsumexp(log_resp, axis=1, keepdims=True)
        resp = np.exp(log_resp)
        # (eq-mf-gmm-m), with m_k = s_k^2 (m0 / sigma^2 + sum_i r_ik x_i) written as
        # weights that are at most one, so that no term overflows for extreme sigma
        nk = resp.sum(axis=0)
        precision = prior_precision + nk
        s2 = 1.0 / precision
        m = (prior_precision / precision)[:, None] * m0c + (resp.T @ Xc) / precision[:, None]
        state["resp"] = resp
        # (eq-mf-gmm-elbo), every constant kept
        e_mu_sq = np.einsum("kj,kj->k", m, m) + d * s2
        dm = m - m0c
        e_log_prior_mu = np.sum(-0.5 * d * (_LOG_2PI + log_prior_var)
                                - 0.5 * prior_precision * (np.einsum("kj,kj->k", dm, dm) + d * s2))
        e_log_prior_z = -n * np.log(K)
        e_sq = sq_norm_x[:, None] - 2 * Xc @ m.T + e_mu_sq                # E ||x_i - mu_k||^2
        e_log_lik = np.sum(resp * (-0.5 * d * _LOG_2PI - 0.5 * e_sq))
        entropy_z = -np.sum(resp * log_resp)
        entropy_mu = np.sum(0.5 * d * (_LOG_2PI + 1.0 + np.log(s2)))
        return e_log_prior_mu + e_log_prior_z + e_log_lik + entropy_z + entropy_mu

    elbos, n_iter, converged = _iterate(sweep, max_iter, tol, "gmm", n_samples=n)
    return UnitVarianceGMMFit(resp=state["resp"], means=m + centre, mean_precision=precision,
                              elbos=elbos, n_iter=n_iter, converged=converged)


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
    with _vbgmm.one_blas_thread():
        X, resp, prior = _vbgmm.check_problem(X, resp_init, alpha0=alpha0, beta0=beta0, m0=m0,
                                              W0=W0, nu0=nu0, reg_covar=reg_covar)
        max_iter = check_int(max_iter, "max_iter")
        tol = check_scalar(tol, "tol", nonnegative=True)
        params, resp, elbos, n_iter, converged = _vbgmm.fit_cavi(X, resp, prior,
                                                                 max_iter=max_iter, tol=tol)
    return _bayesian_gmm_fit(prior, params, resp, elbos, n_iter, converged)
