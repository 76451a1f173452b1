"""Did it work? Diagnosing a variational fit, and correcting it (Chapter 7).

The ELBO says how good a fit is only up to the unknown :math:`\\log p(x)`.
This module turns the fitted :math:`q` into a proposal for importance
sampling, whose weights :math:`w = p(x, z) / q(z)` answer what the ELBO
cannot:

* :func:`importance_sample`, :func:`importance_log_evidence`: the weights,
  and the unbiased estimate of :math:`p(x)` they give;
* :func:`effective_sample_size`: how many of the draws the weights use;
* :func:`psis`: Pareto-smoothed importance sampling (Vehtari et al., 2024),
  whose shape estimate :math:`\\hat k` of the weights' tail says whether
  ``q`` can be trusted, and whose smoothed weights correct it where it can
  (:func:`pareto_k_threshold` gives the threshold for a number of draws);
* :func:`vsbc_probabilities`, :func:`vsbc_test`: variational simulation-based
  calibration (Yao et al., 2018), whether the fit's point estimates are
  biased over data sets drawn from the model, and in which direction;
* :func:`nuts`: draws from Pyro's NUTS sampler for a ``log_joint``, seeded
  without touching torch's global random state, for a gold standard where no
  exact posterior exists;
* :func:`eight_schools_log_joint` with :data:`EIGHT_SCHOOLS_Y` and
  :data:`EIGHT_SCHOOLS_SIGMA`: the hierarchical model on which the chapter
  compares VI with NUTS, in its centred and non-centred parameterisations.

Log weights are float64 arrays; a weight of zero (the target rules a draw out)
is a log weight of ``-inf`` and is allowed, NaN and ``+inf`` are not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from scipy.special import ndtr, softmax

from vicourse._random import sample
from vicourse._validation import (
    _describe,
    _to_numpy,
    as_float_array,
    as_float_tensor,
    call_log_density,
    check_bool,
    check_callable,
    check_generator,
    check_in_interval,
    check_int,
    check_positive,
    check_seed,
)

__all__ = [
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "MAX_DRAW_ENTRIES",
    "MIN_PSIS_SAMPLES",
    "NUTSDraws",
    "effective_sample_size",
    "eight_schools_log_joint",
    "importance_log_evidence",
    "importance_sample",
    "nuts",
    "pareto_k_threshold",
    "psis",
    "vsbc_probabilities",
    "vsbc_test",
]

#: The fewest log weights :func:`psis` accepts: its tail of
#: ``ceil(min(S / 5, 3 sqrt(S)))`` draws must hold at least 5 of them.
MIN_PSIS_SAMPLES = 21
#: The fewest weights in the tail that a generalised Pareto fit is attempted on.
_MIN_TAIL = 5
#: Zhang and Stephens' prior on the scale: the grid is centred using the first quartile
#: of the tail (``prior_bs`` in ArviZ and loo).
_PRIOR_QUARTILE_WEIGHT = 3.0
#: The weakly informative prior on k: ``_PRIOR_K_STRENGTH`` pseudo-observations at 1/2.
_PRIOR_K_STRENGTH = 10.0
_PRIOR_K_CENTRE = 0.5
#: log of the smallest positive normal float64: exceedances are measured from at least here.
_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))
#: Most entries a draw of q may have (num_samples times the event size): 2**27 float64
#: numbers are 1 GiB.
MAX_DRAW_ENTRIES = 2**27
_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- helpers


def _logsumexp(x: np.ndarray) -> float:
    """``log(sum(exp(x)))`` of a 1-D array with a finite maximum (-inf entries allowed).

    ``scipy.special.logsumexp`` gives the same, but its array-API dispatch costs more
    than the sum itself on the arrays of a few thousand entries used here.
    """
    top = float(x.max())
    return top + math.log(float(np.exp(x - top).sum()))


def _check_log_weights(log_weights, name: str = "log_weights", *, minimum: int = 1) -> np.ndarray:
    """A 1-D float64 array of log weights: -inf allowed (a zero weight), NaN and +inf not."""
    array = _to_numpy(log_weights, name).astype(np.float64, copy=True)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, one log weight per draw; got "
                         f"{array.ndim}-D input of shape {array.shape}")
    if array.size < minimum:
        raise ValueError(f"{name} must hold at least {minimum} log weights; got {array.size}")
    nan, posinf = int(np.isnan(array).sum()), int(np.isposinf(array).sum())
    if nan or posinf:
        raise ValueError(f"{name} must be finite or -inf (a zero weight); got {nan} NaN and "
                         f"{posinf} +inf entries: the log density or log q was not finite")
    if np.isneginf(array).all():
        raise ValueError(f"{name} must not all be -inf: every weight is zero, so the target "
                         "puts no mass where the draws are")
    return array


def _check_q(q) -> torch.distributions.Distribution:
    if not isinstance(q, torch.distributions.Distribution):
        raise ValueError(f"q must be a torch.distributions.Distribution; got {_describe(q)}")
    if q.batch_shape != torch.Size([]):
        raise ValueError(f"q must have batch_shape (); got {tuple(q.batch_shape)} (wrap it in "
                         "torch.distributions.Independent to treat coordinates as one event)")
    return q


# --------------------------------------------------------------------------- importance sampling


def importance_sample(log_joint, q, num_samples, *, generator=None):
    r"""Draw from ``q`` and return the draws with their log importance weights.

    Implements {eq}`eq-diag-weight` of Chapter 7:

    .. math::

        z^{(s)} \sim q, \qquad
        \log w_s = \log p(x, z^{(s)}) - \log q(z^{(s)}), \qquad s = 1, \dots, S.

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` (or any log density known up to a constant): maps
        a float64 tensor of draws of shape ``(S, *q.event_shape)`` to shape
        ``(S,)``; ``-inf`` where the target rules a draw out.
    q : torch.distributions.Distribution
        The proposal, with ``batch_shape == ()``, of any floating dtype; its
        draws and their log density are returned in float64.
    num_samples : int, >= 1
        :math:`S`.
    generator : torch.Generator, optional
        Source of randomness; the global torch state is left untouched.

    Returns
    -------
    z : tensor of shape (S, *q.event_shape), float64
        The draws.
    log_weights : ndarray of shape (S,)

    Raises
    ------
    ValueError
        If ``q`` is not a distribution with an empty batch shape,
        ``num_samples`` is not an integer >= 1 (or the draws would hold more
        than ``MAX_DRAW_ENTRIES`` numbers), ``log_joint`` returns the wrong
        shape, NaN or ``+inf``, or ``q.log_prob`` is not finite at its own draws.
    """
    check_callable(log_joint, "log_joint")
    q = _check_q(q)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    event = max(int(q.event_shape.numel()), 1)
    if num_samples * event > MAX_DRAW_ENTRIES:
        raise ValueError(f"num_samples must keep the draws below {MAX_DRAW_ENTRIES} numbers; got "
                         f"{num_samples} draws of {event} numbers each")
    generator = check_generator(generator)
    with torch.no_grad():
        draws = sample(q, (num_samples,), generator)
        # log q at the draws in q's own dtype (a float32 q cannot take float64 points),
        # then everything in float64.
        log_q = q.log_prob(draws).to(torch.float64)
        z = draws.to(torch.float64)
        log_p = call_log_density(log_joint, z, "log_joint", allow_neg_inf=True)
    if not bool(torch.isfinite(log_q).all()):
        raise ValueError("q.log_prob must be finite at q's own draws; got "
                         f"{int((~torch.isfinite(log_q)).sum())} non-finite values")
    return z, (log_p - log_q).numpy()


def importance_log_evidence(log_joint, q, num_samples, *, generator=None):
    r"""Estimate :math:`\log p(x)` by importance sampling with ``q`` as the proposal.

    Implements {eq}`eq-diag-is-evidence` of Chapter 7:

    .. math::

        \widehat{p(x)} = \frac1S \sum_{s=1}^S w_s, \qquad
        \mathbb E_q[\widehat{p(x)}] = p(x),

    and returns :math:`\log \widehat{p(x)}` (a logsumexp, never an overflow)
    together with the Pareto :math:`\hat k` of the weights (:func:`psis`),
    which says whether the estimate can be trusted.  :math:`\widehat{p(x)}` is
    unbiased; its logarithm is biased low (Jensen), and its expectation is the
    importance-weighted bound :math:`\mathcal L_S` of Chapter 6's
    {eq}`eq-vae-iwae`, which never decreases as :math:`S` grows and tends to
    :math:`\log p(x)` when the weights are bounded (Burda et al., 2016).

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` at the observed :math:`x`, as in
        :func:`vicourse.elbo.monte_carlo_elbo`: maps a float64 tensor of draws of
        shape ``(S, *q.event_shape)`` to shape ``(S,)``.  For a density known
        only up to a constant, the estimate is of the log of that constant.
    q : torch.distributions.Distribution
        The proposal, usually a variational fit; ``batch_shape == ()``.
    num_samples : int, >= MIN_PSIS_SAMPLES (21)
        :math:`S`; thousands in practice, so that :math:`\hat k` is reliable.
    generator : torch.Generator, optional

    Returns
    -------
    estimate : float
        :math:`\log \widehat{p(x)}`, the raw (unsmoothed) estimate.
    k_hat : float
        The generalised Pareto shape of the weights' right tail: below
        :func:`pareto_k_threshold` the estimate is reliable; above 0.7 it is
        not, whatever its value.

    Raises
    ------
    ValueError
        As :func:`importance_sample`, if ``num_samples`` is below
        ``MIN_PSIS_SAMPLES``, or if every weight is zero.
    """
    check_callable(log_joint, "log_joint")
    _check_q(q)
    num_samples = check_int(num_samples, "num_samples", minimum=MIN_PSIS_SAMPLES)
    _, log_weights = importance_sample(log_joint, q, num_samples, generator=generator)
    if np.isneginf(log_weights).all():
        raise ValueError("log_joint is -inf at every draw of q: q puts no mass where the target "
                         "does, so the weights cannot estimate p(x)")
    _, k_hat = psis(log_weights)
    return _logsumexp(log_weights) - math.log(num_samples), k_hat


def effective_sample_size(log_weights) -> float:
    r"""Kish's effective sample size of importance weights given as logarithms.

    Implements {eq}`eq-diag-ess` of Chapter 7:

    .. math::

        S_{\text{eff}} = \frac{\big(\sum_s w_s\big)^2}{\sum_s w_s^2}
        = \exp\Big(2 \operatorname{logsumexp}_s \log w_s
                   - \operatorname{logsumexp}_s 2 \log w_s\Big),

    between 1 (one weight dominates) and :math:`S` (equal weights); it does
    not change if every weight is multiplied by the same constant, so the
    weights need not be normalised.

    Parameters
    ----------
    log_weights : array of shape (S,)
        Finite or ``-inf`` (a zero weight), not all ``-inf``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``log_weights`` is not 1-D, is empty, contains NaN or ``+inf``, or
        is all ``-inf``.

    References
    ----------
    Kong (1992); Owen (2013), Section 9.3.
    """
    lw = _check_log_weights(log_weights)
    # The ratio ignores a common factor: shifted, the log weights are <= 0 and doubling them
    # cannot overflow.  (A shift beyond the float range gives -inf, a weight of zero relative
    # to the largest, which is what it is.)
    with np.errstate(over="ignore"):
        lw -= lw.max()
    return float(np.exp(2.0 * _logsumexp(lw) - _logsumexp(2.0 * lw)))


# --------------------------------------------------------------------------- PSIS


def _fit_generalized_pareto(x: np.ndarray) -> tuple[float, float]:
    r"""Zhang and Stephens' estimate of a generalised Pareto fit to sorted exceedances ``x``.

    ``x`` holds the exceedances over the cutoff in increasing order, all
    positive.  Returns :math:`(\hat k, \hat\sigma)`, with :math:`\hat k`
    already pulled towards 1/2 by the weakly informative prior and
    :math:`\hat\sigma` from the estimate before that prior, as in the
    published algorithm (Vehtari et al., 2024, Appendix; loo and ArviZ).
    """
    n = x.size
    m = 30 + int(math.sqrt(n))
    # The grid of theta = -k / sigma (Zhang and Stephens 2009, Section 3): centred at the
    # reciprocal of the largest value, spread by the first quartile (their prior on theta).
    j = np.arange(1, m + 1, dtype=np.float64)
    quartile = x[int(n / 4 + 0.5) - 1]
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (_PRIOR_QUARTILE_WEIGHT * quartile)
    # For each theta, the k that maximises the likelihood, and the profile log-likelihood.
    k = np.log1p(-theta[:, None] * x).mean(axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)
    # The posterior mean of theta under a uniform prior on the grid points.
    theta_hat = softmax(profile) @ theta
    k_hat = float(np.log1p(-theta_hat * x).mean())
    sigma_hat = -k_hat / theta_hat
    # The weakly informative prior: 10 pseudo-observations of k = 1/2.
    k_hat = (n * k_hat + _PRIOR_K_STRENGTH * _PRIOR_K_CENTRE) / (n + _PRIOR_K_STRENGTH)
    return k_hat, float(sigma_hat)


def _gpd_quantile(probs: np.ndarray, k: float, sigma: float) -> np.ndarray:
    r"""The generalised Pareto quantile :math:`F^{-1}(p) = \sigma((1 - p)^{-k} - 1)/k`.

    The inverse of {eq}`eq-diag-gpd`, written with ``log1p`` and ``expm1`` so that it
    is accurate for small ``p`` and small ``k``; its limit as :math:`k \to 0` is
    :math:`-\sigma \log(1 - p)`.  (``scipy.stats.genpareto.ppf`` gives the same, at
    ten times the cost for the few hundred quantiles PSIS needs.)
    """
    log_survival = np.log1p(-probs)
    if abs(k) < 1e-12:
        return -sigma * log_survival
    return sigma * np.expm1(-k * log_survival) / k


def psis(log_weights):
    r"""Pareto-smoothed importance sampling: smoothed log weights and the tail shape :math:`\hat k`.

    Implements {eq}`eq-diag-gpd`, {eq}`eq-diag-zhang-stephens` and
    {eq}`eq-diag-psis-smooth` of Chapter 7, the algorithm of Vehtari et al.
    (2024):

    1. take the :math:`M = \lceil \min(S/5,\ 3\sqrt S) \rceil` largest weights
       (those above the :math:`(M+1)`-th largest, :math:`w_{\text{cut}}`);
    2. fit a generalised Pareto distribution to their exceedances
       :math:`w - w_{\text{cut}}` with the estimator of Zhang and Stephens
       (2009), a posterior mean over a grid of :math:`\theta = -k/\sigma`,
       then pull :math:`\hat k` towards 1/2 with a weakly informative prior
       worth 10 observations, :math:`\hat k \leftarrow (M \hat k + 5) / (M + 10)`;
    3. replace the :math:`M` largest weights, in order, by
       :math:`w_{\text{cut}} + F^{-1}\big((i - 1/2)/M\big)`, the fitted
       distribution's quantiles, capped at the largest raw weight;
    4. normalise.

    The fit is made on exceedances scaled by :math:`w_{\text{cut}}`
    (``expm1`` of log differences), which leaves :math:`\hat k` unchanged and
    cannot underflow; like ArviZ and loo, the cutoff is never taken below the
    smallest normal float64.  Draws from an MCMC chain would also need a
    relative efficiency (ArviZ's ``reff``); the draws of a variational ``q``
    are independent, so it is 1 here.

    Parameters
    ----------
    log_weights : array of shape (S,)
        :math:`\log w_s`, known up to a common constant; finite or ``-inf``
        (a zero weight); at least ``MIN_PSIS_SAMPLES`` (21) of them.

    Returns
    -------
    smoothed_log_weights : ndarray of shape (S,)
        Normalised: ``logsumexp(smoothed_log_weights) == 0``, so a
        self-normalised estimate of :math:`\mathbb E_p f` is
        ``np.exp(smoothed_log_weights) @ f(z)`` ({eq}`eq-diag-self-normalised`).
    k_hat : float
        The estimated shape :math:`\hat k`.  Below :func:`pareto_k_threshold`
        (at most 0.7) the smoothed estimates are reliable; above 0.7 the
        tail is so heavy that no feasible number of draws makes them so.
        ``-inf`` when every non-zero weight is the same (``q`` proportional to
        the target where it puts mass): there is no tail to fit.  ``inf`` when
        fewer than 5 weights exceed :math:`e^{-708}` times the largest (the
        floor of the cutoff): a few weights outweigh all the others, and the
        log weights are returned normalised but not smoothed.

    Raises
    ------
    ValueError
        If ``log_weights`` is not 1-D, has fewer than 21 entries, contains NaN
        or ``+inf``, is all ``-inf``, or, not being constant, has fewer than
        5 values above a cutoff that was not floored (ties).

    References
    ----------
    Vehtari, Simpson, Gelman, Yao and Gabry (2024), JMLR 25(72); Zhang and
    Stephens (2009), Technometrics 51(3); Yao, Vehtari, Simpson and Gelman
    (2018).
    """
    lw = _check_log_weights(log_weights, minimum=MIN_PSIS_SAMPLES)
    num = lw.size
    tail_len = int(math.ceil(min(num / 5.0, 3.0 * math.sqrt(num))))
    with np.errstate(over="ignore"):   # -inf: a weight of zero relative to the largest
        x = lw - lw.max()
    # The (M + 1)-th largest log weight, in O(S): only the tail needs sorting.
    cutoff = max(float(np.partition(x, num - tail_len - 1)[num - tail_len - 1]), _LOG_TINY)
    tail = np.flatnonzero(x > cutoff)
    finite = np.isfinite(x)
    if not np.any(x[finite] < 0):
        # Every weight that is not zero is the same: q is proportional to the target where
        # it puts mass, and the weights have no tail at all.
        out = np.where(finite, -math.log(int(finite.sum())), -np.inf)
        return out, -math.inf
    if tail.size < _MIN_TAIL and cutoff == _LOG_TINY:
        # The cutoff was floored: all but a few weights are below exp(-708) times the
        # largest, so those few dominate.  No tail can be fitted, and none is needed to say
        # that the weights cannot be trusted: k-hat is infinite (as in ArviZ and loo), and
        # the weights are returned normalised but not smoothed.
        return x - _logsumexp(x), math.inf
    if tail.size < _MIN_TAIL:
        raise ValueError(f"log_weights must have at least {_MIN_TAIL} distinct values in its "
                         f"largest {tail_len} to fit a tail; got {tail.size} above the cutoff "
                         "(the weights are tied, or nearly constant)")
    tail = tail[np.argsort(x[tail], kind="stable")]
    # Exceedances w - w_cut in units of w_cut: exp(x - c) - 1, exact for small differences.
    exceedances = np.expm1(x[tail] - cutoff)
    k_hat, sigma = _fit_generalized_pareto(exceedances)
    if not (math.isfinite(k_hat) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"the generalised Pareto fit to log_weights failed (k_hat={k_hat}, "
                         f"sigma={sigma}); the tail is degenerate")
    probs = (np.arange(tail.size, dtype=np.float64) + 0.5) / tail.size
    smoothed = cutoff + np.log1p(_gpd_quantile(probs, k_hat, sigma))
    out = x.copy()
    out[tail] = np.minimum(smoothed, 0.0)   # never above the largest raw weight
    out -= _logsumexp(out)
    return out, float(k_hat)


def pareto_k_threshold(num_samples) -> float:
    r"""The largest :math:`\hat k` at which PSIS estimates from ``num_samples`` draws are reliable.

    Vehtari et al. (2024), Section 3: :math:`\min(1 - 1/\log_{10} S,\ 0.7)`.
    Above :math:`1 - 1/\log_{10} S` the draws are too few for the estimate's
    error to shrink at the usual rate; above 0.7 no feasible number is
    enough.

    Parameters
    ----------
    num_samples : int, >= 11
        :math:`S` (at :math:`S \le 10` the threshold would not be positive).

    Returns
    -------
    float
    """
    num_samples = check_int(num_samples, "num_samples", minimum=11, maximum=2**62)
    return float(min(1.0 - 1.0 / math.log10(num_samples), 0.7))


# --------------------------------------------------------------------------- VSBC


def vsbc_probabilities(true_values, loc, scale) -> np.ndarray:
    r"""The calibration probabilities of VSBC for Gaussian fits.

    Implements {eq}`eq-diag-vsbc` of Chapter 7: for data sets
    :math:`m = 1, \dots, M` simulated from the model with parameters
    :math:`z^{(m)}`, and a fit :math:`q_m` to each, the probability under
    :math:`q_m`'s marginal that coordinate :math:`j` lies below its true value,

    .. math::

        p_{mj} = \Pr_{q_m}\big(z_j < z^{(m)}_j\big)
               = \Phi\Big(\frac{z^{(m)}_j - \mu_{mj}}{\sigma_{mj}}\Big),

    for a Gaussian :math:`q_m` with marginal means :math:`\mu_{mj}` and
    standard deviations :math:`\sigma_{mj}` (``GaussianFit.loc`` and
    ``GaussianFit.scale``).  Were every :math:`q_m` the exact posterior, each
    column would be uniform on (0, 1); if the fits err as often and as far
    above the true value as below it, it is symmetric about 1/2
    (:func:`vsbc_test`).

    Parameters
    ----------
    true_values : array of shape (M, d)
        :math:`z^{(m)}`, the parameters each data set was simulated from.
    loc : array of shape (M, d)
    scale : array of shape (M, d), > 0

    Returns
    -------
    ndarray of shape (M, d)

    Raises
    ------
    ValueError
        If an argument is not a finite 2-D array, the shapes differ, or a
        scale is not positive.

    References
    ----------
    Yao, Vehtari, Simpson and Gelman (2018), Section 3.
    """
    true_values = as_float_array(true_values, "true_values", ndim=2)
    loc = as_float_array(loc, "loc", ndim=2)
    scale = as_float_array(scale, "scale", ndim=2)
    for name, value in (("loc", loc), ("scale", scale)):
        if value.shape != true_values.shape:
            raise ValueError(f"{name} must have the shape of true_values, {true_values.shape}; "
                             f"got {value.shape}")
    check_positive(scale, "scale")
    return ndtr((true_values - loc) / scale)


def vsbc_test(probabilities):
    r"""Test each column of VSBC probabilities for symmetry about 1/2.

    Implements the test of {eq}`eq-diag-vsbc-test` of Chapter 7: the Wilcoxon
    signed-rank test of :math:`p_{mj} - 1/2`, whose null hypothesis is exactly
    that the distribution of :math:`p_{\cdot j}` is symmetric about 1/2.  A
    small p-value says it is not, so the fits' point estimate of coordinate
    :math:`j` is biased.  Mass near 1 (a median above 1/2, a positive
    statistic) means the true value usually lies above the fit, so the fit
    underestimates; mass near 0 (a negative statistic), the reverse.

    .. math::

        W_j = \sum_{m=1}^M \operatorname{sign}\big(p_{mj} - \tfrac12\big)\, R_{mj},

    with :math:`R_{mj}` the rank of :math:`\lvert p_{mj} - \tfrac12\rvert` among
    the non-zero differences of the column (ties share their mean rank; a
    difference of exactly zero is dropped, as in ``scipy.stats.wilcoxon``,
    which gives the p-value).  scipy reports :math:`\min(W^+, W^-)` instead,
    the smaller of the sums of positive and negative ranks; with :math:`n`
    non-zero differences, :math:`W^+ + W^- = n(n + 1)/2` and
    :math:`W_j = W^+ - W^-`, so it carries no sign.

    Yao et al. (2018) compare the column with its mirror image
    :math:`1 - p_{mj}` by a two-sample Kolmogorov-Smirnov test instead; the
    two samples are mirror images of each other, not independent, and that
    test rejects a symmetric distribution about twice as often as its level
    says (Chapter 7 measures it).  The signed-rank test keeps its level.

    Parameters
    ----------
    probabilities : array of shape (M, d), entries in [0, 1]
        From :func:`vsbc_probabilities`; at least 2 rows.

    Returns
    -------
    statistic : ndarray of shape (d,)
        :math:`W_j`, the signed-rank statistic of each column: its sign is the
        direction of the asymmetry.
    pvalue : ndarray of shape (d,)
        The two-sided p-value of each column.

    Raises
    ------
    ValueError
        If ``probabilities`` is not a finite 2-D array with at least 2 rows
        and entries in [0, 1], or a column equals 1/2 in every row (no signed
        rank to test).

    References
    ----------
    Wilcoxon (1945); Yao, Vehtari, Simpson and Gelman (2018), Section 3.
    """
    p = as_float_array(probabilities, "probabilities", ndim=2)
    if p.shape[0] < 2:
        raise ValueError(f"probabilities must have at least 2 rows (data sets); got {p.shape[0]}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]; got entries from "
                         f"{p.min():.3g} to {p.max():.3g}")
    if np.any(np.all(p == 0.5, axis=0)):
        raise ValueError("probabilities must not be 1/2 in every row of a column: there is "
                         "nothing to test")
    diff = p - 0.5
    pvalue = np.atleast_1d(stats.wilcoxon(diff, axis=0).pvalue)
    # The zero differences hold the lowest ranks of |diff|; dropping them lowers every other
    # rank by their number (their own sign is 0, so their rank does not count).
    ranks = stats.rankdata(np.abs(diff), axis=0) - (diff == 0).sum(axis=0)
    return (np.sign(diff) * ranks).sum(axis=0), pvalue


# --------------------------------------------------------------------------- NUTS


@dataclass(frozen=True)
class NUTSDraws:
    """Draws from NUTS, returned by :func:`nuts`.

    Attributes
    ----------
    draws : ndarray of shape (num_samples, d)
        The draws after warm-up, in order.
    ess : ndarray of shape (d,)
        Effective sample size of each coordinate (Pyro's
        ``effective_sample_size``, from the chain's autocorrelations).
    num_divergences : int
        Transitions after warm-up whose trajectory diverged (a sign that the
        sampler could not follow the target's geometry there).
    step_size : float
        The leapfrog step size adapted during warm-up.
    """

    draws: np.ndarray
    ess: np.ndarray
    num_divergences: int
    step_size: float


def nuts(log_joint, init, *, num_samples, warmup_steps, seed, target_accept_prob=0.8,
         max_tree_depth=10) -> NUTSDraws:
    r"""Draw from the distribution proportional to ``exp(log_joint)`` with Pyro's NUTS.

    The No-U-Turn sampler (Hoffman and Gelman, 2014) of Pyro (Bingham et al.,
    2019), one chain, with step-size and diagonal mass-matrix adaptation
    during ``warmup_steps``.  Pyro draws from torch's global random state:
    here that state is forked, seeded from ``seed``, and restored afterwards
    (:func:`torch.random.fork_rng`), so the draws are reproducible from
    ``seed`` and the caller's random state is untouched.

    Parameters
    ----------
    log_joint : callable
        The log density up to a constant, on an unconstrained space: maps a
        float64 tensor of shape (S, d) to shape (S,), differentiably.
    init : array of shape (d,)
        The chain's starting point, where ``log_joint`` must be finite.
    num_samples : int, >= 2
        Draws kept after warm-up.
    warmup_steps : int, >= 1
        Adaptation steps, discarded.
    seed : int in [0, 2**63 - 1]
    target_accept_prob : float in (0, 1)
        The acceptance statistic the step-size adaptation aims at.
    max_tree_depth : int in [1, 20]

    Returns
    -------
    NUTSDraws

    Raises
    ------
    ValueError
        If an argument is malformed, ``log_joint`` is not finite, of the wrong
        shape or not differentiable at ``init``, or the draws are not finite.

    References
    ----------
    Hoffman and Gelman (2014); Bingham et al. (2019).
    """
    check_callable(log_joint, "log_joint")
    init = as_float_tensor(init, "init", ndim=1).detach().clone()
    num_samples = check_int(num_samples, "num_samples", minimum=2, maximum=10**7)
    warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=1, maximum=10**7)
    seed = check_seed(seed)
    target_accept_prob = check_in_interval(target_accept_prob, "target_accept_prob", 0.0, 1.0,
                                           closed=(False, False))
    max_tree_depth = check_int(max_tree_depth, "max_tree_depth", minimum=1, maximum=20)
    start = init[None].clone().requires_grad_(True)
    call_log_density(log_joint, start, "log_joint", differentiable=True)

    with warnings.catch_warnings():
        # Pyro is imported only when NUTS is used.  In a Jupyter kernel without ipywidgets,
        # its import of tqdm.auto warns about a progress-bar widget that is never shown.
        warnings.filterwarnings("ignore", message="IProgress not found")
        from pyro.infer import MCMC, NUTS
        from pyro.ops.stats import effective_sample_size as _ess

    def potential(params):
        # NUTS simulates Hamiltonian dynamics on the potential energy -log density.
        return -log_joint(params["z"][None])[0]

    kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept_prob,
                  max_tree_depth=max_tree_depth, adapt_step_size=True, adapt_mass_matrix=True)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                initial_params={"z": init}, disable_progbar=True)
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator (torch.manual_seed would initialise every backend).
        torch.default_generator.manual_seed(seed)
        mcmc.run()
    draws = mcmc.get_samples()["z"].detach().to(torch.float64)
    if not bool(torch.isfinite(draws).all()):
        raise ValueError("NUTS returned non-finite draws: log_joint overflowed along a "
                         "trajectory; check it, or start closer to the mode")
    diagnostics = mcmc.diagnostics()
    divergences = sum(len(v) for v in diagnostics["divergences"].values())
    ess = _ess(draws[None], chain_dim=0, sample_dim=1).numpy()
    return NUTSDraws(draws=draws.numpy(), ess=ess, num_divergences=int(divergences),
                     step_size=float(kernel.step_size))


# --------------------------------------------------------------------------- eight schools

#: The eight schools data (Rubin, 1981; Gelman et al., 2013, Section 5.5): estimated
#: effects of coaching on SAT-V scores in eight schools ...
EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
#: ... and their standard errors.
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_log_joint(y, sigma, *, centered, mu_scale=5.0, tau_scale=5.0):
    r"""The log joint density of the eight schools model, on an unconstrained space.

    Implements {eq}`eq-diag-eight-schools` of Chapter 7.  The model
    (Gelman et al., 2013, Section 5.5) for :math:`J` estimates :math:`y_j`
    with known standard errors :math:`\sigma_j`:

    .. math::

        \mu \sim \mathcal N(0, s_\mu^2), \quad
        \tau \sim \text{half-Cauchy}(0, s_\tau), \quad
        \theta_j \sim \mathcal N(\mu, \tau^2), \quad
        y_j \sim \mathcal N(\theta_j, \sigma_j^2).

    The returned callable takes points :math:`z = (\mu, \log\tau, u_1, \dots,
    u_J)` and includes the log-Jacobian :math:`\log\tau` of
    :math:`\tau = e^{\log\tau}`:

    * centred (``centered=True``): :math:`u_j = \theta_j`;
    * non-centred: :math:`u_j = \eta_j` with
      :math:`\theta_j = \mu + \tau\eta_j` and :math:`\eta_j \sim \mathcal N(0, 1)`,
      so the density differs from the centred one by the Jacobian
      :math:`\tau^J`.

    Both describe the same posterior of :math:`(\mu, \tau, \theta)` and have
    the same normaliser :math:`p(y)`.

    ``y`` may also hold :math:`M` data sets, shape (M, J): the callable then
    takes points of shape (S, M (J + 2)), the :math:`M` blocks
    :math:`(\mu, \log\tau, u)` side by side, and returns the sum of the
    :math:`M` log joints, the log density of :math:`M` independent posteriors.
    One diagonal-Gaussian fit to it is :math:`M` separate fits: its ELBO is the
    sum of theirs and each block's gradient is that of its own ELBO.

    Parameters
    ----------
    y : array of shape (J,) or (M, J)
    sigma : array of shape (J,), > 0
    centered : bool
    mu_scale, tau_scale : float, > 0
        :math:`s_\mu` and :math:`s_\tau`.

    Returns
    -------
    callable
        ``log_joint(z)``: float64 tensor (S, M (J + 2)) -> (S,), differentiable.

    Raises
    ------
    ValueError
        If ``y`` or ``sigma`` is malformed, their lengths differ, a scale is not
        positive, or ``centered`` is not a bool.
    """
    y = as_float_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (J,) or (M, J); got {y.ndim}-D input of shape "
                         f"{y.shape}")
    y2 = y[None] if y.ndim == 1 else y
    sigma = as_float_array(sigma, "sigma", ndim=1)
    check_positive(sigma, "sigma")
    if sigma.shape[0] != y2.shape[1]:
        raise ValueError(f"y and sigma must have one entry per school each; got y of shape "
                         f"{y.shape} and sigma of shape {sigma.shape}")
    centered = check_bool(centered, "centered")
    mu_scale = check_positive(mu_scale, "mu_scale")
    tau_scale = check_positive(tau_scale, "tau_scale")
    if np.ndim(mu_scale) or np.ndim(tau_scale):
        raise ValueError("mu_scale and tau_scale must be scalars")
    num_sets, num_schools = y2.shape
    width = num_schools + 2
    y_t = torch.from_numpy(y2.copy())
    inv_sigma = torch.from_numpy(1.0 / sigma)
    # Every constant, so that the normaliser is p(y): N(mu | 0, s_mu^2), half-Cauchy(tau | s_tau),
    # J normal densities of theta (or eta) and J of y.
    const = num_sets * (-0.5 * _LOG_2PI - math.log(mu_scale) + math.log(2.0 / (math.pi * tau_scale))
                        - num_schools * _LOG_2PI - float(np.log(sigma).sum()))

    def log_joint(z):
        if z.ndim != 2 or z.shape[1] != num_sets * width:
            raise ValueError(f"points must have shape (S, {num_sets * width}); got "
                             f"{tuple(z.shape)}")
        blocks = z.reshape(z.shape[0], num_sets, width)
        mu, log_tau, u = blocks[..., 0], blocks[..., 1], blocks[..., 2:]
        tau = log_tau.exp()
        # log N(mu | 0, s_mu^2) + log half-Cauchy(tau | s_tau) + log tau (the Jacobian)
        out = -0.5 * (mu / mu_scale).square() - torch.log1p((tau / tau_scale).square()) + log_tau
        if centered:
            theta = u
            out = out - 0.5 * ((u - mu[..., None]) / tau[..., None]).square().sum(-1) \
                - num_schools * log_tau
        else:
            theta = mu[..., None] + tau[..., None] * u
            out = out - 0.5 * u.square().sum(-1)
        out = out - 0.5 * ((y_t - theta) * inv_sigma).square().sum(-1)
        return out.sum(-1) + const

    return log_joint
