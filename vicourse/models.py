"""Models whose posterior and evidence are known exactly (Chapter 1).

They are the test bed of the course: every approximation is checked against
them.
"""

from __future__ import annotations

import numpy as np

from vicourse._validation import as_float_array, check_finite, check_positive

_LOG_2PI = np.log(2.0 * np.pi)


class ConjugateGaussian:
    r"""The conjugate Gaussian model with a Gaussian prior on an unknown mean.

    .. math::

        z \sim \mathcal N(m_0, s_0^2), \qquad
        x_i \mid z \sim \mathcal N(z, \sigma^2), \quad i = 1, \dots, n.

    Implements {eq}`eq-cg-posterior`, {eq}`eq-cg-evidence`, {eq}`eq-cg-elbo` and
    {eq}`eq-cg-kl` of Chapter 1.  The variational family is
    :math:`q(z) = \mathcal N(m, s^2)`; the methods that take ``q_mean`` and
    ``q_std`` broadcast over them, so a whole grid of ``q`` is one call.

    Parameters
    ----------
    prior_mean : float
        :math:`m_0`.
    prior_std : float
        :math:`s_0 > 0`.
    noise_std : float
        :math:`\sigma > 0`.

    Raises
    ------
    ValueError
        If a standard deviation is not positive or a parameter is not finite.

    References
    ----------
    Bishop (2006), Section 2.3.6; Murphy (2012), Section 4.6.1.
    """

    def __init__(self, prior_mean: float, prior_std: float, noise_std: float):
        self.prior_mean = check_finite(prior_mean, "prior_mean")
        self.prior_std = check_positive(prior_std, "prior_std")
        self.noise_std = check_positive(noise_std, "noise_std")
        for name in ("prior_mean", "prior_std", "noise_std"):
            if np.ndim(getattr(self, name)) != 0:
                raise ValueError(f"{name} must be a scalar; got shape {np.shape(getattr(self, name))}")

    def __repr__(self) -> str:
        return (f"ConjugateGaussian(prior_mean={self.prior_mean}, prior_std={self.prior_std}, "
                f"noise_std={self.noise_std})")

    @staticmethod
    def _data(x) -> np.ndarray:
        return as_float_array(x, "x", ndim=1)

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
        mean, std : float
        """
        x = self._data(x)
        precision = 1.0 / self.prior_std**2 + x.size / self.noise_std**2
        mean = (self.prior_mean / self.prior_std**2 + x.sum() / self.noise_std**2) / precision
        return float(mean), float(np.sqrt(1.0 / precision))

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
        x = self._data(x)
        z = as_float_array(z, "z")
        log_prior = -0.5 * (_LOG_2PI + 2 * np.log(self.prior_std)
                            + ((z - self.prior_mean) / self.prior_std) ** 2)
        # sum_i (x_i - z)^2 = sum_i (x_i - xbar)^2 + n (xbar - z)^2: O(n + size of z), not O(n * size)
        xbar = x.mean()
        sq = np.sum((x - xbar) ** 2) + x.size * (xbar - z) ** 2
        log_lik = -0.5 * (x.size * (_LOG_2PI + 2 * np.log(self.noise_std)) + sq / self.noise_std**2)
        out = log_prior + log_lik
        return float(out) if out.ndim == 0 else out

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
        mean, std = self.posterior(x)
        # log N(mean | mean, std^2) = -0.5 log(2 pi std^2)
        log_posterior_at_mean = -0.5 * (_LOG_2PI + 2 * np.log(std))
        return self.log_joint(x, mean) - log_posterior_at_mean

    def _q(self, q_mean, q_std):
        q_mean = check_finite(q_mean, "q_mean")
        q_std = check_positive(q_std, "q_std")
        return q_mean, q_std

    def elbo(self, x, q_mean, q_std):
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
        q_mean : float or array
        q_std : float or array, > 0
            Broadcast against ``q_mean``.

        Returns
        -------
        float, or ndarray of the broadcast shape of ``q_mean`` and ``q_std``
        """
        x = self._data(x)
        m, s = self._q(q_mean, q_std)
        n, sigma2, s02 = x.size, self.noise_std**2, self.prior_std**2
        xbar = x.mean()
        expected_sq = np.sum((x - xbar) ** 2) + n * ((xbar - m) ** 2 + s**2)
        expected_log_lik = -0.5 * (n * (_LOG_2PI + np.log(sigma2)) + expected_sq / sigma2)
        expected_log_prior = -0.5 * (_LOG_2PI + np.log(s02) + ((m - self.prior_mean) ** 2 + s**2) / s02)
        entropy = 0.5 * (_LOG_2PI + 1.0 + 2 * np.log(s))
        out = np.asarray(expected_log_lik + expected_log_prior + entropy)
        return float(out) if out.ndim == 0 else out

    def kl_to_posterior(self, x, q_mean, q_std):
        r""":math:`\mathrm{KL}(q \,\|\, p(z \mid x))` in closed form.

        Implements {eq}`eq-cg-kl`, the KL divergence between two univariate
        Gaussians:

        .. math::

            \mathrm{KL}\big(\mathcal N(m, s^2) \,\|\, \mathcal N(m_n, s_n^2)\big)
            = \log\frac{s_n}{s} + \frac{s^2 + (m - m_n)^2}{2 s_n^2} - \frac12 .

        Parameters
        ----------
        x : array of shape (n,)
        q_mean : float or array
        q_std : float or array, > 0

        Returns
        -------
        float or ndarray of the broadcast shape
        """
        m, s = self._q(q_mean, q_std)
        post_mean, post_std = self.posterior(x)
        out = np.asarray(np.log(post_std / s) + (s**2 + (m - post_mean) ** 2) / (2 * post_std**2) - 0.5)
        return float(out) if out.ndim == 0 else out
