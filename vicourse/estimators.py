"""Monte Carlo estimators of the gradient of an expectation (Chapter 5).

For a diagonal Gaussian :math:`q_\\lambda(z) = \\mathcal N(z \\mid \\mu,
\\operatorname{diag}(\\sigma)^2)` with variational parameters
:math:`\\lambda = (\\mu, \\log\\sigma)` and a function :math:`f`, the gradient

.. math::

    \\nabla_\\lambda \\, \\mathbb E_{q_\\lambda}[f(z)]

cannot be taken inside the expectation, because the distribution itself
depends on :math:`\\lambda`.  The two classical routes are

* the **score-function** (log-derivative, REINFORCE) estimator
  :func:`score_function_grads`, :math:`\\mathbb E_q[(f(z) - b)\\,
  \\nabla_\\lambda \\log q_\\lambda(z)]`, which needs only values of :math:`f`;
* the **reparameterised** (pathwise) estimator :func:`reparam_grads`,
  :math:`\\mathbb E_\\epsilon[\\nabla_z f(g(\\epsilon, \\lambda))\\,
  \\partial g / \\partial \\lambda]` with :math:`z = g(\\epsilon, \\lambda) =
  \\mu + \\sigma \\odot \\epsilon`, which needs :math:`\\nabla_z f`.

Both return the :math:`S` single-sample estimates, so that their mean is the
estimate and their spread can be studied.  :func:`optimal_baseline` estimates
the variance-minimising constant baseline of the score-function estimator.
"""

from __future__ import annotations

import numbers

import torch

from vicourse._validation import as_float_array, check_generator, check_int

__all__ = ["optimal_baseline", "reparam_grads", "score_function_grads"]


def _gaussian_params(loc, log_scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``loc`` and ``log_scale`` as finite 1-D arrays of one length; float64 tensors."""
    loc = torch.from_numpy(as_float_array(loc, "loc", ndim=1))
    log_scale = torch.from_numpy(as_float_array(log_scale, "log_scale", ndim=1))
    if loc.shape != log_scale.shape:
        raise ValueError(f"loc and log_scale must have the same shape (d,); got "
                         f"{tuple(loc.shape)} and {tuple(log_scale.shape)}")
    return loc, log_scale


def _check_f(f) -> None:
    if not callable(f):
        raise ValueError(f"f must be callable; got {type(f).__name__}")


def _values(f, z: torch.Tensor) -> torch.Tensor:
    """Evaluate ``f`` on the (S, d) samples ``z``, checking that it gives S finite values."""
    values = f(z)
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values, dtype=z.dtype)
    if values.shape != (z.shape[0],):
        raise ValueError(f"f must map samples of shape {tuple(z.shape)} to shape "
                         f"({z.shape[0]},); got {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("f returned NaN or infinite values at some samples")
    return values.to(z.dtype)


def _noise(num_samples: int, dim: int, generator) -> torch.Tensor:
    """Base noise :math:`\\epsilon \\sim \\mathcal N(0, I)` of shape (S, d), from ``generator``."""
    return torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)


def score_function_grads(f, loc, log_scale, num_samples, *, generator=None, baseline=None):
    r"""Single-sample score-function estimates of :math:`\nabla_\lambda \mathbb E_q[f(z)]`.

    Implements {eq}`eq-grad-score` of Chapter 5, with the baseline of
    {eq}`eq-grad-baseline`: for :math:`z_s = \mu + \sigma \odot \epsilon_s`,
    :math:`\epsilon_s \sim \mathcal N(0, I)`,

    .. math::

        \hat g_s = \big(f(z_s) - b\big)\, \nabla_\lambda \log q_\lambda(z_s),
        \qquad
        \frac{\partial \log q}{\partial \mu_i} = \frac{z_{s,i} - \mu_i}{\sigma_i^2}
        = \frac{\epsilon_{s,i}}{\sigma_i},
        \qquad
        \frac{\partial \log q}{\partial \log\sigma_i} = \epsilon_{s,i}^2 - 1 .

    The samples are drawn without gradient (as ``Distribution.sample`` under
    ``no_grad`` would) and only values of ``f`` are used, so ``f`` need not be
    differentiable.  The score is written in closed form, vectorised over the
    samples; the tests check it against autograd of
    :meth:`torch.distributions.Normal.log_prob`.  Because
    :math:`\mathbb E_q[\nabla_\lambda \log q_\lambda] = 0`, every constant
    ``b`` leaves the estimator unbiased; a good one lowers its variance.

    Parameters
    ----------
    f : callable
        Maps a float64 tensor of samples of shape (S, d) to a tensor of shape (S,).
    loc : array of shape (d,)
        :math:`\mu`.
    log_scale : array of shape (d,)
        :math:`\log\sigma`, the log standard deviations.
    num_samples : int, >= 1
        :math:`S`.
    generator : torch.Generator, optional
        Source of the noise :math:`\epsilon`; the global torch state is left untouched.
    baseline : float, optional
        The constant :math:`b`; ``None`` means :math:`b = 0`.

    Returns
    -------
    grad_loc, grad_log_scale : tensors of shape (S, d), float64
        The :math:`S` single-sample estimates; their mean over axis 0 is the
        :math:`S`-sample estimate.

    Raises
    ------
    ValueError
        If ``f`` is not callable or returns a shape other than (S,) or
        non-finite values, ``loc`` and ``log_scale`` are not finite 1-D arrays
        of one length, ``num_samples < 1``, ``generator`` is not a
        :class:`torch.Generator`, or ``baseline`` is not a finite number.

    References
    ----------
    Williams (1992); Paisley, Blei and Jordan (2012); Ranganath, Gerrish and
    Blei (2014); Mohamed et al. (2020), Section 4.
    """
    _check_f(f)
    loc, log_scale = _gaussian_params(loc, log_scale)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    generator = check_generator(generator)
    if baseline is None:
        baseline = 0.0
    elif isinstance(baseline, bool) or not isinstance(baseline, numbers.Real):
        raise ValueError(f"baseline must be None or a real number; got {baseline!r}")
    baseline = float(baseline)
    if not torch.isfinite(torch.tensor(baseline)):
        raise ValueError(f"baseline must be finite; got {baseline}")
    with torch.no_grad():
        scale = log_scale.exp()
        eps = _noise(num_samples, loc.shape[0], generator)
        z = loc + scale * eps
        weight = (_values(f, z) - baseline)[:, None]
        return weight * eps / scale, weight * (eps.square() - 1.0)


def reparam_grads(f, loc, log_scale, num_samples, *, generator=None):
    r"""Single-sample reparameterised estimates of :math:`\nabla_\lambda \mathbb E_q[f(z)]`.

    Implements {eq}`eq-grad-reparam` of Chapter 5: with
    :math:`z = g(\epsilon, \lambda) = \mu + \sigma \odot \epsilon`, the chain
    rule through :math:`g` gives

    .. math::

        \hat g_s^{\mu} = \nabla_z f(z_s), \qquad
        \hat g_s^{\log\sigma} = \nabla_z f(z_s) \odot \sigma \odot \epsilon_s .

    One backward pass through :math:`\sum_s f(z_s)` yields every
    :math:`\nabla_z f(z_s)` at once, because ``f`` acts on the rows of its
    input independently (as a log-density of independent samples does).

    Parameters
    ----------
    f : callable
        Maps a float64 tensor of samples of shape (S, d) to a tensor of shape
        (S,), row by row, through differentiable torch operations.
    loc : array of shape (d,)
        :math:`\mu`.
    log_scale : array of shape (d,)
        :math:`\log\sigma`.
    num_samples : int, >= 1
        :math:`S`.
    generator : torch.Generator, optional
        Source of the noise :math:`\epsilon`; the global torch state is left untouched.

    Returns
    -------
    grad_loc, grad_log_scale : tensors of shape (S, d), float64
        The :math:`S` single-sample estimates.

    Raises
    ------
    ValueError
        If ``f`` is not callable, returns a shape other than (S,) or
        non-finite values, or its output does not depend on its input through
        torch operations (so it cannot be differentiated); if ``loc`` and
        ``log_scale`` are not finite 1-D arrays of one length,
        ``num_samples < 1`` or ``generator`` is not a :class:`torch.Generator`.

    References
    ----------
    Kingma and Welling (2014); Rezende, Mohamed and Wierstra (2014); Titsias
    and Lázaro-Gredilla (2014); Mohamed et al. (2020), Section 5.
    """
    _check_f(f)
    loc, log_scale = _gaussian_params(loc, log_scale)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    generator = check_generator(generator)
    scale = log_scale.exp()
    eps = _noise(num_samples, loc.shape[0], generator)
    # z is made a leaf so that one backward pass gives the (S, d) matrix of
    # per-sample gradients grad_z f(z_s); the chain rule through g is then explicit.
    z = (loc + scale * eps).requires_grad_(True)
    with torch.enable_grad():
        values = _values(f, z)
        if not values.requires_grad:
            raise ValueError("f must be differentiable with torch operations: its output "
                             "does not depend on the samples through autograd")
        (grad_z,) = torch.autograd.grad(values.sum(), z)
    return grad_z, grad_z * scale * eps


def optimal_baseline(f, loc, log_scale, num_samples, *, generator=None) -> float:
    r"""Estimate the constant baseline that minimises the score-function variance.

    Implements {eq}`eq-grad-optimal-baseline` of Chapter 5.  With
    :math:`h(z) = \nabla_\lambda \log q_\lambda(z)` (all :math:`2d`
    coordinates), the total variance
    :math:`\sum_j \operatorname{Var}[(f - b) h_j]` is a quadratic in
    :math:`b`, minimised by

    .. math::

        b^\star = \frac{\mathbb E_q\big[f(z)\, \lVert h(z) \rVert^2\big]}
                       {\mathbb E_q\big[\lVert h(z) \rVert^2\big]} ,

    which is estimated here from ``num_samples`` draws.  Pass the result as
    ``baseline`` to :func:`score_function_grads` with a *different*
    generator state (fresh samples), so that the baseline does not depend on
    the samples it is used with and the estimator stays unbiased.

    Parameters
    ----------
    f, loc, log_scale, num_samples, generator
        As in :func:`score_function_grads`.

    Returns
    -------
    float
        The estimate of :math:`b^\star`.

    Raises
    ------
    ValueError
        As :func:`score_function_grads`.

    References
    ----------
    Ranganath, Gerrish and Blei (2014), Section 3.2 (the same formula per
    coordinate); Mohamed et al. (2020), Section 7.
    """
    _check_f(f)
    loc, log_scale = _gaussian_params(loc, log_scale)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    generator = check_generator(generator)
    with torch.no_grad():
        scale = log_scale.exp()
        eps = _noise(num_samples, loc.shape[0], generator)
        values = _values(f, loc + scale * eps)
        # ||h||^2 = sum_i eps_i^2 / sigma_i^2 + sum_i (eps_i^2 - 1)^2
        h_sq = (eps.square() / scale.square()).sum(-1) + (eps.square() - 1.0).square().sum(-1)
        return float((values * h_sq).mean() / h_sq.mean())
