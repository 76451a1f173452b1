"""Bishop's variational Gaussian mixture: the updates that batch CAVI and SVI share.

One implementation of the mean-field updates of Bishop (2006), Section 10.2,
cut where Chapter 8 cuts it: *statistics in, parameters out*.

- :class:`Stats` holds the responsibility-weighted statistics of a set of
  points, :math:`N_k`, :math:`\\bar x_k` and :math:`N_k S_k` (Bishop's
  (10.51)-(10.53)), in mean-and-scatter form.
- :func:`combine` merges two sets of statistics with weights.  It is the one
  formula behind three steps: adding a block of data to a running total,
  the prior's pseudo-observations in the update of the parameters, and the
  stochastic step :math:`\\lambda \\leftarrow (1 - \\rho)\\lambda + \\rho\\hat\\lambda`
  of SVI (the natural parameters are linear in the raw moments, so a
  weighted sum of natural parameters is a weighted merge of statistics).
- :func:`m_step` maps statistics to the parameters of :math:`q(\\pi, \\mu, \\Lambda)`
  ((10.58)-(10.63)); :func:`local_step` runs the update of :math:`q(Z)`
  ((10.64)-(10.67)) over data, block by block, and returns the new
  statistics; :func:`elbo` is (10.70)-(10.77) with every constant.
- :func:`fit_cavi` is the batch loop of :func:`vicourse.cavi.bayesian_gmm`;
  :func:`vicourse.svi.bayesian_gmm` drives the same pieces with minibatches.

Numerics.  The data are centred at their mean (the model is translation
equivariant when :math:`m_0` moves with them).  Statistics are kept as means
and scatter matrices about those means, and merged with the pairwise update
of Chan, Golub and LeVeque (1979), so that no step subtracts two large raw
second moments: with a far outlier, the raw-moment form
:math:`\\sum_n r_{nk} x_n x_n^\\top - N_k \\bar x_k \\bar x_k^\\top` loses the
scatter of the other points to rounding.  Data are processed in blocks of
rows, so the working memory does not grow with the number of points.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln
from threadpoolctl import threadpool_limits

from vicourse._validation import (
    _describe,
    as_float_array,
    check_probability_vector,
    check_scalar,
    check_spd,
)
from vicourse.exceptions import ConvergenceWarning

_LOG_2PI = math.log(2.0 * math.pi)

#: Entries of the largest temporary of a block, (rows, K, d): 2**16 float64
#: numbers, 512 KiB, which stays in a core's cache.  The tests lower it to force
#: many blocks.
_BLOCK_ENTRIES = 2**16

#: Floor of log responsibilities relative to a row's largest (see :func:`local_step`).
_LOG_FLOOR = -700.0

#: Largest number of entries of the (K, d, d) parameter arrays (2 GiB of float64).
_MAX_PARAMETER_ENTRIES = 2**28

#: Relative rounding error allowed for a bound made of many terms (see :func:`rounding_level`).
_ROUNDING = 1e-11


def one_blas_thread():
    """A context in which BLAS runs on one thread.

    The fits make many small matrix products, one per block of rows; waking BLAS
    threads for each costs more than it saves, five times more per sweep on a busy
    two-core machine.  scikit-learn's k-means limits its loop the same way.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _row_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=1)`` for an (n, K) array with few columns, one column at a time (numpy's
    reduction along short rows costs ten times more)."""
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.maximum(out, a[:, k], out=out)
    return out


def block_slices(n: int, width: int) -> list[slice]:
    """Row slices of at most ``_BLOCK_ENTRIES // width`` rows covering ``range(n)``."""
    rows = max(1, _BLOCK_ENTRIES // max(width, 1))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


# ----------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """Weighted statistics of a set of points for each of K components.

    ``nk`` (K,) are :math:`N_k = \\sum_n r_{nk}`; ``mean`` (K, d) are
    :math:`\\bar x_k` (0 where :math:`N_k = 0`); ``scatter`` (K, d, d) are
    :math:`N_k S_k = \\sum_n r_{nk} (x_n - \\bar x_k)(x_n - \\bar x_k)^\\top`.
    """

    nk: np.ndarray
    mean: np.ndarray
    scatter: np.ndarray

    def scaled(self, factor: float) -> Stats:
        """The statistics of every point counted ``factor`` times (SVI's n / |B|)."""
        return Stats(factor * self.nk, self.mean, factor * self.scatter)


def combine(a: Stats, b: Stats, wa: float = 1.0, wb: float = 1.0) -> Stats:
    """The statistics of ``a``'s points weighted by ``wa`` together with ``b``'s weighted by ``wb``.

    The pairwise update of Chan, Golub and LeVeque (1979): with
    :math:`N = N_a + N_b` (after weighting),

    .. math::

        \\bar x = \\bar x_a + \\frac{N_b}{N} (\\bar x_b - \\bar x_a), \\qquad
        C = C_a + C_b + \\frac{N_a N_b}{N} (\\bar x_b - \\bar x_a)(\\bar x_b - \\bar x_a)^\\top,

    every term of :math:`C` positive semi-definite.  Exactly the raw moments
    :math:`w_a (N, \\sum x, \\sum x x^\\top)_a + w_b (\\ldots)_b`, without forming them.
    """
    na, nb = wa * a.nk, wb * b.nk
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_b = np.where(n > 0, nb / n, 0.0)
    delta = b.mean - a.mean
    mean = a.mean + frac_b[:, None] * delta
    scatter = (wa * a.scatter + wb * b.scatter
               + (na * frac_b)[:, None, None] * delta[:, :, None] * delta[:, None, :])
    return Stats(n, mean, scatter)


def block_stats(Xb: np.ndarray, resp: np.ndarray) -> Stats:
    """:class:`Stats` of the rows ``Xb`` (nb, d) with responsibilities ``resp`` (nb, K).

    Two passes over the block, which is in memory: the weighted means, then
    the scatter about them (no raw second moments).
    """
    nk = np.einsum("ij->j", resp)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(nk[:, None] > 0, (resp.T @ Xb) / nk[:, None], 0.0)      # (K, d)
    dev = Xb[None, :, :] - mean[:, None, :]                                    # (K, nb, d)
    weighted = dev * resp.T[:, :, None]
    scatter = np.matmul(weighted.transpose(0, 2, 1), dev)                      # (K, d, d)
    return Stats(nk, mean, scatter)


def empty_stats(K: int, d: int) -> Stats:
    return Stats(np.zeros(K), np.zeros((K, d)), np.zeros((K, d, d)))


def stats_from_resp(X: np.ndarray, shift: np.ndarray, resp: np.ndarray) -> Stats:
    """:class:`Stats` of all rows of ``X - shift`` with responsibilities ``resp``, block by block."""
    n, d = X.shape
    K = resp.shape[1]
    total = empty_stats(K, d)
    for block in block_slices(n, K * d):
        total = combine(total, block_stats(X[block] - shift, resp[block]))
    return total


# ----------------------------------------------------------------------------
# the prior
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Prior:
    """The resolved prior of the mixture and the constants of the fit derived from it.

    ``m0`` and ``W0`` are in the data's coordinates; ``m0c = m0 - shift`` is
    in the centred coordinates the fit works in.
    """

    K: int
    d: int
    alpha0: float
    beta0: float
    m0: np.ndarray
    W0: np.ndarray
    nu0: float
    shift: np.ndarray
    m0c: np.ndarray
    W0_inv: np.ndarray
    log_B0: float          # log B(W0, nu0), the Wishart normaliser (B.79)
    log_C0: float          # log C(alpha0 1), the Dirichlet normaliser (B.23)


def _log_wishart_normaliser(W_logdet, nu, d):
    r""":math:`\log B(W, \nu)` of Bishop (B.79), vectorised over components."""
    return (-0.5 * nu * W_logdet - 0.5 * nu * d * np.log(2.0)
            - _multigammaln(0.5 * nu, d))


def _multigammaln(a, d):
    """log Gamma_d(a) for an array ``a`` (scipy.special.multigammaln takes a scalar)."""
    a = np.asarray(a, dtype=float)
    return (0.25 * d * (d - 1) * np.log(np.pi)
            + gammaln(a[..., None] - 0.5 * np.arange(d)).sum(axis=-1))


def check_problem(X, resp_init, *, alpha0, beta0, m0, W0, nu0, reg_covar):
    """Validate the data, the starting responsibilities and the prior; resolve the defaults.

    Returns ``(X, resp, prior)`` with float64 arrays.  Raises ValueError
    naming the argument.
    """
    X = as_float_array(X, "X", ndim=2)
    n, d = X.shape
    if n < 2:
        raise ValueError(f"X must have at least 2 rows (points); got shape {X.shape}")
    resp = check_probability_vector(resp_init, "resp_init")
    if resp.ndim != 2 or resp.shape[0] != n:
        raise ValueError(f"resp_init must have shape (n, K) with n = {n}, the number of rows of X; "
                         f"got shape {resp.shape}")
    K = resp.shape[1]
    if K * d * d > _MAX_PARAMETER_ENTRIES:
        raise ValueError(f"resp_init and X ask for K = {K} components in d = {d} dimensions, "
                         f"{K * d * d} numbers per (K, d, d) array, more than "
                         f"{_MAX_PARAMETER_ENTRIES}; reduce the number of components or features")
    alpha0 = 1.0 / K if alpha0 is None else check_scalar(alpha0, "alpha0", positive=True)
    beta0 = check_scalar(beta0, "beta0", positive=True)
    nu0 = float(d) if nu0 is None else check_scalar(nu0, "nu0")
    if nu0 <= d - 1:
        raise ValueError(f"nu0 must be > d - 1 = {d - 1} (X has d = {d} columns); got {_describe(nu0)}")
    reg_covar = check_scalar(reg_covar, "reg_covar", nonnegative=True)
    moments = empty_stats(1, d)                # the mean and scatter of X, block by block
    for block in block_slices(n, d):
        moments = combine(moments, block_stats(X[block], np.ones((block.stop - block.start, 1))))
    shift = moments.mean[0]
    if m0 is None:
        m0 = shift.copy()
    else:
        m0 = as_float_array(m0, "m0", ndim=1)
        if m0.shape != (d,):
            raise ValueError(f"m0 must have shape ({d},), one entry per column of X; got shape {m0.shape}")
    if W0 is None:
        # scikit-learn's default covariance_prior, the sample covariance, floored
        W0_inv = moments.scatter[0] / (n - 1) + reg_covar * np.eye(d)
        try:
            chol = np.linalg.cholesky(W0_inv)
        except np.linalg.LinAlgError:
            raise ValueError(
                "the default W0, the inverse of the sample covariance of X plus reg_covar on its "
                f"diagonal, does not exist: the {n} points of X span fewer than d = {d} "
                "dimensions (identical points, or d >= n) and reg_covar = 0. Pass W0, or "
                "reg_covar > 0") from None
        chol_inv = np.linalg.inv(chol)
        W0 = chol_inv.T @ chol_inv
        W0_logdet = -2.0 * np.log(np.diag(chol)).sum()
    else:
        W0 = check_spd(W0, "W0", dim=d, single=True)
        W0 = 0.5 * (W0 + W0.T)
        chol = np.linalg.cholesky(W0)
        chol_inv = np.linalg.inv(chol)
        W0_inv = chol_inv.T @ chol_inv
        W0_logdet = 2.0 * np.log(np.diag(chol)).sum()
    return X, resp, _prior(K, alpha0, beta0, m0, W0, W0_inv, W0_logdet, nu0, shift)


def _prior(K, alpha0, beta0, m0, W0, W0_inv, W0_logdet, nu0, shift) -> Prior:
    d = m0.shape[0]
    return Prior(
        K=K, d=d, alpha0=alpha0, beta0=beta0, m0=m0, W0=W0, nu0=nu0, shift=shift, m0c=m0 - shift,
        W0_inv=0.5 * (W0_inv + W0_inv.T),
        log_B0=float(_log_wishart_normaliser(W0_logdet, nu0, d)),
        log_C0=float(gammaln(K * alpha0) - K * gammaln(alpha0)),
    )


# ----------------------------------------------------------------------------
# the parameters of q(pi, mu, Lambda), and the update of q(Z)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Params:
    """:math:`q(\\pi)\\prod_k q(\\mu_k, \\Lambda_k)` in Bishop's parameters (``m`` centred),
    with the expectations the other updates need."""

    alpha: np.ndarray      # (K,)
    beta: np.ndarray       # (K,)
    m: np.ndarray          # (K, d), centred coordinates
    W: np.ndarray          # (K, d, d)
    nu: np.ndarray         # (K,)
    W_logdet: np.ndarray   # (K,) log |W_k|
    prec_chol: np.ndarray  # (K, d, d) P_k with W_k = P_k' P_k (upper or lower)
    e_log_pi: np.ndarray   # (K,) E[log pi_k], (10.66)
    e_log_det: np.ndarray  # (K,) E[log |Lambda_k|], (10.65)
    cond: np.ndarray       # (K,) condition numbers of W_k^-1, for rounding_level


def m_step(prior: Prior, stats: Stats) -> Params:
    """Bishop's (10.58)-(10.63), with the erratum :math:`\\nu_k = \\nu_0 + N_k`.

    .. math::

        W_k^{-1} = W_0^{-1} + N_k S_k + \\frac{\\beta_0 N_k}{\\beta_0 + N_k}
                   (\\bar x_k - m_0)(\\bar x_k - m_0)^\\top,

    which is :func:`combine` of the prior, read as :math:`\\beta_0` pseudo-points at
    :math:`m_0` with scatter :math:`W_0^{-1}`, and the data's statistics: the merged
    count is :math:`\\beta_k`, the merged mean :math:`m_k` (10.61), the merged
    scatter :math:`W_k^{-1}` (10.62).  It never divides by :math:`N_k`, so an
    emptied component is harmless.
    """
    nk = stats.nk
    alpha = prior.alpha0 + nk
    nu = prior.nu0 + nk
    K, d = stats.mean.shape
    pseudo = Stats(np.full(K, prior.beta0), np.broadcast_to(prior.m0c, (K, d)),
                   np.broadcast_to(prior.W0_inv, (K, d, d)))
    merged = combine(pseudo, stats)
    beta, m, W_inv = merged.nk, merged.mean, merged.scatter
    W_inv = 0.5 * (W_inv + np.swapaxes(W_inv, 1, 2))
    try:
        chol = np.linalg.cholesky(W_inv)                        # W_k^-1 = U U'
    except np.linalg.LinAlgError:
        eig = np.linalg.eigvalsh(W_inv)
        k = int(np.argmin(eig.min(axis=1) / eig.max(axis=1)))
        raise ValueError(
            f"the scale matrix W_k of component {k} is not positive definite in floating point "
            f"(its inverse has eigenvalues from {eig[k].min():.3g} to {eig[k].max():.3g}): the "
            "data's spread differs by more than 1e16 between directions, e.g. a point far "
            "from the rest; rescale X, or pass a W0 with a larger inverse") from None
    eig = np.linalg.eigvalsh(W_inv)
    prec_chol = np.linalg.inv(chol)                             # P = U^-1, W = P' P
    W = np.swapaxes(prec_chol, 1, 2) @ prec_chol
    W_logdet = -2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return _params(alpha, beta, m, W, nu, W_logdet, prec_chol, eig[:, -1] / eig[:, 0])


def _params(alpha, beta, m, W, nu, W_logdet, prec_chol, cond) -> Params:
    """:class:`Params` with the expectations (10.65), (10.66) that the other updates need."""
    d = m.shape[1]
    e_log_pi = digamma(alpha) - digamma(alpha.sum())                               # (10.66)
    e_log_det = (digamma(0.5 * (nu[:, None] - np.arange(d))).sum(axis=1)
                 + d * np.log(2.0) + W_logdet)                                      # (10.65)
    return Params(alpha, beta, m, W, nu, W_logdet, prec_chol, e_log_pi, e_log_det, cond)


def from_fit(alpha, beta, m, W, nu, *, alpha0, beta0, m0, W0, nu0) -> tuple[Prior, Params]:
    """The prior and the parameters of a fitted mixture (means in the data's coordinates),
    centred at the prior mean."""
    K = alpha.shape[0]
    chol0 = np.linalg.cholesky(W0)
    chol0_inv = np.linalg.inv(chol0)
    shift = np.array(m0, dtype=float)
    prior = _prior(K, alpha0, beta0, shift, W0, chol0_inv.T @ chol0_inv,
                   2.0 * np.log(np.diag(chol0)).sum(), nu0, shift)
    chol = np.linalg.cholesky(W)                                # W = L L' = P' P with P = L'
    eig = np.linalg.eigvalsh(W)
    params = _params(alpha, beta, m - shift, W, nu,
                     2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1),
                     np.swapaxes(chol, 1, 2), eig[:, -1] / eig[:, 0])
    return prior, params


def local_step(params: Params, X: np.ndarray, shift: np.ndarray, *,
               out: np.ndarray | None = None) -> tuple[Stats, float]:
    """Update :math:`q(z_n)` for every row of ``X`` (Bishop's (10.64)-(10.67)) and return the statistics.

    .. math::

        \\log \\rho_{nk} = \\mathbb E[\\log \\pi_k] + \\tfrac12 \\mathbb E[\\log|\\Lambda_k|]
                          - \\tfrac d2 \\log 2\\pi
                          - \\tfrac12\\big(d/\\beta_k + \\nu_k \\lVert P_k (x_n - m_k) \\rVert^2\\big),
        \\qquad r_{nk} = \\rho_{nk} / \\textstyle\\sum_j \\rho_{nj},

    with :math:`W_k = P_k^\\top P_k`.  Block by block: ``(X[block] - shift) @ P'``
    for all components at once is one matrix product, then the row-wise
    normalisation in log space, then the block's :class:`Stats`.

    Returns the :class:`Stats` of all rows and :math:`\\sum_{nk} r_{nk} \\log r_{nk}`;
    writes the responsibilities into ``out`` (n, K) if given.
    """
    n, d = X.shape
    K = params.alpha.shape[0]
    # (x - m_k) P_k' for every k in one product: columns k*d .. k*d + d - 1 hold P_k'
    prec_t = params.prec_chol.transpose(2, 0, 1).reshape(d, K * d)
    prec_m = np.einsum("kij,kj->ki", params.prec_chol, params.m).reshape(K * d)
    const = (params.e_log_pi + 0.5 * params.e_log_det - 0.5 * d * _LOG_2PI
             - 0.5 * d / params.beta)
    # sums each run of d columns: (nb, K d) @ (K d, K)
    sum_blocks = np.kron(np.eye(K), np.ones((d, 1)))
    total = empty_stats(K, d)
    neg_entropy = 0.0
    for block in block_slices(n, K * d):
        Xb = X[block] - shift
        y = Xb @ prec_t
        y -= prec_m
        np.square(y, out=y)
        log_rho = const - 0.5 * params.nu * (y @ sum_blocks)      # (nb, K)
        # normalise in log space (shift by the row maximum); resp and log resp both needed.
        # Responsibilities below e^-700 relative to a row's largest are floored there: exp
        # of a more negative number underflows, which costs ten times more, and the floor
        # changes no sum by more than 1e-300.
        log_rho -= _row_max(log_rho)[:, None]
        np.maximum(log_rho, _LOG_FLOOR, out=log_rho)
        resp = np.exp(log_rho)
        norm = np.einsum("ij->i", resp)[:, None]
        resp /= norm
        log_rho -= np.log(norm)                                                  # log r_nk
        neg_entropy += float(np.einsum("ij,ij->", resp, log_rho))     # (BLAS ddot threads badly)
        if out is not None:
            out[block] = resp
        total = combine(total, block_stats(Xb, resp))
    return total, neg_entropy


def elbo(prior: Prior, params: Params, stats: Stats, neg_entropy: float) -> float:
    """Bishop's (10.70)-(10.77), with every constant, for any ``q(Z)`` and ``q(pi, mu, Lambda)``.

    ``stats`` and ``neg_entropy`` (:math:`\\sum r \\log r`) summarise
    :math:`q(Z)`; ``params`` is the parameter factor, not necessarily the one
    :func:`m_step` would set from ``stats``.  The data enter only through
    ``stats``, linearly: SVI's minibatch estimate is this function of the
    scaled minibatch statistics.
    """
    d, K = prior.d, prior.K
    alpha, beta, m, W, nu = params.alpha, params.beta, params.m, params.W, params.nu
    e_log_pi, e_log_det = params.e_log_pi, params.e_log_det
    nk = stats.nk
    # sum_n r_nk (x_n - m_k)' W_k (x_n - m_k) = tr(W_k N_k S_k) + N_k (xbar_k - m_k)' W_k (xbar_k - m_k)
    dm = stats.mean - m
    quad = (np.einsum("kij,kji->k", W, stats.scatter)
            + nk * np.einsum("ki,kij,kj->k", dm, W, dm))
    # (10.71) E log p(X | Z, mu, Lambda)
    e_log_lik = 0.5 * np.sum(nk * (e_log_det - d / beta - d * _LOG_2PI) - nu * quad)
    # (10.72) E log p(Z | pi); (10.75) E log q(Z) = neg_entropy
    e_log_pz = nk @ e_log_pi
    # (10.73) E log p(pi) and (10.76) E log q(pi)
    e_log_ppi = prior.log_C0 + (prior.alpha0 - 1.0) * e_log_pi.sum()
    e_log_qpi = gammaln(alpha.sum()) - gammaln(alpha).sum() + (alpha - 1.0) @ e_log_pi
    # (10.74) E log p(mu, Lambda)
    dm0 = m - prior.m0c
    mahal = np.einsum("ki,kij,kj->k", dm0, W, dm0)
    tr_W0inv_W = np.einsum("ij,kji->k", prior.W0_inv, W)
    e_log_pml = (0.5 * np.sum(d * np.log(prior.beta0 / (2 * np.pi)) + e_log_det
                              - d * prior.beta0 / beta - prior.beta0 * nu * mahal)
                 + K * prior.log_B0 + 0.5 * (prior.nu0 - d - 1.0) * e_log_det.sum()
                 - 0.5 * np.sum(nu * tr_W0inv_W))
    # (10.77) E log q(mu, Lambda), with the entropy of q(Lambda_k) of (B.82)
    log_B = _log_wishart_normaliser(params.W_logdet, nu, d)
    entropy_lambda = -log_B - 0.5 * (nu - d - 1.0) * e_log_det + 0.5 * nu * d
    e_log_qml = np.sum(0.5 * e_log_det + 0.5 * d * np.log(beta / (2 * np.pi)) - 0.5 * d
                       - entropy_lambda)
    return float(e_log_lik + e_log_pz + e_log_ppi + e_log_pml
                 - neg_entropy - e_log_qpi - e_log_qml)


# ----------------------------------------------------------------------------
# the batch loop
# ----------------------------------------------------------------------------

def finite_elbo(value: float, where: str) -> float:
    """``value``, or a ValueError saying where the bound broke down."""
    if not math.isfinite(value):
        raise ValueError(f"the ELBO became {value} at {where}; the data or the prior are too extreme "
                         "for float64: rescale X, or pass a broader prior (smaller beta0, W0)")
    return value


def rounding_level(value: float, params: Params, n: int) -> float:
    r"""How far the computed bound ``value`` at ``params`` can be off by rounding alone.

    Two parts: a relative error of ``_ROUNDING`` of the bound (or of the
    number of points, whichever is larger), for a sum of many terms; and, for
    each component, the error of :math:`\log|W_k|` and of the traces with
    :math:`W_k`, about :math:`\epsilon\,\kappa(W_k^{-1})\, d` relative
    (:math:`\kappa` the condition number), weighted by their coefficients
    in the bound, which grow like :math:`\nu_k + \beta_k`.  A point far
    from the rest gets a component of its own whose :math:`W_k^{-1}` has a
    condition number near :math:`\lVert x - m_0 \rVert^2` over the prior's
    scale, :math:`10^{14}` for a point :math:`10^7` away, so its bound is
    only known to a few hundredths of a nat.
    """
    d = params.m.shape[1]
    eps = np.finfo(float).eps
    per_component = eps * params.cond * d * (params.nu + params.beta)
    return _ROUNDING * max(abs(value), n, 1.0) + 2.0 * float(per_component.sum())


def fit_cavi(X: np.ndarray, resp_init: np.ndarray, prior: Prior, *, max_iter: int, tol: float):
    """The CAVI loop of :func:`vicourse.cavi.bayesian_gmm`: validate first, then call this.

    Starts with the parameter update from ``resp_init``; each sweep updates
    :math:`q(Z)` then :math:`q(\\pi, \\mu, \\Lambda)` and records the ELBO at
    the parameters after the sweep.  Returns
    ``(params, resp, elbos, n_iter, converged)``.
    """
    n = X.shape[0]
    params = m_step(prior, stats_from_resp(X, prior.shift, resp_init))
    resp = np.empty_like(resp_init)
    elbos: list[float] = []
    drops: dict[int, float] = {}                 # sweep -> decrease beyond rounding
    converged = False
    for sweep in range(1, max_iter + 1):
        stats, neg_entropy = local_step(params, X, prior.shift, out=resp)
        params = m_step(prior, stats)
        elbos.append(finite_elbo(elbo(prior, params, stats, neg_entropy), f"sweep {sweep}"))
        if sweep > 1:
            change = elbos[-1] - elbos[-2]
            rounding = rounding_level(elbos[-1], params, n)
            if change < -rounding:
                drops[sweep] = -change
            # a far outlier can make the bound's rounding error larger than tol * n
            if tol > 0 and abs(change) < max(tol * n, rounding):
                converged = True
                break
    if drops:
        worst = max(drops, key=drops.get)
        warnings.warn(
            f"bayesian_gmm: the ELBO decreased at {len(drops)} of {len(elbos) - 1} sweeps beyond "
            f"rounding, by up to {drops[worst]:.3g} nats (at sweep {worst}); CAVI never decreases "
            "it, so an update or its arithmetic is wrong (a modified update, or data too "
            "extreme for float64)", ConvergenceWarning, stacklevel=3)
    if not converged and tol > 0:
        last = elbos[-1] - elbos[-2] if len(elbos) > 1 else float("nan")
        warnings.warn(
            f"bayesian_gmm: CAVI did not converge in max_iter={max_iter} sweeps (last ELBO change "
            f"{last / n:.3g} per point, tol={tol:g} per point); increase max_iter or tol, "
            "or start from other responsibilities",
            ConvergenceWarning, stacklevel=3)
    return params, resp, np.asarray(elbos), len(elbos), converged
