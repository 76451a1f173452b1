"""EM for a Gaussian mixture, as coordinate ascent on the ELBO (Chapter 2).

For a mixture with weights :math:`\\pi_k`, means :math:`\\mu_k` and full
covariances :math:`\\Sigma_k`, the ELBO of responsibilities :math:`r_{ik} = q(z_i = k)` is

.. math::

    \\mathcal L(q; \\theta) = \\sum_{i=1}^n \\sum_{k=1}^K r_{ik}
        \\big[\\log \\pi_k + \\log \\mathcal N(x_i \\mid \\mu_k, \\Sigma_k) - \\log r_{ik}\\big].

The E-step maximises it over :math:`q` (:func:`e_step`), the M-step over
:math:`\\theta` (:func:`m_step`); :func:`fit_gmm` alternates the two.

How the code is organised
-------------------------
A Gaussian is an exponential family: :math:`\\log \\pi_k + \\log \\mathcal N(x \\mid
\\mu_k, \\Sigma_k) = \\eta_k^\\top T(x)` with sufficient statistic
:math:`T(x) = (1, x, \\operatorname{vech}(x x^\\top))` and natural parameters
:math:`\\eta_k` made from :math:`\\log \\pi_k`, :math:`\\Lambda_k \\mu_k` and
:math:`-\\tfrac12 \\Lambda_k`.  So the log joint of every point and component
is one matrix product :math:`T \\eta^\\top` (the E-step), and the M-step needs
only the expected sufficient statistics :math:`r^\\top T`, another matrix
product.  :math:`T` depends on the data alone and is built once per fit.  The
data are centred on their mean first (the mixture is translation-equivariant),
which keeps the subtraction :math:`\\mathbb E[x x^\\top] - \\mu \\mu^\\top` accurate;
a component too narrow for that (relative to its distance from the mean) is
computed in centred form instead.

scikit-learn's ``GaussianMixture`` computes the same quantities one component
at a time in centred form; the tests check that both give the same
parameters after the same number of iterations.

References
----------
Dempster, Laird and Rubin (1977); Neal and Hinton (1998); Bishop (2006), Sections 9.2-9.4.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from vicourse._validation import (
    as_float_array,
    check_int,
    check_probability_vector,
    check_scalar,
    check_spd,
)
from vicourse.elbo import discrete_elbo

__all__ = ["GMMFit", "e_step", "m_step", "elbo", "log_joint", "log_likelihood", "fit_gmm"]

_LOG_2PI = np.log(2.0 * np.pi)
# Added to every N_k before dividing, as scikit-learn does, so that a component
# that has lost all its points gets a finite mean and covariance instead of 0/0.
_EPS = np.finfo(np.float64).eps
_NK_FLOOR = 10 * _EPS
# Largest relative error accepted from the sufficient-statistic form before a
# component is computed in centred form instead (see _narrow).
_EXPANSION_TOL = 1e-11


# ----------------------------------------------------------------------------- validation

def _check_data(X) -> np.ndarray:
    return as_float_array(X, "X", ndim=2)


def _check_params(weights, means, covariances, n_features: int):
    """Validate mixture parameters against each other and the data's dimension."""
    weights = check_probability_vector(weights, "weights")
    if weights.ndim != 1:
        raise ValueError(f"weights must be a 1-D array of shape (K,); got shape {weights.shape}")
    if np.any(weights <= 0):
        raise ValueError("weights must be > 0 (drop a component of weight 0); "
                         f"smallest entry is {weights.min():.3g}")
    n_components = weights.shape[0]
    means = as_float_array(means, "means", ndim=2)
    if means.shape != (n_components, n_features):
        raise ValueError(f"means must have shape (K, d) = ({n_components}, {n_features}) to match "
                         f"weights and X; got {means.shape}")
    covariances = as_float_array(covariances, "covariances", ndim=3)
    if covariances.shape != (n_components, n_features, n_features):
        raise ValueError("covariances must have shape (K, d, d) = "
                         f"({n_components}, {n_features}, {n_features}) to match weights and X; "
                         f"got {covariances.shape}")
    check_spd(covariances, "covariances")
    return weights, means, covariances


def _check_resp(resp, n_samples: int) -> np.ndarray:
    resp = check_probability_vector(resp, "resp")
    if resp.ndim != 2 or resp.shape[0] != n_samples:
        raise ValueError(f"resp must have shape (n, K) with n = {n_samples} rows (one per row of "
                         f"X); got shape {resp.shape}")
    return resp


# ----------------------------------------------------------------------------- the kernels

def _sufficient_statistics(Xc: np.ndarray) -> np.ndarray:
    """T(x) = (1, x, x_a x_b for a <= b), one row per point: shape (n, 1 + d + d(d+1)/2)."""
    n, d = Xc.shape
    T = np.empty((n, 1 + d + d * (d + 1) // 2))
    T[:, 0] = 1.0
    T[:, 1:1 + d] = Xc
    start = 1 + d
    for a in range(d):       # row a of the upper triangle, in np.triu_indices order
        np.multiply(Xc[:, a:a + 1], Xc[:, a:], out=T[:, start:start + d - a])
        start += d - a
    return T


def _natural_parameters(weights, means_c, covariances):
    """eta of shape (K, 1 + d + d(d+1)/2) with eta_k . T(x) = log pi_k + log N(x | mu_k, Sigma_k).

    Uses the Cholesky factor Sigma_k = L_k L_k^T: Lambda_k = L_k^{-T} L_k^{-1} and
    log|Sigma_k| = 2 sum log diag L_k.  Also returns L_k^{-1} (K, d, d) and the
    constant of each component (K,), for the centred route.  Raises
    numpy.linalg.LinAlgError if a covariance is not positive definite.
    """
    n_components, d = means_c.shape
    chol = np.linalg.cholesky(covariances)                     # (K, d, d), batched
    # L_k^{-1}, batched over components.  (np.linalg.solve, not scipy's
    # solve_triangular: that has no batch form and costs milliseconds per call.)
    chol_inv = np.linalg.solve(chol, np.broadcast_to(np.eye(d), chol.shape))
    precisions = np.matmul(np.swapaxes(chol_inv, -1, -2), chol_inv)           # Lambda_k
    half_log_det = np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)  # log|Sigma|/2
    lam_mu = np.einsum("kab,kb->ka", precisions, means_c)                     # Lambda_k mu_k
    rows, cols = np.triu_indices(d)
    # x^T Lambda x = sum_a Lambda_aa x_a^2 + 2 sum_{a<b} Lambda_ab x_a x_b
    quad = precisions[:, rows, cols] * np.where(rows == cols, -0.5, -1.0)
    const = np.log(weights) - 0.5 * d * _LOG_2PI - half_log_det
    eta = np.concatenate([(const - 0.5 * np.einsum("ka,ka->k", lam_mu, means_c))[:, None],
                          lam_mu, quad], axis=1)
    return eta, chol_inv, const


def _narrow(means_c, covariances, radius: float) -> np.ndarray:
    """Components for which the sufficient-statistic form would lose accuracy, shape (K,).

    Expanding (x - mu)^T Lambda (x - mu) or E[(x - mu)(x - mu)^T] into moments
    costs an absolute error of about eps (|x| + |mu|)^2 in units of the
    covariance, that is eps (|x| + |mu|)^2 / lambda_min(Sigma) relative; these
    components (typically collapsing ones) take the centred route instead.
    """
    smallest = np.linalg.eigvalsh(covariances)[:, 0]
    reach = (radius + np.linalg.norm(means_c, axis=1)) ** 2
    with np.errstate(divide="ignore"):
        return (smallest <= 0) | (_EPS * reach > _EXPANSION_TOL * smallest)


class _Data:
    """The data centred on their mean, with the sufficient statistics T built once."""

    def __init__(self, X: np.ndarray):
        self.centre = X.mean(axis=0)
        self.Xc = X - self.centre
        self.T = _sufficient_statistics(self.Xc)               # (n, 1 + d + d(d+1)/2)
        self.radius = float(np.sqrt(np.max(np.einsum("na,na->n", self.Xc, self.Xc))))

    def log_joint(self, weights, means_c, covariances, out=None) -> np.ndarray:
        """log pi_k + log N(x_i | mu_k, Sigma_k), (n, K): T eta^T, centred for narrow components."""
        eta, chol_inv, const = _natural_parameters(weights, means_c, covariances)
        # Departure from the textbook form eq-em-log-joint: the Mahalanobis term
        # (x - mu)^T Lambda (x - mu) is expanded into eta_k . T(x), so all n x K
        # values are one matrix product (about twice as fast as scikit-learn's
        # per-component solve; see the benchmark).
        lj = np.matmul(self.T, eta.T, out=out)
        # Fallback: where the expansion would cancel badly (_narrow), the textbook
        # form, as scikit-learn computes it: || L_k^{-1} (x_i - mu_k) ||^2.
        for k in np.flatnonzero(_narrow(means_c, covariances, self.radius)):   # loop over K
            y = (self.Xc - means_c[k]) @ chol_inv[k].T         # L_k^{-1} (x_i - mu_k)
            lj[:, k] = const[k] - 0.5 * np.einsum("na,na->n", y, y)
        return lj

    def m_step(self, resp: np.ndarray, reg_covar: float):
        """Weights, centred means and covariances from responsibilities (n, K)."""
        # Departure from the textbook form eq-em-mstep: the sums over points are
        # the expected sufficient statistics r^T T (one matrix product), and
        # Sigma_k = E_r[x x^T] - mu_k mu_k^T is formed from them.
        # T^T r rather than r^T T: OpenBLAS splits this shape across threads far better.
        stats = (self.T.T @ resp).T
        weights, means_c, covariances = _params_from_statistics(stats, self.centre, reg_covar)
        d = means_c.shape[1]
        # Fallback: where that subtraction cancels badly (_narrow), the textbook
        # centred sum, exactly scikit-learn's _estimate_gaussian_covariances_full.
        for k in np.flatnonzero(_narrow(means_c, covariances, self.radius)):   # loop over K
            diff = self.Xc - means_c[k]                        # scikit-learn's centred formula
            covariances[k] = (resp[:, k, None] * diff).T @ diff / (stats[k, 0] + _NK_FLOOR)
            covariances[k, np.arange(d), np.arange(d)] += reg_covar
        return weights, means_c, covariances


def _params_from_statistics(stats: np.ndarray, centre: np.ndarray, reg_covar: float):
    """M-step from expected sufficient statistics ``stats = r^T T`` of the centred data.

    ``stats`` has shape (K, 1 + d + d(d+1)/2); ``centre`` (d,) is the point
    the data were centred on.  Returns weights, centred means (mu_k - centre)
    and covariances given by scikit-learn's formulas, rewritten in sufficient
    statistics without approximation: with N~_k = N_k + 10 eps,

        mu_k = sum_i r_ik x_i / N~_k,
        Sigma_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N~_k + reg_covar I.

    The floor acts like 10 eps of mass at the origin of the original
    coordinates, so a component with no responsibility moves to the origin
    with covariance reg_covar I, as in scikit-learn.
    """
    d = centre.shape[0]
    n_k = stats[:, 0] + _NK_FLOOR
    weights = n_k / n_k.sum()
    first = stats[:, 1:1 + d] / n_k[:, None]                  # sum_i r_ik (x_i - centre) / N~_k
    # mu_k - centre = first - (1 - N_k / N~_k) centre
    means_c = first - (_NK_FLOOR / n_k)[:, None] * centre
    rows, cols = np.triu_indices(d)
    covariances = np.empty((stats.shape[0], d, d))
    covariances[:, rows, cols] = stats[:, 1 + d:] / n_k[:, None]
    covariances[:, cols, rows] = covariances[:, rows, cols]
    # sum_i r_ik (y_i - m)(y_i - m)^T / N~_k with y_i = x_i - centre, m = mu_k - centre:
    # E[y y^T] - m first^T - first m^T + (N_k / N~_k) m m^T.
    cross = means_c[:, :, None] * first[:, None, :]
    covariances -= cross + np.swapaxes(cross, 1, 2)
    covariances += (stats[:, 0] / n_k)[:, None, None] * (means_c[:, :, None] * means_c[:, None, :])
    covariances[:, np.arange(d), np.arange(d)] += reg_covar
    return weights, means_c, covariances


def _logsumexp_rows(lj: np.ndarray, exp_shifted: np.ndarray):
    """Row-wise log-sum-exp of ``lj`` (n, K), keeping ``exp(lj - max)`` in ``exp_shifted``.

    The same result as ``scipy.special.logsumexp(lj, axis=1, keepdims=True)``
    (tested; the same max-shifted algorithm), but it leaves behind the
    exponentials and their row sums, from which the next E-step's
    responsibilities are one division.  This is not exponentiate-then-normalise:
    every row's largest shifted term is ``exp(0) = 1``, so the row sums are at
    least one and cannot underflow to 0/0, whatever the magnitude of ``lj``.

    Returns
    -------
    lse, sums : ndarray of shape (n, 1)
    """
    row_max = lj.max(axis=1, keepdims=True)
    np.subtract(lj, row_max, out=exp_shifted)
    np.exp(exp_shifted, out=exp_shifted)
    sums = exp_shifted.sum(axis=1, keepdims=True)     # >= 1: the row maximum contributes exp(0)
    return row_max + np.log(sums), sums


# ----------------------------------------------------------------------------- public API

def log_joint(X, weights, means, covariances) -> np.ndarray:
    r"""The log joint :math:`\log p(x_i, z_i = k \mid \theta)` of every point and component.

    Implements {eq}`eq-em-log-joint` of Chapter 2:

    .. math::

        \log p(x_i, z_i = k \mid \theta) = \log \pi_k - \tfrac12 \big[d \log 2\pi
            + \log |\Sigma_k| + (x_i - \mu_k)^\top \Sigma_k^{-1} (x_i - \mu_k)\big],

    evaluated as :math:`\eta_k^\top T(x_i)` with the Gaussian's sufficient
    statistics (see the module docstring and the Notes) and a Cholesky factor of
    each :math:`\Sigma_k`.

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    weights : array of shape (K,)
        Mixture weights :math:`\pi_k > 0`, summing to one.
    means : array of shape (K, d)
        Component means :math:`\mu_k`.
    covariances : array of shape (K, d, d)
        Component covariances :math:`\Sigma_k`, symmetric positive definite.

    Returns
    -------
    ndarray of shape (n, K)

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, ``weights`` is not a positive
        probability vector, a covariance is not symmetric positive definite, or
        the shapes disagree.

    Notes
    -----
    A departure from the textbook form: with :math:`\Lambda_k = \Sigma_k^{-1}
    = L_k^{-\top} L_k^{-1}` (Cholesky :math:`\Sigma_k = L_k L_k^\top`; no
    general inverse is formed), the log joint is linear in
    :math:`T(x) = (1, x, \operatorname{vech}(x x^\top))` of the data centred
    on their mean :math:`\bar x`,

    .. math::

        \log p(x, z = k \mid \theta) = \underbrace{\log \pi_k - \tfrac d2 \log 2\pi
            - \textstyle\sum_a \log (L_k)_{aa} - \tfrac12 \mu_k^\top \Lambda_k \mu_k}_{\eta_{k,0}}
            + (\Lambda_k \mu_k)^\top x - \tfrac12 x^\top \Lambda_k x,

    so the whole :math:`(n, K)` array is one matrix product.  Expanding the
    quadratic costs an absolute error of about :math:`\varepsilon_{\mathrm{mach}}
    (\lVert x - \bar x \rVert + \lVert \mu_k - \bar x \rVert)^2 /
    \lambda_{\min}(\Sigma_k)` nats; a component for which this bound exceeds
    :math:`10^{-11}` (a narrow component far from :math:`\bar x`) is evaluated
    in the textbook form :math:`\lVert L_k^{-1} (x - \mu_k) \rVert^2` instead,
    as scikit-learn does for every component.
    """
    X = _check_data(X)
    weights, means, covariances = _check_params(weights, means, covariances, X.shape[1])
    data = _Data(X)
    return data.log_joint(weights, means - data.centre, covariances)


def log_likelihood(X, weights, means, covariances) -> float:
    r"""The total log-likelihood :math:`\log p(x_{1:n} \mid \theta) = \sum_i \log \sum_k \pi_k
    \mathcal N(x_i \mid \mu_k, \Sigma_k)`.

    Implements {eq}`eq-em-loglik` of Chapter 2, with ``scipy.special.logsumexp``
    over the components.  Parameters and errors as in :func:`log_joint`.

    Returns
    -------
    float
    """
    return float(logsumexp(log_joint(X, weights, means, covariances), axis=1).sum())


def e_step(X, weights, means, covariances) -> np.ndarray:
    r"""The E-step: log responsibilities, the exact posterior :math:`p(z_i = k \mid x_i, \theta)`.

    Implements {eq}`eq-em-estep` of Chapter 2, in log space:

    .. math::

        \log r_{ik} = \log p(x_i, z_i = k \mid \theta)
                      - \log \sum_{j=1}^K p(x_i, z_i = j \mid \theta),

    the normaliser by ``scipy.special.logsumexp``, so that a point far from
    every component (whose densities all underflow) still gets finite
    log responsibilities summing (after ``exp``) to one.

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    weights : array of shape (K,)
        Mixture weights :math:`\pi_k > 0`, summing to one.
    means : array of shape (K, d)
        Component means :math:`\mu_k`.
    covariances : array of shape (K, d, d)
        Component covariances :math:`\Sigma_k`, symmetric positive definite.

    Returns
    -------
    log_resp : ndarray of shape (n, K)
        :math:`\log r_{ik}`; ``np.exp(log_resp)`` has rows summing to one.

    Raises
    ------
    ValueError
        As :func:`log_joint`.

    References
    ----------
    Bishop (2006), Section 9.2.2, eq. (9.23).
    """
    lj = log_joint(X, weights, means, covariances)
    return lj - logsumexp(lj, axis=1, keepdims=True)


def m_step(X, resp, reg_covar: float = 1e-6):
    r"""The M-step: the parameters that maximise the ELBO for fixed responsibilities.

    Implements {eq}`eq-em-mstep` of Chapter 2:

    .. math::

        N_k = \sum_i r_{ik}, \quad \pi_k = \frac{N_k}{n}, \quad
        \mu_k = \frac{1}{N_k} \sum_i r_{ik} x_i, \quad
        \Sigma_k = \frac{1}{N_k} \sum_i r_{ik} (x_i - \mu_k)(x_i - \mu_k)^\top
                   + \epsilon I,

    with :math:`\epsilon` = ``reg_covar`` added to every diagonal as
    scikit-learn does.  Each :math:`N_k` is increased by :math:`10` machine
    epsilons before dividing (again as scikit-learn does), so a component with
    no responsibility left gets a finite mean (the origin: the floor acts like
    :math:`10^{-15}` of a point there), covariance :math:`\epsilon I` and a
    weight of about :math:`10^{-15}/n` instead of NaN.
    The sums are the expected sufficient statistics :math:`r^\top T` (Notes).

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    resp : array of shape (n, K)
        Responsibilities :math:`r_{ik}`, each row summing to one.
    reg_covar : float, >= 0
        :math:`\epsilon`, added to the diagonal of each covariance.

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, ``resp`` is not a matrix of
        probability rows with one row per point, ``reg_covar`` is negative, or
        a resulting covariance is not positive definite (increase ``reg_covar``).

    Notes
    -----
    A departure from the textbook form: every sum over points is read off the
    expected sufficient statistics :math:`\sum_i r_{ik} T(x_i)`, one matrix
    product, and :math:`\Sigma_k` is formed as :math:`\tfrac{1}{N_k}\sum_i r_{ik}
    x_i x_i^\top - \mu_k \mu_k^\top` (on data centred on their mean).  That
    subtraction cancels for a component much narrower than its distance from
    the data mean; when the estimated relative error exceeds :math:`10^{-11}`
    (see :func:`log_joint`) the component is recomputed with the centred sum
    above, which is scikit-learn's formula.

    References
    ----------
    Bishop (2006), Section 9.2.2, eqs. (9.24)-(9.27).
    """
    X = _check_data(X)
    resp = _check_resp(resp, X.shape[0])
    reg_covar = check_scalar(reg_covar, "reg_covar", nonnegative=True)
    data = _Data(X)
    weights, means_c, covariances = data.m_step(resp, reg_covar)
    _require_positive_definite(covariances)
    return weights, means_c + data.centre, covariances


def _require_positive_definite(covariances, iteration: int | None = None) -> None:
    try:
        np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        when = "" if iteration is None else f" at iteration {iteration}"
        raise ValueError(
            f"a covariance became singular{when} (a component collapsed onto too few points); "
            "increase reg_covar, use fewer components, or start elsewhere"
        ) from None


def elbo(X, resp, weights, means, covariances) -> float:
    r"""The ELBO :math:`\mathcal L(q; \theta)` of responsibilities ``resp`` at parameters θ.

    Implements {eq}`eq-em-elbo` of Chapter 2:

    .. math::

        \mathcal L(q; \theta) = \sum_{i=1}^n \sum_{k=1}^K r_{ik}
            \big[\log p(x_i, z_i = k \mid \theta) - \log r_{ik}\big],

    the sum over points of :func:`vicourse.elbo.discrete_elbo` (which takes
    :math:`0 \log 0 = 0`).  It equals :func:`log_likelihood` when ``resp`` is
    the exact posterior (the output of :func:`e_step`) and is smaller otherwise
    ({eq}`eq-elbo-identity` of Chapter 1).

    Parameters
    ----------
    X : array of shape (n, d)
    resp : array of shape (n, K)
        Responsibilities :math:`r_{ik} = q(z_i = k)`, each row summing to one.
    weights : array of shape (K,)
    means : array of shape (K, d)
    covariances : array of shape (K, d, d)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`log_joint`, or if ``resp`` is not a matrix of probability rows
        with one row per point and one column per component.
    """
    lj = log_joint(X, weights, means, covariances)
    resp = _check_resp(resp, lj.shape[0])
    if resp.shape != lj.shape:
        raise ValueError(f"resp must have shape (n, K) = {lj.shape}; got {resp.shape}")
    return float(np.sum(discrete_elbo(lj, resp)))


@dataclass(frozen=True)
class GMMFit:
    """The result of :func:`fit_gmm`.

    Attributes
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)
        The parameters after the last M-step.
    log_likelihoods : ndarray of shape (n_iter + 1,)
        :math:`\\log p(x_{1:n} \\mid \\theta_t)` at the initial parameters
        (:math:`t = 0`) and after every iteration; never decreasing.
    elbos : ndarray of shape (2 * n_iter,)
        The ELBO after every half-step: ``elbos[2t]`` after the E-step of
        iteration ``t + 1`` (equal to ``log_likelihoods[t]``), ``elbos[2t + 1]``
        after its M-step (at most ``log_likelihoods[t + 1]``).
    n_iter : int
        Number of EM iterations run.
    converged : bool
        Whether the log-likelihood per point rose by less than ``tol`` in the
        last iteration.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    log_likelihoods: np.ndarray
    elbos: np.ndarray
    n_iter: int
    converged: bool


def fit_gmm(X, weights, means, covariances, *, max_iter: int = 100, tol: float = 1e-8,
            reg_covar: float = 1e-6) -> GMMFit:
    r"""Fit a Gaussian mixture with full covariances by EM, from the given start.

    Implements {prf:ref}`alg-em-gmm` of Chapter 2: iteration :math:`t` runs the
    E-step ({eq}`eq-em-estep`, :math:`q_t = p(z \mid x, \theta_{t-1})`) and the
    M-step ({eq}`eq-em-mstep`, :math:`\theta_t = \arg\max_\theta \mathcal L(q_t;
    \theta)`), and records the ELBO after each half-step and the
    log-likelihood after each iteration.  It stops when the log-likelihood per
    point rises by less than ``tol`` or after ``max_iter`` iterations; with
    ``tol=0`` it runs exactly ``max_iter`` (and does not warn).

    One iteration here is one iteration of scikit-learn's
    ``GaussianMixture(covariance_type="full")`` started from the same
    parameters (``weights_init``, ``means_init``, ``precisions_init``): after
    ``max_iter`` iterations both hold the same parameters.  (scikit-learn tests
    the change of the log-likelihood at the previous parameters, so with
    ``tol > 0`` it may stop one iteration later.)

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    weights : array of shape (K,)
        Initial mixture weights, positive and summing to one.
    means : array of shape (K, d)
        Initial component means.
    covariances : array of shape (K, d, d)
        Initial covariances, symmetric positive definite.
    max_iter : int, >= 1
        Largest number of EM iterations.
    tol : float, >= 0
        Stop when the log-likelihood per point rises by less than ``tol``.
    reg_covar : float, >= 0
        Added to the diagonal of every covariance in each M-step.

    Returns
    -------
    GMMFit

    Raises
    ------
    ValueError
        On bad input (as :func:`log_joint`, or ``max_iter < 1``, ``tol < 0``,
        ``reg_covar < 0``), or if a covariance becomes singular during the fit
        (increase ``reg_covar``).

    Warns
    -----
    UserWarning
        If ``tol > 0`` and the fit did not converge within ``max_iter`` iterations.

    Notes
    -----
    Both steps are matrix products with the sufficient statistics :math:`T`
    (module docstring), built once.  Expanding a quadratic form into moments
    has a relative error of about :math:`\varepsilon_{\mathrm{mach}} (\lVert x -
    \bar x \rVert + \lVert \mu_k - \bar x \rVert)^2 / \lambda_{\min}(\Sigma_k)`;
    a component for which this exceeds :math:`10^{-11}` (a narrow, typically
    collapsing one) is computed in centred form instead, so the results keep
    the centred form's precision.  Memory: :math:`T` holds
    :math:`n (1 + d + d(d+1)/2)` numbers.

    References
    ----------
    Dempster, Laird and Rubin (1977); Neal and Hinton (1998); Bishop (2006), Section 9.2.2.
    """
    X = _check_data(X)
    n, d = X.shape
    weights, means, covariances = _check_params(weights, means, covariances, d)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_scalar(tol, "tol", nonnegative=True)
    reg_covar = check_scalar(reg_covar, "reg_covar", nonnegative=True)

    data = _Data(X)                                            # T built once
    lj = data.log_joint(weights, means - data.centre, covariances)         # (n, K)
    # Buffers reused by every iteration: the hot loop allocates no (n, K) array.
    exp_shifted, resp, log_resp = (np.empty_like(lj) for _ in range(3))
    lse, sums = _logsumexp_rows(lj, exp_shifted)
    log_likelihoods = [float(lse.sum())]
    elbos = []
    converged = False
    for iteration in range(1, max_iter + 1):
        # E-step: q_t(z_i = k) = p(z_i = k | x_i, theta_{t-1}), reusing exp(lj - max).
        np.divide(exp_shifted, sums, out=resp)
        np.subtract(lj, lse, out=log_resp)
        neg_entropy = np.vdot(resp, log_resp)                  # sum r log r; log_resp is finite
        elbos.append(float(np.vdot(resp, lj) - neg_entropy))   # L(q_t; theta_{t-1})
        # M-step: theta_t = argmax L(q_t; theta), from the expected statistics r^T T.
        weights, means_c, covariances = data.m_step(resp, reg_covar)
        try:
            data.log_joint(weights, means_c, covariances, out=lj)
        except np.linalg.LinAlgError:
            _require_positive_definite(covariances, iteration)
            raise
        elbos.append(float(np.vdot(resp, lj) - neg_entropy))   # L(q_t; theta_t)
        lse, sums = _logsumexp_rows(lj, exp_shifted)
        log_likelihoods.append(float(lse.sum()))
        if abs(log_likelihoods[-1] - log_likelihoods[-2]) < tol * n:
            converged = True
            break
    if not converged and tol > 0:
        warnings.warn(
            f"EM did not converge in {max_iter} iterations (the log-likelihood per point still "
            f"rose by {(log_likelihoods[-1] - log_likelihoods[-2]) / n:.3g} > tol={tol:g}); "
            "increase max_iter or tol, or try another start",
            UserWarning, stacklevel=2,
        )
    return GMMFit(weights=weights, means=means_c + data.centre, covariances=covariances,
                  log_likelihoods=np.asarray(log_likelihoods), elbos=np.asarray(elbos),
                  n_iter=iteration, converged=converged)
