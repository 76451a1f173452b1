"""Models whose posterior and evidence are known exactly (Chapter 1).

They are the test bed of the course: every approximation is checked against
them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit

from vicourse._validation import as_float_array, check_finite, check_positive, check_scalar

_LOG_2PI = np.log(2.0 * np.pi)
# A broadcast grid of q larger than this many values is refused before it is made.
_MAX_GRID = 2**28


class ConjugateGaussian:
    r"""The conjugate Gaussian model with a Gaussian prior on an unknown mean.

    .. math::

        z \sim \mathcal N(m_0, s_0^2), \qquad
        x_i \mid z \sim \mathcal N(z, \sigma^2), \quad i = 1, \dots, n.

    Implements {eq}`eq-cg-posterior`, {eq}`eq-cg-evidence`, {eq}`eq-cg-elbo` and
    {eq}`eq-cg-kl` of Chapter 1.  The variational family is
    :math:`q(z) = \mathcal N(m, s^2)`, given by its ``loc`` :math:`m` and
    ``scale`` :math:`s` (torch.distributions' names); the methods that take
    them broadcast over them, so a whole grid of ``q`` is one call.

    Parameters
    ----------
    m0 : float
        :math:`m_0`, the prior mean (the ``loc`` of the prior).
    s0 : float
        :math:`s_0 > 0`, the prior standard deviation (its ``scale``).
    sigma : float
        :math:`\sigma > 0`, the standard deviation of each observation.

    Raises
    ------
    ValueError
        If a parameter is not one finite real number, or ``s0`` or ``sigma``
        is not positive.

    Notes
    -----
    Every formula is written in :math:`z - m_0` and :math:`x - m_0`, squares
    only ratios (:math:`(x_i - \bar x) / \sigma`, :math:`(z - m_0) / s_0`,
    :math:`s / \sigma`), and combines the posterior's precisions in log space.
    So data offset by 1e8, and constants anywhere in float64's range
    (``s0=1e-300`` or ``1e300``), give the right answer; a log density below
    float64's range is returned as ``-inf``, its nearest float.

    References
    ----------
    Bishop (2006), Section 2.3.6; Murphy (2012), Section 4.6.1.
    """

    def __init__(self, m0: float, s0: float, sigma: float):
        self.m0 = check_scalar(m0, "m0")
        self.s0 = check_scalar(s0, "s0", positive=True)
        self.sigma = check_scalar(sigma, "sigma", positive=True)

    def __repr__(self) -> str:
        return f"ConjugateGaussian(m0={self.m0}, s0={self.s0}, sigma={self.sigma})"

    def _summaries(self, x):
        """n, the mean of x - m0, and the scatter sum_i (x_i - xbar)^2 in units of sigma^2.

        Every formula is written in z - m0 and x - m0, and every square is the
        square of a ratio ((x_i - xbar) / sigma, (z - m0) / s0, s / sigma): for
        data and prior far from zero (x ~ 1e8) the differences are exact or nearly
        so, nothing of size 1e8 is squared, and no length is squared before it is
        divided by another, so that s0 and sigma may be as small or as large as
        float64 allows.  A square that overflows is a term beyond -1.8e308: the
        log density is then -inf, which is its nearest float.
        """
        x = as_float_array(x, "x", ndim=1)
        n = x.size
        with np.errstate(over="ignore", invalid="ignore"):
            d = x - self.m0
            d_bar = np.sum(d / n)               # the mean, without a sum that can overflow
            deviation = d - d_bar
        if not (np.isfinite(d_bar) and np.isfinite(deviation).all()):
            raise ValueError("x - m0 and x - mean(x) must stay within float64's range "
                             f"(|value| < 1.8e308); got x from {x.min():.3g} to {x.max():.3g} "
                             f"with m0 = {self.m0:.3g}")
        with np.errstate(over="ignore"):
            scatter = float(np.sum((deviation / self.sigma) ** 2))
        return n, float(d_bar), scatter

    def _posterior_offset(self, n, d_bar):
        """m_n - m0 and log s_n, in log space.

        With r = n s0^2 / sigma^2, m_n is a weighted average of m0 and the sample
        mean with the data's weight r / (1 + r), and s_n^2 = s0^2 / (1 + r): the
        precisions of eq-cg-posterior, without forming 1 / s0^2 or n / sigma^2
        (which overflow for s0 or sigma near 1e-160).
        """
        log_r = np.log(n) + 2.0 * (np.log(self.s0) - np.log(self.sigma))
        log_scale = np.log(self.s0) - 0.5 * np.logaddexp(0.0, log_r)
        return expit(log_r) * d_bar, float(log_scale)

    def _log_joint_offset(self, n, d_bar, scatter, u):
        """log p(x, z) at u = z - m0 (numpy or torch); scatter in units of sigma^2."""
        return -0.5 * ((n + 1) * _LOG_2PI + 2 * np.log(self.s0) + 2 * n * np.log(self.sigma)
                       + (u / self.s0) ** 2 + scatter + n * ((d_bar - u) / self.sigma) ** 2)

    def posterior(self, x) -> tuple[float, float]:
        r"""Mean and standard deviation of the exact posterior :math:`p(z \mid x)`.

        Implements {eq}`eq-cg-posterior`: precisions add,

        .. math::

            \frac{1}{s_n^2} = \frac{1}{s_0^2} + \frac{n}{\sigma^2}, \qquad
            m_n = s_n^2 \Big(\frac{m_0}{s_0^2} + \frac{\sum_i x_i}{\sigma^2}\Big),

        computed in log space (see the Notes of the class).

        Parameters
        ----------
        x : array of shape (n,)
            The observations.

        Returns
        -------
        loc, scale : float
            :math:`m_n` and :math:`s_n`.

        Raises
        ------
        ValueError
            If ``x`` is not a non-empty 1-D array of finite real numbers, or
            ``x - m0`` leaves float64's range.
        """
        n, d_bar, _ = self._summaries(x)
        offset, log_scale = self._posterior_offset(n, d_bar)
        return float(self.m0 + offset), float(np.exp(log_scale))

    def log_joint(self, x, z):
        r""":math:`\log p(x, z) = \log p(z) + \sum_i \log p(x_i \mid z)`, vectorised over ``z``.

        Parameters
        ----------
        x : array of shape (n,)
        z : float or array of any shape

        Returns
        -------
        float or ndarray of the shape of ``z``

        Raises
        ------
        ValueError
            If ``x`` or ``z`` is not finite real numbers, or ``x`` is not a
            non-empty 1-D array.
        """
        n, d_bar, scatter = self._summaries(x)
        z = as_float_array(z, "z")
        # sum_i (x_i - z)^2 = sum_i (x_i - xbar)^2 + n (xbar - z)^2: O(n + size of z)
        with np.errstate(over="ignore"):
            out = np.asarray(self._log_joint_offset(n, d_bar, scatter, z - self.m0))
        return float(out) if out.ndim == 0 else out

    def log_joint_callable(self, x):
        r"""The callable :math:`z \mapsto \log p(x, z)` at the observed ``x``, in torch.

        It follows the course's convention for ``log_joint`` callables: it maps
        a float64 tensor of points of shape ``(S,)`` or ``(S, 1)`` to a tensor
        of shape ``(S,)``, built from differentiable torch operations (so
        pathwise gradients flow through it).  Pass it to
        :func:`vicourse.elbo.monte_carlo_elbo`.

        Parameters
        ----------
        x : array of shape (n,)

        Returns
        -------
        callable
            Raises ``ValueError`` naming its argument ``z`` if that is not a
            tensor of shape ``(S,)`` or ``(S, 1)``.

        Raises
        ------
        ValueError
            If ``x`` is not a non-empty 1-D array of finite real numbers.
        """
        n, d_bar, scatter = self._summaries(x)
        m0 = self.m0

        def log_joint(z: torch.Tensor) -> torch.Tensor:
            if not isinstance(z, torch.Tensor):
                raise ValueError(f"z must be a torch.Tensor of shape (S,) or (S, 1); got "
                                 f"{type(z).__name__}")
            if z.ndim == 2 and z.shape[1] == 1:
                z = z[:, 0]
            elif z.ndim != 1:
                raise ValueError(f"z must have shape (S,) or (S, 1); got {tuple(z.shape)}")
            return self._log_joint_offset(n, d_bar, scatter, z - m0)

        return log_joint

    def log_evidence(self, x) -> float:
        r"""The exact log evidence :math:`\log p(x)`.

        Implements {eq}`eq-cg-evidence` through the identity
        :math:`\log p(x) = \log p(x, z) - \log p(z \mid x)`, which holds at
        every :math:`z`; it is evaluated at the posterior mean, where
        :math:`\log p(z \mid x) = -\tfrac12 \log(2 \pi s_n^2)`.

        Parameters
        ----------
        x : array of shape (n,)

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If ``x`` is not a non-empty 1-D array of finite real numbers, or
            ``x - m0`` leaves float64's range.
        """
        n, d_bar, scatter = self._summaries(x)
        offset, log_scale = self._posterior_offset(n, d_bar)
        # log N(m_n | m_n, s_n^2) = -0.5 log(2 pi s_n^2)
        log_posterior_at_loc = -0.5 * (_LOG_2PI + 2 * log_scale)
        with np.errstate(over="ignore"):
            log_joint_at_loc = self._log_joint_offset(n, d_bar, scatter, offset)
        return float(log_joint_at_loc - log_posterior_at_loc)

    @staticmethod
    def _q(loc, scale):
        # float64 arrays (0-d for a scalar), so that a square beyond float64's range
        # overflows to inf instead of raising OverflowError as Python floats do.
        loc = np.asarray(check_finite(loc, "loc"), dtype=np.float64)
        scale = np.asarray(check_positive(scale, "scale"), dtype=np.float64)
        try:
            shape = np.broadcast_shapes(loc.shape, scale.shape)
        except ValueError:
            raise ValueError(f"scale must broadcast against loc; got shapes {scale.shape} "
                             f"and {loc.shape}") from None
        if np.prod(shape, dtype=float) > _MAX_GRID:
            raise ValueError(f"scale and loc broadcast to shape {shape}, more than {_MAX_GRID} "
                             "values; evaluate the grid in pieces")
        return loc, scale

    def elbo(self, x, loc, scale):
        r"""The evidence lower bound of :math:`q = \mathcal N(m, s^2)` in closed form.

        Implements {eq}`eq-cg-elbo`:

        .. math::

            \mathcal L(q) = \mathbb E_q \log p(x \mid z) + \mathbb E_q \log p(z)
                            + \mathbb H[q],

        with :math:`\mathbb E_q (x_i - z)^2 = (x_i - m)^2 + s^2` and
        :math:`\mathbb H[q] = \tfrac12 \log(2\pi e s^2)`.

        Parameters
        ----------
        x : array of shape (n,)
        loc : float or array
            :math:`m`, the mean of ``q``.
        scale : float or array, > 0
            :math:`s`, the standard deviation of ``q``; broadcast against ``loc``.

        Returns
        -------
        float, or ndarray of the broadcast shape of ``loc`` and ``scale``
            ``-inf`` where the ELBO lies below float64's range.

        Raises
        ------
        ValueError
            If ``x`` is not a non-empty 1-D array of finite real numbers,
            ``loc`` is not finite, ``scale`` is not finite and positive, the
            two do not broadcast, or their grid exceeds 2**28 values.
        """
        n, d_bar, scatter = self._summaries(x)
        m, s = self._q(loc, scale)
        u = m - self.m0
        log_sigma, log_s0 = np.log(self.sigma), np.log(self.s0)
        with np.errstate(over="ignore"):
            # sum_i E_q (x_i - z)^2 / sigma^2 = scatter + n ((xbar - m)^2 + s^2) / sigma^2
            expected_sq = scatter + n * (((d_bar - u) / self.sigma) ** 2 + (s / self.sigma) ** 2)
            expected_log_lik = -0.5 * (n * (_LOG_2PI + 2 * log_sigma) + expected_sq)
            expected_log_prior = -0.5 * (_LOG_2PI + 2 * log_s0 + (u / self.s0) ** 2
                                         + (s / self.s0) ** 2)
        entropy = 0.5 * (_LOG_2PI + 1.0 + 2 * np.log(s))
        out = np.asarray(expected_log_lik + expected_log_prior + entropy)
        return float(out) if out.ndim == 0 else out

    def kl_to_posterior(self, x, loc, scale):
        r""":math:`\mathrm{KL}(q \,\|\, p(z \mid x))` in closed form.

        Implements {eq}`eq-cg-kl`, the KL divergence between two univariate
        Gaussians:

        .. math::

            \mathrm{KL}\big(\mathcal N(m, s^2) \,\|\, \mathcal N(m_n, s_n^2)\big)
            = \log\frac{s_n}{s} + \frac{s^2 + (m - m_n)^2}{2 s_n^2} - \frac12 .

        Parameters
        ----------
        x : array of shape (n,)
        loc : float or array
        scale : float or array, > 0

        Returns
        -------
        float or ndarray of the broadcast shape
            ``inf`` where the divergence exceeds float64's range.

        Raises
        ------
        ValueError
            As :meth:`elbo`.
        """
        m, s = self._q(loc, scale)
        n, d_bar, _ = self._summaries(x)
        post_offset, log_post_scale = self._posterior_offset(n, d_bar)
        log_ratio = np.log(s) - log_post_scale                  # log(s / s_n)
        with np.errstate(over="ignore"):
            diff = ((m - self.m0) - post_offset) / np.exp(log_post_scale)    # (m - m_n) / s_n
            out = np.asarray(-log_ratio + 0.5 * (np.exp(2 * log_ratio) + diff**2) - 0.5)
        return float(out) if out.ndim == 0 else out
