"""Models whose posterior and evidence are known exactly (Chapter 1).

They are the test bed of the course: every approximation is checked against
them.
"""

from __future__ import annotations

import numpy as np
import torch

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
        """n, the mean of x - m0 and the scatter sum_i (x_i - xbar)^2.

        Every formula is written in z - m0 and x - m0: for data and prior far from
        zero (x ~ 1e8) these differences are exact or nearly so, and nothing of size
        1e8 is squared.
        """
        x = as_float_array(x, "x", ndim=1)
        d = x - self.m0
        d_bar = d.mean()
        return x.size, float(d_bar), float(np.sum((d - d_bar) ** 2))

    def _posterior_offset(self, n, d_bar):
        """m_n - m0 and s_n: m_n is a weighted average of m0 and the sample mean."""
        precision = 1.0 / self.s0**2 + n / self.sigma**2
        weight_data = (n / self.sigma**2) / precision
        return weight_data * d_bar, float(np.sqrt(1.0 / precision))

    def _log_joint_offset(self, n, d_bar, scatter, u):
        """log p(x, z) at u = z - m0 (numpy or torch)."""
        return -0.5 * ((n + 1) * _LOG_2PI + 2 * np.log(self.s0) + 2 * n * np.log(self.sigma)
                       + (u / self.s0) ** 2 + (scatter + n * (d_bar - u) ** 2) / self.sigma**2)

    def posterior(self, x) -> tuple[float, float]:
        r"""Mean and standard deviation of the exact posterior :math:`p(z \mid x)`.

        Implements {eq}`eq-cg-posterior`: precisions add,

        .. math::

            \frac{1}{s_n^2} = \frac{1}{s_0^2} + \frac{n}{\sigma^2}, \qquad
            m_n = s_n^2 \Big(\frac{m_0}{s_0^2} + \frac{\sum_i x_i}{\sigma^2}\Big).

        Parameters
        ----------
        x : array of shape (n,)
            The observations.

        Returns
        -------
        loc, scale : float
            :math:`m_n` and :math:`s_n`.
        """
        n, d_bar, _ = self._summaries(x)
        offset, scale = self._posterior_offset(n, d_bar)
        return float(self.m0 + offset), scale

    def log_joint(self, x, z):
        r""":math:`\log p(x, z) = \log p(z) + \sum_i \log p(x_i \mid z)`, vectorised over ``z``.

        Parameters
        ----------
        x : array of shape (n,)
        z : float or array of any shape

        Returns
        -------
        float or ndarray of the shape of ``z``
        """
        n, d_bar, scatter = self._summaries(x)
        z = as_float_array(z, "z")
        # sum_i (x_i - z)^2 = sum_i (x_i - xbar)^2 + n (xbar - z)^2: O(n + size of z)
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
        """
        n, d_bar, scatter = self._summaries(x)
        m0 = self.m0

        def log_joint(z: torch.Tensor) -> torch.Tensor:
            if z.ndim == 2 and z.shape[1] == 1:
                z = z[:, 0]
            elif z.ndim != 1:
                raise ValueError(f"points must have shape (S,) or (S, 1); got {tuple(z.shape)}")
            return self._log_joint_offset(n, d_bar, scatter, z - m0)

        return log_joint

    def log_evidence(self, x) -> float:
        r"""The exact log evidence :math:`\log p(x)`.

        Implements {eq}`eq-cg-evidence` through the identity
        :math:`\log p(x) = \log p(x, z) - \log p(z \mid x)`, which holds at
        every :math:`z`; it is evaluated at the posterior mean.  (The tests
        check it against the marginal :math:`x \sim \mathcal N(m_0 \mathbf 1,
        \sigma^2 I + s_0^2 \mathbf 1 \mathbf 1^\top)` evaluated by scipy.)

        Parameters
        ----------
        x : array of shape (n,)

        Returns
        -------
        float
        """
        n, d_bar, scatter = self._summaries(x)
        offset, scale = self._posterior_offset(n, d_bar)
        # log N(m_n | m_n, s_n^2) = -0.5 log(2 pi s_n^2)
        log_posterior_at_loc = -0.5 * (_LOG_2PI + 2 * np.log(scale))
        return float(self._log_joint_offset(n, d_bar, scatter, offset) - log_posterior_at_loc)

    @staticmethod
    def _q(loc, scale):
        loc = check_finite(loc, "loc")
        scale = check_positive(scale, "scale")
        try:
            shape = np.broadcast_shapes(np.shape(loc), np.shape(scale))
        except ValueError:
            raise ValueError(f"scale must broadcast against loc; got shapes {np.shape(scale)} "
                             f"and {np.shape(loc)}") from None
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
        """
        n, d_bar, scatter = self._summaries(x)
        m, s = self._q(loc, scale)
        u = m - self.m0
        sigma2, s02 = self.sigma**2, self.s0**2
        expected_sq = scatter + n * ((d_bar - u) ** 2 + s**2)
        expected_log_lik = -0.5 * (n * (_LOG_2PI + np.log(sigma2)) + expected_sq / sigma2)
        expected_log_prior = -0.5 * (_LOG_2PI + np.log(s02) + (u**2 + s**2) / s02)
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
        """
        m, s = self._q(loc, scale)
        n, d_bar, _ = self._summaries(x)
        post_offset, post_scale = self._posterior_offset(n, d_bar)
        diff = (m - self.m0) - post_offset                     # m - m_n
        out = np.asarray(np.log(post_scale / s) + (s**2 + diff**2) / (2 * post_scale**2) - 0.5)
        return float(out) if out.ndim == 0 else out
