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
from vicourse._validation import as_float_array, check_generator, check_int, check_probability_vector


def discrete_elbo(log_joint, q):
    r"""The ELBO of a distribution ``q`` over a discrete latent variable.

    Implements {eq}`eq-elbo-def` of Chapter 1 with sums in place of integrals:

    .. math::

        \mathcal L(q) = \sum_k q_k \log p(x, z = k) - \sum_k q_k \log q_k,

    with the convention :math:`0 \log 0 = 0` (``scipy.special.xlogy``), so a
    ``q`` that rules a value out is allowed.

    Parameters
    ----------
    log_joint : array of shape (..., K)
        :math:`\log p(x, z = k)` for each value ``k`` of the latent variable;
        leading axes index independent problems (for example data points).
    q : array of shape (..., K)
        Probabilities over the last axis, summing to one.

    Returns
    -------
    float or ndarray of shape (...)
        One ELBO per leading index.

    Raises
    ------
    ValueError
        If ``q`` is not a probability vector along its last axis, or the shapes differ.
    """
    q = check_probability_vector(q, "q")
    # -inf is allowed in log_joint (an impossible value), but not where q puts mass.
    log_joint = np.asarray(log_joint, dtype=np.float64)
    if log_joint.shape != q.shape:
        raise ValueError(f"log_joint and q must have the same shape; got {log_joint.shape} "
                         f"and {q.shape}")
    if np.any(np.isnan(log_joint)) or np.any(np.isposinf(log_joint)):
        raise ValueError("log_joint must not contain NaN or +inf")
    if np.any((q > 0) & np.isneginf(log_joint)):
        raise ValueError("q puts mass on a value where log_joint is -inf: the ELBO is -inf")
    # q_k log p(x, k) with 0 * (-inf) taken as 0.
    cross = np.where(q > 0, q * np.where(np.isneginf(log_joint), 0.0, log_joint), 0.0)
    out = cross.sum(axis=-1) - xlogy(q, q).sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def monte_carlo_elbo(log_joint, q, num_samples: int, generator: torch.Generator | None = None):
    r"""Monte Carlo estimate of the ELBO of ``q``, with its standard error.

    Implements {eq}`eq-mc-elbo` of Chapter 1:

    .. math::

        \hat{\mathcal L} = \frac1S \sum_{s=1}^S \big[\log p(x, z_s) - \log q(z_s)\big],
        \qquad z_s \sim q,

    an unbiased estimate whose standard error is the sample standard deviation
    of the summands over :math:`\sqrt S`.  The samples are drawn in one batch.

    Parameters
    ----------
    log_joint : callable
        Maps a tensor of samples of shape ``(S, *q.event_shape)`` to a tensor of
        shape ``(S,)`` holding :math:`\log p(x, z_s)`.
    q : torch.distributions.Distribution
        The variational distribution, with ``batch_shape == ()`` (wrap
        independent coordinates in :class:`torch.distributions.Independent`).
    num_samples : int, >= 2
        :math:`S`; two at least, so that the standard error is defined.
    generator : torch.Generator, optional
        Source of randomness; the global torch state is left untouched.

    Returns
    -------
    estimate, standard_error : float

    Raises
    ------
    ValueError
        If ``q`` is not a distribution with an empty batch shape, ``num_samples``
        is not an integer >= 2, or ``log_joint`` returns the wrong shape or a
        non-finite value.
    """
    if not isinstance(q, torch.distributions.Distribution):
        raise ValueError(f"q must be a torch.distributions.Distribution; got {type(q).__name__}")
    if q.batch_shape != torch.Size([]):
        raise ValueError(
            f"q must have batch_shape (); got {tuple(q.batch_shape)} "
            "(wrap it in torch.distributions.Independent to treat coordinates as one event)"
        )
    if not callable(log_joint):
        raise ValueError(f"log_joint must be callable; got {type(log_joint).__name__}")
    num_samples = check_int(num_samples, "num_samples", minimum=2)
    generator = check_generator(generator)
    with torch.no_grad():
        z = sample(q, (num_samples,), generator)
        log_p = torch.as_tensor(log_joint(z))
        if log_p.shape != (num_samples,):
            raise ValueError(f"log_joint must return shape ({num_samples},) for {num_samples} "
                             f"samples; got {tuple(log_p.shape)}")
        terms = as_float_array(log_p, "log_joint(z)") - q.log_prob(z).double().numpy()
    estimate = terms.mean()
    standard_error = terms.std(ddof=1) / np.sqrt(num_samples)
    return float(estimate), float(standard_error)
