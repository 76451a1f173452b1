"""Black-box variational inference with a Gaussian family (Chapter 5) or a flow (Chapter 9).

:func:`fit_gaussian` maximises the ELBO of a Gaussian
:math:`q_\\lambda(z) = \\mathcal N(z \\mid \\mu, L L^\\top)` for a log density
``log_joint`` known up to a constant, by stochastic gradient ascent (Adam)
with either gradient estimator of :mod:`vicourse.estimators` applied to the
whole ELBO, an optional decreasing step size, optional iterate averaging, and
a stopping rule for a noisy bound.  :func:`elbo_grads` returns the
single-sample gradient estimates that one step of that fit averages, so that
their variance can be studied (for example the "sticking the landing"
estimator at the optimum).  :func:`logistic_regression_log_joint` is the
log joint of the chapter's non-conjugate example, Bayesian logistic
regression.

A Gaussian is ``loc`` :math:`\\mu` and ``scale_tril`` :math:`L`; the family is
``covariance_type="full"`` or ``"diag"``; gradients are taken in the one
unconstrained parameterisation of CONTRIBUTING.md, :math:`\\mu` and
:math:`\\tilde L` (:math:`L` with :math:`\\log L_{ii}` on its diagonal; the
vector :math:`\\log\\sigma` for the diagonal family).

The loop itself (Adam, the step-size schedule, iterate averaging, the
windowed stopping rule, the checks for a bound or gradient that breaks down,
the :class:`~vicourse.ConvergenceWarning`) is the private driver
:func:`_stochastic_ascent`, which any other variational family can reuse:
it needs only the parameters and a function that returns one step's
surrogate objective and ELBO estimate.  :func:`fit_flow` is that second
family: a normalizing flow of :mod:`vicourse.flows`, fitted by the same loop.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vicourse._gaussian import (
    GaussianFit,
    check_covariance_type,
    check_loc_scale_tril,
    scale_tril_from_unconstrained,
    unconstrained_from_scale_tril,
)
from vicourse._validation import (
    _describe,
    as_float_array,
    call_log_density,
    check_bool,
    check_callable,
    check_choice,
    check_generator,
    check_in_interval,
    check_int,
    check_scalar,
    check_seed,
)
from vicourse.estimators import MAX_ENTRIES, _check_estimates, _draw
from vicourse.exceptions import ConvergenceWarning
from vicourse.flows import Flow, FlowFit

__all__ = ["ESTIMATORS", "BASELINES", "elbo_grads", "fit_flow", "fit_gaussian",
           "logistic_regression_log_joint"]

#: The gradient estimators of the ELBO: pathwise or score function.
ESTIMATORS = ("reparam", "score")
#: Baselines of the score-function estimator.
BASELINES = (None, "leave-one-out")
_LOG_2PI = math.log(2.0 * math.pi)
#: Largest dimension: a full family's d x d parameters (and Adam's two moments of them)
#: must fit in memory.
MAX_DIM = 2**13
#: Most logits (rows of z times data points) a log joint forms at once: 32 MiB of float64.
_LOGIT_BLOCK = 2**22


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class _AscentResult:
    """What :func:`_stochastic_ascent` returns; see its docstring."""

    elbos: np.ndarray
    n_iter: int
    converged: bool
    step_sizes: np.ndarray
    window_means: np.ndarray
    relative_changes: np.ndarray
    averaged: list[torch.Tensor] | None

    def info(self) -> dict:
        """The entries every fit's ``info`` takes from the driver."""
        return {"step_sizes": self.step_sizes, "window_means": self.window_means,
                "relative_changes": self.relative_changes}


class _WindowedStop:
    r"""The stopping rule of every stochastic fit, {eq}`eq-grad-stopping` of Chapter 5.

    A variant of Stan's ADVI rule for a noisy bound: the caller records the
    mean of its ELBO estimates over each complete window of ``eval_window``
    steps with :meth:`update`, which says whether the fit has converged,

    .. math::

        \frac{\lvert \bar{\mathcal L}_k - \bar{\mathcal L}_{k-1} \rvert}
             {\max(\lvert \bar{\mathcal L}_k \rvert, 1)} < \text{tol} ;

    ``tol = 0`` never holds.  ``means`` and ``changes`` keep every window's
    mean and every relative change, for the fit's ``info`` and its warning.
    Used by :func:`_stochastic_ascent` and by the conjugate fits of
    :mod:`vicourse.svi`.
    """

    def __init__(self, tol: float, eval_window: int):
        self.tol = tol
        self.eval_window = eval_window
        self.means: list[float] = []
        self.changes: list[float] = []

    def window_ends(self, n_steps: int) -> bool:
        """Whether the ``n_steps``-th step (counted from 1) completes a window."""
        return n_steps % self.eval_window == 0

    def update(self, mean: float) -> bool:
        """Record the mean of the window just completed; True when the rule holds."""
        self.means.append(mean)
        if len(self.means) < 2:
            return False
        change = abs(self.means[-1] - self.means[-2]) / max(abs(self.means[-1]), 1.0)
        self.changes.append(change)
        return change < self.tol


def _check_schedule(lr, tau0, kappa, tol, eval_window, average, steps):
    """Validate the driver's settings; return them as Python numbers."""
    steps = check_int(steps, "steps", minimum=1, maximum=10**8)
    lr = check_scalar(lr, "lr", positive=True)
    tau0 = check_scalar(tau0, "tau0", positive=True)
    kappa = check_in_interval(kappa, "kappa", 0.0, 1.0)
    tol = check_in_interval(tol, "tol", 0.0, 1.0, closed=(True, False))
    eval_window = check_int(eval_window, "eval_window", minimum=1, maximum=10**8)
    average = check_bool(average, "average")
    return steps, lr, tau0, kappa, tol, eval_window, average


def _check_finite(params, elbos: torch.Tensor, step: int, what: str, lr: float,
                  error: Exception | None = None) -> None:
    """Raise, naming the first step whose ELBO estimate or gradient was not finite, if any.

    The loop does not synchronise on every step to look: a non-finite gradient makes
    the parameters non-finite, which the next evaluation of the log density reports
    (it is then checked here), and the ELBO estimates are checked once per window.
    """
    finite = torch.isfinite(elbos)
    if not bool(finite.all()):
        first = int(torch.nonzero(~finite)[0])
        problem = f"at step {first}: the ELBO estimate is {float(elbos[first])}"
    elif not all(bool(torch.isfinite(p).all()) for p in params):
        problem = f"at step {step}: its gradient is not finite"
    else:
        return
    raise ValueError(f"{what} broke down {problem}; try a smaller lr (now {lr:g}), a "
                     "decreasing step size (kappa > 0.5) or more num_samples") from error


def _stochastic_ascent(objective: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                       params: Sequence[torch.Tensor], *, steps: int, lr: float, tau0: float,
                       kappa: float, average: bool, tol: float, eval_window: int,
                       what: str) -> _AscentResult:
    r"""Stochastic gradient ascent on an ELBO: the loop every black-box fit shares.

    Implements {eq}`eq-grad-schedule` and {eq}`eq-grad-stopping` of Chapter 5.
    At step :math:`t = 0, 1, \dots`, ``objective(t)`` draws that step's noise
    and returns ``(surrogate, elbo)``: a 0-d tensor whose gradient in
    ``params`` is the step's ELBO gradient estimate, and the step's Monte
    Carlo ELBO estimate (no gradient).  Adam takes one step on
    ``-surrogate`` (it minimises) with the step size

    .. math::

        \eta_t = \eta \Big(\frac{\tau_0}{\tau_0 + t}\Big)^{\kappa},

    constant for :math:`\kappa = 0`, a Robbins–Monro sequence
    (:math:`\sum_t \eta_t = \infty`, :math:`\sum_t \eta_t^2 < \infty`) for
    :math:`\kappa \in (1/2, 1]`.

    Stopping rule, after Stan's ADVI: the recorded ELBO estimates are averaged
    over consecutive windows of ``eval_window`` steps, and the fit stops after
    window :math:`k \ge 1` when

    .. math::

        \frac{\lvert \bar{\mathcal L}_k - \bar{\mathcal L}_{k-1} \rvert}
             {\max(\lvert \bar{\mathcal L}_k \rvert, 1)} < \text{tol} ;

    the floor of 1 nat keeps the rule meaningful for a bound near zero.  (Stan
    instead draws a fresh ELBO estimate every ``eval_elbo`` steps and stops
    when the mean or the median of the recent relative changes between them
    falls below ``tol_rel_obj``.)
    ``tol = 0`` turns the rule off: every step runs, ``converged`` is False
    and no warning is issued, since no rule was asked for.

    Iterate averaging (``average=True``): the returned parameters are the
    mean of the iterates over the last half of the windows run (rounded up,
    the last window possibly partial), Polyak–Ruppert averaging of the tail
    (Polyak and Juditsky, 1992), in the unconstrained parameters.

    Parameters
    ----------
    objective : callable
        ``objective(step) -> (surrogate, elbo)``, as above; it draws from its
        own generator and calls the log density through
        :func:`vicourse._validation.call_log_density`.
    params : sequence of tensors
        The leaf tensors (``requires_grad=True``) that Adam updates, in place.
    steps, lr, tau0, kappa, average, tol, eval_window
        As in :func:`fit_gaussian`, validated by :func:`_check_schedule`.
    what : str
        The routine's name, used in errors and warnings.

    Returns
    -------
    _AscentResult
        ``elbos`` (n_iter,), ``n_iter``, ``converged``, ``step_sizes``
        (n_iter,), ``window_means``, ``relative_changes``, and ``averaged``
        (the averaged ``params``, or None without averaging); ``params``
        themselves hold the last iterate.

    Raises
    ------
    ValueError
        If the ELBO estimate or a gradient is NaN or infinite at some step,
        naming the step and advising a smaller ``lr``; if ``objective``
        raises a ValueError after the first step (the log density was not
        finite where ``q`` has moved), the same, with the original message.
        To stay as fast as a plain loop it does not synchronise on every step
        to look: a non-finite gradient is found at the next evaluation of
        ``objective``, a non-finite ELBO estimate at the end of its window.

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the rule was not met within ``steps`` steps.
    """
    optimizer = torch.optim.Adam(params, lr=lr)
    group = optimizer.param_groups[0]
    step_sizes = lr * (tau0 / (tau0 + np.arange(steps, dtype=np.float64))) ** kappa
    elbos = torch.empty(steps, dtype=torch.float64)
    stop = _WindowedStop(tol, eval_window)
    # Sums of the iterates over each window (and the current, partial one), for averaging.
    window_sums: list[list[torch.Tensor]] = []
    running = [torch.zeros_like(p) for p in params] if average else []
    converged = False
    n_iter = steps
    for step in range(steps):
        group["lr"] = float(step_sizes[step])
        try:
            surrogate, elbo = objective(step)
        except ValueError as error:
            if step == 0:
                raise
            _check_finite(params, elbos[:step], step - 1, what, lr, error)
            raise ValueError(f"{what} broke down at step {step}: {error}. The first {step} steps "
                             "ran, so q has moved where the log density is not finite: the fit "
                             f"diverged; try a smaller lr (now {lr:g}) or a start closer to the "
                             "target") from error
        optimizer.zero_grad(set_to_none=True)
        (-surrogate).backward()  # Adam minimises: descend on minus the ELBO surrogate
        elbos[step] = elbo.detach()
        optimizer.step()
        if average:
            with torch.no_grad():
                for acc, p in zip(running, params, strict=True):
                    acc.add_(p)
        if stop.window_ends(step + 1):
            mean = float(elbos[step + 1 - eval_window:step + 1].mean())
            if not math.isfinite(mean):
                _check_finite(params, elbos[:step + 1], step, what, lr)
            if average:
                window_sums.append(running)
                running = [torch.zeros_like(p) for p in params]
            if stop.update(mean):
                converged, n_iter = True, step + 1
                break
    _check_finite(params, elbos[:n_iter], n_iter - 1, what, lr)
    averaged = None
    if average:
        counts = [eval_window] * len(window_sums)
        if n_iter % eval_window:  # the last, partial window
            window_sums.append(running)
            counts.append(n_iter % eval_window)
        keep = math.ceil(len(window_sums) / 2)
        with torch.no_grad():
            averaged = [sum(sums[i] for sums in window_sums[-keep:]) / sum(counts[-keep:])
                        for i in range(len(params))]
    if tol > 0 and not converged:
        last = (f"the last relative change of the window mean was {stop.changes[-1]:.3g}"
                if stop.changes
                else f"fewer than two windows of eval_window={eval_window} steps ran")
        warnings.warn(f"{what} did not converge in {steps} steps: {last}, tol={tol:g}. Try more "
                      "steps, a smaller lr or a decreasing step size (kappa > 0.5), more "
                      "num_samples, or a larger tol", ConvergenceWarning, stacklevel=3)
    return _AscentResult(elbos=elbos[:n_iter].numpy().copy(), n_iter=n_iter, converged=converged,
                         step_sizes=step_sizes[:n_iter], window_means=np.array(stop.means),
                         relative_changes=np.array(stop.changes), averaged=averaged)


# --------------------------------------------------------------------------- the Gaussian family


def _check_estimator(estimator, stl, baseline) -> tuple[str, bool, str | None]:
    estimator = check_choice(estimator, "estimator", ESTIMATORS)
    stl = check_bool(stl, "stl")
    if stl and estimator != "reparam":
        raise ValueError("stl=True applies to estimator='reparam' only (it drops the score "
                         f"term of a pathwise gradient); got estimator={estimator!r}")
    if baseline is not None:
        baseline = check_choice(baseline, "baseline", BASELINES)
        if estimator != "score":
            raise ValueError("baseline applies to estimator='score' only; got "
                             f"estimator={estimator!r}")
    return estimator, bool(stl), baseline


def _check_num_samples(num_samples, baseline, dim: int, per_sample: int) -> int:
    num_samples = check_int(num_samples, "num_samples",
                            minimum=2 if baseline == "leave-one-out" else 1)
    if num_samples * per_sample > MAX_ENTRIES:
        raise ValueError(f"num_samples must be at most {MAX_ENTRIES // per_sample} for d={dim} "
                         f"(2 GiB of samples or per-sample gradients); got {num_samples}")
    return num_samples


def _sample(loc, param, eps, covariance_type):
    r""":math:`z = \mu + L\epsilon` for each row of ``eps`` (S, d); batched parameters allowed."""
    if covariance_type == "diag":
        return loc + eps * param.exp()
    tril = scale_tril_from_unconstrained(param, covariance_type)
    if tril.dim() == 2:
        return loc + eps @ tril.T
    return loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)


def _whiten(loc, param, z, covariance_type):
    r""":math:`L^{-1}(z - \mu)` for each row of ``z`` (S, d); batched parameters allowed."""
    if covariance_type == "diag":
        return (z - loc) * (-param).exp()
    tril = scale_tril_from_unconstrained(param, covariance_type)
    if tril.dim() == 2:
        return torch.linalg.solve_triangular(tril, (z - loc).T, upper=False).T
    return torch.linalg.solve_triangular(tril, (z - loc).unsqueeze(-1), upper=False).squeeze(-1)


def _log_diag(param, covariance_type):
    """:math:`\\log L_{ii}`, shape (d,) or (S, d)."""
    return param if covariance_type == "diag" else param.diagonal(dim1=-2, dim2=-1)


def _surrogate(log_joint, loc, param, eps, covariance_type, estimator, stl, baseline):
    """Per-sample surrogate terms and ELBO terms for noise ``eps`` of shape (S, d).

    The gradient of ``terms[s]`` with respect to (``loc``, ``param``) is the
    s-th single-sample ELBO gradient estimate; ``elbo_terms`` (no gradient)
    are :math:`\\log p(x, z^{(s)}) - \\log q(z^{(s)})`, whose mean is the Monte Carlo
    ELBO of {eq}`eq-mc-elbo` (Chapter 1).
    """
    dim = eps.shape[-1]
    log_det = _log_diag(param, covariance_type).sum(-1)
    # log q(z_s) at z_s = mu + L eps_s, in closed form: the value needs no solve.
    log_q_value = (-0.5 * dim * _LOG_2PI - log_det.detach()) - 0.5 * eps.square().sum(-1)
    if estimator == "reparam":
        z = _sample(loc, param, eps, covariance_type)
        log_p = call_log_density(log_joint, z, "log_joint", differentiable=True)
        if stl:
            # eq-grad-stl: log q(z; lambda) with lambda held fixed, so that only the
            # path through z = g(eps, lambda) is differentiated (Roeder et al., 2017).
            w = _whiten(loc.detach(), param.detach(), z, covariance_type)
            terms = log_p - (-0.5 * dim * _LOG_2PI - log_det.detach() - 0.5 * w.square().sum(-1))
        else:
            # eq-grad-reparam-elbo: the entropy 0.5 d (1 + log 2 pi) + log|L| in closed form.
            terms = log_p + (0.5 * dim * (1.0 + _LOG_2PI) + log_det)
        return terms, log_p.detach() - log_q_value
    with torch.no_grad():
        z = _sample(loc, param, eps, covariance_type)
        log_p = call_log_density(log_joint, z, "log_joint")
    # log q(z_s; lambda) at fixed samples: its gradient is the score (eq-grad-score).
    w = _whiten(loc, param, z, covariance_type)
    log_q = -0.5 * dim * _LOG_2PI - log_det - 0.5 * w.square().sum(-1)
    elbo_terms = log_p - log_q_value
    weight = elbo_terms
    if baseline == "leave-one-out":
        # b_s = mean of the other S - 1 weights: independent of z_s, so unbiased.
        weight = weight - (weight.sum() - weight) / (weight.shape[0] - 1)
    # E_q[grad log q] = 0, so the direct derivative of -log q inside the ELBO drops out.
    return weight * log_q, elbo_terms


def elbo_grads(log_joint, loc, scale_tril, num_samples, *, covariance_type="full",
               estimator="reparam", stl=False, baseline=None, generator=None):
    r"""Single-sample estimates of the ELBO gradient that :func:`fit_gaussian` follows.

    For :math:`q = \mathcal N(\mu, L L^\top)` and a log density
    :math:`\log p(x, z)` known up to a constant, returns the :math:`S`
    single-sample estimates of :math:`\nabla_\lambda \mathcal L(q_\lambda)`
    with respect to the unconstrained parameters :math:`\lambda = (\mu, \tilde L)`,
    where :math:`\tilde L` is :math:`L` with its diagonal replaced by
    :math:`\log L_{ii}` (for the diagonal family, :math:`\log\sigma`), the
    parameterisation of :mod:`vicourse.estimators`:

    * ``estimator="reparam"``: {eq}`eq-grad-reparam-elbo`, the pathwise
      gradient of :math:`\log p(x, \mu + L\epsilon^{(s)})` plus the entropy
      :math:`\mathbb H[q] = \tfrac d2 (1 + \log 2\pi) + \sum_i \log L_{ii}` in
      closed form; with ``stl=True``, {eq}`eq-grad-stl`, the path derivative
      of :math:`\log p(x, z^{(s)}) - \log q_{\bar\lambda}(z^{(s)})` with
      :math:`\bar\lambda` held fixed ("sticking the landing");
    * ``estimator="score"``: {eq}`eq-grad-score` applied to the ELBO,
      :math:`(\log p(x, z^{(s)}) - \log q(z^{(s)}) - b_s)\, \nabla_\lambda \log q_\lambda(z^{(s)})`,
      with :math:`b_s = 0` or, for ``baseline="leave-one-out"``, the mean of
      the other :math:`S - 1` samples' values.

    The per-sample gradients come from one backward pass: each sample gets
    its own copy of the parameters, so the gradient of the sum of the
    :math:`S` surrogate terms with respect to the copies is the (S, ...)
    stack of single-sample gradients.  The noise is drawn as in
    :mod:`vicourse.estimators` (:math:`\epsilon` of shape (S, d), then
    :math:`z = \mu + L\epsilon`).

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)`, or any log density known up to a constant: maps a
        float64 tensor of shape (S, d) to shape (S,), row by row
        (differentiably, for the reparameterised estimator).
    loc : array of shape (d,)
        :math:`\mu`.
    scale_tril : array of shape (d, d)
        :math:`L`, lower triangular with a positive diagonal (diagonal for
        ``covariance_type="diag"``).
    num_samples : int, >= 1 (>= 2 with the leave-one-out baseline)
        :math:`S`.
    covariance_type : {"full", "diag"}
    estimator : {"reparam", "score"}
    stl : bool
        Sticking the landing; only with ``estimator="reparam"``.
    baseline : {None, "leave-one-out"}
        Only with ``estimator="score"``.
    generator : torch.Generator, optional
        Source of the noise :math:`\epsilon`; ``None`` draws from torch's global
        generator, as torch does.

    Returns
    -------
    grad_loc : tensor of shape (S, d)
    grad_scale_tril : tensor of shape (S, d) (``"diag"``: gradients in
        :math:`\log\sigma`) or (S, d, d) (``"full"``: in :math:`\tilde L`;
        zero above the diagonal)

    Raises
    ------
    ValueError
        If an option is unknown or used with the wrong estimator, shapes
        disagree, ``scale_tril`` is not lower triangular with a positive
        diagonal, ``num_samples`` is too small or too large, or ``log_joint``
        returns the wrong shape, NaN or infinite values, or (for the
        pathwise estimators) values that do not depend on its input through
        torch operations; or if a single-sample estimate is NaN or infinite
        (a gradient of ``log_joint`` that is not finite, an overflow).

    References
    ----------
    Ranganath, Gerrish and Blei (2014); Titsias and Lázaro-Gredilla (2014);
    Roeder, Wu and Duvenaud (2017).
    """
    check_callable(log_joint, "log_joint")
    covariance_type = check_covariance_type(covariance_type)
    estimator, stl, baseline = _check_estimator(estimator, stl, baseline)
    loc, tril = check_loc_scale_tril(loc, scale_tril, covariance_type)
    dim = loc.shape[0]
    num_samples = _check_num_samples(num_samples, baseline, dim,
                                     dim * dim if covariance_type == "full" else dim)
    generator = check_generator(generator)
    loc = torch.from_numpy(loc.copy())
    tril = torch.from_numpy(tril.copy())
    param = unconstrained_from_scale_tril(tril, covariance_type)
    eps, _ = _draw(loc, tril, num_samples, generator)
    # One copy of the parameters per sample: sample s's term depends only on copy s
    # (the leave-one-out weights are constants), so d(sum of terms)/d(copy s) is its gradient.
    loc_s = loc.expand(num_samples, *loc.shape).clone().requires_grad_(True)
    param_s = param.expand(num_samples, *param.shape).clone().requires_grad_(True)
    terms, _ = _surrogate(log_joint, loc_s, param_s, eps, covariance_type, estimator, stl,
                          baseline)
    grad_loc, grad_scale = torch.autograd.grad(terms.sum(), (loc_s, param_s))
    return _check_estimates((grad_loc, grad_scale), "log_joint",
                            "the gradient of log_joint is NaN or infinite there, or the "
                            "estimate overflows float64")


def _start(dim, loc, scale_tril, init, covariance_type):
    """The starting point: from ``init``, from ``loc``/``scale_tril``, or N(0, I) in ``dim``."""
    if init is not None:
        if not isinstance(init, GaussianFit):
            raise ValueError(f"init must be a vicourse.GaussianFit or None; got {_describe(init)}")
        if loc is not None or scale_tril is not None:
            raise ValueError("init gives the starting point: pass init, or loc and scale_tril, "
                             "not both")
        return check_loc_scale_tril(init.loc, init.scale_tril, covariance_type,
                                    names=("init.loc", "init.scale_tril"))
    if dim is not None:
        dim = check_int(dim, "dim", minimum=1, maximum=MAX_DIM)
    if loc is None and scale_tril is None:
        if dim is None:
            raise ValueError("dim must be given when no starting point (init, loc or scale_tril) "
                             "is; got None")
        return np.zeros(dim), np.eye(dim)
    if loc is None:
        loc = np.zeros(as_float_array(scale_tril, "scale_tril", ndim=2).shape[0])
    if scale_tril is None:
        scale_tril = np.eye(as_float_array(loc, "loc", ndim=1).shape[0])
    loc, tril = check_loc_scale_tril(loc, scale_tril, covariance_type)
    if loc.shape[0] > MAX_DIM:
        raise ValueError(f"loc must have at most {MAX_DIM} entries; got {loc.shape[0]}")
    if dim is not None and dim != loc.shape[0]:
        raise ValueError(f"dim must match the starting point: loc has {loc.shape[0]} entries; "
                         f"got dim={dim}")
    return loc, tril


def _leaf_params(loc, scale_tril, covariance_type, device=None) -> list[torch.Tensor]:
    """What Adam updates, from a starting point: ``loc`` and the unconstrained ``scale_tril``."""
    param = unconstrained_from_scale_tril(torch.from_numpy(scale_tril.copy()), covariance_type)
    return [torch.from_numpy(loc.copy()).to(device).requires_grad_(True),
            param.to(device).requires_grad_(True)]


def _gaussian_fit(params, covariance_type, result: _AscentResult, *, lr: float, what: str,
                  estimator, stl, baseline, num_samples, average,
                  extra: dict | None = None) -> GaussianFit:
    """The fitted Gaussian from the driver's result: the averaged iterate (or the last one).

    ``info`` holds the settings, the driver's entries, the last iterate and
    ``extra``.  Raises if the fitted scale has under- or overflowed.
    """
    with torch.no_grad():
        chosen = params if result.averaged is None else result.averaged
        last_loc, last_tril, fit_loc, fit_tril = (
            t.detach().cpu().numpy().copy() for t in
            (params[0], scale_tril_from_unconstrained(params[1], covariance_type),
             chosen[0], scale_tril_from_unconstrained(chosen[1], covariance_type)))
    diagonal = np.diag(fit_tril)
    if not (np.all(np.isfinite(fit_loc)) and np.all(np.isfinite(fit_tril)) and np.all(diagonal > 0)):
        raise ValueError(f"{what} diverged: after {result.n_iter} steps the scale of q has "
                         f"under- or overflowed (smallest diagonal of scale_tril {diagonal.min():.3g},"
                         f" largest {diagonal.max():.3g}); try a smaller lr (now {lr:g}) or a "
                         "decreasing step size (kappa > 0.5)")
    info = {"estimator": estimator, "stl": stl, "baseline": baseline, "num_samples": num_samples,
            "average": average, **result.info(), "last_loc": last_loc, "last_scale_tril": last_tril,
            **(extra or {})}
    return GaussianFit(loc=fit_loc, scale_tril=fit_tril, covariance_type=covariance_type,
                       elbos=result.elbos, n_iter=result.n_iter, converged=result.converged,
                       info=info)


def fit_gaussian(log_joint, dim=None, *, covariance_type="full", estimator="reparam",
                 stl=False, baseline=None, loc=None, scale_tril=None, init=None, num_samples,
                 steps, lr, tau0=100.0, kappa=0.0, average=False, tol=1e-3, eval_window=100,
                 seed) -> GaussianFit:
    r"""Fit a Gaussian to a log density known up to a constant, by black-box VI.

    Implements {prf:ref}`alg-grad-bbvi` of Chapter 5: maximises the ELBO
    {eq}`eq-elbo-def` (Chapter 1) of :math:`q = \mathcal N(\mu, L L^\top)` with
    Adam (Kingma and Ba, 2015).  Each step draws one batch
    :math:`\epsilon \sim \mathcal N(0, I)` of shape (S, d), forms the
    surrogate whose gradient is the mean of the single-sample estimates of
    :func:`elbo_grads` ({eq}`eq-grad-reparam-elbo`, {eq}`eq-grad-stl` or
    {eq}`eq-grad-score`), and takes one Adam step with step size
    {eq}`eq-grad-schedule`, until the stopping rule {eq}`eq-grad-stopping`
    holds or ``steps`` run out.  Vectorised over the samples: no Python loop
    runs over them.

    At a constant step size the iterates do not converge: they keep moving
    at a distance from the optimum set by the step size and the gradient
    noise.  A decreasing step size (``kappa`` in :math:`(1/2, 1]`) or iterate
    averaging (``average=True``) brings the returned ``q`` closer (Chapter 5
    measures both); an estimator whose variance vanishes at the optimum (STL,
    when the family contains the target) also does.

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` at the observed :math:`x`, or any log density
        known up to a constant: maps a float64 tensor of shape (S, d) to a
        tensor of shape (S,) of finite values, row by row (differentiably, for
        ``estimator="reparam"``).  Its normaliser need not be known: it only
        shifts the ELBO.
    dim : int, >= 1, optional
        :math:`d`; needed only when no starting point is given (then the fit
        starts at :math:`\mathcal N(0, I)`).
    covariance_type : {"full", "diag"}
        A full covariance (Cholesky factor) or a diagonal one (mean field).
    estimator : {"reparam", "score"}
        Pathwise gradients (needs a differentiable ``log_joint``) or
        score-function gradients (needs only its values).
    stl : bool
        "Sticking the landing" (Roeder et al., 2017): drop the score term of the
        pathwise gradient (``estimator="reparam"`` only).
    baseline : {None, "leave-one-out"}
        For ``estimator="score"``: subtract from each sample's weight the mean
        of the other samples' weights.
    loc : array of shape (d,), optional
        The starting :math:`\mu` (default zero).
    scale_tril : array of shape (d, d), optional
        The starting :math:`L` (default the identity); diagonal for
        ``covariance_type="diag"``.
    init : GaussianFit, optional
        Start from a previous fit (its ``loc`` and ``scale_tril``), instead of
        ``loc`` and ``scale_tril``.
    num_samples : int, >= 1 (>= 2 with the leave-one-out baseline)
        :math:`S`, Monte Carlo samples per step.
    steps : int, >= 1
        The largest number of Adam steps.
    lr : float, > 0
        The step size :math:`\eta` of the first step.
    tau0 : float, > 0
        :math:`\tau_0` of the schedule :math:`\eta_t = \eta\,(\tau_0 / (\tau_0 + t))^\kappa`.
    kappa : float in [0, 1]
        :math:`\kappa`; 0 (the default) keeps the step size constant, values in
        :math:`(1/2, 1]` give a Robbins–Monro sequence.  scikit-learn's online
        LDA calls these ``learning_offset`` and ``learning_decay``.
    average : bool
        Return the mean of the iterates over the last half of the windows run
        (Polyak–Ruppert tail averaging, in the unconstrained parameters)
        instead of the last iterate.
    tol : float in [0, 1)
        Stop when the mean ELBO estimate of a window of ``eval_window`` steps
        changes by less than ``tol`` relative to :math:`\max(\lvert\text{mean}\rvert, 1)`
        between consecutive windows (a variant of the rule of Stan's ADVI,
        whose ``tol_rel_obj`` defaults to 0.01); 0 runs every step, without a
        warning.
    eval_window : int, >= 1
        Steps per window of the stopping rule (Stan's ADVI compares its ELBO
        estimates every ``eval_elbo`` steps).
    seed : int in [0, 2**63 - 1]
        Seeds the :class:`torch.Generator` that draws :math:`\epsilon`.

    Returns
    -------
    GaussianFit
        ``loc`` (d,), ``scale_tril`` (d, d), ``covariance_type``,
        ``elbos`` (n_iter,): the Monte Carlo ELBO {eq}`eq-mc-elbo` of each step
        from that step's draws, at the parameters before its update;
        ``n_iter``; ``converged`` (the stopping rule held); and ``info``:

        - ``"estimator"``, ``"stl"``, ``"baseline"``, ``"num_samples"``,
          ``"average"``: the settings;
        - ``"step_sizes"``: ndarray (n_iter,), the step size of every step;
        - ``"window_means"``: ndarray, the mean ELBO estimate of every
          complete window of ``eval_window`` steps;
        - ``"relative_changes"``: ndarray, the stopping rule's relative change
          between consecutive windows (one fewer than the windows);
        - ``"last_loc"``, ``"last_scale_tril"``: the last iterate (equal to
          ``loc`` and ``scale_tril`` unless ``average=True``).

    Raises
    ------
    ValueError
        If an argument is malformed (named in the message), an option is
        unknown or used with the wrong estimator, ``log_joint`` returns a
        shape other than (S,), NaN or infinite values, or is not
        differentiable for ``estimator="reparam"``; or if the ELBO estimate or
        its gradient becomes non-finite during the fit (the message names the
        step; then try a smaller ``lr``), or the fitted scale under- or
        overflows (a diverged fit).

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the stopping rule did not hold within ``steps``.

    References
    ----------
    Ranganath, Gerrish and Blei (2014); Kucukelbir et al. (2017); Roeder, Wu
    and Duvenaud (2017); Robbins and Monro (1951); Polyak and Juditsky (1992).
    """
    check_callable(log_joint, "log_joint")
    covariance_type = check_covariance_type(covariance_type)
    estimator, stl, baseline = _check_estimator(estimator, stl, baseline)
    loc0, tril0 = _start(dim, loc, scale_tril, init, covariance_type)
    dim = loc0.shape[0]
    num_samples = _check_num_samples(num_samples, baseline, dim, dim)
    steps, lr, tau0, kappa, tol, eval_window, average = _check_schedule(
        lr, tau0, kappa, tol, eval_window, average, steps)
    generator = torch.Generator().manual_seed(check_seed(seed))
    loc_t, param = params = _leaf_params(loc0, tril0, covariance_type)

    def objective(step):
        eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
        terms, elbo_terms = _surrogate(log_joint, loc_t, param, eps, covariance_type, estimator,
                                       stl, baseline)
        return terms.mean(), elbo_terms.mean()

    result = _stochastic_ascent(objective, params, steps=steps, lr=lr, tau0=tau0,
                                kappa=kappa, average=average, tol=tol, eval_window=eval_window,
                                what="fit_gaussian")
    return _gaussian_fit(params, covariance_type, result, lr=lr, what="fit_gaussian",
                         estimator=estimator, stl=stl, baseline=baseline,
                         num_samples=num_samples, average=average)


# --------------------------------------------------------------------------- normalizing flows


def fit_flow(log_joint, flow, *, num_samples, steps, lr, tau0=100.0, kappa=0.0, average=False,
             tol=1e-3, eval_window=100, seed) -> FlowFit:
    r"""Fit a normalizing flow to a log density known up to a constant, by black-box VI.

    Implements {eq}`eq-flow-elbo` of Chapter 9 with the loop of
    :func:`fit_gaussian` ({prf:ref}`alg-grad-bbvi` of Chapter 5): each step
    draws :math:`\epsilon^{(1)}, \dots, \epsilon^{(S)} \sim \mathcal N(0, I)`, pushes
    them through the flow, :math:`(z^{(s)}, \log q(z^{(s)}))` = ``flow(eps)``, and takes one Adam
    step on the pathwise gradient of

    .. math::

        \hat{\mathcal L} = \frac1S \sum_{s=1}^S \big[\log \hat p(z^{(s)}) - \log q(z^{(s)})\big],

    whose value is also the step's recorded ELBO estimate.  The step size
    {eq}`eq-grad-schedule`, iterate averaging, the stopping rule
    {eq}`eq-grad-stopping` and the checks for a bound or gradient that breaks
    down are those of :func:`fit_gaussian` (one driver).  Vectorised over the
    samples: no Python loop runs over them.

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` or any log density known up to a constant: maps a
        float64 tensor of shape (S, d) to a tensor of shape (S,) of finite
        values, row by row, differentiably.
    flow : vicourse.flows.Flow
        The family and its starting point; it is copied, not changed.  Its
        parameters with ``requires_grad=False`` are held fixed (to fix the
        base, say).
    num_samples : int, >= 1
        :math:`S`, Monte Carlo samples per step.
    steps : int, >= 1
        The largest number of Adam steps.
    lr, tau0, kappa, average, tol, eval_window
        As in :func:`fit_gaussian`; averaging applies to every parameter of
        the flow.
    seed : int in [0, 2**63 - 1]
        Seeds the :class:`torch.Generator` that draws :math:`\epsilon`.

    Returns
    -------
    FlowFit
        ``flow`` (the fitted copy), ``elbos`` (n_iter,): the Monte Carlo ELBO
        of each step from that step's draws, at the parameters before its
        update; ``n_iter``; ``converged``; and ``info``: ``"num_samples"``,
        ``"average"``, ``"step_sizes"``, ``"window_means"``,
        ``"relative_changes"`` as in :func:`fit_gaussian`, and
        ``"last_flow"``, the last iterate (the same object as ``flow`` unless
        ``average=True``).

    Raises
    ------
    ValueError
        If an argument is malformed (named in the message), ``log_joint``
        returns a shape other than (S,), NaN or infinite values, or values
        that do not depend on its input through torch operations; or if the
        ELBO estimate or its gradient becomes non-finite during the fit (the
        message names the step; then try a smaller ``lr``), or the scale of
        the fitted base under- or overflows (a diverged fit).

    Warns
    -----
    ConvergenceWarning
        If ``tol > 0`` and the stopping rule did not hold within ``steps``.

    References
    ----------
    Rezende and Mohamed (2015); Kucukelbir et al. (2017).
    """
    check_callable(log_joint, "log_joint")
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a vicourse.flows.Flow; got {_describe(flow)}")
    num_samples = flow._check_num_samples(num_samples)
    steps, lr, tau0, kappa, tol, eval_window, average = _check_schedule(
        lr, tau0, kappa, tol, eval_window, average, steps)
    generator = torch.Generator().manual_seed(check_seed(seed))
    flow = copy.deepcopy(flow)
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("flow must have at least one parameter with requires_grad=True to fit; "
                         "got none (every parameter is frozen)")
    dim = flow.dim

    def objective(step):
        eps = torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
        z, log_q = flow._push(eps)
        log_p = call_log_density(log_joint, z, "log_joint", differentiable=True)
        terms = log_p - log_q
        surrogate = terms.mean()
        return surrogate, surrogate.detach()

    result = _stochastic_ascent(objective, params, steps=steps, lr=lr, tau0=tau0, kappa=kappa,
                                average=average, tol=tol, eval_window=eval_window,
                                what="fit_flow")
    last = flow
    if result.averaged is not None:
        flow = copy.deepcopy(last)
        with torch.no_grad():
            trainable = [p for p in flow.parameters() if p.requires_grad]
            for p, mean in zip(trainable, result.averaged, strict=True):
                p.copy_(mean)
    with torch.no_grad():
        diagonal = flow.scale_tril.diagonal()
    if not bool(((diagonal > 0) & torch.isfinite(diagonal)).all()):
        raise ValueError(f"fit_flow diverged: after {result.n_iter} steps the scale of the base "
                         f"has under- or overflowed (smallest diagonal of its scale_tril "
                         f"{float(diagonal.min()):.3g}, largest {float(diagonal.max()):.3g}); try "
                         f"a smaller lr (now {lr:g}) or a decreasing step size (kappa > 0.5)")
    info = {"num_samples": num_samples, "average": average, **result.info(), "last_flow": last}
    return FlowFit(flow=flow, elbos=result.elbos, n_iter=result.n_iter,
                   converged=result.converged, info=info)


# --------------------------------------------------------------------------- the chapter's model


def logistic_regression_log_joint(X, y) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The log joint of Bayesian logistic regression with a standard normal prior.

    Implements {eq}`eq-grad-logreg` of Chapter 5: for inputs :math:`x_i` (the
    rows of ``X``), labels :math:`y_i \in \{0, 1\}` and weights
    :math:`z \sim \mathcal N(0, I)`,

    .. math::

        \log p(y, z \mid X) = \sum_{i=1}^n \big[y_i\, x_i^\top z
            - \log(1 + e^{x_i^\top z})\big] - \tfrac12 \lVert z \rVert^2
            - \tfrac d2 \log 2\pi .

    The bracket is the Bernoulli log-likelihood
    :math:`y_i \log \sigma(a_i) + (1 - y_i) \log(1 - \sigma(a_i))` of the logit
    :math:`a_i = x_i^\top z`, written without forming the sigmoid:
    :math:`\log(1 + e^{a})` is ``softplus``, exact for logits of any size
    (``log(sigmoid(a))`` underflows to ``-inf`` for :math:`a < -745`).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The inputs :math:`x_i`.
    y : array of shape (n_samples,)
        The labels, each 0 or 1.

    Returns
    -------
    log_joint : callable
        Maps a float64 tensor of weights of shape (S, n_features) to the tensor
        of shape (S,) of their log joints, through differentiable torch
        operations (the log-density convention of the package, so it can be
        handed to :func:`fit_gaussian`, :func:`elbo_grads` or
        :func:`vicourse.kl.i_projection`).  It forms the logits of a block of
        rows at a time, at most 32 MiB of them.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, ``y`` not a 1-D array of zeros and
        ones with one label per row of ``X``; and, when the callable is
        called, if its input is not of shape (S, n_features).
    """
    X = as_float_array(X, "X", ndim=2)
    y = as_float_array(y, "y", ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have one label per row of X ({X.shape[0]}); got {y.shape[0]}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y must hold labels 0 and 1 only; got {np.setdiff1d(y, [0, 1])[:3]}")
    X_t, y_t = torch.from_numpy(X.copy()), torch.from_numpy(y.copy())
    n, dim = X.shape
    log_prior_constant = -0.5 * dim * _LOG_2PI
    rows_per_block = max(1, _LOGIT_BLOCK // n)

    def _log_likelihood(z):
        logits = z @ X_t.T  # (rows, n)
        return (y_t * logits - torch.nn.functional.softplus(logits)).sum(-1)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != dim:
            raise ValueError(f"log_joint takes weights z of shape (S, {dim}); got "
                             f"{_describe(z)}")
        z = z.to(torch.float64)
        if z.shape[0] <= rows_per_block:  # the usual case: one block, no copies
            log_lik = _log_likelihood(z)
        else:
            log_lik = torch.cat([_log_likelihood(block)
                                 for block in torch.split(z, rows_per_block)])
        return log_lik - 0.5 * z.square().sum(-1) + log_prior_constant

    return log_joint
