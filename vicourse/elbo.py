"""The evidence lower bound (Chapter 1).

The ELBO of a distribution :math:`q(z)` for a model :math:`p(x, z)` is

.. math::

    \\mathcal L(q) = \\mathbb E_{q(z)}\\big[\\log p(x, z) - \\log q(z)\\big]
                 = \\log p(x) - \\mathrm{KL}\\big(q(z) \\,\\|\\, p(z \\mid x)\\big).

Functions here return the ELBO, a quantity to maximise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import xlogy

from vicourse._random import sample
from vicourse._validation import (
    _describe,
    _to_numpy,
    call_log_density,
    check_callable,
    check_generator,
    check_int,
    check_probability_vector,
)

__all__ = ["discrete_elbo", "monte_carlo_elbo"]

# Monte Carlo draws are refused beyond this many numbers (1 GiB of float64).
_MAX_DRAWN = 2**27


def discrete_elbo(log_joint, probs):
    r"""The ELBO of a distribution over a discrete latent variable, given by its probabilities.

    Implements {eq}`eq-elbo-def` of Chapter 1 with sums in place of integrals:

    .. math::

        \mathcal L(q) = \sum_k q_k \log p(x, z = k) - \sum_k q_k \log q_k,

    with the convention :math:`0 \log 0 = 0` (``scipy.special.xlogy``), so a
    ``q`` that rules a value out is allowed.

    Parameters
    ----------
    log_joint : array of shape (..., K)
        :math:`\log p(x, z = k)` for each value ``k`` of the latent variable
        (for a discrete latent the log-joint callable becomes this table of
        its values); leading axes index independent problems (for example
        data points).  ``-inf`` marks an impossible value.
    probs : array of shape (..., K)
        :math:`q_k`, probabilities over the last axis summing to one (the
        name of ``torch.distributions.Categorical``'s argument).

    Returns
    -------
    float or ndarray of shape (...)
        One ELBO per leading index.

    Raises
    ------
    ValueError
        If ``probs`` is not a probability vector along its last axis, the
        shapes differ, ``log_joint`` is not real numbers, holds NaN or
        ``+inf``, or is ``-inf`` where ``probs`` puts mass.
    """
    probs = check_probability_vector(probs, "probs")
    # -inf is allowed in log_joint (an impossible value), but not where probs puts mass.
    log_joint = _to_numpy(log_joint, "log_joint").astype(np.float64)
    if log_joint.shape != probs.shape:
        raise ValueError(f"log_joint must have the shape of probs, {probs.shape}; got "
                         f"{log_joint.shape}")
    nan, posinf = int(np.isnan(log_joint).sum()), int(np.isposinf(log_joint).sum())
    if nan or posinf:
        raise ValueError("log_joint must not contain NaN or +inf (-inf, an impossible value, "
                         f"is the only non-finite value allowed); got {nan} NaN and {posinf} "
                         "+inf entries")
    if np.any((probs > 0) & np.isneginf(log_joint)):
        raise ValueError("probs puts mass on a value where log_joint is -inf: the ELBO is -inf")
    # q_k log p(x, k) with 0 * (-inf) taken as 0.
    cross = np.where(probs > 0, probs * np.where(np.isneginf(log_joint), 0.0, log_joint), 0.0)
    out = cross.sum(axis=-1) - xlogy(probs, probs).sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def monte_carlo_elbo(log_joint, q, num_samples: int, generator: torch.Generator | None = None):
    r"""Monte Carlo estimate of the ELBO of ``q``, with its standard error.

    Implements {eq}`eq-mc-elbo` of Chapter 1:

    .. math::

        \hat{\mathcal L}_S = \frac1S \sum_{s=1}^S
            \big[\log p(x, z^{(s)}) - \log q(z^{(s)})\big],
        \qquad z^{(s)} \sim q,

    an unbiased estimate of a finite ELBO, with its standard error estimated
    by the sample standard deviation of the summands over :math:`\sqrt S`.
    The samples are drawn in one batch.

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` at the observed ``x``: maps a float64 tensor of
        draws of shape ``(S, *q.event_shape)`` (``(S,)`` for a univariate
        ``q``, ``(S, d)`` for a ``d``-dimensional one) to a tensor of shape
        ``(S,)``.  It is called through ``_validation.call_log_density``,
        which checks what it returns.
    q : torch.distributions.Distribution
        The variational distribution, with ``batch_shape == ()`` (wrap
        independent coordinates in :class:`torch.distributions.Independent`).
    num_samples : int, >= 2
        :math:`S`; two at least, so that the standard error is defined, and
        at most what fits in 1 GiB of draws.
    generator : torch.Generator, optional
        Source of randomness; the global torch state is left untouched.  With
        ``None``, torch's global generator is used, as torch does.

    Returns
    -------
    estimate, standard_error : float

    Raises
    ------
    ValueError
        If ``q`` is not a distribution with an empty batch shape and finite
        draws, ``num_samples`` is not an integer in range, ``log_joint`` is not
        callable or returns the wrong shape or a non-finite value, the
        average of the summands leaves float64's range, or ``generator`` is
        not a ``torch.Generator``.

    Notes
    -----
    The standard error means something only if the summand has a finite
    variance under ``q``; a ``q`` with heavier tails than the posterior can
    break that (:math:`q` Cauchy, posterior Gaussian), and the reported value
    is then an unreliable number, not an error bar.
    """
    if not isinstance(q, torch.distributions.Distribution):
        raise ValueError(f"q must be a torch.distributions.Distribution; got {_describe(q)}")
    if q.batch_shape != torch.Size([]):
        raise ValueError(
            f"q must have batch_shape (); got {tuple(q.batch_shape)} "
            "(wrap it in torch.distributions.Independent to treat coordinates as one event)"
        )
    check_callable(log_joint, "log_joint")
    event_size = max(1, int(np.prod(q.event_shape)))
    num_samples = check_int(num_samples, "num_samples", minimum=2,
                            maximum=max(2, _MAX_DRAWN // event_size))
    generator = check_generator(generator)
    with torch.no_grad():
        try:
            z = sample(q, (num_samples,), generator)
        except (RuntimeError, NotImplementedError) as error:
            raise ValueError(f"q could not be sampled: {type(error).__name__}: {error}") from None
        if z.device.type == "meta":
            raise ValueError("q must hold data; its parameters are tensors on the 'meta' device")
        log_q = q.log_prob(z).double()
        if not bool(torch.isfinite(z).all()) or not bool(torch.isfinite(log_q).all()):
            raise ValueError("q must give finite draws with finite log densities; got a "
                             "non-finite value (check its parameters)")
        log_p = call_log_density(log_joint, z.double(), "log_joint")
    terms = (log_p - log_q).numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        estimate = terms.mean()
        standard_error = terms.std(ddof=1) / np.sqrt(num_samples)
    if not (np.isfinite(estimate) and np.isfinite(standard_error)):
        raise ValueError("log_joint minus log q must average within float64's range; got an "
                         f"estimate of {estimate} with standard error {standard_error} "
                         f"(summands from {terms.min():.3g} to {terms.max():.3g})")
    return float(estimate), float(standard_error)
