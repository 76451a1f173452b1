"""Stochastic variational inference: fits whose steps cost O(batch), whatever n is (Chapter 8).

EM, CAVI and black-box VI (Chapters 2, 3 and 5) touch all n data points per step.  For a
model whose global variational factor is conditionally conjugate, the natural
gradient of the ELBO is :math:`\\hat\\lambda - \\lambda`, where
:math:`\\hat\\lambda` is what one CAVI update would set
({eq}`eq-svi-natgrad`); estimating :math:`\\hat\\lambda` from a minibatch
scaled by :math:`n / |B|` gives stochastic VI (Hoffman, Blei, Wang and
Paisley, 2013):

.. math::

    \\lambda_t = (1 - \\rho_t)\\, \\lambda_{t-1} + \\rho_t\\, \\hat\\lambda_B,
    \\qquad \\rho_t = (t + \\tau_0)^{-\\kappa}, \\quad \\kappa \\in (0.5, 1].

=============================  =====================================================
function                       what it fits
=============================  =====================================================
:func:`bayesian_gmm`           Bishop's variational Gaussian mixture (Chapter 3), by SVI
:func:`bayesian_gmm_elbo`      the whole-data ELBO of a fitted mixture's global factor
:func:`online_lda`             latent Dirichlet allocation, Hoffman et al.'s online LDA
:func:`fit_gaussian`           a Gaussian posterior by doubly stochastic black-box VI
:func:`elbo_grads`             its gradient estimates, with a minibatch or the whole data
:func:`step_sizes`             the Robbins–Monro step sizes of the conjugate fits
=============================  =====================================================

:func:`bayesian_gmm` runs the same updates as :func:`vicourse.cavi.bayesian_gmm`,
from one implementation (statistics in, parameters out); with the whole
data as the batch and :math:`\\rho_t = 1` each step *is* a CAVI sweep.  Without
conjugacy there is no CAVI update to move towards, but a minibatch scaled by
:math:`n / |B|` still gives an unbiased gradient: :func:`fit_gaussian` puts one
inside black-box VI's Monte Carlo gradient (Titsias and Lázaro-Gredilla, 2014)
and reads the data from an array, a memory-mapped file or an iterable of
blocks.

Stochastic fits record one estimate of the ELBO per step, from that step's
minibatch, and stop when the mean of the estimates over a window of
``eval_window`` steps changes by less than ``tol`` relative to
:math:`\\max(\\lvert\\text{mean}\\rvert, 1)` between consecutive windows, the rule of
:func:`vicourse.vi.fit_gaussian` (``tol=0`` runs every step).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import digamma, gammaln, logsumexp

from vicourse import _vbgmm, vi
from vicourse._gaussian import GaussianFit, check_covariance_type
from vicourse._validation import (
    _describe,
    as_float_array,
    as_float_tensor,
    as_rng,
    call_log_density,
    check_bool,
    check_callable,
    check_in_interval,
    check_int,
    check_scalar,
    check_seed,
)
from vicourse.cavi import BayesianGMMFit, _bayesian_gmm_fit
from vicourse.exceptions import ConvergenceWarning

__all__ = ["BayesianGMMFit", "OnlineLDAFit", "bayesian_gmm", "bayesian_gmm_elbo", "elbo_grads",
           "fit_gaussian", "online_lda", "step_sizes"]

#: Largest number of entries of a (K, V) topic matrix (2 GiB of float64).
_MAX_TOPIC_ENTRIES = 2**28


# ----------------------------------------------------------------------------
# shared pieces: the step sizes, the arguments of every stochastic fit, the stopping rule
# ----------------------------------------------------------------------------

def step_sizes(steps: int, *, tau0: float, kappa: float) -> np.ndarray:
    r"""The Robbins–Monro step sizes :math:`\rho_t = (t + \tau_0)^{-\kappa}`, :math:`t = 1, \dots, T`.

    Implements {eq}`eq-svi-rho` of Chapter 8 (scikit-learn's online LDA names
    :math:`\tau_0` ``learning_offset`` and :math:`\kappa` ``learning_decay``,
    and counts :math:`t` from 1 as here).  For :math:`\kappa \in (0.5, 1]`
    they satisfy :math:`\sum_t \rho_t = \infty` and
    :math:`\sum_t \rho_t^2 < \infty`, the conditions under which stochastic
    VI converges to a local optimum.

    Parameters
    ----------
    steps : int, >= 1
    tau0 : float, >= 0
        Delay: larger values make the early steps smaller.
    kappa : float in [0, 1]
        Forgetting rate; ``kappa=0`` gives :math:`\rho_t = 1`.

    Returns
    -------
    ndarray of shape (steps,), entries in (0, 1]

    Raises
    ------
    ValueError
        If ``steps`` is not a positive integer, ``tau0`` is negative or
        ``kappa`` lies outside [0, 1].
    """
    steps = check_int(steps, "steps")
    tau0, kappa = _check_schedule(tau0, kappa)
    return (np.arange(1, steps + 1) + tau0) ** -kappa


def _check_schedule(tau0, kappa) -> tuple[float, float]:
    tau0 = check_scalar(tau0, "tau0", nonnegative=True)
    kappa = check_in_interval(kappa, "kappa", 0.0, 1.0)
    return tau0, kappa


def _warn_if_not_robbins_monro(kappa: float, batch_size: int, n: int, what: str) -> None:
    if kappa <= 0.5 and batch_size < n:
        warnings.warn(
            f"{what}: kappa={kappa:g} <= 0.5 with minibatches (batch_size={batch_size} < {n}): the "
            "step sizes (t + tau0)^-kappa then have an infinite sum of squares, so the noise of "
            "the minibatches never averages out and the fit keeps fluctuating; use kappa in (0.5, 1]",
            UserWarning, stacklevel=3)


def _check_batch_size(batch_size, n: int, what: str) -> int:
    batch_size = check_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of {what}, {n}; got {batch_size}")
    return batch_size


def _window_converged(stop: vi._WindowedStop, elbos: list[float]) -> bool:
    """Whether the rule holds after the last recorded estimate: if it completes a window,
    give ``stop`` that window's mean."""
    if stop.tol == 0 or not stop.window_ends(len(elbos)):
        return False
    return stop.update(float(np.mean(elbos[-stop.eval_window:])))


def _warn_not_converged(stop: vi._WindowedStop, what: str, steps: int) -> None:
    if stop.tol == 0:
        return
    if stop.changes:
        change = f"last relative change of the windowed ELBO {stop.changes[-1]:.3g}"
    else:
        change = f"fewer than two windows of eval_window={stop.eval_window} steps"
    warnings.warn(
        f"{what}: did not converge in steps={steps} ({change}, tol={stop.tol:g}); increase the "
        "number of steps or tol, or use a larger batch_size to make the estimates less noisy",
        ConvergenceWarning, stacklevel=3)


def _check_stopping(tol, eval_window) -> tuple[float, int]:
    return (check_in_interval(tol, "tol", 0.0, 1.0, closed=(True, False)),
            check_int(eval_window, "eval_window", maximum=10**7))


# ----------------------------------------------------------------------------
# 1. Bishop's variational Gaussian mixture, by SVI
# ----------------------------------------------------------------------------

def bayesian_gmm(X, resp_init, *, batch_size: int, steps: int, tau0: float = 1.0, kappa: float = 0.7,
                 seed=None, alpha0=None, beta0: float = 1.0, m0=None, W0=None, nu0=None,
                 reg_covar: float = 1e-6, tol: float = 0.0, eval_window: int = 100,
                 snapshot_every: int | None = None, compute_resp: bool = True) -> BayesianGMMFit:
    r"""Stochastic VI for the variational Gaussian mixture of :func:`vicourse.cavi.bayesian_gmm`.

    Implements {eq}`eq-svi-step` of Chapter 8 for Bishop's mixture.  The
    global factor :math:`q(\pi, \mu, \Lambda)` is first set from
    ``resp_init``, as in CAVI.  Then each step

    1. draws a minibatch :math:`B` of ``batch_size`` distinct rows of ``X``, uniformly;
    2. sets their responsibilities for the current global factor (the local
       step, Bishop's (10.64)-(10.67)) and their statistics
       :math:`N_k, \bar x_k, N_k S_k`;
    3. forms :math:`\hat\lambda`, the global factor CAVI would set if the
       whole data looked like the minibatch (statistics scaled by
       :math:`n / |B|`), and moves the natural parameters
       :math:`\lambda \leftarrow (1 - \rho_t)\lambda + \rho_t \hat\lambda`,
       :math:`\rho_t = (t + \tau_0)^{-\kappa}`.

    The natural parameters of the global factor are the prior's plus the
    statistics' raw moments, so step 3 is a weighted merge of the running
    statistics with the scaled minibatch's, followed by CAVI's own update of
    the parameters (Bishop's (10.58)-(10.63)): the code is shared with
    :func:`vicourse.cavi.bayesian_gmm`.  With ``batch_size = n``,
    ``tau0=1, kappa=0`` (:math:`\rho_t = 1`) every step equals one CAVI sweep.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    resp_init : array of shape (n_samples, K)
        Responsibilities that set the starting global factor; rows sum to one.
    batch_size : int in [1, n_samples]
    steps : int, >= 1
    tau0 : float, >= 0
    kappa : float in [0, 1]
        The step sizes :math:`\rho_t = (t + \tau_0)^{-\kappa}`, see :func:`step_sizes`.
        With minibatches, ``kappa <= 0.5`` warns.
    seed : int, numpy.random.Generator or None
        Draws the minibatches.
    alpha0, beta0, m0, W0, nu0, reg_covar
        The prior, with the defaults of :func:`vicourse.cavi.bayesian_gmm`.
    tol : float in [0, 1)
        Stop when the mean of the recorded bound over a window of
        ``eval_window`` steps changes by less than ``tol`` relative to
        :math:`\max(\lvert\text{mean}\rvert, 1)` between consecutive windows;
        ``tol=0`` runs every step.
    eval_window : int, >= 1
    snapshot_every : int, optional
        Keep the global factor every this many steps (and after the last), in
        ``info["snapshots"]``, e.g. to evaluate :func:`bayesian_gmm_elbo`
        along the run.
    compute_resp : bool
        After the last step, set every point's responsibilities for the
        returned global factor (one pass over ``X``, an (n_samples, K)
        array) and the ELBO of the fit on the whole data.  ``False`` skips
        that pass (``resp=None``, no ``info["elbo"]``), so that nothing in
        memory grows with ``n_samples``.

    Returns
    -------
    BayesianGMMFit
        ``elbos[t]`` is the minibatch estimate of step ``t + 1``: the ELBO at
        the global factor the step started from, with the batch's
        responsibilities set optimally and its statistics scaled by
        :math:`n / |B|`.  It is unbiased for :func:`bayesian_gmm_elbo` of that
        factor.  ``resp`` are the responsibilities of every point under the
        returned global factor (one pass over the data at the end; None if
        ``compute_resp=False``).  ``info`` holds ``"step_sizes"`` (the
        :math:`\rho_t` used), ``"elbo"`` (the ELBO of the returned fit on the
        whole data, from that last pass), ``"window_means"`` (the windowed means of the stopping
        rule, if ``tol > 0``) and ``"snapshots"`` (if asked: fits with
        ``resp=None`` and ``n_iter`` the step they were taken after).

    Raises
    ------
    ValueError
        As :func:`vicourse.cavi.bayesian_gmm` for the data and the prior; if
        ``batch_size`` is not an integer in [1, n_samples], ``steps``,
        ``eval_window`` or ``snapshot_every`` are not positive integers,
        ``tau0`` is negative, ``kappa`` lies outside [0, 1], ``tol`` outside
        [0, 1), ``compute_resp`` is not a bool or ``seed`` is invalid; and if
        the bound becomes non-finite.

    Warns
    -----
    UserWarning
        If ``kappa <= 0.5`` with ``batch_size < n_samples``.
    vicourse.ConvergenceWarning
        If ``tol > 0`` and the stopping rule is not met within ``steps``.

    References
    ----------
    Hoffman, Blei, Wang and Paisley (2013), "Stochastic variational inference",
    JMLR 14, Algorithm 2; Bishop (2006), Section 10.2.
    """
    with _vbgmm.one_blas_thread():             # many small products: see one_blas_thread
        X, resp, prior = _vbgmm.check_problem(X, resp_init, alpha0=alpha0, beta0=beta0, m0=m0, W0=W0,
                                              nu0=nu0, reg_covar=reg_covar)
        n = X.shape[0]
        batch_size = _check_batch_size(batch_size, n, "rows of X")
        steps = check_int(steps, "steps")
        tau0, kappa = _check_schedule(tau0, kappa)
        rng = as_rng(seed)
        tol, eval_window = _check_stopping(tol, eval_window)
        if snapshot_every is not None:
            snapshot_every = check_int(snapshot_every, "snapshot_every")
        compute_resp = check_bool(compute_resp, "compute_resp")
        _warn_if_not_robbins_monro(kappa, batch_size, n, "svi.bayesian_gmm")

        stats = _vbgmm.stats_from_resp(X, prior.shift, resp)
        params = _vbgmm.m_step(prior, stats)
        stop = vi._WindowedStop(tol, eval_window)
        elbos: list[float] = []
        rhos: list[float] = []
        snapshots: list[BayesianGMMFit] = []
        converged = False
        for t in range(1, steps + 1):
            params, stats, estimate, rho = _svi_step(X, prior, params, stats, t, rng=rng,
                                                     batch_size=batch_size, tau0=tau0, kappa=kappa)
            elbos.append(_vbgmm.finite_elbo(estimate, f"step {t}"))
            rhos.append(rho)
            converged = _window_converged(stop, elbos)
            if snapshot_every is not None and (t % snapshot_every == 0 or converged or t == steps):
                snapshots.append(_bayesian_gmm_fit(prior, params, None, elbos, t, converged))
            if converged:
                break
        if not converged:
            _warn_not_converged(stop, "svi.bayesian_gmm", steps)
        info = {"step_sizes": np.asarray(rhos)}
        if compute_resp:
            resp = np.empty_like(resp)
            full, neg_entropy = _vbgmm.local_step(params, X, prior.shift, out=resp)
            info["elbo"] = _vbgmm.finite_elbo(_vbgmm.elbo(prior, params, full, neg_entropy), "the end")
        else:
            resp = None
        if tol > 0:
            info["window_means"] = np.asarray(stop.means)
        if snapshot_every is not None:
            info["snapshots"] = snapshots
        return _bayesian_gmm_fit(prior, params, resp, elbos, len(elbos), converged, info)


def _svi_step(X, prior, params, stats, t, *, rng, batch_size, tau0, kappa):
    """One step of SVI for the mixture; returns the new parameters and statistics, the
    minibatch estimate of the ELBO at the old parameters, and the step size."""
    n = X.shape[0]
    idx = np.sort(rng.choice(n, size=batch_size, replace=False))     # sorted: contiguous reads
    batch, neg_entropy = _vbgmm.local_step(params, np.take(X, idx, axis=0), prior.shift)
    scale = n / batch_size
    estimate = _vbgmm.elbo(prior, params, batch.scaled(scale), scale * neg_entropy)
    rho = (t + tau0) ** -kappa
    # lambda <- (1 - rho) lambda + rho lambda_hat: the prior's part is the same on both sides,
    # the statistics' part is a weighted merge (natural parameters are linear in raw moments)
    stats = _vbgmm.combine(stats, batch, 1.0 - rho, rho * scale)
    return _vbgmm.m_step(prior, stats), stats, estimate, rho


def bayesian_gmm_elbo(X, fit: BayesianGMMFit) -> float:
    r"""The ELBO on data ``X`` of a fitted mixture's global factor, with every ``q(z_n)`` set optimally.

    Implements {eq}`eq-svi-global-elbo` of Chapter 8:
    :math:`\mathcal L(\lambda) = \max_{q(Z)} \mathcal L(q(Z), \lambda)`, the
    ELBO as a function of the global factor alone, which is what stochastic
    VI climbs.  One local step over ``X`` (Bishop's (10.64)-(10.67)) and the
    bound (10.70)-(10.77) with every constant, block by block.  For a fit of
    :func:`vicourse.cavi.bayesian_gmm` it lies between ``elbos[-1]`` and the
    next sweep's bound; ``X`` may also be held-out data.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    fit : BayesianGMMFit
        From :func:`vicourse.cavi.bayesian_gmm` or :func:`bayesian_gmm`
        (including its snapshots); its prior is the one used.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``fit`` is not a :class:`~vicourse.cavi.BayesianGMMFit` or ``X`` is
        not a finite 2-D array with as many columns as the fit's means.
    """
    if not isinstance(fit, BayesianGMMFit):
        raise ValueError(f"fit must be a BayesianGMMFit (from cavi.bayesian_gmm or svi.bayesian_gmm); "
                         f"got {_describe(fit)}")
    X = as_float_array(X, "X", ndim=2)
    K, d = fit.m.shape
    if X.shape[1] != d:
        raise ValueError(f"X must have {d} columns, as the fit's means; got shape {X.shape}")
    prior, params = _vbgmm.from_fit(fit.alpha, fit.beta, fit.m, fit.W, fit.nu, alpha0=fit.alpha0,
                                    beta0=fit.beta0, m0=fit.m0, W0=fit.W0, nu0=fit.nu0)
    with _vbgmm.one_blas_thread():
        stats, neg_entropy = _vbgmm.local_step(params, X, prior.shift)
    return _vbgmm.finite_elbo(_vbgmm.elbo(prior, params, stats, neg_entropy), "the given fit")


# ----------------------------------------------------------------------------
# 2. latent Dirichlet allocation: Hoffman, Blei and Bach's online LDA
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class OnlineLDAFit:
    r"""A fitted LDA model: the topics :math:`q(\beta_k) = \mathrm{Dir}(\lambda_k)` and
    the documents' :math:`q(\theta_d) = \mathrm{Dir}(\gamma_d)`, returned by :func:`online_lda`.

    Attributes
    ----------
    lambda_ : ndarray of shape (n_topics, n_words)
        :math:`\lambda` (scikit-learn's ``components_``).
    gamma : ndarray of shape (n_documents, n_topics)
        :math:`\gamma_d` of every document for the returned topics (what
        scikit-learn's ``LatentDirichletAllocation._unnormalized_transform``
        returns).
    elbos : ndarray of shape (n_iter,)
        One minibatch estimate of the ELBO per step, at the topics the step
        started from (see :func:`online_lda`).
    n_iter : int
        Minibatch steps taken (scikit-learn's ``n_batch_iter_ - 1``); the
        passes over the corpus are ``info["passes"]``.
    converged : bool
    info : dict
        ``"step_sizes"``, ``"passes"``, ``"elbo"`` and, if ``tol > 0``,
        ``"window_means"``; see :func:`online_lda`.
    """

    lambda_: np.ndarray
    gamma: np.ndarray
    elbos: np.ndarray
    n_iter: int
    converged: bool
    info: dict = field(default_factory=dict)

    @property
    def topics(self) -> np.ndarray:
        r""":math:`\mathbb E_q[\beta_k] = \lambda_k / \sum_w \lambda_{kw}`, shape (n_topics, n_words)."""
        return self.lambda_ / self.lambda_.sum(axis=1, keepdims=True)

    @property
    def doc_topics(self) -> np.ndarray:
        r""":math:`\mathbb E_q[\theta_d] = \gamma_d / \sum_k \gamma_{dk}`, shape (n_documents, n_topics)."""
        return self.gamma / self.gamma.sum(axis=1, keepdims=True)


def _check_counts(counts) -> sp.csr_matrix:
    """A document-word count matrix, dense or scipy-sparse, as CSR float64; checks integers >= 0."""
    if sp.issparse(counts):
        if counts.ndim != 2:
            raise ValueError(f"counts must be a 2-D document-word matrix; got shape {counts.shape}")
        if counts.dtype.kind not in "iuf":
            raise ValueError(f"counts must be real numbers; got a sparse matrix of dtype {counts.dtype}")
        matrix = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        as_float_array(matrix.data, "counts", allow_empty=True)      # finite
        if 0 in matrix.shape:
            raise ValueError(f"counts must not be empty; got shape {matrix.shape}")
    else:
        matrix = sp.csr_matrix(as_float_array(counts, "counts", ndim=2))
    if np.any(matrix.data < 0):
        raise ValueError(f"counts must be non-negative; smallest entry is {matrix.data.min():g}")
    if np.any(matrix.data != np.round(matrix.data)):
        bad = matrix.data[matrix.data != np.round(matrix.data)][0]
        raise ValueError(f"counts must be whole numbers (word counts); got {bad:g}")
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def _dirichlet_expectation(param: np.ndarray, axis: int) -> np.ndarray:
    r""":math:`\mathbb E[\log x] = \psi(a) - \psi(\sum a)`, :math:`x \sim \mathrm{Dir}(a)`, along ``axis``."""
    # einsum: numpy's sum along short rows costs several times more
    total = np.einsum("ij->i", param)[:, None] if axis == 1 else np.einsum("ij->j", param)[None, :]
    return digamma(param) - digamma(total)


def _lda_iterate(Xb: sp.csr_matrix, docs: np.ndarray, exp_elog_beta_t: np.ndarray, alpha: float,
                 gamma: np.ndarray, exp_theta: np.ndarray, max_iter: int,
                 mean_change_tol: float) -> None:
    """The local iterations for the documents ``docs`` of ``Xb``; ``gamma``, ``exp_theta`` in place.

    The documents' words are laid out padded, (documents, longest, K), so that each
    iteration is two batched matrix products; padded slots hold zero counts, which add
    nothing.  The documents still iterating are kept compact; a document that stops is
    written back and dropped.
    """
    eps = np.finfo(np.float64).eps
    K = gamma.shape[1]
    lengths = np.diff(Xb.indptr)[docs]
    longest = int(lengths.max())
    slot = np.arange(longest)
    filled = slot[None, :] < lengths[:, None]                   # (docs, longest)
    index = (Xb.indptr[docs][:, None] + slot[None, :])[filled]    # their nonzeros, in order
    beta_pad = np.zeros((docs.size, longest, K))
    beta_pad[filled] = np.take(exp_elog_beta_t, Xb.indices[index], axis=0)
    cnts_pad = np.zeros((docs.size, longest))
    cnts_pad[filled] = Xb.data[index]
    active = docs
    gamma_a, theta_a = gamma[docs], exp_theta[docs]
    for _ in range(max_iter):
        if active.size == 0:
            break
        norm = np.matmul(beta_pad, theta_a[:, :, None])[:, :, 0] + eps     # (docs, longest)
        # sum over each document's words of n_dw / norm_dw * exp E[log beta_w]
        words = np.matmul((cnts_pad / norm)[:, None, :], beta_pad)[:, 0, :]
        new = theta_a * words + alpha
        change = np.einsum("ij->i", np.abs(new - gamma_a)) / K
        gamma_a, theta_a = new, np.exp(_dirichlet_expectation(new, axis=1))
        done = change < mean_change_tol
        if done.any():
            gamma[active[done]], exp_theta[active[done]] = gamma_a[done], theta_a[done]
            still = ~done
            active, gamma_a, theta_a = active[still], gamma_a[still], theta_a[still]
            beta_pad, cnts_pad = beta_pad[still], cnts_pad[still]
    gamma[active], exp_theta[active] = gamma_a, theta_a         # those that ran out of iterations


def _lda_local_step(Xb: sp.csr_matrix, elog_beta_t: np.ndarray, exp_elog_beta_t: np.ndarray,
                    alpha: float, gamma: np.ndarray, max_iter: int, mean_change_tol: float):
    r"""The local step of online LDA for a batch of documents, as array operations.

    Iterates :math:`\gamma_d = \alpha + \exp\mathbb E[\log\theta_d] \odot
    \sum_w n_{dw} \frac{\exp\mathbb E[\log\beta_{w}]}{\phi^{\rm norm}_{dw}}`
    (Hoffman et al.'s (2010) E-step, with :math:`\phi` kept implicit) for each
    document until the mean absolute change of its :math:`\gamma_d` falls below
    ``mean_change_tol`` (then that document stops) or ``max_iter`` iterations;
    documents of similar length are updated together.  ``elog_beta_t`` is
    :math:`\mathbb E[\log\beta]` transposed, (V, K), and ``exp_elog_beta_t`` its
    exponential.

    Returns ``gamma`` (B, K) (updated in place), the unscaled statistics
    :math:`\sum_d n_{dw} \phi_{dwk}` as (V, K), :math:`\mathbb E[\log\theta]` (B, K),
    and :math:`\log\sum_k \exp(\mathbb E[\log\theta_{dk}] + \mathbb E[\log\beta_{kw}])`
    for every nonzero count (for the bound).
    """
    eps = np.finfo(np.float64).eps
    B, K = gamma.shape
    lengths = np.diff(Xb.indptr)
    # E[log theta] of the starting gamma, without alpha added (scikit-learn's order)
    exp_theta = np.exp(_dirichlet_expectation(gamma, axis=1))
    empty = lengths == 0
    gamma[empty] = alpha                        # no words: the update gives alpha at once
    exp_theta[empty] = np.exp(_dirichlet_expectation(gamma[empty], axis=1))
    # Documents of similar length iterate together (padding wastes at most a quarter).
    docs = np.flatnonzero(~empty)
    docs = docs[np.argsort(lengths[docs], kind="stable")]
    while docs.size:
        group = np.searchsorted(lengths[docs], 1.25 * lengths[docs[0]], side="right")
        _lda_iterate(Xb, docs[:group], exp_elog_beta_t, alpha, gamma, exp_theta, max_iter,
                     mean_change_tol)
        docs = docs[group:]
    # statistics sum_d n_dw phi_dwk / exp E[log beta_kw], with the final gamma (as scikit-learn)
    doc_of = np.repeat(np.arange(B), lengths)
    norm = np.einsum("ij,ij->i", np.take(exp_theta, doc_of, axis=0),
                     np.take(exp_elog_beta_t, Xb.indices, axis=0))
    weights = sp.csr_matrix((Xb.data / (norm + eps), Xb.indices, Xb.indptr), shape=Xb.shape)
    sstats = weights.T @ exp_theta                              # (V, K)
    elog_theta = _dirichlet_expectation(gamma, axis=1)
    # log sum_k exp(E[log theta_dk] + E[log beta_kw]) for the bound: log(norm), except where
    # the product of exponentials may have underflowed, which is recomputed in log space
    tiny = norm < 1e-250
    log_norm = np.log(np.where(tiny, 1.0, norm))
    if tiny.any():
        log_norm[tiny] = logsumexp(elog_theta[doc_of[tiny]] + elog_beta_t[Xb.indices[tiny]],
                                   axis=1)
    return gamma, np.asarray(sstats) * exp_elog_beta_t, elog_theta, log_norm


def _lda_local_elbo(Xb: sp.csr_matrix, gamma, elog_theta, log_norm, alpha: float) -> float:
    r"""The documents' part of the ELBO, with :math:`\phi` optimal for ``gamma`` and the topics:
    :math:`\sum_{dw} n_{dw}\log\sum_k e^{\mathbb E\log\theta_{dk} + \mathbb E\log\beta_{kw}}`
    plus :math:`\mathbb E[\log p(\theta_d \mid \alpha) - \log q(\theta_d \mid \gamma_d)]`."""
    K = gamma.shape[1]
    words = np.einsum("i,i->", Xb.data, log_norm)       # (BLAS dot threads badly)
    dirichlet = (np.sum((alpha - gamma) * elog_theta) + np.sum(gammaln(gamma)) - gamma.size * gammaln(alpha)
                 + gamma.shape[0] * gammaln(K * alpha) - np.sum(gammaln(gamma.sum(axis=1))))
    return float(words + dirichlet)


def _lda_global_elbo(lam_t: np.ndarray, elog_beta_t: np.ndarray, eta: float) -> float:
    r""":math:`\mathbb E[\log p(\beta \mid \eta) - \log q(\beta \mid \lambda)]`, with ``lam_t`` (V, K)."""
    V = lam_t.shape[0]
    return float(np.sum((eta - lam_t) * elog_beta_t) + np.sum(gammaln(lam_t)) - lam_t.size * gammaln(eta)
                 + lam_t.shape[1] * gammaln(V * eta) - np.sum(gammaln(lam_t.sum(axis=0))))


def online_lda(counts, n_topics: int, *, alpha=None, eta=None, batch_size: int = 128,
               tau0: float = 10.0, kappa: float = 0.7, max_iter: int = 10, seed=None,
               shuffle: bool = True, lambda_init=None, max_doc_update_iter: int = 100,
               mean_change_tol: float = 1e-3, tol: float = 0.0,
               eval_window: int = 100) -> OnlineLDAFit:
    r"""Online variational Bayes for latent Dirichlet allocation (Hoffman, Blei and Bach, 2010).

    Implements {eq}`eq-svi-lda-local` and {eq}`eq-svi-lda-global` of Chapter 8.
    The model: topics :math:`\beta_k \sim \mathrm{Dir}(\eta)` over the
    ``n_words`` words, document proportions :math:`\theta_d \sim \mathrm{Dir}(\alpha)`,
    and each word of document :math:`d` drawn from topic :math:`z \sim
    \mathrm{Cat}(\theta_d)`.  Each step takes a minibatch of documents, runs
    the local step for every document in it at once (:math:`\gamma_d` and the
    implicit :math:`\phi_{dw}`, until each document's :math:`\gamma_d` moves
    by less than ``mean_change_tol`` on average, at most
    ``max_doc_update_iter`` iterations), and moves the topics

    .. math::

        \lambda \leftarrow (1 - \rho_t)\lambda + \rho_t\Big(\eta + \frac{D}{|B|}
        \sum_{d \in B} n_{dw}\phi_{dwk}\Big), \qquad \rho_t = (t + \tau_0)^{-\kappa}.

    This is scikit-learn's ``LatentDirichletAllocation(learning_method="online")``
    (which descends from Hoffman's code) with the same names for the settings
    (``n_components = n_topics``, ``doc_topic_prior = alpha``,
    ``topic_word_prior = eta``, ``learning_offset = tau0``,
    ``learning_decay = kappa``, ``max_iter`` passes) and the same draws:
    starting topics :math:`\mathrm{Gamma}(100, 1/100)` and each batch's
    starting :math:`\gamma` the same.  The loop differs in three ways:
    documents are updated together (vectorised; each still stops on its own
    test), :math:`\psi` is :func:`scipy.special.digamma` (scikit-learn uses a
    faster series accurate to about :math:`10^{-9}`), and with ``shuffle=True``
    each pass visits the documents in a new random order (scikit-learn goes
    in order, as ``shuffle=False`` does).  Passing
    ``seed=numpy.random.RandomState(s)`` replays scikit-learn's draws for
    ``random_state=s``.

    Parameters
    ----------
    counts : array or scipy sparse matrix of shape (n_documents, n_words)
        Word counts: non-negative whole numbers.
    n_topics : int, >= 1
    alpha, eta : float, > 0, optional
        Dirichlet priors of the documents' topic proportions and of the
        topics; default ``1 / n_topics`` each (as scikit-learn).
    batch_size : int in [1, n_documents]
    tau0 : float, >= 0
    kappa : float in [0, 1]
        Step sizes :math:`\rho_t = (t + \tau_0)^{-\kappa}`, :math:`t = 1, 2, \dots`
        counted over all passes; with minibatches ``kappa <= 0.5`` warns.
    max_iter : int, >= 1
        Passes over the corpus.
    seed : int, numpy.random.Generator, numpy.random.RandomState or None
        Draws the starting topics (unless ``lambda_init`` is given), each
        batch's starting :math:`\gamma`, and the order of the documents.  A
        ``numpy.random.RandomState(s)`` gives scikit-learn's draws for
        ``random_state=s``, in the same order (with ``shuffle=False``).
    shuffle : bool
        Visit the documents of each pass in a random order.
    lambda_init : array of shape (n_topics, n_words), positive, optional
        Starting topics.
    max_doc_update_iter : int, >= 1
    mean_change_tol : float, >= 0
        The local step's stopping rule (scikit-learn's names and defaults).
    tol : float in [0, 1)
    eval_window : int, >= 1
        Stop when the mean of the recorded bound over ``eval_window`` steps
        changes by less than ``tol`` relative to :math:`\max(\lvert\text{mean}\rvert, 1)`
        between consecutive windows; ``tol=0`` runs ``max_iter`` passes.

    Returns
    -------
    OnlineLDAFit
        ``elbos[t]`` is the ELBO estimated from step ``t + 1``'s minibatch at
        the topics it started from (documents' terms scaled by :math:`D/|B|`).
        ``gamma`` is set for the returned topics by one last local step over
        the corpus from :math:`\gamma = 1` (scikit-learn's ``transform``);
        ``info["elbo"]`` is the ELBO of the returned fit on the whole corpus,
        ``info["step_sizes"]`` the :math:`\rho_t`, ``info["passes"]`` the
        passes run (documents processed over the corpus size, a fraction if
        the stopping rule ends a pass early).

    Raises
    ------
    ValueError
        If ``counts`` is not a 2-D array or sparse matrix of non-negative
        whole numbers, ``n_topics``, ``batch_size``, ``max_iter``,
        ``max_doc_update_iter`` or ``eval_window`` are not integers in range,
        ``alpha``, ``eta`` are not positive, ``tau0`` or ``mean_change_tol``
        are negative, ``kappa`` lies outside [0, 1], ``tol`` outside [0, 1),
        ``shuffle`` is not a bool, ``lambda_init`` is not positive and of
        shape (n_topics, n_words), or ``seed`` is invalid.

    Warns
    -----
    UserWarning
        If ``kappa <= 0.5`` with ``batch_size < n_documents``.
    vicourse.ConvergenceWarning
        If ``tol > 0`` and the stopping rule is not met within ``max_iter`` passes.

    References
    ----------
    Hoffman, Blei and Bach (2010), "Online learning for latent Dirichlet
    allocation", NeurIPS, Algorithm 2; Hoffman, Blei, Wang and Paisley (2013),
    Section 5; scikit-learn's ``sklearn/decomposition/_lda.py``.
    """
    counts = _check_counts(counts)
    D, V = counts.shape
    K = check_int(n_topics, "n_topics", maximum=10**6)
    if K * V > _MAX_TOPIC_ENTRIES:
        raise ValueError(f"n_topics * n_words = {K * V} numbers per topic matrix is more than "
                         f"{_MAX_TOPIC_ENTRIES}; reduce n_topics or the vocabulary")
    alpha = 1.0 / K if alpha is None else check_scalar(alpha, "alpha", positive=True)
    eta = 1.0 / K if eta is None else check_scalar(eta, "eta", positive=True)
    batch_size = _check_batch_size(batch_size, D, "documents")
    tau0, kappa = _check_schedule(tau0, kappa)
    max_iter = check_int(max_iter, "max_iter", maximum=10**6)
    # scikit-learn draws from a legacy RandomState; accept one so that its draws can be replayed
    rng = seed if isinstance(seed, np.random.RandomState) else as_rng(seed)
    shuffle = check_bool(shuffle, "shuffle")
    max_doc_update_iter = check_int(max_doc_update_iter, "max_doc_update_iter", maximum=10**6)
    mean_change_tol = check_scalar(mean_change_tol, "mean_change_tol", nonnegative=True)
    tol, eval_window = _check_stopping(tol, eval_window)
    if lambda_init is None:
        lam_t = rng.gamma(100.0, 0.01, (K, V)).T.copy()          # scikit-learn's draw, stored (V, K)
    else:
        lam = as_float_array(lambda_init, "lambda_init", ndim=2)
        if lam.shape != (K, V):
            raise ValueError(f"lambda_init must have shape (n_topics, n_words) = ({K}, {V}); "
                             f"got {lam.shape}")
        if np.any(lam <= 0):
            raise ValueError(f"lambda_init must be positive; smallest entry is {lam.min():.3g}")
        lam_t = lam.T.copy()
    _warn_if_not_robbins_monro(kappa, batch_size, D, "svi.online_lda")

    with _vbgmm.one_blas_thread():             # many small products: see one_blas_thread
        # The topics are stored transposed, (V, K): a document's words are then rows.
        elog_beta_t = _dirichlet_expectation(lam_t, axis=0)
        stop = vi._WindowedStop(tol, eval_window)
        elbos: list[float] = []
        rhos: list[float] = []
        converged = False
        t = 0
        seen = 0                                    # documents processed, over all passes
        for _ in range(max_iter):
            order = rng.permutation(D) if shuffle else None
            for start in range(0, D, batch_size):
                rows = slice(start, min(start + batch_size, D))
                Xb = counts[order[rows]] if shuffle else counts[rows]
                gamma0 = rng.gamma(100.0, 0.01, (Xb.shape[0], K))
                exp_elog_beta_t = np.exp(elog_beta_t)
                gamma, sstats, elog_theta, log_norm = _lda_local_step(
                    Xb, elog_beta_t, exp_elog_beta_t, alpha, gamma0, max_doc_update_iter,
                    mean_change_tol)
                ratio = D / Xb.shape[0]
                estimate = (ratio * _lda_local_elbo(Xb, gamma, elog_theta, log_norm, alpha)
                            + _lda_global_elbo(lam_t, elog_beta_t, eta))
                if not math.isfinite(estimate):
                    raise ValueError(f"the ELBO estimate became {estimate} at step {t + 1}; "
                                     "try larger alpha and eta")
                elbos.append(estimate)
                t += 1
                seen += Xb.shape[0]
                rho = (t + tau0) ** -kappa
                rhos.append(rho)
                lam_t *= 1.0 - rho
                lam_t += rho * (eta + ratio * sstats)
                elog_beta_t = _dirichlet_expectation(lam_t, axis=0)
                converged = _window_converged(stop, elbos)
                if converged:
                    break
            if converged:
                break
        if not converged:
            _warn_not_converged(stop, "svi.online_lda", t)
        # gamma of every document for the returned topics, from gamma = 1 (scikit-learn's transform)
        exp_elog_beta_t = np.exp(elog_beta_t)
        gamma = np.ones((D, K))
        elbo = _lda_global_elbo(lam_t, elog_beta_t, eta)
        for start in range(0, D, batch_size):
            rows = slice(start, min(start + batch_size, D))
            g, _, elog_theta, log_norm = _lda_local_step(counts[rows], elog_beta_t, exp_elog_beta_t,
                                                         alpha, gamma[rows], max_doc_update_iter,
                                                         mean_change_tol)
            elbo += _lda_local_elbo(counts[rows], g, elog_theta, log_norm, alpha)
        info = {"step_sizes": np.asarray(rhos), "passes": seen / D, "elbo": elbo}
        if tol > 0:
            info["window_means"] = np.asarray(stop.means)
    return OnlineLDAFit(lam_t.T.copy(), gamma, np.asarray(elbos), t, converged, info)


# ----------------------------------------------------------------------------
# 3. doubly stochastic black-box VI: minibatches and Monte Carlo
# ----------------------------------------------------------------------------

#: Rows of the blocks in which the whole data are read: about this many numbers each.
_DATA_BLOCK_ENTRIES = 2**16


def _check_device(device) -> torch.device:
    """A torch device that exists here (``"cpu"``, ``"cuda"``, ``torch.device(...)``)."""
    if not isinstance(device, str | torch.device):
        raise ValueError(f"device must be a torch.device or a string such as 'cpu' or 'cuda'; "
                         f"got {_describe(device)}")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must name a torch device; got {device!r} ({error})") from None
    if device.type == "meta":
        raise ValueError("device must hold data; got the 'meta' device, which has none")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"device {str(device)!r} is not available here: {error}") from None
    return device


class _Data:
    """The data of :func:`fit_gaussian` and :func:`elbo_grads`: minibatches and whole passes.

    An array (NumPy, ``numpy.memmap``, torch) of shape (n, ...) gives minibatches of
    ``batch_size`` distinct rows drawn uniformly; a re-iterable of blocks (a torch
    DataLoader, a list of arrays, an object whose ``__iter__`` reads a file block by
    block) gives its blocks in turn, one per step, starting over after each pass.
    Every batch is checked (finite numbers) as it is read and handed over as a float64
    tensor on ``device``.
    """

    def __init__(self, data, batch_size, n_samples, device):
        self.device = device
        self.array = isinstance(data, torch.Tensor) or (
            hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__"))
        if self.array:
            shape = tuple(data.shape)
            if isinstance(data, torch.Tensor) and data.device.type == "meta":
                raise ValueError("data must hold data; got a tensor on the 'meta' device")
            kind = str(data.dtype)
            if len(shape) == 0 or shape[0] < 1 or not any(k in kind for k in ("float", "int")):
                raise ValueError(f"data must be an array of real numbers with one row per data "
                                 f"point; got {_describe(data)}")
            self.n = shape[0]
            if n_samples is not None and check_int(n_samples, "n_samples", maximum=2**62) != self.n:
                raise ValueError(f"n_samples must be None or the number of rows of data, {self.n}; "
                                 f"got {n_samples}")
            self.batch_size = None if batch_size is None else _check_batch_size(batch_size, self.n,
                                                                                 "rows of data")
            width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            self.block_rows = max(1, _DATA_BLOCK_ENTRIES // width)
        else:
            try:
                iterator = iter(data)
            except TypeError:
                raise ValueError(f"data must be an array of shape (n, ...) or a re-iterable of "
                                 f"blocks of rows; got {_describe(data)}") from None
            if iterator is data:
                raise ValueError("data must be re-iterable (an array, a list of blocks, a torch "
                                 "DataLoader); got an iterator, which is used up after one pass")
            if batch_size is not None:
                raise ValueError("batch_size must be None when data is an iterable of blocks (each "
                                 f"block is one minibatch); got {_describe(batch_size)}")
            if n_samples is None:
                raise ValueError("n_samples must be given when data is an iterable of blocks: the "
                                 "minibatch terms are scaled by n / |B|; got None")
            self.n = check_int(n_samples, "n_samples", maximum=2**62)
            self.batch_size = None
            self.iterator, self.seen = None, 0
        self.data = data

    def _tensor(self, rows) -> torch.Tensor:
        if (isinstance(rows, list | tuple) and rows
                and all(isinstance(r, torch.Tensor | np.ndarray) for r in rows)
                and any(r.ndim >= 2 for r in rows)):
            # A DataLoader over a TensorDataset yields [tensor], one field per tensor of
            # the set, each a whole block; a list of 1-D rows is a block as it stands.
            if len(rows) != 1:
                raise ValueError(f"data must give one array of rows per block; got a block of "
                                 f"{len(rows)} arrays (a DataLoader over a dataset of several "
                                 "tensors, such as (x, y): put each row in one tensor)")
            rows = rows[0]
        tensor = as_float_tensor(rows, "data")
        if tensor.ndim == 0 or tensor.shape[0] == 0:
            raise ValueError(f"data must give blocks of at least one row; got shape {tuple(tensor.shape)}")
        return tensor.to(self.device)

    def batch(self, rng) -> torch.Tensor:
        """One minibatch (B, ...)."""
        if self.array:
            idx = np.sort(rng.choice(self.n, size=self.batch_size, replace=False))
            if isinstance(self.data, torch.Tensor):
                return self._tensor(self.data[torch.from_numpy(idx).to(self.data.device)])
            return self._tensor(np.asarray(self.data[idx]))
        block = next(self.iterator, None) if self.iterator is not None else None
        if block is None:
            if self.iterator is not None and self.seen != self.n:
                raise ValueError(f"n_samples must equal the rows in one pass over data, {self.seen}; "
                                 f"got {self.n}")
            self.iterator, self.seen = iter(self.data), 0
            block = next(self.iterator, None)
            if block is None:
                raise ValueError("data must give at least one block per pass; got an empty pass")
        tensor = self._tensor(block)
        self.seen += tensor.shape[0]
        return tensor

    def blocks(self):
        """The whole data, once, in blocks."""
        if self.array:
            for start in range(0, self.n, self.block_rows):
                rows = self.data[start:start + self.block_rows]
                yield self._tensor(rows if isinstance(rows, torch.Tensor) else np.asarray(rows))
        else:
            seen = 0
            for block in self.data:
                tensor = self._tensor(block)
                seen += tensor.shape[0]
                yield tensor
            if seen != self.n:
                raise ValueError(f"n_samples must equal the rows in one pass over data, {seen}; "
                                 f"got {self.n}")


def _minibatch_log_joint(log_prior, log_lik, batch: torch.Tensor, scale: float, differentiable: bool):
    r""":math:`\log p(z) + \frac{n}{|B|}\sum_{i \in B} \log p(x_i \mid z)`, as a log-density callable."""

    def log_joint(z):
        prior = call_log_density(log_prior, z, "log_prior", differentiable=differentiable)
        lik = call_log_density(lambda z: log_lik(z, batch), z, "log_lik", differentiable=differentiable)
        return prior + scale * lik

    return log_joint


def _whole_data_log_joint(log_prior, log_lik, data: _Data, differentiable: bool):
    r""":math:`\log p(z) + \sum_i \log p(x_i \mid z)`, reading the data block by block."""

    def log_joint(z):
        total = call_log_density(log_prior, z, "log_prior", differentiable=differentiable)
        for block in data.blocks():
            total = total + call_log_density(lambda z, block=block: log_lik(z, block), z, "log_lik",
                                             differentiable=differentiable)
        return total

    return log_joint


def fit_gaussian(log_prior, log_lik, data, *, batch_size=None, n_samples=None, dim=None,
                 covariance_type="full", estimator="reparam", stl=False, baseline=None, loc=None,
                 scale_tril=None, init=None, num_samples, steps, lr, tau0=100.0, kappa=0.0,
                 average=False, tol=1e-3, eval_window=100, seed, device="cpu") -> GaussianFit:
    r"""Fit a Gaussian to a posterior by doubly stochastic VI: a minibatch and Monte Carlo per step.

    Implements {eq}`eq-svi-dsvi` of Chapter 8 (Titsias and Lázaro-Gredilla,
    2014).  For a model :math:`p(z)\prod_{i=1}^n p(x_i \mid z)`, each step
    draws a minibatch :math:`B` and :math:`S` Monte Carlo draws and follows
    the gradient of

    .. math::

        \hat{\mathcal L}(\lambda) = \frac1S \sum_{s=1}^S \Big[\log p(z^{(s)})
        + \frac{n}{|B|} \sum_{i \in B} \log p(x_i \mid z^{(s)})\Big] + \mathbb H[q_\lambda],
        \qquad z^{(s)} = \mu + L\epsilon^{(s)},

    an unbiased estimate of the ELBO and of its gradient, whatever :math:`B`
    is: each step costs :math:`O(|B|)`, not :math:`O(n)`.  The loop is black-box
    VI's own (:func:`vicourse.vi.fit_gaussian`: Adam, the step-size schedule,
    iterate averaging, the windowed stopping rule, the checks); only the log
    density changes from step to step.

    Parameters
    ----------
    log_prior : callable
        :math:`\log p(z)`: maps a float64 tensor of shape (S, d) to shape (S,),
        with torch operations (differentiably, for ``estimator="reparam"``).
    log_lik : callable
        ``log_lik(z, batch)``: :math:`\sum_{i \in B} \log p(x_i \mid z)` for
        ``z`` of shape (S, d) and the rows ``batch`` (B, ...) of ``data``, as a
        tensor of shape (S,).
    data : array of shape (n_samples, ...), or a re-iterable of blocks
        A NumPy array, a ``numpy.memmap`` (the data then stay on disk; each
        step reads its minibatch) or a torch tensor, from which each step draws
        ``batch_size`` distinct rows uniformly; or a re-iterable of blocks of
        rows (a list, a torch ``DataLoader``, also over a ``TensorDataset``
        of one tensor, an object whose ``__iter__`` reads a file block by
        block), each block one step's minibatch, passed
        over again and again.  Every minibatch is checked (finite numbers) and
        moved to ``device`` as float64.
    batch_size : int in [1, n_samples]
        Rows per minibatch, for an array; None for an iterable of blocks.
    n_samples : int, optional
        :math:`n`; required for an iterable of blocks (the number of rows of
        one pass), otherwise the rows of ``data``.
    dim, covariance_type, estimator, stl, baseline, loc, scale_tril, init
        As :func:`vicourse.vi.fit_gaussian`.
    num_samples, steps, lr, tau0, kappa, average, tol, eval_window, seed
        As :func:`vicourse.vi.fit_gaussian`; ``seed`` also draws the minibatches.
    device : str or torch.device
        Where the parameters, the draws and each minibatch live (``"cpu"``,
        ``"cuda"``); the draws are made on the CPU from ``seed`` and moved, so
        a seed gives the same fit on every device, up to the device's rounding.

    Returns
    -------
    GaussianFit
        As :func:`vicourse.vi.fit_gaussian`; ``elbos[t]`` is step ``t + 1``'s
        estimate :math:`\hat{\mathcal L}` (its minibatch and its draws, at the
        parameters before its update); ``info`` also holds ``"batch_size"``,
        ``"n_samples"`` and ``"device"``.

    Raises
    ------
    ValueError
        As :func:`vicourse.vi.fit_gaussian`, naming ``log_prior`` or
        ``log_lik`` when one returns the wrong shape or non-finite values; if
        ``data`` is not an array of real numbers or a re-iterable of blocks,
        a minibatch holds NaN or infinity, ``batch_size`` or ``n_samples`` do
        not fit ``data``, or ``device`` does not exist here.

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the stopping rule did not hold within ``steps``.

    References
    ----------
    Titsias and Lázaro-Gredilla (2014), "Doubly stochastic variational Bayes
    for non-conjugate inference", ICML; Hoffman et al. (2013); Kucukelbir et
    al. (2017).
    """
    check_callable(log_prior, "log_prior")
    check_callable(log_lik, "log_lik")
    covariance_type = check_covariance_type(covariance_type)
    estimator, stl, baseline = vi._check_estimator(estimator, stl, baseline)
    device = _check_device(device)
    source = _Data(data, batch_size, n_samples, device)
    if source.array and source.batch_size is None:
        raise ValueError("batch_size must be given when data is an array; got None")
    loc0, tril0 = vi._start(dim, loc, scale_tril, init, covariance_type)
    dim = loc0.shape[0]
    num_samples = vi._check_num_samples(num_samples, baseline, dim, dim)
    steps, lr, tau0, kappa, tol, eval_window, average = vi._check_schedule(
        lr, tau0, kappa, tol, eval_window, average, steps)
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    loc_t, param = params = vi._leaf_params(loc0, tril0, covariance_type, device)
    differentiable = estimator == "reparam"

    def objective(step):
        batch = source.batch(rng)
        log_joint = _minibatch_log_joint(log_prior, log_lik, batch, source.n / batch.shape[0],
                                         differentiable)
        eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64).to(device)
        terms, elbo_terms = vi._surrogate(log_joint, loc_t, param, eps, covariance_type,
                                          estimator, stl, baseline)
        return terms.mean(), elbo_terms.mean()

    result = vi._stochastic_ascent(objective, params, steps=steps, lr=lr, tau0=tau0,
                                   kappa=kappa, average=average, tol=tol, eval_window=eval_window,
                                   what="svi.fit_gaussian")
    return vi._gaussian_fit(params, covariance_type, result, lr=lr, what="svi.fit_gaussian",
                            estimator=estimator, stl=stl, baseline=baseline,
                            num_samples=num_samples, average=average,
                            extra={"batch_size": source.batch_size, "n_samples": source.n,
                                   "device": str(device)})


def elbo_grads(log_prior, log_lik, data, loc, scale_tril, num_samples, *, batch_size=None,
               n_samples=None, covariance_type="full", stl=False, seed):
    r"""Single-draw estimates of the ELBO gradient, each from its own draw and its own minibatch.

    Implements {eq}`eq-svi-dsvi` of Chapter 8: estimate :math:`s` is the
    pathwise gradient (:func:`vicourse.vi.elbo_grads`, ``estimator="reparam"``)
    of :math:`\log p(z^{(s)}) + \frac{n}{|B_s|}\sum_{i \in B_s} \log p(x_i \mid z^{(s)}) +
    \mathbb H[q]` with its own :math:`\epsilon^{(s)}` and its own minibatch
    :math:`B_s` (drawn as in :func:`fit_gaussian`).  With ``batch_size=None``
    and an array, or an iterable of blocks, :math:`B_s` is the whole data
    (read block by block): the estimates then carry the Monte Carlo noise
    only, and the difference of the two variances is what the minibatch adds.

    Parameters
    ----------
    log_prior, log_lik, data, n_samples, covariance_type, stl
        As :func:`fit_gaussian`.
    loc : array of shape (d,)
    scale_tril : array of shape (d, d)
        The Gaussian :math:`q` at which to estimate.
    num_samples : int, >= 1
        Estimates to return.
    batch_size : int in [1, n_samples], optional
        Rows per minibatch (an array only); None for the whole data.
    seed : int in [0, 2**63 - 1]
        Draws :math:`\epsilon` and the minibatches.

    Returns
    -------
    grad_loc : tensor of shape (num_samples, d)
    grad_scale_tril : tensor of shape (num_samples, d) (``"diag"``) or (num_samples, d, d) (``"full"``)
        In the unconstrained parameters of :func:`vicourse.vi.elbo_grads`.

    Raises
    ------
    ValueError
        As :func:`fit_gaussian` and :func:`vicourse.vi.elbo_grads`.
    """
    check_callable(log_prior, "log_prior")
    check_callable(log_lik, "log_lik")
    covariance_type = check_covariance_type(covariance_type)
    stl = check_bool(stl, "stl")
    source = _Data(data, batch_size, n_samples, torch.device("cpu"))
    num_samples = check_int(num_samples, "num_samples", maximum=10**6)
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    whole = None if source.batch_size is not None else _whole_data_log_joint(log_prior, log_lik,
                                                                              source, True)
    if whole is None:
        # row s of the draws meets minibatch s
        terms = [_minibatch_log_joint(log_prior, log_lik, batch, source.n / batch.shape[0], True)
                 for batch in (source.batch(rng) for _ in range(num_samples))]

        def log_joint(z):
            return torch.cat([term(z[s:s + 1]) for s, term in enumerate(terms)])
    else:
        log_joint = whole
    # vi.elbo_grads draws the Monte Carlo noise and takes every gradient in one backward pass
    return vi.elbo_grads(log_joint, loc, scale_tril, num_samples, covariance_type=covariance_type,
                         stl=stl, generator=generator)
