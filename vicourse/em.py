"""EM for a Gaussian mixture, as coordinate ascent on the ELBO (Chapter 2).

For a mixture with weights :math:`\\pi_k`, means :math:`\\mu_k` and full
covariances :math:`\\Sigma_k`, the ELBO of responsibilities
:math:`r_{ik} = q(z_i = k)` is

.. math::

    \\mathcal L(q; \\theta) = \\sum_{i=1}^n \\sum_{k=1}^K r_{ik}
        \\big[\\log \\pi_k + \\log \\mathcal N(x_i \\mid \\mu_k, \\Sigma_k) - \\log r_{ik}\\big].

The E-step maximises it over :math:`q` (:func:`e_step`), the M-step over
:math:`\\theta` (:func:`m_step`); :func:`fit_gmm` alternates the two, starting,
as scikit-learn's mixtures do, from responsibilities ``resp_init`` with an
M-step.

How the code is organised
-------------------------
A Gaussian is an exponential family: :math:`\\log \\pi_k + \\log \\mathcal N(x \\mid
\\mu_k, \\Sigma_k) = \\eta_k^\\top T(x)` with sufficient statistic
:math:`T(x) = (1, x, \\operatorname{vech}(x x^\\top))` and natural parameters
:math:`\\eta_k` made from :math:`\\log \\pi_k`, :math:`\\Lambda_k \\mu_k` and
:math:`-\\tfrac12 \\Lambda_k`.  So the log joint of a block of points and every
component is one matrix product :math:`T \\eta^\\top` (the E-step), and the
M-step needs only the expected sufficient statistics :math:`r^\\top T`, another
matrix product, summed over blocks.  The data are read in blocks of a few
thousand rows, so no array of :math:`n` rows is made: memory stays flat as
:math:`n` grows.  Each block is centred on the data's mean (the mixture is
translation-equivariant), which keeps the subtraction :math:`\\mathbb E[x
x^\\top] - \\mu \\mu^\\top` accurate; a component too narrow for that (relative
to its distance from the mean) is computed in centred form instead: within
the loop of :func:`fit_gmm`, from moments about its previous mean gathered in
the same pass as the E-step.

scikit-learn's ``GaussianMixture`` computes the same quantities one component
at a time in centred form; the tests check that both give the same
parameters after the same number of iterations from the same start.

References
----------
Dempster, Laird and Rubin (1977); Neal and Hinton (1998); Bishop (2006), Sections 9.2-9.4.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from vicourse._validation import (
    as_float_array,
    check_int,
    check_probability_vector,
    check_scalar,
    check_spd,
    finite_or_raise,
)
from vicourse.elbo import discrete_elbo
from vicourse.exceptions import ConvergenceWarning

__all__ = ["GMMFit", "e_step", "elbo", "fit_gmm", "log_joint", "log_likelihood", "m_step"]

_LOG_2PI = np.log(2.0 * np.pi)
# Added to every N_k before dividing, as scikit-learn does, so that a component
# that has lost all its points gets a finite mean and covariance instead of 0/0.
_EPS = np.finfo(np.float64).eps
_NK_FLOOR = 10 * _EPS
# Largest relative error accepted from the sufficient-statistic form before a
# component is computed in centred form instead (see _narrow).
_EXPANSION_TOL = 1e-11
# Each block of rows uses about this much memory (its T, its centred points and
# its (rows, K) arrays): a few MiB, whatever n is.
_BLOCK_BYTES = 4 * 2**20
# An (n, K) result larger than this is refused before it is allocated.
_MAX_RESULT_BYTES = 4 * 2**30
# The products of a block are small (a few thousand rows by 1 + d + d(d+1)/2 by K):
# splitting them across BLAS threads costs more than it saves, and on a busy
# machine far more (a thread waits for a core at every product).  Every public
# function runs its block loop with one BLAS thread, as scikit-learn's KMeans
# does with its chunks.  The controller is made once: entering it costs a few us.
_BLAS = ThreadpoolController()
# A log-likelihood may fall by this much relative to sum_i |log p(x_i | theta)|
# (rounding of n-term sums) before EM with reg_covar = 0 warns that it fell.
_FALL_TOL = 1e-9


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


def _check_resp(resp, n_samples: int, name: str = "resp") -> np.ndarray:
    if isinstance(resp, np.ndarray) and resp.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, K); got shape {resp.shape}")
    resp = check_probability_vector(resp, name)
    if resp.ndim != 2 or resp.shape[0] != n_samples:
        raise ValueError(f"{name} must have shape (n, K) with n = {n_samples} rows (one per row "
                         f"of X); got shape {resp.shape}")
    return resp


def _check_result_size(n_samples: int, n_components: int) -> None:
    size = 8 * n_samples * n_components
    if size > _MAX_RESULT_BYTES:
        raise ValueError(f"weights has K = {n_components} components: the (n, K) result for "
                         f"n = {n_samples} points would take {size / 2**30:.1f} GiB; use fewer "
                         "points or components (log_likelihood works in blocks)")


# ----------------------------------------------------------------------------- the kernels

def _natural_parameters(weights, means_c, covariances):
    """eta of shape (K, 1 + d + d(d+1)/2) with eta_k . T(x) = log pi_k + log N(x | mu_k, Sigma_k).

    Uses the Cholesky factor Sigma_k = L_k L_k^T: Lambda_k = L_k^{-T} L_k^{-1} and
    log|Sigma_k| = 2 sum log diag L_k.  Also returns L_k^{-1} (K, d, d) and the
    constant of each component (K,), for the centred route.  Raises
    numpy.linalg.LinAlgError if a covariance is not positive definite.
    """
    d = means_c.shape[1]
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
    return eta, chol_inv, const, half_log_det


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


@dataclass(frozen=True)
class _Params:
    """Mixture parameters (means centred on the data's mean) and what the E-step needs."""

    weights: np.ndarray
    means_c: np.ndarray
    covariances: np.ndarray
    eta: np.ndarray
    chol_inv: np.ndarray
    const: np.ndarray
    half_log_det: np.ndarray
    narrow: np.ndarray          # indices of the components that take the centred route


class _Data:
    """The data, read in blocks of rows centred on their mean, with T built per block."""

    def __init__(self, X: np.ndarray, n_components: int):
        self.X = X
        self.n, self.d = X.shape
        self.K = n_components
        self.centre = X.mean(axis=0)
        self.n_stats = 1 + self.d + self.d * (self.d + 1) // 2
        per_row = 8 * (self.n_stats + self.d + 4 * n_components)
        self.rows = int(min(self.n, max(64, _BLOCK_BYTES // per_row)))
        self._Xc = np.empty((self.rows, self.d))
        # T is built transposed, (n_stats, rows), so that each statistic is written
        # as one contiguous row; blocks() hands out its (rows, n_stats) view.
        self._TT = np.empty((self.n_stats, self.rows))
        self._TT[0] = 1.0
        # The (K, rows) layout makes the reductions over components elementwise
        # operations on K contiguous rows, which numpy vectorises (a reduction over a
        # short last axis of (rows, K) runs one tiny loop per row).
        self._work = np.empty((3, n_components, self.rows))   # log joint, exp, resp
        radius2 = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for _, Xc in self._centred_blocks():
                radius2 = max(radius2, float(np.max(np.einsum("na,na->n", Xc, Xc))))
        if not np.isfinite(radius2):
            # Every second moment of the data would overflow (scikit-learn returns
            # NaN here): refuse at the door rather than fail inside an M-step.
            raise ValueError("X spans too wide a range for float64: the squared distance of "
                             "its points from their mean overflows (largest |entry| "
                             f"{np.abs(X).max():.3g}); rescale X")
        self.radius = float(np.sqrt(radius2))

    # -- reading the data

    def _centred_blocks(self):
        """Yield (rows, X[rows] - centre), the centred block in a reused buffer."""
        for start in range(0, self.n, self.rows):
            stop = min(start + self.rows, self.n)
            yield slice(start, stop), np.subtract(self.X[start:stop], self.centre,
                                                  out=self._Xc[:stop - start])

    def blocks(self):
        """Yield (rows, Xc, T): the centred block and its statistics T = (1, x, vech(x x^T))."""
        d = self.d
        for rows, Xc in self._centred_blocks():
            m = Xc.shape[0]
            TT = self._TT[:, :m]
            XcT = TT[1:1 + d]
            XcT[...] = Xc.T
            start = 1 + d
            for a in range(d):       # row a of the upper triangle, in np.triu_indices order
                np.multiply(XcT[a], XcT[a:], out=TT[start:start + d - a])
                start += d - a
            yield rows, Xc, TT.T

    # -- the two steps

    def params(self, weights, means_c, covariances) -> _Params:
        # A mean very far from the data (relative to its covariance) can overflow
        # eta_k; such a component is narrow and takes the centred route, and a point
        # that no component reaches is reported by _raise_unreachable.
        with np.errstate(over="ignore", invalid="ignore"):
            eta, chol_inv, const, half_log_det = _natural_parameters(weights, means_c,
                                                                     covariances)
            narrow = np.flatnonzero(_narrow(means_c, covariances, self.radius))
        return _Params(weights, means_c, covariances, eta, chol_inv, const, half_log_det,
                       narrow)

    def block_log_joint(self, Xc, T, p: _Params, out=None) -> np.ndarray:
        """log pi_k + log N(x_i | mu_k, Sigma_k) for a block, transposed: (K, rows)."""
        # Departure from the textbook form eq-em-log-joint: the Mahalanobis term
        # (x - mu)^T Lambda (x - mu) is expanded into eta_k . T(x), so all values
        # of the block are one matrix product.
        lj = np.matmul(p.eta, T.T, out=out)
        # Fallback: where the expansion would cancel badly (_narrow), the textbook
        # form, as scikit-learn computes it: || L_k^{-1} (x_i - mu_k) ||^2.
        for k in p.narrow:                                     # loop over K, rarely entered
            y = (Xc - p.means_c[k]) @ p.chol_inv[k].T          # L_k^{-1} (x_i - mu_k)
            with np.errstate(over="ignore"):                   # -inf: see _raise_unreachable
                lj[k] = p.const[k] - 0.5 * np.einsum("na,na->n", y, y)
        return lj

    def block_e_step(self, Xc, T, p: _Params, rows: slice):
        """E-step on the block ``rows``: log joint and resp, both (K, rows), in reused
        buffers, and the per-point log-likelihood (rows,)."""
        m = Xc.shape[0]
        lj = self.block_log_joint(Xc, T, p, out=self._work[0, :, :m])
        # log-sum-exp over components, shifted by the row maximum as
        # scipy.special.logsumexp does; exp(lj - max) is kept, so that the
        # responsibilities are one division (never exponentiate-then-normalise:
        # each row's largest shifted term is exp(0) = 1, so no row sum underflows).
        row_max = lj.max(axis=0)
        if not np.isfinite(row_max.sum()):                     # one sum: cheap
            _raise_unreachable(lj, rows)
        shifted = np.subtract(lj, row_max, out=self._work[1, :, :m])
        np.exp(shifted, out=shifted)
        sums = shifted.sum(axis=0)
        resp = np.divide(shifted, sums, out=self._work[2, :, :m])
        lse = row_max + np.log(sums)
        return lj, resp, lse

    def statistics(self, resp, check_as: str | None = None) -> np.ndarray:
        """Expected sufficient statistics sum_i r_ik T(x_i), (K, n_stats), from an (n, K) array.

        With ``check_as``, each block of ``resp`` is first checked to hold
        probability rows, and errors name ``check_as``.
        """
        stats = np.zeros((resp.shape[1], self.n_stats))
        for rows, _, T in self.blocks():
            block = resp[rows]
            if check_as is not None:
                block = check_probability_vector(block, check_as)
            stats += block.T @ T
        return stats

    def e_pass(self, p: _Params, *, with_statistics: bool = True):
        """One E-step over all blocks: what the loop records, and r^T T for the M-step.

        With the statistics it also accumulates, for each component that is
        narrow at ``p``, the first and second moments of the points about that
        component's mean, sum_i r_ik (x_i - mu_k) and sum_i r_ik (x_i - mu_k)(x_i -
        mu_k)^T: from them the M-step forms the new covariance without a second
        pass (see :meth:`m_step`).
        """
        stats = np.zeros((self.K, self.n_stats)) if with_statistics else None
        narrow = p.narrow if with_statistics else p.narrow[:0]
        first = np.zeros((narrow.size, self.d))
        second = np.zeros((narrow.size, self.d, self.d))
        log_lik = abs_log_lik = cross = neg_entropy = 0.0
        for rows, Xc, T in self.blocks():
            lj, resp, lse = self.block_e_step(Xc, T, p, rows)
            log_lik += float(lse.sum())
            abs_log_lik += float(np.abs(lse).sum())
            cross += float(np.vdot(resp, lj))                 # sum r log p(x, z)
            # sum r log r with log r = lj - lse, finite wherever lj is.
            neg_entropy += float(np.vdot(resp, lj - lse))
            if with_statistics:
                stats += resp @ T
            for j, k in enumerate(narrow):                    # loop over K, rarely entered
                diff = Xc - p.means_c[k]
                weighted = resp[k, :, None] * diff
                first[j] += weighted.sum(axis=0)
                second[j] += weighted.T @ diff
        return {"log_likelihood": log_lik, "abs_log_likelihood": abs_log_lik,
                "elbo": cross - neg_entropy, "neg_entropy": neg_entropy,
                "stats": stats,
                "about_old_means": (narrow, p.means_c[narrow], first, second)}

    def m_step(self, stats, reg_covar: float, *, resp=None, p_old: _Params | None = None,
               about_old_means=None):
        """Weights, centred means and covariances from statistics ``stats`` (K, n_stats).

        A narrow component's covariance is recomputed in centred form.  If
        ``about_old_means`` (from :meth:`e_pass` at ``p_old``) holds its
        moments about its old mean m, the scatter about the new mean mu is
        S_m - f s^T - s f^T + N_k s s^T, with f the first moment about m and
        s = mu - m; this costs an error of about eps |s|^2 relative to the
        smallest eigenvalue of the new covariance, which is used only where
        that is below the tolerance of :func:`_narrow`.  Otherwise the
        responsibilities are needed once more: from ``resp`` (n, K) if given,
        else by repeating the E-step at ``p_old``, block by block.
        """
        weights, means_c, covariances = _params_from_statistics(stats, self.centre, reg_covar)
        narrow = np.flatnonzero(_narrow(means_c, covariances, self.radius))
        if narrow.size and about_old_means is not None:
            old, old_means, first, second = about_old_means
            remaining = []
            for k in narrow:
                where = np.flatnonzero(old == k)
                if where.size == 0:
                    remaining.append(k)
                    continue
                j = int(where[0])
                shift = means_c[k] - old_means[j]
                cross = np.outer(first[j], shift)
                scatter = second[j] - cross - cross.T + stats[k, 0] * np.outer(shift, shift)
                covariance = scatter / (stats[k, 0] + _NK_FLOOR) + reg_covar * np.eye(self.d)
                smallest = np.linalg.eigvalsh(covariance)[0]
                if _EPS * float(shift @ shift) > _EXPANSION_TOL * smallest:
                    remaining.append(k)        # the mean moved too far: the exact route
                else:
                    covariances[k] = covariance
            narrow = np.asarray(remaining, dtype=np.intp)
        if narrow.size:
            # Fallback: where E[x x^T] - mu mu^T cancels badly, the textbook centred
            # sum, exactly scikit-learn's _estimate_gaussian_covariances_full.
            scatter = np.zeros((narrow.size, self.d, self.d))
            for rows, Xc, T in self.blocks():
                # responsibilities of the block, (K, rows)
                r = resp[rows].T if resp is not None else self.block_e_step(Xc, T, p_old, rows)[1]
                for j, k in enumerate(narrow):
                    diff = Xc - means_c[k]
                    scatter[j] += (r[k, :, None] * diff).T @ diff
            covariances[narrow] = scatter / (stats[narrow, 0] + _NK_FLOOR)[:, None, None]
            covariances[narrow] += reg_covar * np.eye(self.d)
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


def _elbo_at_m_step(stats, p: _Params, reg_covar: float, neg_entropy: float) -> float:
    """L(q; theta) at the parameters the M-step computed from q's statistics, in closed form.

    With mu_k the weighted mean, sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T =
    N~_k (Sigma_k - eps I) by the M-step's own formula, so the quadratic terms
    sum to N~_k tr(Lambda_k (Sigma_k - eps I)) = N~_k (d - eps tr Lambda_k):
    no pass over the data is needed.  (Tested against :func:`elbo`.)
    """
    d = p.means_c.shape[1]
    n_k = stats[:, 0]
    trace_precision = np.einsum("kab,kab->k", p.chol_inv, p.chol_inv)   # tr Lambda_k
    expected = (n_k @ p.const
                - 0.5 * (n_k + _NK_FLOOR) @ (d - reg_covar * trace_precision))
    return float(expected - neg_entropy)


def _raise_unreachable(lj, rows) -> None:
    """Raise if a point's log joint is -inf (or NaN) for every component, as in ``lj`` (K, rows).

    With finite data and positive definite covariances every log density is
    finite; it is -inf only when a squared Mahalanobis distance overflows
    float64.  A row with no finite value would give NaN responsibilities.
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(np.max(lj, axis=0))
    if bad.any():
        i = rows.start + int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"row {i} of X is so far from every component, relative to its covariance, that "
            "log p(x_i, z_i = k | theta) overflows float64 for every k (a squared Mahalanobis "
            "distance above 1e308): check means and covariances against X, or rescale X")


def _require_positive_definite(covariances, iteration: int | None = None) -> None:
    try:
        np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        when = {None: "", 0: " in the first M-step, from resp_init"}.get(
            iteration, f" at iteration {iteration}")
        raise ValueError(
            f"a covariance became singular{when}: a component collapsed onto too few "
            "points; increase reg_covar, use fewer components, or start elsewhere"
        ) from None


def _params_or_raise(data: _Data, weights, means_c, covariances, iteration=None) -> _Params:
    try:
        return data.params(weights, means_c, covariances)
    except np.linalg.LinAlgError:
        _require_positive_definite(covariances, iteration)
        raise


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
        If ``X`` is not a finite 2-D array or spans so wide a range that its
        squared distances overflow float64, ``weights`` is not a positive
        probability vector, a covariance is not symmetric positive definite,
        the shapes disagree, the (n, K) result would exceed 4 GiB, or a point
        of ``X`` is so far from every component (relative to its covariance)
        that all its log densities overflow to ``-inf``.

    Notes
    -----
    A departure from the textbook form: with :math:`\Lambda_k = \Sigma_k^{-1}
    = L_k^{-\top} L_k^{-1}` (Cholesky :math:`\Sigma_k = L_k L_k^\top`; no
    general inverse is formed), the log joint is linear in
    :math:`T(x) = (1, x, \operatorname{vech}(x x^\top))` of the data centred
    on their mean :math:`\bar x`,

    .. math::

        \log p(x, z = k \mid \theta) = \underbrace{\log \pi_k - \tfrac d2 \log 2\pi
            - \textstyle\sum_a \log (L_k)_{aa} - \tfrac12 \mu_k^\top \Lambda_k
            \mu_k}_{\eta_{k,0}}
            + (\Lambda_k \mu_k)^\top x - \tfrac12 x^\top \Lambda_k x,

    so a block of rows is one matrix product.  Expanding the quadratic costs an
    absolute error of about :math:`\varepsilon_{\mathrm{mach}} (\lVert x - \bar x
    \rVert + \lVert \mu_k - \bar x \rVert)^2 / \lambda_{\min}(\Sigma_k)` nats; a
    component for which this bound exceeds :math:`10^{-11}` (a narrow component
    far from :math:`\bar x`) is evaluated in the textbook form
    :math:`\lVert L_k^{-1} (x - \mu_k) \rVert^2` instead, as scikit-learn does
    for every component.
    """
    X = _check_data(X)
    weights, means, covariances = _check_params(weights, means, covariances, X.shape[1])
    _check_result_size(X.shape[0], weights.shape[0])
    data = _Data(X, weights.shape[0])
    p = data.params(weights, means - data.centre, covariances)
    out = np.empty((data.n, data.K))
    with _BLAS.limit(limits=1, user_api="blas"):
        for rows, Xc, T in data.blocks():
            lj = data.block_log_joint(Xc, T, p)
            _raise_unreachable(lj, rows)
            out[rows] = lj.T
    return out


def log_likelihood(X, weights, means, covariances) -> float:
    r"""The total log-likelihood :math:`\log p(x_{1:n} \mid \theta) = \sum_i \log \sum_k \pi_k
    \mathcal N(x_i \mid \mu_k, \Sigma_k)`.

    Implements {eq}`eq-em-loglik` of Chapter 2, with a row-maximum-shifted
    log-sum-exp over the components (as ``scipy.special.logsumexp``), block by
    block, so that no (n, K) array is made.  Parameters and errors as in
    :func:`log_joint` (without the size limit).

    Returns
    -------
    float
    """
    X = _check_data(X)
    weights, means, covariances = _check_params(weights, means, covariances, X.shape[1])
    data = _Data(X, weights.shape[0])
    p = data.params(weights, means - data.centre, covariances)
    with _BLAS.limit(limits=1, user_api="blas"):
        return data.e_pass(p, with_statistics=False)["log_likelihood"]


def e_step(X, weights, means, covariances) -> np.ndarray:
    r"""The E-step: log responsibilities, the exact posterior :math:`p(z_i = k \mid x_i, \theta)`.

    Implements {eq}`eq-em-estep` of Chapter 2, in log space:

    .. math::

        \log r_{ik} = \log p(x_i, z_i = k \mid \theta)
                      - \log \sum_{j=1}^K p(x_i, z_i = j \mid \theta),

    the normaliser a log-sum-exp shifted by the row maximum (as
    ``scipy.special.logsumexp``), so that a point far from every component
    (whose densities all underflow) still gets finite log responsibilities
    summing (after ``exp``) to one.

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
    row_max = lj.max(axis=1, keepdims=True)
    lj -= row_max
    lj -= np.log(np.exp(lj).sum(axis=1, keepdims=True))
    return lj


def m_step(X, resp, reg_covar: float = 1e-6):
    r"""The M-step: the parameters that maximise the ELBO for fixed responsibilities,
    plus ``reg_covar`` on every covariance's diagonal.

    Implements {eq}`eq-em-mstep` of Chapter 2, with the normalised scatter
    :math:`S_k` of {eq}`eq-scatter`:

    .. math::

        N_k = \sum_i r_{ik}, \quad \pi_k = \frac{N_k}{n}, \quad
        \bar x_k = \frac{1}{N_k} \sum_i r_{ik} x_i, \quad
        \Sigma_k = S_k + \delta I, \quad
        S_k = \frac{1}{N_k} \sum_i r_{ik} (x_i - \bar x_k)(x_i - \bar x_k)^\top,

    with :math:`\mu_k = \bar x_k` and :math:`\delta` = ``reg_covar`` added
    to every diagonal as scikit-learn's ``reg_covar`` does
    ({eq}`eq-em-mstep-reg`).  With
    ``reg_covar=0`` this is :math:`\arg\max_\theta \mathcal L(q; \theta)`.
    With ``reg_covar > 0`` it is not: :math:`S_k + \delta I` is not the
    maximiser, :math:`\mathcal L` can be lower than at the previous
    parameters, and the monotonicity theorem of Chapter 2
    ({prf:ref}`thm-em-monotone`) does not cover the step; Chapter 2 shows the
    log-likelihood falling under it.  Each :math:`N_k` is increased by
    :math:`10` machine epsilons before dividing (again as scikit-learn does),
    so a component with no responsibility left gets a finite mean (the
    origin: the floor acts like :math:`10^{-15}` of a point there), covariance
    :math:`\delta I` and a weight of about :math:`10^{-15}/n` instead of NaN.

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    resp : array of shape (n, K)
        Responsibilities :math:`r_{ik}`, each row summing to one.
    reg_covar : float, >= 0
        :math:`\delta`, added to the diagonal of each covariance
        (scikit-learn's ``reg_covar``).

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array (or spans so wide a range that its
        squared distances overflow float64), ``resp`` is not a matrix of
        probability rows with one row per point, ``reg_covar`` is negative, or
        a resulting covariance is not positive definite (increase ``reg_covar``).

    Notes
    -----
    A departure from the textbook form: every sum over points is read off the
    expected sufficient statistics :math:`\sum_i r_{ik} T(x_i)`, one matrix
    product per block of rows, and :math:`S_k` is formed as
    :math:`\tfrac{1}{N_k}\sum_i r_{ik} x_i x_i^\top - \bar x_k \bar x_k^\top` (on
    data centred on their mean).  That subtraction cancels for a component
    much narrower than its distance from the data mean; when the estimated
    relative error exceeds :math:`10^{-11}` (see :func:`log_joint`) the
    component is recomputed with the centred sum above, which is
    scikit-learn's formula.

    References
    ----------
    Bishop (2006), Section 9.2.2, eqs. (9.24)-(9.27).
    """
    X = _check_data(X)
    resp = _check_resp(resp, X.shape[0])
    reg_covar = check_scalar(reg_covar, "reg_covar", nonnegative=True)
    data = _Data(X, resp.shape[1])
    with _BLAS.limit(limits=1, user_api="blas"):
        weights, means_c, covariances = data.m_step(data.statistics(resp), reg_covar, resp=resp)
    _require_positive_definite(covariances)
    return weights, means_c + data.centre, covariances


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
    X = _check_data(X)
    weights, means, covariances = _check_params(weights, means, covariances, X.shape[1])
    resp = _check_resp(resp, X.shape[0])
    if resp.shape[1] != weights.shape[0]:
        raise ValueError(f"resp must have shape (n, K) = ({X.shape[0]}, {weights.shape[0]}) "
                         f"to match X and weights; got {resp.shape}")
    data = _Data(X, weights.shape[0])
    p = data.params(weights, means - data.centre, covariances)
    total = 0.0
    with _BLAS.limit(limits=1, user_api="blas"):
        for rows, Xc, T in data.blocks():
            lj = data.block_log_joint(Xc, T, p)
            _raise_unreachable(lj, rows)
            total += float(np.sum(discrete_elbo(lj.T, resp[rows])))
    return total


@dataclass(frozen=True)
class GMMFit:
    r"""The result of :func:`fit_gmm`.

    Iteration :math:`t = 1, \dots,` ``n_iter`` is an E-step at
    :math:`\theta_{t-1}`, giving :math:`q_t`, then an M-step, giving
    :math:`\theta_t`; :math:`\theta_0` is the M-step from ``resp_init``.  All
    values are totals in nats over the ``n`` points (divide by ``n`` for
    scikit-learn's per-sample values).

    Attributes
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)
        :math:`\theta_{\text{n\_iter}}`, the parameters after the last M-step.
    elbos : ndarray of shape (n_iter,)
        The bound as every fit of the package records it: ``elbos[t]`` is
        :math:`\mathcal L(q_{t+1}; \theta_{t+1})`, after iteration
        :math:`t + 1`'s last update (its M-step).  ``elbos[-1]`` is the ELBO
        of the returned parameters with the last responsibilities.
    elbos_after_e_step : ndarray of shape (n_iter,)
        The lower steps of the staircase: ``elbos_after_e_step[t]`` is
        :math:`\mathcal L(q_{t+1}; \theta_t)`, after iteration :math:`t + 1`'s
        E-step, which closes the gap: it equals ``log_likelihoods[t]`` to
        rounding.  Divided by ``n``, this is scikit-learn's ``lower_bounds_``
        from the same start.
    log_likelihoods : ndarray of shape (n_iter + 1,)
        :math:`\log p(x_{1:n} \mid \theta_t)` for :math:`t = 0, \dots,`
        ``n_iter``: at :math:`\theta_0` and after every iteration.  With
        ``reg_covar=0`` it never decreases ({prf:ref}`thm-em-monotone`);
        with ``reg_covar > 0`` it can (Chapter 2).  scikit-learn's
        ``lower_bound_`` is ``log_likelihoods[-2] / n``: the mean
        log-likelihood at the parameters before the last M-step.
    n_iter : int
        Number of EM iterations run.
    converged : bool
        Whether the stopping rule held: ``abs(elbos[t] - elbos[t - 1]) < tol * n``.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    elbos: np.ndarray
    elbos_after_e_step: np.ndarray
    log_likelihoods: np.ndarray
    n_iter: int
    converged: bool


def fit_gmm(X, resp_init, *, max_iter: int = 100, tol: float = 1e-3,
            reg_covar: float = 1e-6) -> GMMFit:
    r"""Fit a Gaussian mixture with full covariances by EM, from responsibilities.

    Implements {prf:ref}`alg-em-gmm` of Chapter 2.  The first update is an
    M-step from ``resp_init`` (scikit-learn's mixtures start the same way),
    giving :math:`\theta_0`; iteration :math:`t` then runs the E-step
    ({eq}`eq-em-estep`, :math:`q_t = p(z \mid x, \theta_{t-1})`) and the M-step
    ({eq}`eq-em-mstep` with {eq}`eq-em-mstep-reg`, :math:`\theta_t`) and records the bound
    :math:`\mathcal L(q_t; \theta_t)` in ``elbos[t - 1]`` (a total, in nats).
    It stops when the bound changes by less than ``tol`` per data point,
    ``abs(elbos[t] - elbos[t - 1]) < tol * n``, or after ``max_iter``
    iterations.  To start from chosen parameters, pass
    ``resp_init = np.exp(e_step(X, weights, means, covariances))``.

    From the same ``resp_init`` (or from ``weights_init``, ``means_init`` and
    ``precisions_init`` equal to :math:`\theta_0`) one iteration here is one
    iteration of scikit-learn's ``GaussianMixture(covariance_type="full")``,
    with the same ``reg_covar``: after ``max_iter`` iterations both hold the
    same parameters.  scikit-learn's ``lower_bounds_[t]`` is
    ``log_likelihoods[t] / n`` (= ``elbos_after_e_step[t] / n``), the mean
    log-likelihood at the parameters *before* iteration :math:`t + 1`'s
    M-step; scikit-learn stops on those, so with ``tol > 0`` the two may stop
    at different iterations.

    With ``reg_covar=0`` the M-step maximises the ELBO and the log-likelihood
    never falls; a fall beyond rounding then warns (the symptom of a bug).
    With ``reg_covar > 0`` the M-step adds :math:`\delta I` to the
    maximiser, which keeps covariances away from singular but is not an
    ascent step: the log-likelihood can fall, and no warning is given.

    Parameters
    ----------
    X : array of shape (n, d)
        The data, one point per row.
    resp_init : array of shape (n, K)
        Initial responsibilities, each row summing to one; ``K <= n``.
    max_iter : int, >= 1
        Largest number of EM iterations.
    tol : float, >= 0
        Stop when the bound changes by less than ``tol`` per data point.
        With ``tol=0`` exactly ``max_iter`` iterations run, without a warning.
    reg_covar : float, >= 0
        :math:`\delta`, added to the diagonal of every covariance in each
        M-step (scikit-learn's ``reg_covar``).

    Returns
    -------
    GMMFit

    Raises
    ------
    ValueError
        On bad input (``X`` not a finite 2-D array, or so wide in range that
        its squared distances overflow float64; ``resp_init`` not an
        (n, K) array of probability rows, or with more components than
        points; ``max_iter < 1``; ``tol < 0``; ``reg_covar < 0``), or if a
        covariance becomes singular or the bound non-finite during the fit
        (increase ``reg_covar``).

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the stopping rule did not hold within ``max_iter``
        iterations; or if, with ``reg_covar=0``, the log-likelihood fell by
        more than rounding.

    Notes
    -----
    Each iteration reads the data once, block by block (module docstring): an
    E-step that accumulates the log-likelihood, the entropy of the
    responsibilities and their expected statistics :math:`\sum_i r_{ik}
    T(x_i)`, then an M-step from those statistics.  The bound after the
    M-step needs no second pass: with :math:`\mu_k = \bar x_k`,
    :math:`\sum_i r_{ik} (x_i - \mu_k)^\top \Lambda_k (x_i - \mu_k) = N_k
    \operatorname{tr}(\Lambda_k S_k) = N_k (d - \delta \operatorname{tr}
    \Lambda_k)`.  A final E-step gives the log-likelihood of the returned
    parameters.  Memory is a few MiB whatever ``n`` is; no (n, K) array is
    made besides ``resp_init``.  A narrow component (see :func:`m_step`)
    costs a second pass in an iteration where it becomes narrow, or where its
    mean moves too far for its moments about the old mean to stay accurate.

    References
    ----------
    Dempster, Laird and Rubin (1977); Neal and Hinton (1998); Bishop (2006), Section 9.2.2.
    """
    X = _check_data(X)
    n, d = X.shape
    if isinstance(resp_init, np.ndarray) and resp_init.ndim == 2 and resp_init.dtype.kind == "f":
        # Checked block by block in data.statistics, so that checking makes no
        # temporary array of n rows.
        if resp_init.shape[0] != n:
            raise ValueError(f"resp_init must have shape (n, K) with n = {n} rows (one per row "
                             f"of X); got shape {resp_init.shape}")
    else:
        resp_init = _check_resp(resp_init, n, "resp_init")
    n_components = resp_init.shape[1]
    if n_components > n:
        raise ValueError(f"resp_init must have at most n = {n} columns (one per component; a "
                         f"mixture cannot have more components than points); got "
                         f"K = {n_components}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_scalar(tol, "tol", nonnegative=True)
    reg_covar = check_scalar(reg_covar, "reg_covar", nonnegative=True)

    with _BLAS.limit(limits=1, user_api="blas"):
        return _fit_gmm(X, resp_init, n_components, max_iter, tol, reg_covar)


def _fit_gmm(X, resp_init, n_components: int, max_iter: int, tol: float,
             reg_covar: float) -> GMMFit:
    """The loop of :func:`fit_gmm`, on validated arguments."""
    n = X.shape[0]
    data = _Data(X, n_components)
    # theta_0: the M-step from resp_init.
    stats = data.statistics(resp_init, check_as="resp_init")
    params = _params_or_raise(data, *data.m_step(stats, reg_covar, resp=resp_init), 0)
    elbos, elbos_after_e, log_likelihoods = [], [], []
    converged = False
    for iteration in range(1, max_iter + 1):
        # E-step at theta_{t-1}: q_t, log p(x | theta_{t-1}) and r^T T, in one pass.
        e = data.e_pass(params)
        log_likelihoods.append(e["log_likelihood"])
        elbos_after_e.append(e["elbo"])
        if iteration > 1 and reg_covar == 0.0:
            _warn_if_fell(log_likelihoods, e["abs_log_likelihood"], iteration - 1)
        # M-step: theta_t from the expected statistics of q_t.
        params_old = params
        params = _params_or_raise(
            data, *data.m_step(e["stats"], reg_covar, p_old=params_old,
                               about_old_means=e["about_old_means"]), iteration)
        elbos.append(finite_or_raise(
            _elbo_at_m_step(e["stats"], params, reg_covar, e["neg_entropy"]),
            f"the ELBO at iteration {iteration}",
            "increase reg_covar or start elsewhere"))
        if len(elbos) > 1 and abs(elbos[-1] - elbos[-2]) < tol * n:
            converged = True
            break
    final = data.e_pass(params, with_statistics=False)           # log p(x | theta_T)
    log_likelihoods.append(final["log_likelihood"])
    if reg_covar == 0.0:
        _warn_if_fell(log_likelihoods, final["abs_log_likelihood"], iteration)
    if not converged and tol > 0:
        change = elbos[-1] - elbos[-2] if len(elbos) > 1 else float("nan")
        warnings.warn(
            f"fit_gmm: EM did not converge in max_iter={max_iter} iterations (the last change "
            f"of the bound per point was {change / n:.3g}, tol={tol:g}); increase max_iter or "
            "tol, or try another start",
            ConvergenceWarning, stacklevel=3,
        )
    return GMMFit(weights=params.weights, means=params.means_c + data.centre,
                  covariances=params.covariances, elbos=np.asarray(elbos),
                  elbos_after_e_step=np.asarray(elbos_after_e),
                  log_likelihoods=np.asarray(log_likelihoods), n_iter=iteration,
                  converged=converged)


def _warn_if_fell(log_likelihoods, abs_log_likelihood: float, iteration: int) -> None:
    """Warn if log p(x | theta_t) fell below log p(x | theta_{t-1}) by more than rounding."""
    fall = log_likelihoods[-2] - log_likelihoods[-1]
    if fall > _FALL_TOL * max(abs_log_likelihood, 1.0):
        warnings.warn(
            f"fit_gmm: the log-likelihood fell by {fall:.3g} nats in iteration {iteration} "
            "with reg_covar=0, where EM cannot decrease it: a symptom of a bug or of "
            "rounding trouble (check the data's scale)",
            ConvergenceWarning, stacklevel=4,
        )
