"""Monte Carlo estimators of the gradient of an expectation (Chapter 5).

For a Gaussian :math:`q_\\lambda(z) = \\mathcal N(z \\mid \\mu, L L^\\top)` and a
function :math:`f`, the gradient

.. math::

    \\nabla_\\lambda \\, \\mathbb E_{q_\\lambda}[f(z)]

cannot be taken inside the expectation, because the distribution itself
depends on :math:`\\lambda`.  The two classical routes are

* the **score-function** (log-derivative, REINFORCE) estimator
  :func:`score_function_grads`, :math:`\\mathbb E_q[(f(z) - b)\\,
  \\nabla_\\lambda \\log q_\\lambda(z)]`, which needs only values of :math:`f`;
* the **reparameterised** (pathwise) estimator :func:`reparam_grads`,
  :math:`\\mathbb E_\\epsilon[\\nabla_z f(g(\\epsilon, \\lambda))^\\top\\,
  \\partial g / \\partial \\lambda]` with :math:`z = g(\\epsilon, \\lambda) =
  \\mu + L \\epsilon`, which needs :math:`\\nabla_z f`.

A Gaussian is passed as everywhere in the package (CONTRIBUTING.md): ``loc``
:math:`\\mu` and ``scale_tril`` :math:`L`, with ``covariance_type="diag"``
for the diagonal family (then :math:`L = \\operatorname{diag}(\\sigma)`).
Gradients are returned in the one unconstrained parameterisation
:math:`\\lambda = (\\mu, \\tilde L)`: :math:`\\tilde L` is :math:`L` with its
diagonal replaced by :math:`\\log L_{ii}`, and for the diagonal family it is
the vector :math:`\\log\\sigma`.  :func:`vicourse.vi.elbo_grads` uses the same
arguments and returns the same shapes.

Each estimator returns the :math:`S` single-sample estimates, so that their
mean is the estimate and their spread can be studied.
:func:`optimal_baseline` estimates the variance-minimising constant baseline
of the score-function estimator.
"""

from __future__ import annotations

import math

import torch

from vicourse._gaussian import check_covariance_type, check_loc_scale_tril
from vicourse._validation import (
    all_finite,
    call_log_density,
    check_callable,
    check_generator,
    check_int,
    check_scalar,
)

__all__ = ["optimal_baseline", "reparam_grads", "score_function_grads"]

#: Largest number of float64 entries an estimator allocates at once (2 GiB):
#: the per-sample gradients of a full family are (S, d, d).
MAX_ENTRIES = 2**28


def _check_gaussian(loc, scale_tril, covariance_type, num_samples):
    """Validate a Gaussian and ``num_samples``; return float64 tensors and ``S``."""
    covariance_type = check_covariance_type(covariance_type)
    loc, tril = check_loc_scale_tril(loc, scale_tril, covariance_type)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    dim = loc.shape[0]
    per_sample = dim * dim if covariance_type == "full" else dim
    if num_samples * per_sample > MAX_ENTRIES:
        raise ValueError(f"num_samples * {'d * d' if covariance_type == 'full' else 'd'} must be "
                         f"at most {MAX_ENTRIES} (2 GiB of per-sample gradients); got "
                         f"num_samples={num_samples} with d={dim}")
    return torch.from_numpy(loc.copy()), torch.from_numpy(tril.copy()), covariance_type, num_samples


def _check_estimates(grads, name: str, advice: str):
    """Return ``grads`` if every single-sample estimate is finite; else raise, naming ``name``.

    A gradient of ``name`` that is NaN or infinite where its values are finite
    (a ``torch.where`` over a branch whose derivative is NaN, a square root at
    zero), or a product that overflows float64, would otherwise come back as a
    silent NaN or infinity.
    """
    for grad in grads:
        if not all_finite(grad):
            bad = ~torch.isfinite(grad.reshape(grad.shape[0], -1)).all(1)
            rows = torch.nonzero(bad).flatten()[:3].tolist()
            raise ValueError(f"{name} gave {int(bad.sum())} of {grad.shape[0]} single-sample "
                             f"gradient estimates that are not finite (first at rows {rows}): "
                             f"{advice}")
    return grads


def _draw(loc: torch.Tensor, scale_tril: torch.Tensor, num_samples: int, generator):
    r"""Draw :math:`\epsilon \sim \mathcal N(0, I)` of shape (S, d) and :math:`z = \mu + L\epsilon`.

    The one sampler of the chapter: :func:`vicourse.vi.elbo_grads` and
    :func:`vicourse.vi.fit_gaussian` draw their noise the same way, so one
    generator state gives the same samples in both modules.
    """
    eps = torch.randn(num_samples, loc.shape[0], generator=generator, dtype=torch.float64)
    return eps, loc + eps @ scale_tril.T


def _scale_grad(left: torch.Tensor, eps: torch.Tensor, scale_tril: torch.Tensor,
                covariance_type: str) -> torch.Tensor:
    r"""Per-sample gradients in :math:`\tilde L` of a function of :math:`z = \mu + L\epsilon`.

    A function whose gradient in :math:`z` is ``left`` (S, d) has gradient
    :math:`\partial/\partial L_{jk} = \mathrm{left}_j \epsilon_k` (:math:`j \ge k`);
    on the diagonal the chain rule through :math:`L_{jj} = \exp \tilde L_{jj}`
    multiplies by :math:`L_{jj}`.  Shape (S, d) for ``"diag"``, (S, d, d) for ``"full"``.
    """
    diag = scale_tril.diagonal()
    if covariance_type == "diag":
        return left * eps * diag
    outer = torch.tril(left[:, :, None] * eps[:, None, :])
    return outer + torch.diag_embed(outer.diagonal(dim1=-2, dim2=-1) * (diag - 1.0))


def _score(eps: torch.Tensor, scale_tril: torch.Tensor, covariance_type: str):
    r"""The closed-form score :math:`\nabla_\lambda \log q_\lambda` at :math:`\mu + L\epsilon^{(s)}`.

    Implements {eq}`eq-grad-gaussian-score` of Chapter 5.  Diagonal family:
    :math:`\epsilon^{(s)}_i / \sigma_i` in :math:`\mu_i` and
    :math:`(\epsilon^{(s)}_i)^2 - 1` in :math:`\log\sigma_i`.  Full family, with
    :math:`u^{(s)} = L^{-\top}\epsilon^{(s)} = \Sigma^{-1}(z^{(s)} - \mu)`: :math:`u^{(s)}` in
    :math:`\mu`, and the lower triangle of :math:`u^{(s)} \epsilon^{(s)\top}` in
    :math:`L` (the derivative of :math:`-\tfrac12 \lVert L^{-1}(z - \mu) \rVert^2`
    at fixed :math:`z`) minus :math:`1/L_{jj}` on the diagonal (that of
    :math:`-\log\lvert\det L\rvert`), taken to :math:`\tilde L`.
    """
    if covariance_type == "diag":
        sigma = scale_tril.diagonal()
        return eps / sigma, eps.square() - 1.0
    u = torch.linalg.solve_triangular(scale_tril.T, eps.T, upper=True).T
    grad_scale = _scale_grad(u, eps, scale_tril, covariance_type)
    return u, grad_scale - torch.eye(eps.shape[1], dtype=eps.dtype)


def score_function_grads(f, loc, scale_tril, num_samples, *, covariance_type="full",
                         generator=None, baseline=None):
    r"""Single-sample score-function estimates of :math:`\nabla_\lambda \mathbb E_q[f(z)]`.

    Implements {eq}`eq-grad-score` of Chapter 5, with the baseline of
    {eq}`eq-grad-baseline` and the Gaussian score of
    {eq}`eq-grad-gaussian-score`: for :math:`z^{(s)} = \mu + L \epsilon^{(s)}`,
    :math:`\epsilon^{(s)} \sim \mathcal N(0, I)`,

    .. math::

        \hat g_s = \big(f(z^{(s)}) - b\big)\, \nabla_\lambda \log q_\lambda(z^{(s)}),
        \qquad
        \frac{\partial \log q}{\partial \mu_i} = \frac{z^{(s)}_i - \mu_i}{\sigma_i^2}
        = \frac{\epsilon^{(s)}_i}{\sigma_i},
        \qquad
        \frac{\partial \log q}{\partial \log\sigma_i} = (\epsilon^{(s)}_i)^2 - 1

    for the diagonal family (the full family's score is in the Notes).  The
    samples are drawn without gradient (as ``Distribution.sample`` would) and
    only values of ``f`` are used, so ``f`` need not be differentiable.  The
    score is written in closed form, vectorised over the samples; the tests
    check it against autograd of :meth:`torch.distributions.MultivariateNormal.log_prob`
    and against sympy.  Because :math:`\mathbb E_q[\nabla_\lambda \log q_\lambda] = 0`,
    every constant ``b`` leaves the estimator unbiased; a good one lowers its variance.

    Parameters
    ----------
    f : callable
        Maps a float64 tensor of samples of shape (S, d) to a tensor of shape
        (S,) of finite values, one per row.
    loc : array of shape (d,)
        :math:`\mu`.
    scale_tril : array of shape (d, d)
        :math:`L`, lower triangular with a positive diagonal; diagonal for
        ``covariance_type="diag"``.
    num_samples : int, >= 1
        :math:`S`.
    covariance_type : {"full", "diag"}
        The family, which fixes the parameterisation of the returned gradients.
    generator : torch.Generator, optional
        Source of the noise :math:`\epsilon`; ``None`` draws from torch's global
        generator, as torch does.
    baseline : float, optional
        The constant :math:`b`; ``None`` means :math:`b = 0`.

    Returns
    -------
    grad_loc : tensor of shape (S, d), float64
        Single-sample estimates of the gradient in :math:`\mu`.
    grad_scale_tril : tensor of shape (S, d) (``"diag"``) or (S, d, d) (``"full"``), float64
        Single-sample estimates of the gradient in :math:`\tilde L` (log
        diagonal; zero above the diagonal).  The mean over axis 0 of either
        output is the :math:`S`-sample estimate.

    Raises
    ------
    ValueError
        If ``f`` is not callable or returns a shape other than (S,) or
        non-finite values; ``loc`` and ``scale_tril`` are not a valid Gaussian
        of the family; ``num_samples < 1`` or too large; ``generator`` is not
        a :class:`torch.Generator`; ``baseline`` is not a finite number; or an
        estimate overflows float64 (values of ``f`` too large for the score).

    Notes
    -----
    Full family, with :math:`u^{(s)} = L^{-\top} \epsilon^{(s)} = \Sigma^{-1}(z^{(s)} - \mu)`:
    :math:`\partial \log q / \partial \mu = u^{(s)}`, and for :math:`j \ge k`
    :math:`\partial \log q / \partial L_{jk} = u^{(s)}_j \epsilon^{(s)}_k - \delta_{jk} / L_{jj}`,
    which on the diagonal becomes :math:`u^{(s)}_j\epsilon^{(s)}_j L_{jj} - 1` in
    :math:`\log L_{jj}`.

    References
    ----------
    Williams (1992); Paisley, Blei and Jordan (2012); Ranganath, Gerrish and
    Blei (2014); Mohamed et al. (2020), Section 4.
    """
    check_callable(f, "f")
    loc, tril, covariance_type, num_samples = _check_gaussian(loc, scale_tril, covariance_type,
                                                        num_samples)
    generator = check_generator(generator)
    baseline = 0.0 if baseline is None else check_scalar(baseline, "baseline")
    with torch.no_grad():
        eps, z = _draw(loc, tril, num_samples, generator)
        values = call_log_density(f, z, "f")
        score_loc, score_scale = _score(eps, tril, covariance_type)
        weight = values - baseline
        per_sample = weight.reshape(-1, *[1] * (score_scale.dim() - 1))  # (S, 1) or (S, 1, 1)
        grads = weight[:, None] * score_loc, per_sample * score_scale
    return _check_estimates(grads, "f", "(f(z) - baseline) times the score overflows "
                            "float64; subtract a baseline near the values of f, or rescale f")


def reparam_grads(f, loc, scale_tril, num_samples, *, covariance_type="full", generator=None):
    r"""Single-sample reparameterised estimates of :math:`\nabla_\lambda \mathbb E_q[f(z)]`.

    Implements {eq}`eq-grad-reparam` of Chapter 5: with
    :math:`z = g(\epsilon, \lambda) = \mu + L \epsilon`, the chain rule through
    :math:`g` gives

    .. math::

        \hat g_s^{\mu} = \nabla_z f(z^{(s)}), \qquad
        \hat g_s^{L_{jk}} = \big(\nabla_z f(z^{(s)})\big)_j\, \epsilon^{(s)}_k \quad (j \ge k),

    which for the diagonal family is
    :math:`\hat g_s^{\log\sigma} = \nabla_z f(z^{(s)}) \odot \sigma \odot \epsilon^{(s)}`
    (a diagonal entry is multiplied by :math:`L_{jj}` in :math:`\log L_{jj}`).
    One backward pass through :math:`\sum_s f(z^{(s)})` yields every
    :math:`\nabla_z f(z^{(s)})` at once, because ``f`` acts on the rows of its
    input independently (as a log-density of independent samples does).

    Parameters
    ----------
    f : callable
        Maps a float64 tensor of samples of shape (S, d) to a tensor of shape
        (S,), row by row, through differentiable torch operations.
    loc, scale_tril, num_samples, covariance_type, generator
        As in :func:`score_function_grads`.

    Returns
    -------
    grad_loc, grad_scale_tril : tensors
        As in :func:`score_function_grads`.

    Raises
    ------
    ValueError
        As :func:`score_function_grads`, if the output of ``f`` does not
        depend on its input through torch operations (so it cannot be
        differentiated), and if its gradient is NaN or infinite at a sample.

    References
    ----------
    Kingma and Welling (2014); Rezende, Mohamed and Wierstra (2014); Titsias
    and Lázaro-Gredilla (2014); Mohamed et al. (2020), Section 5.
    """
    check_callable(f, "f")
    loc, tril, covariance_type, num_samples = _check_gaussian(loc, scale_tril, covariance_type,
                                                        num_samples)
    generator = check_generator(generator)
    eps, z = _draw(loc, tril, num_samples, generator)
    # z is made a leaf so that one backward pass gives the (S, d) matrix of
    # per-sample gradients grad_z f(z_s); the chain rule through g is then explicit.
    z = z.requires_grad_(True)
    with torch.enable_grad():
        values = call_log_density(f, z, "f", differentiable=True)
        (grad_z,) = torch.autograd.grad(values.sum(), z)
    return _check_estimates((grad_z, _scale_grad(grad_z, eps, tril, covariance_type)), "f",
                            "the gradient of f is NaN or infinite there (a torch.where whose "
                            "other branch has a NaN derivative, say) or overflows float64")


def optimal_baseline(f, loc, scale_tril, num_samples, *, covariance_type="full",
                     generator=None) -> float:
    r"""Estimate the constant baseline that minimises the score-function variance.

    Implements {eq}`eq-grad-optimal-baseline` of Chapter 5.  With
    :math:`h(z) = \nabla_\lambda \log q_\lambda(z)` (every coordinate of
    :math:`\lambda = (\mu, \tilde L)`), the total variance
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
    f, loc, scale_tril, num_samples, covariance_type, generator
        As in :func:`score_function_grads`.

    Returns
    -------
    float
        The estimate of :math:`b^\star`.

    Raises
    ------
    ValueError
        As :func:`score_function_grads`, and if the estimate is not finite.

    References
    ----------
    Ranganath, Gerrish and Blei (2014), Section 3.2 (the same formula per
    coordinate); Mohamed et al. (2020), Section 7.
    """
    check_callable(f, "f")
    loc, tril, covariance_type, num_samples = _check_gaussian(loc, scale_tril, covariance_type,
                                                        num_samples)
    generator = check_generator(generator)
    with torch.no_grad():
        eps, z = _draw(loc, tril, num_samples, generator)
        values = call_log_density(f, z, "f")
        score_loc, score_scale = _score(eps, tril, covariance_type)
        h_sq = score_loc.square().sum(-1) + score_scale.square().flatten(1).sum(-1)
        b_star = float((values * h_sq).mean() / h_sq.mean())
    if not math.isfinite(b_star):
        raise ValueError(f"f gave values whose score-weighted mean overflows float64 (b* = "
                         f"{b_star}); rescale f or shift it by a constant near its values")
    return b_star
