"""Black-box variational inference with a Gaussian family (Chapter 5).

:func:`fit_gaussian` maximises the ELBO of a Gaussian
:math:`q_\\lambda(z) = \\mathcal N(z \\mid \\mu, L L^\\top)` for an
unnormalised log-density :math:`\\log \\hat p(z)` by stochastic gradient
ascent (Adam), with either gradient estimator of :mod:`vicourse.estimators`
applied to the whole ELBO.  :func:`elbo_grads` returns the single-sample
gradient estimates that one step of that fit averages, so that their variance
can be studied (for example the "sticking the landing" estimator at the
optimum).

The variational parameters are unconstrained: the mean :math:`\\mu`, and the
Cholesky factor :math:`L` written as a lower-triangular matrix whose diagonal
holds :math:`\\log L_{ii}` (so :math:`L_{ii} > 0`).  The diagonal family keeps
only :math:`\\log\\sigma_i = \\log L_{ii}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vicourse._validation import as_float_array, check_generator, check_int, check_positive

__all__ = ["GaussianFit", "elbo_grads", "fit_gaussian"]

FAMILIES = ("diagonal", "full")
ESTIMATORS = ("reparam", "score")
BASELINES = (None, "leave-one-out")
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianFit:
    """The result of :func:`fit_gaussian`.

    Attributes
    ----------
    mean : ndarray of shape (d,)
        :math:`\\mu` of the fitted :math:`q`.
    cov : ndarray of shape (d, d)
        :math:`L L^\\top` (diagonal for the diagonal family).
    scale_tril : ndarray of shape (d, d)
        The Cholesky factor :math:`L`, with a positive diagonal.
    elbos : ndarray of shape (steps,)
        One Monte Carlo ELBO estimate per step ({eq}`eq-mc-elbo` of Chapter 1,
        from that step's samples, before its update).
    n_iter : int
        Number of steps taken.
    family, estimator : str
    stl : bool
    """

    mean: np.ndarray
    cov: np.ndarray
    scale_tril: np.ndarray
    elbos: np.ndarray
    n_iter: int
    family: str
    estimator: str
    stl: bool


def _check_options(family, estimator, stl, baseline) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    if not isinstance(stl, bool):
        raise ValueError(f"stl must be True or False; got {stl!r}")
    if stl and estimator != "reparam":
        raise ValueError("stl=True applies to estimator='reparam' only (it drops the score "
                         f"term of a pathwise gradient); got estimator={estimator!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
    if baseline is not None and estimator != "score":
        raise ValueError(f"baseline applies to estimator='score' only; got estimator={estimator!r}")


def _check_log_target(log_target) -> None:
    if not callable(log_target):
        raise ValueError(f"log_target must be callable; got {type(log_target).__name__}")


# The helpers below take the unconstrained scale parameter either unbatched, shape (d,) or
# (d, d), or with one set per sample, shape (S, d) or (S, d, d); elbo_grads uses the latter
# to get every per-sample gradient from one backward pass.

def _scale_tril(family: str, scale_param: torch.Tensor) -> torch.Tensor:
    """:math:`L` from the unconstrained parameter: exp on the diagonal, free below it."""
    if family == "diagonal":
        return torch.diag_embed(scale_param.exp())
    return torch.tril(scale_param, -1) + torch.diag_embed(_log_diag(family, scale_param).exp())


def _log_diag(family: str, scale_param: torch.Tensor) -> torch.Tensor:
    """:math:`\\log L_{ii}`, shape (d,) or (S, d)."""
    return scale_param if family == "diagonal" else scale_param.diagonal(dim1=-2, dim2=-1)


def _sample(family: str, scale_param: torch.Tensor, loc: torch.Tensor, eps: torch.Tensor):
    """:math:`z = g(\\epsilon, \\lambda) = \\mu + L \\epsilon` for each row of ``eps``, shape (S, d)."""
    if family == "diagonal":
        return loc + eps * scale_param.exp()
    tril = _scale_tril(family, scale_param)
    if tril.dim() == 2:
        return loc + eps @ tril.T
    return loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)


def _whiten(family: str, scale_param: torch.Tensor, loc: torch.Tensor, z: torch.Tensor):
    """:math:`L^{-1}(z - \\mu)` for each row of ``z``, shape (S, d)."""
    if family == "diagonal":
        return (z - loc) * (-scale_param).exp()
    tril = _scale_tril(family, scale_param)
    if tril.dim() == 2:
        return torch.linalg.solve_triangular(tril, (z - loc).T, upper=False).T
    return torch.linalg.solve_triangular(tril, (z - loc).unsqueeze(-1), upper=False).squeeze(-1)


def _log_target_values(log_target, z: torch.Tensor) -> torch.Tensor:
    values = log_target(z)
    if not isinstance(values, torch.Tensor) or values.shape != (z.shape[0],):
        shape = tuple(values.shape) if hasattr(values, "shape") else type(values).__name__
        raise ValueError(f"log_target must map a tensor of shape {tuple(z.shape)} to a tensor "
                         f"of shape ({z.shape[0]},); got {shape}")
    return values


def _surrogate(log_target, loc, scale_param, eps, family, estimator, stl, baseline):
    """Per-sample surrogate terms and ELBO terms for noise ``eps`` of shape (S, d).

    The gradient of ``terms[s]`` with respect to (``loc``, ``scale_param``) is
    the s-th single-sample ELBO gradient estimate; ``elbo_terms`` (no
    gradient) are :math:`\\log \\hat p(z_s) - \\log q(z_s)`, whose mean is the
    Monte Carlo ELBO of {eq}`eq-mc-elbo` (Chapter 1).
    """
    dim = eps.shape[-1]
    log_diag = _log_diag(family, scale_param)
    log_det = log_diag.sum(-1)
    # log q(z_s) at z_s = mu + L eps_s, in closed form: the value needs no solve.
    log_q_value = (-0.5 * dim * _LOG_2PI - log_det.detach()) - 0.5 * eps.square().sum(-1)
    if estimator == "reparam":
        z = _sample(family, scale_param, loc, eps)
        log_p = _log_target_values(log_target, z)
        if stl:
            # eq-grad-stl: log q(z; lambda) with lambda held fixed, so that only the
            # path through z = g(eps, lambda) is differentiated (Roeder et al., 2017).
            w = _whiten(family, scale_param.detach(), loc.detach(), z)
            terms = log_p - (-0.5 * dim * _LOG_2PI - log_det.detach() - 0.5 * w.square().sum(-1))
        else:
            # eq-grad-reparam-elbo: the entropy 0.5 d (1 + log 2 pi) + log|L| in closed form.
            terms = log_p + (0.5 * dim * (1.0 + _LOG_2PI) + log_det)
        elbo_terms = log_p.detach() - log_q_value
    else:
        with torch.no_grad():
            z = _sample(family, scale_param, loc, eps)
            log_p = _log_target_values(log_target, z)
        # log q(z_s; lambda) at fixed samples: its gradient is the score (eq-grad-score).
        w = _whiten(family, scale_param, loc, z)
        log_q = -0.5 * dim * _LOG_2PI - log_det - 0.5 * w.square().sum(-1)
        elbo_terms = log_p - log_q_value
        weight = elbo_terms
        if baseline == "leave-one-out":
            # b_s = mean of the other S - 1 weights: independent of z_s, so unbiased.
            weight = weight - (weight.sum() - weight) / (weight.shape[0] - 1)
        # E_q[grad log q] = 0, so the direct derivative of -log q inside the ELBO drops out.
        terms = weight * log_q
    return terms, elbo_terms


def _as_unconstrained(loc, scale_tril, family):
    """Validate ``loc`` and ``scale_tril``; return float64 tensors (loc, scale_param)."""
    loc = as_float_array(loc, "loc", ndim=1)
    tril = as_float_array(scale_tril, "scale_tril", ndim=2)
    dim = loc.shape[0]
    if tril.shape != (dim, dim):
        raise ValueError(f"scale_tril must have shape ({dim}, {dim}) to match loc; got {tril.shape}")
    if np.any(np.triu(tril, 1) != 0):
        raise ValueError("scale_tril must be lower triangular; got non-zero entries above the diagonal")
    check_positive(np.diag(tril), "diagonal of scale_tril")
    if family == "diagonal":
        if np.any(np.tril(tril, -1) != 0):
            raise ValueError("scale_tril must be diagonal for family='diagonal'")
        scale_param = np.log(np.diag(tril))
    else:
        scale_param = np.tril(tril, -1) + np.diag(np.log(np.diag(tril)))
    return torch.from_numpy(loc.copy()), torch.from_numpy(scale_param)


def elbo_grads(log_target, loc, scale_tril, num_samples, *, family="full", estimator="reparam",
               stl=False, baseline=None, generator=None):
    r"""Single-sample estimates of the ELBO gradient that :func:`fit_gaussian` follows.

    For :math:`q = \mathcal N(\mu, L L^\top)` and an unnormalised
    :math:`\log \hat p`, returns the :math:`S` single-sample estimates of
    :math:`\nabla_\lambda \mathcal L(q_\lambda)` with respect to the
    unconstrained parameters :math:`\lambda = (\mu, \tilde L)`, where
    :math:`\tilde L` is :math:`L` with its diagonal replaced by
    :math:`\log L_{ii}` (for the diagonal family, :math:`\log\sigma`):

    * ``estimator="reparam"``: {eq}`eq-grad-reparam-elbo`, the pathwise
      gradient of :math:`\log \hat p(\mu + L\epsilon_s)` plus the entropy
      :math:`\mathbb H[q] = \tfrac d2 (1 + \log 2\pi) + \sum_i \log L_{ii}` in
      closed form; with ``stl=True``, {eq}`eq-grad-stl`, the path derivative
      of :math:`\log \hat p(z_s) - \log q_{\bar\lambda}(z_s)` with
      :math:`\bar\lambda` held fixed ("sticking the landing");
    * ``estimator="score"``: {eq}`eq-grad-score` applied to the ELBO,
      :math:`(\log \hat p(z_s) - \log q(z_s) - b_s)\, \nabla_\lambda \log q_\lambda(z_s)`,
      with :math:`b_s = 0` or, for ``baseline="leave-one-out"``, the mean of
      the other :math:`S - 1` samples' values.

    The per-sample gradients come from one backward pass: each sample gets
    its own copy of the parameters, so the gradient of the sum of the
    :math:`S` surrogate terms with respect to the copies is the (S, ...)
    stack of single-sample gradients.

    Parameters
    ----------
    log_target : callable
        :math:`\log \hat p`: maps a float64 tensor of shape (S, d) to shape (S,),
        row by row (differentiably, for the reparameterised estimator).
    loc : array of shape (d,)
        :math:`\mu`.
    scale_tril : array of shape (d, d)
        :math:`L`, lower triangular with a positive diagonal (diagonal for
        ``family="diagonal"``).
    num_samples : int, >= 1 (>= 2 with the leave-one-out baseline)
        :math:`S`.
    family : {"full", "diagonal"}
    estimator : {"reparam", "score"}
    stl : bool
        Sticking the landing; only with ``estimator="reparam"``.
    baseline : {None, "leave-one-out"}
        Only with ``estimator="score"``.
    generator : torch.Generator, optional

    Returns
    -------
    grad_loc : tensor of shape (S, d)
    grad_scale : tensor of shape (S, d) (diagonal family: gradients with respect
        to :math:`\log\sigma`) or (S, d, d) (full family: with respect to
        :math:`\tilde L`; zero above the diagonal)

    Raises
    ------
    ValueError
        If an option is unknown or used with the wrong estimator, shapes
        disagree, ``scale_tril`` is not lower triangular with a positive
        diagonal, ``num_samples`` is too small, or ``log_target`` returns the
        wrong shape.

    References
    ----------
    Ranganath, Gerrish and Blei (2014); Titsias and Lázaro-Gredilla (2014);
    Roeder, Wu and Duvenaud (2017).
    """
    _check_log_target(log_target)
    _check_options(family, estimator, stl, baseline)
    loc, scale_param = _as_unconstrained(loc, scale_tril, family)
    num_samples = check_int(num_samples, "num_samples",
                            minimum=2 if baseline == "leave-one-out" else 1)
    generator = check_generator(generator)
    eps = torch.randn(num_samples, loc.shape[0], generator=generator, dtype=torch.float64)
    # One copy of the parameters per sample: sample s's term depends only on copy s
    # (the leave-one-out weights are constants), so d(sum of terms)/d(copy s) is its gradient.
    loc_s = loc.expand(num_samples, *loc.shape).clone().requires_grad_(True)
    param_s = scale_param.expand(num_samples, *scale_param.shape).clone().requires_grad_(True)
    terms, _ = _surrogate(log_target, loc_s, param_s, eps, family, estimator, stl, baseline)
    grad_loc, grad_scale = torch.autograd.grad(terms.sum(), (loc_s, param_s))
    return grad_loc, grad_scale


def fit_gaussian(log_target, dim, *, family="diagonal", estimator="reparam", num_samples, steps,
                 lr, seed, stl=False, baseline=None) -> GaussianFit:
    r"""Fit a Gaussian to an unnormalised log-density by black-box VI.

    Maximises the ELBO {eq}`eq-elbo-def` (Chapter 1) of
    :math:`q = \mathcal N(\mu, L L^\top)` for :math:`\log \hat p` with Adam
    (Kingma and Ba, 2015), starting from :math:`\mathcal N(0, I)`.  Each step
    draws one batch :math:`\epsilon \sim \mathcal N(0, I)` of shape (S, d),
    forms the surrogate whose gradient is the mean of the single-sample
    estimates of :func:`elbo_grads` (Chapter 5: {eq}`eq-grad-reparam-elbo`,
    {eq}`eq-grad-stl` or {eq}`eq-grad-score`), and takes one Adam step on
    :math:`-\text{surrogate}` (the optimiser minimises).  Vectorised over the
    samples: no Python loop runs over them.

    Unlike the coordinate-ascent fits of earlier chapters there is no
    ``tol``: the ELBO estimates are noisy, so a change-based stopping rule
    would stop at random; the fit runs ``steps`` steps.

    Parameters
    ----------
    log_target : callable
        :math:`\log \hat p`: maps a float64 tensor of shape (S, d) to shape (S,),
        row by row (differentiably, for ``estimator="reparam"``).  Its
        normaliser need not be known: it only shifts the ELBO.
    dim : int, >= 1
        :math:`d`.
    family : {"diagonal", "full"}
        A diagonal covariance (mean field) or a full one (Cholesky factor).
    estimator : {"reparam", "score"}
        Pathwise gradients (needs a differentiable ``log_target``) or
        score-function gradients (needs only its values).
    num_samples : int, >= 1 (>= 2 with the leave-one-out baseline)
        :math:`S`, Monte Carlo samples per step.
    steps : int, >= 1
        Number of Adam steps.
    lr : float, > 0
        Adam's learning rate.
    seed : int, >= 0
        Seeds the :class:`torch.Generator` that draws :math:`\epsilon`.
    stl : bool
        "Sticking the landing" (Roeder et al., 2017): drop the score term of the
        pathwise gradient (``estimator="reparam"`` only).
    baseline : {None, "leave-one-out"}
        For ``estimator="score"``: subtract from each sample's weight the mean
        of the other samples' weights.

    Returns
    -------
    GaussianFit
        ``mean`` (d,), ``cov`` (d, d), ``scale_tril`` (d, d), ``elbos`` (steps,).

    Raises
    ------
    ValueError
        If ``family``, ``estimator`` or ``baseline`` is unknown or used with
        the wrong estimator, an integer argument is out of range, ``lr`` is
        not positive, ``log_target`` returns a shape other than (S,), or the
        ELBO becomes non-finite (then try a smaller ``lr``).

    References
    ----------
    Ranganath, Gerrish and Blei (2014); Kucukelbir et al. (2017); Roeder, Wu
    and Duvenaud (2017).
    """
    _check_log_target(log_target)
    dim = check_int(dim, "dim", minimum=1)
    _check_options(family, estimator, stl, baseline)
    num_samples = check_int(num_samples, "num_samples",
                            minimum=2 if baseline == "leave-one-out" else 1)
    steps = check_int(steps, "steps", minimum=1)
    lr = check_positive(lr, "lr")
    if np.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar; got shape {np.shape(lr)}")
    seed = check_int(seed, "seed", minimum=0)
    generator = torch.Generator().manual_seed(seed)

    loc = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    shape = (dim,) if family == "diagonal" else (dim, dim)
    scale_param = torch.zeros(shape, dtype=torch.float64, requires_grad=True)  # L = I
    optimizer = torch.optim.Adam([loc, scale_param], lr=lr)
    elbos = torch.empty(steps, dtype=torch.float64)
    for step in range(steps):
        eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
        terms, elbo_terms = _surrogate(log_target, loc, scale_param, eps, family, estimator,
                                       stl, baseline)
        elbos[step] = elbo_terms.mean().detach()
        optimizer.zero_grad(set_to_none=True)
        (-terms.mean()).backward()  # Adam minimises: descend on minus the ELBO surrogate
        optimizer.step()
    if not bool(torch.isfinite(elbos).all()):
        raise ValueError(f"the ELBO became non-finite during the fit (log_target returned "
                         f"NaN or infinity, or lr={lr} is too large); try a smaller lr")
    with torch.no_grad():
        tril = _scale_tril(family, scale_param).numpy().copy()
    return GaussianFit(mean=loc.detach().numpy().copy(), cov=tril @ tril.T, scale_tril=tril,
                       elbos=elbos.numpy(), n_iter=steps, family=family, estimator=estimator,
                       stl=stl)
