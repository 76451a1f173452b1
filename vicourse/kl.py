"""KL divergence in both directions, the choice of family, unnormalised targets (Chapter 4).

Two ways to fit a Gaussian :math:`q` to a target :math:`p`:

* the **M-projection** :math:`\\arg\\min_q \\mathrm{KL}(p \\,\\|\\, q)`, which for a
  Gaussian family matches moments (:func:`m_projection`);
* the **I-projection** :math:`\\arg\\min_q \\mathrm{KL}(q \\,\\|\\, p)`, which needs only
  an unnormalised :math:`\\hat p` because
  :math:`\\mathrm{KL}(q \\,\\|\\, \\hat p / Z) = \\mathrm{KL}(q \\,\\|\\, \\hat p) + \\log Z`
  (:func:`i_projection`, :func:`gaussian_elbo`).

The chapter's targets are built here too, so that every chapter fits the same
ones: :func:`correlated_gaussian`, :func:`two_component_mixture`,
:func:`banana` and :func:`neal_funnel`, each a float64
:class:`torch.distributions.Distribution` whose ``log_prob`` is a log-density
callable.

Conventions (CONTRIBUTING.md)
-----------------------------
A log-density callable maps a float64 :class:`torch.Tensor` of points of shape
``(S, d)`` to a tensor of shape ``(S,)``.  The target of an ELBO or an
I-projection is called ``log_joint`` (:math:`\\log \\hat p`, known up to its
normaliser :math:`Z`); functions of two normalised densities call them
``log_p`` and ``log_q``.  A Gaussian is ``loc`` and ``covariance_matrix`` (or
``scale_tril``), as in :class:`torch.distributions.MultivariateNormal`.  The
fits return :class:`vicourse.GaussianFit`.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import ThreadpoolController
from torch.distributions import (
    Categorical,
    Distribution,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    constraints,
)

from vicourse._gaussian import (
    GaussianFit,
    check_covariance_type,
    check_loc_matrix,
    check_loc_scale_tril,
)
from vicourse._random import sample
from vicourse._validation import (
    _describe,
    as_float_array,
    as_float_tensor,
    call_log_density,
    check_bool,
    check_callable,
    check_choice,
    check_generator,
    check_in_interval,
    check_int,
    check_probability_vector,
    check_scalar,
    check_spd,
)
from vicourse.exceptions import ConvergenceWarning

__all__ = [
    "MAX_NUM_NODES",
    "MAX_RULE_BYTES",
    "banana",
    "correlated_gaussian",
    "gaussian_elbo",
    "gaussian_entropy",
    "gaussian_expectation",
    "i_projection",
    "js_divergence",
    "js_projection",
    "kl_gaussian",
    "kl_monte_carlo",
    "m_projection",
    "neal_funnel",
    "two_component_mixture",
]

_LOG_2PI = math.log(2.0 * math.pi)
_METHODS = ("quadrature", "cubature", "monte_carlo")
#: The most memory, in bytes, that the points of one expectation rule (or one
#: batch of Gaussians in :func:`kl_gaussian`) may take: 1 GiB.  Larger requests
#: are refused before anything is allocated, naming the argument to lower.
MAX_RULE_BYTES = 2**30
#: The most Gauss--Hermite nodes per axis: numpy's ``hermegauss`` returns NaN
#: weights from 372 nodes on.
MAX_NUM_NODES = 300
_FLOAT = 8   # bytes per float64
_NO_SHAPE = torch.Size()


# --------------------------------------------------------------------------- validation


def _check_loc_cov(loc, covariance_matrix, loc_name: str, cov_name: str):
    """A single Gaussian as float64 arrays: ``loc`` (d,), ``covariance_matrix`` (d, d), SPD."""
    loc, cov = check_loc_matrix(loc, covariance_matrix, loc_name, cov_name)
    return loc, check_spd(cov, cov_name)


def _rule_bytes(d: int, method: str, num_nodes: int, num_samples: int) -> int:
    """Bytes the points of a rule take: noise, points, weights and values."""
    per_point = _FLOAT * (2 * d + 2)
    if method == "quadrature":
        return num_nodes**d * per_point
    if method == "cubature":
        return 2 * d * per_point
    return num_samples * per_point


def _check_rule(method, num_nodes, num_samples, generator, d: int, *, sets: int = 1):
    """Validate the rule's arguments and refuse a rule larger than :data:`MAX_RULE_BYTES`."""
    check_choice(method, "method", _METHODS)
    num_nodes = check_int(num_nodes, "num_nodes", minimum=1, maximum=MAX_NUM_NODES)
    num_samples = check_int(num_samples, "num_samples", minimum=2)
    generator = check_generator(generator)
    size = sets * _rule_bytes(d, method, num_nodes, num_samples)
    if size > MAX_RULE_BYTES:
        name = {"quadrature": "num_nodes", "monte_carlo": "num_samples"}.get(method, "method")
        detail = (f"num_nodes ** d = {num_nodes}**{d} points" if method == "quadrature"
                  else f"{num_samples} draws" if method == "monte_carlo" else f"d = {d}")
        raise ValueError(f"{name} asks for a rule of about {size / 2**30:.3g} GiB ({detail}), more "
                         f"than the {MAX_RULE_BYTES / 2**30:g} GiB allowed; lower {name}"
                         + (", or use method='cubature' or 'monte_carlo' in high dimension"
                            if method == "quadrature" else ""))
    return method, num_nodes, num_samples, generator


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


@functools.lru_cache(maxsize=32)
def _hermite_rule(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss--Hermite nodes and weights for E over N(0, 1); nodes of zero weight dropped."""
    # hermegauss diagonalises a num_nodes x num_nodes matrix: one BLAS thread, because
    # handing it to a second one cost a hundred times as much on a busy machine.
    with _threadpools().limit(limits=1, user_api="blas"):
        nodes, w = hermegauss(num_nodes)    # weight function exp(-x^2 / 2)
    w = w / math.sqrt(2.0 * math.pi)         # a probability vector: E over N(0, 1)
    keep = w > 0
    nodes, w = nodes[keep], w[keep]
    nodes.flags.writeable = False
    w.flags.writeable = False
    return nodes, w


def _rule(d: int, method: str, num_nodes: int, num_samples: int,
          generator: torch.Generator | None):
    """Points ``eps`` (m, d) and weights (m,) with sum_j w_j f(eps_j) ~ E f(eps), eps ~ N(0, I).

    Nodes whose weight underflows to zero are dropped (so that 0 * -inf never occurs).
    """
    if method == "quadrature":
        nodes, w = _hermite_rule(num_nodes)
        grids = np.meshgrid(*([nodes] * d), indexing="ij")
        eps = np.stack([g.ravel() for g in grids], axis=1)
        weights = np.ones(eps.shape[0])
        for g in np.meshgrid(*([w] * d), indexing="ij"):
            weights *= g.ravel()
        return torch.from_numpy(eps), torch.from_numpy(weights)
    if method == "cubature":
        # The third-degree spherical-radial rule: 2d points +-sqrt(d) e_i, equal weights.
        eye = math.sqrt(d) * torch.eye(d, dtype=torch.float64)
        return torch.cat([eye, -eye]), torch.full((2 * d,), 1.0 / (2 * d), dtype=torch.float64)
    eps = torch.randn(num_samples, d, generator=generator, dtype=torch.float64)
    return eps, torch.full((num_samples,), 1.0 / num_samples, dtype=torch.float64)


def _as_batched_tensor(value, name: str, min_ndim: int) -> torch.Tensor:
    tensor = as_float_tensor(value, name)
    if tensor.ndim < min_ndim:
        shape = "(..., d)" if min_ndim == 1 else "(..., d, d)"
        raise ValueError(f"{name} must have shape {shape}; got shape {tuple(tensor.shape)}")
    return tensor


def _cholesky(cov: torch.Tensor, name: str) -> torch.Tensor:
    """Cholesky factors of a batch of covariance matrices, checked symmetric positive definite."""
    detached = cov.detach()
    scale = max(float(detached.abs().max()), 1e-300)
    if not bool(torch.allclose(detached, detached.mT, rtol=0.0, atol=1e-8 * scale)):
        raise ValueError(f"{name} must be symmetric; got an asymmetric matrix")
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be positive definite; Cholesky factorisation failed for "
                         f"{int((info != 0).sum())} of {info.numel()} matrices")
    return chol


# --------------------------------------------------------------------------- closed forms


def kl_gaussian(loc_p, covariance_matrix_p, loc_q, covariance_matrix_q):
    r"""KL divergence between multivariate Gaussians in closed form, batched and differentiable.

    Implements {eq}`eq-kl-gaussian` of Chapter 4 (the definition is
    {eq}`eq-kl-def` of Chapter 1):

    .. math::

        \mathrm{KL}\big(\mathcal N(\mu_p, \Sigma_p) \,\|\, \mathcal N(\mu_q, \Sigma_q)\big)
        = \tfrac12 \Big[\operatorname{tr}(\Sigma_q^{-1}\Sigma_p)
          + (\mu_q - \mu_p)^\top \Sigma_q^{-1} (\mu_q - \mu_p) - d
          + \log\det\Sigma_q - \log\det\Sigma_p\Big].

    With Cholesky factors :math:`\Sigma = L L^\top`, the trace is
    :math:`\|L_q^{-1} L_p\|_F^2`, the quadratic form is
    :math:`\|L_q^{-1}(\mu_q - \mu_p)\|^2` and :math:`\log\det\Sigma = 2\sum_i \log L_{ii}`:
    triangular solves, no inverse.  Written in torch, so it is batched over
    leading dimensions (which broadcast, as in
    :func:`torch.distributions.kl_divergence`) and differentiable.

    Parameters
    ----------
    loc_p : array or tensor of shape (..., d)
    covariance_matrix_p : array or tensor of shape (..., d, d), symmetric positive definite
    loc_q : array or tensor of shape (..., d)
    covariance_matrix_q : array or tensor of shape (..., d, d), symmetric positive definite

    Returns
    -------
    tensor, float or ndarray of the broadcast batch shape
        :math:`\mathrm{KL}(p \,\|\, q) \ge 0`, zero if and only if the two are
        equal.  A float64 tensor, differentiable with respect to every tensor
        argument, if any argument is a tensor; otherwise a float (no batch
        dimensions) or a float64 ndarray.

    Raises
    ------
    ValueError
        Naming the argument: not real numbers, NaN or infinite entries, a
        ``meta`` tensor, shapes that disagree or do not broadcast, a
        covariance that is not symmetric positive definite, or a batch larger
        than :data:`MAX_RULE_BYTES`.

    References
    ----------
    Murphy (2023), Section 5.1 (KL divergence); Bishop (2006), Exercise 2.13.
    """
    torch_in = any(isinstance(v, torch.Tensor)
                   for v in (loc_p, covariance_matrix_p, loc_q, covariance_matrix_q))
    loc_p = _as_batched_tensor(loc_p, "loc_p", 1)
    cov_p = _as_batched_tensor(covariance_matrix_p, "covariance_matrix_p", 2)
    loc_q = _as_batched_tensor(loc_q, "loc_q", 1)
    cov_q = _as_batched_tensor(covariance_matrix_q, "covariance_matrix_q", 2)
    d = loc_p.shape[-1]
    for name, value in (("covariance_matrix_p", cov_p), ("covariance_matrix_q", cov_q)):
        if value.shape[-2:] != (d, d):
            raise ValueError(f"{name} must have shape (..., {d}, {d}) to match loc_p of shape "
                             f"{tuple(loc_p.shape)}; got shape {tuple(value.shape)}")
    if loc_q.shape[-1] != d:
        raise ValueError(f"loc_q must have shape (..., {d}) to match loc_p of shape "
                         f"{tuple(loc_p.shape)}; got shape {tuple(loc_q.shape)}")
    try:
        batch = torch.broadcast_shapes(loc_p.shape[:-1], cov_p.shape[:-2], loc_q.shape[:-1],
                                       cov_q.shape[:-2])
    except RuntimeError:
        raise ValueError("loc_p, covariance_matrix_p, loc_q and covariance_matrix_q must have "
                         "batch shapes that broadcast; got "
                         f"{tuple(loc_p.shape)}, {tuple(cov_p.shape)}, {tuple(loc_q.shape)}, "
                         f"{tuple(cov_q.shape)}") from None
    size = _FLOAT * math.prod(batch) * (3 * d * d + 2 * d)
    if size > MAX_RULE_BYTES:
        raise ValueError(f"loc_p, covariance_matrix_p, loc_q and covariance_matrix_q broadcast to "
                         f"batch shape {tuple(batch)}: about {size / 2**30:.3g} GiB, more than the "
                         f"{MAX_RULE_BYTES / 2**30:g} GiB allowed; pass fewer pairs at a time")
    chol_p = _cholesky(cov_p, "covariance_matrix_p")
    chol_q = _cholesky(cov_q, "covariance_matrix_q")
    chol_q_b = chol_q.expand(*batch, d, d)
    whitened_p = torch.linalg.solve_triangular(chol_q_b, chol_p.expand(*batch, d, d), upper=False)
    trace = whitened_p.square().sum((-2, -1))
    diff = (loc_q - loc_p).expand(*batch, d).unsqueeze(-1)
    maha = torch.linalg.solve_triangular(chol_q_b, diff, upper=False).square().sum((-2, -1))
    logdet_q = 2.0 * torch.log(torch.diagonal(chol_q, dim1=-2, dim2=-1)).sum(-1)
    logdet_p = 2.0 * torch.log(torch.diagonal(chol_p, dim1=-2, dim2=-1)).sum(-1)
    value = 0.5 * (trace + maha - d + logdet_q - logdet_p)
    # Rounding can leave -1e-16 when p == q; KL is non-negative by Gibbs' inequality.
    value = value.clamp_min(0.0)
    if torch_in:
        return value
    value = value.detach().numpy()
    return float(value) if value.ndim == 0 else value


def gaussian_entropy(covariance_matrix) -> float:
    r"""Differential entropy of :math:`\mathcal N(\mu, \Sigma)` in nats.

    .. math::

        \mathbb H[q] = \tfrac d2 (1 + \log 2\pi) + \tfrac12 \log\det\Sigma .

    Parameters
    ----------
    covariance_matrix : array of shape (d, d), symmetric positive definite

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``covariance_matrix`` is not a symmetric positive definite (d, d) matrix.
    """
    cov = as_float_array(covariance_matrix, "covariance_matrix", ndim=2)
    cov = check_spd(cov, "covariance_matrix")
    logdet = 2.0 * np.sum(np.log(np.diag(np.linalg.cholesky(cov))))
    return float(0.5 * cov.shape[0] * (1.0 + _LOG_2PI) + 0.5 * logdet)


def m_projection(weights, means, covariances) -> tuple[np.ndarray, np.ndarray]:
    r"""The M-projection of a Gaussian mixture onto the Gaussians: moment matching.

    Implements {eq}`eq-kl-m-projection` for a Gaussian family, in the closed form
    {eq}`eq-kl-moment-matching` of Chapter 4.  Over all Gaussians
    :math:`q`, :math:`\mathrm{KL}(p \,\|\, q)` is minimised by the Gaussian with
    the mean and covariance of :math:`p`; for
    :math:`p = \sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` these are

    .. math::

        \mu = \sum_k \pi_k \mu_k, \qquad
        \Sigma = \sum_k \pi_k \big[\Sigma_k + (\mu_k - \mu)(\mu_k - \mu)^\top\big]

    (the law of total covariance).

    Parameters
    ----------
    weights : array of shape (n_components,)
        Mixture weights :math:`\pi_k`, non-negative, summing to one.
    means : array of shape (n_components, d)
    covariances : array of shape (n_components, d, d), each symmetric positive definite
        The names and shapes of scikit-learn's ``GaussianMixture`` (``weights_``,
        ``means_``, ``covariances_`` with ``covariance_type="full"``).

    Returns
    -------
    loc : ndarray of shape (d,)
    covariance_matrix : ndarray of shape (d, d)

    Raises
    ------
    ValueError
        If ``weights`` is not a probability vector, a covariance is not
        symmetric positive definite, the shapes disagree, or the means are so
        far apart that the covariance overflows float64.

    References
    ----------
    Bishop (2006), Section 10.7 (moment matching); Minka (2005).
    """
    weights = as_float_array(weights, "weights", ndim=1)
    weights = check_probability_vector(weights, "weights")
    means = as_float_array(means, "means", ndim=2)
    k, d = means.shape
    if weights.shape[0] != k:
        raise ValueError(f"weights must have one entry per row of means ({k}); "
                         f"got {weights.shape[0]}")
    covariances = as_float_array(covariances, "covariances", ndim=3)
    if covariances.shape != (k, d, d):
        raise ValueError(f"covariances must have shape ({k}, {d}, {d}) to match means; "
                         f"got {covariances.shape}")
    covariances = check_spd(covariances, "covariances")
    loc = weights @ means
    centred = means - loc
    cov = (np.einsum("k,kij->ij", weights, covariances)
           + np.einsum("k,ki,kj->ij", weights, centred, centred))
    if not np.all(np.isfinite(cov)):
        raise ValueError("means must lie close enough together for the mixture's covariance "
                         "to fit in float64; it overflows, with means up to "
                         f"{float(np.abs(centred).max()):.3g} from their average: rescale z")
    return loc, 0.5 * (cov + cov.T)


# --------------------------------------------------------------------------- expectations


def gaussian_expectation(f, loc, covariance_matrix, *, method: str = "quadrature",
                         num_nodes: int = 64, num_samples: int = 1000,
                         generator: torch.Generator | None = None) -> float:
    r"""The expectation :math:`\mathbb E_{\mathcal N(\mu, \Sigma)}[f(z)]` by a fixed rule.

    Every rule writes :math:`z = \mu + L\epsilon` with :math:`\Sigma = L L^\top`
    and :math:`\epsilon \sim \mathcal N(0, I)`, and replaces the expectation
    over :math:`\epsilon` by a weighted sum :math:`\sum_j w_j f(\mu + L \epsilon_j)`:

    ``"quadrature"``
        Tensor-product Gauss--Hermite (``numpy.polynomial.hermite_e.hermegauss``),
        ``num_nodes`` per axis, :math:`n^d` points.  Exact for polynomials of
        degree :math:`\le 2n - 1` in each coordinate and converging
        geometrically fast for smooth :math:`f`; the cost grows exponentially
        with :math:`d`, so use it for :math:`d \lesssim 4`.
    ``"cubature"``
        The third-degree spherical-radial rule: :math:`2d` points
        :math:`\epsilon = \pm\sqrt d\, e_i` with weights :math:`1/(2d)`
        (Arasaratnam and Haykin, 2009).  Exact when :math:`f` is a polynomial
        of degree at most 3 (the log-density of a Gaussian target is one, of
        degree 2); an approximation otherwise.  Cost linear in :math:`d`.
    ``"monte_carlo"``
        ``num_samples`` draws of :math:`\epsilon` from ``generator``: unbiased,
        error :math:`O(S^{-1/2})`.

    A rule whose points would take more than :data:`MAX_RULE_BYTES` is
    refused before anything is allocated.

    Parameters
    ----------
    f : callable
        Maps a float64 tensor of points of shape ``(S, d)`` to a tensor (or
        array) of shape ``(S,)``; ``-inf`` is allowed and makes the result ``-inf``.
    loc : array of shape (d,)
    covariance_matrix : array of shape (d, d), symmetric positive definite
    method : {"quadrature", "cubature", "monte_carlo"}
    num_nodes : int, in [1, MAX_NUM_NODES]
        Gauss--Hermite nodes per axis (``"quadrature"`` only).
    num_samples : int, >= 2
        Monte Carlo draws (``"monte_carlo"`` only).
    generator : torch.Generator, optional
        Source of the Monte Carlo draws.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Naming the argument: ``f`` not callable or returning the wrong shape,
        NaN or ``+inf``; ``covariance_matrix`` not symmetric positive definite
        or not matching ``loc``; an unknown ``method``; ``num_nodes`` above
        :data:`MAX_NUM_NODES`; a rule larger than :data:`MAX_RULE_BYTES`
        (naming ``num_nodes`` or ``num_samples``).

    References
    ----------
    Arasaratnam, I. and Haykin, S. (2009), Cubature Kalman filters, IEEE TAC 54(6).
    """
    check_callable(f, "f")
    loc, cov = _check_loc_cov(loc, covariance_matrix, "loc", "covariance_matrix")
    rule = _check_rule(method, num_nodes, num_samples, generator, loc.shape[0])
    return _expectation(f, "f", loc, cov, *rule)


def _expectation(f, name: str, loc: np.ndarray, cov: np.ndarray, *rule) -> float:
    """sum_j w_j f(loc + L eps_j) for validated arguments; -inf if f is -inf at a node."""
    eps, w = _rule(loc.shape[0], *rule)
    points = torch.from_numpy(loc) + eps @ torch.from_numpy(np.linalg.cholesky(cov)).T
    with torch.no_grad():
        values = call_log_density(f, points, name, allow_neg_inf=True)
    if bool(torch.isneginf(values).any()):
        return -math.inf
    return float(w @ values)


def gaussian_elbo(log_joint, loc, covariance_matrix, *, method: str = "quadrature",
                  num_nodes: int = 64, num_samples: int = 1000,
                  generator: torch.Generator | None = None) -> float:
    r"""The ELBO of :math:`q = \mathcal N(\mu, \Sigma)` for an unnormalised log-density.

    Implements {eq}`eq-kl-unnormalised` of Chapter 4 (the ELBO of
    {eq}`eq-elbo-def`, Chapter 1, with :math:`\hat p` in place of :math:`p(x, z)`):

    .. math::

        \mathcal L(q) = \mathbb E_q[\log \hat p(z)] + \mathbb H[q]
                      = -\mathrm{KL}(q \,\|\, \hat p)
                      = \log Z - \mathrm{KL}(q \,\|\, \hat p / Z),

    with the entropy in closed form (:func:`gaussian_entropy`) and the
    expectation by :func:`gaussian_expectation`.

    Parameters
    ----------
    log_joint : callable
        :math:`\log \hat p`, a log-density callable (see the module docstring).
    loc : array of shape (d,)
    covariance_matrix : array of shape (d, d), symmetric positive definite
    method, num_nodes, num_samples, generator
        The rule for :math:`\mathbb E_q`, as in :func:`gaussian_expectation`.

    Returns
    -------
    float
        ``-inf`` if ``log_joint`` is ``-inf`` at a point the rule puts weight on
        (then :math:`q` has mass where :math:`\hat p = 0` and the KL is infinite).

    Raises
    ------
    ValueError
        As :func:`gaussian_expectation`, naming ``log_joint`` for a bad callable.
    """
    check_callable(log_joint, "log_joint")
    loc, cov = _check_loc_cov(loc, covariance_matrix, "loc", "covariance_matrix")
    rule = _check_rule(method, num_nodes, num_samples, generator, loc.shape[0])
    return _expectation(log_joint, "log_joint", loc, cov, *rule) + gaussian_entropy(cov)


# --------------------------------------------------------------------------- Monte Carlo KL


def _max_draws(event_numel: int) -> int:
    """The most draws whose points and two log-densities fit in :data:`MAX_RULE_BYTES`."""
    return MAX_RULE_BYTES // (_FLOAT * (event_numel + 2))


def _check_distribution(value, name: str) -> Distribution:
    if not isinstance(value, Distribution) or value.batch_shape != torch.Size([]):
        raise ValueError(f"{name} must be a torch.distributions.Distribution with batch_shape (); "
                         f"got {_describe(value)}"
                         + (f" with batch_shape {tuple(value.batch_shape)}"
                            if isinstance(value, Distribution) else ""))
    return value


def kl_monte_carlo(log_p, log_q, sample_p, num_samples: int,
                   generator: torch.Generator | None = None) -> tuple[float, float]:
    r"""Monte Carlo estimate of :math:`\mathrm{KL}(p \,\|\, q)` with its standard error.

    Implements {eq}`eq-kl-def` of Chapter 1 as a sample average:

    .. math::

        \widehat{\mathrm{KL}} = \frac1S \sum_{s=1}^S \big[\log p(z^{(s)}) - \log q(z^{(s)})\big],
        \qquad z^{(s)} \sim p,

    unbiased, with standard error the sample standard deviation of the
    summands over :math:`\sqrt S`.  Both log-densities must be normalised.

    Parameters
    ----------
    log_p, log_q : callable
        Map the batch of samples (shape ``(S, ...)``) to ``S`` log-densities.
    sample_p : torch.distributions.Distribution or callable
        A distribution with empty batch shape, or a callable
        ``sample_p(num_samples, generator)`` returning ``num_samples`` draws of :math:`p`.
    num_samples : int, >= 2
        At most what fits in :data:`MAX_RULE_BYTES`.
    generator : torch.Generator, optional
        Source of randomness; the global torch state is left untouched.

    Returns
    -------
    estimate, standard_error : float

    Raises
    ------
    ValueError
        Naming the argument: a callable missing or returning the wrong shape
        or a non-finite value, ``sample_p`` not a distribution or returning the
        wrong number of draws, ``num_samples`` not an integer in range.
    """
    check_callable(log_p, "log_p")
    check_callable(log_q, "log_q")
    if isinstance(sample_p, Distribution):
        _check_distribution(sample_p, "sample_p")
        event = math.prod(sample_p.event_shape)
    elif callable(sample_p):
        event = 1
    else:
        raise ValueError(f"sample_p must be a torch distribution or a callable; "
                         f"got {_describe(sample_p)}")
    num_samples = check_int(num_samples, "num_samples", minimum=2, maximum=_max_draws(event))
    generator = check_generator(generator)
    with torch.no_grad():
        if isinstance(sample_p, Distribution):
            z = sample(sample_p, (num_samples,), generator)
        else:
            z = sample_p(num_samples, generator)
            if not isinstance(z, torch.Tensor):
                z = torch.from_numpy(as_float_array(z, "the output of sample_p"))
            if z.shape[:1] != (num_samples,):
                raise ValueError(f"sample_p must return {num_samples} draws along the first "
                                 f"axis; got shape {tuple(z.shape)}")
        terms = (call_log_density(log_p, z, "log_p") - call_log_density(log_q, z, "log_q")).numpy()
    return float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(num_samples))


# --------------------------------------------------------------------------- Jensen-Shannon


def _js_terms(log_p, log_q):
    """Per-point log p - log m and log q - log m, m = (p + q) / 2, in log space."""
    log_m = np.logaddexp(log_p, log_q) - math.log(2.0)
    return log_p - log_m, log_q - log_m


def _check_points(points, d: int | None = None) -> torch.Tensor:
    points = as_float_array(points, "points", ndim=2)
    if d is not None and points.shape[1] != d:
        raise ValueError(f"points must have {d} columns to match init_loc; "
                         f"got shape {points.shape}")
    return torch.from_numpy(points)


def js_divergence(log_p, log_q, *, method: str = "grid", points=None, sample_p=None,
                  sample_q=None, num_samples: int = 10_000,
                  generator: torch.Generator | None = None):
    r"""The Jensen--Shannon divergence :math:`\mathrm{JS}(p, q)`, on a grid or by Monte Carlo.

    Implements {eq}`eq-kl-js` of Chapter 4:

    .. math::

        \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),
        \qquad m = \tfrac12 (p + q),

    symmetric, with :math:`0 \le \mathrm{JS} \le \log 2`.

    ``method="grid"``
        Evaluates both densities at ``points`` (a grid covering the mass of
        both), normalises each to a probability vector over the grid and
        returns the JS divergence of those two discrete distributions.  The
        bounds then hold exactly; the value converges to the continuous JS as
        a regular grid is refined and widened.  ``log_p`` and ``log_q`` may be
        unnormalised.
    ``method="monte_carlo"``
        Draws ``num_samples`` from each of ``sample_p`` and ``sample_q`` and
        averages :math:`\tfrac12[\log p - \log m]` under :math:`p` plus
        :math:`\tfrac12[\log q - \log m]` under :math:`q`; ``log_p`` and
        ``log_q`` must be normalised.  Returns ``(estimate, standard_error)``.

    Parameters
    ----------
    log_p, log_q : callable
        Log-density callables (see the module docstring).
    method : {"grid", "monte_carlo"}
    points : array of shape (m, d)
        The grid (``"grid"`` only).
    sample_p, sample_q : torch.distributions.Distribution
        Distributions with empty batch shape (``"monte_carlo"`` only).
    num_samples : int, >= 2
    generator : torch.Generator, optional

    Returns
    -------
    float (``"grid"``) or (estimate, standard_error) (``"monte_carlo"``)

    Raises
    ------
    ValueError
        Naming the argument: an unknown ``method``, the arguments its method
        needs missing or malformed, or a log-density returning the wrong shape
        or NaN (or ``-inf`` everywhere on the grid).

    References
    ----------
    Lin (1991).
    """
    check_callable(log_p, "log_p")
    check_callable(log_q, "log_q")
    check_choice(method, "method", ("grid", "monte_carlo"))
    if method == "grid":
        if points is None:
            raise ValueError("points must be given for method='grid'; got None")
        points = _check_points(points)
        with torch.no_grad():
            lp = call_log_density(log_p, points, "log_p", allow_neg_inf=True).numpy()
            lq = call_log_density(log_q, points, "log_q", allow_neg_inf=True).numpy()
        for name, values in (("log_p", lp), ("log_q", lq)):
            if np.all(np.isneginf(values)):
                raise ValueError(f"{name} must be finite somewhere on points; got -inf everywhere")
        lp, lq = lp - logsumexp(lp), lq - logsumexp(lq)
        # Sum only where each distribution has mass (0 log 0 = 0); there log m is finite.
        on_p, on_q = np.isfinite(lp), np.isfinite(lq)
        tp, _ = _js_terms(lp[on_p], lq[on_p])
        _, tq = _js_terms(lp[on_q], lq[on_q])
        js = 0.5 * (np.exp(lp[on_p]) @ tp + np.exp(lq[on_q]) @ tq)
        # Rounding can step a hair outside the bounds that hold exactly.
        return float(np.clip(js, 0.0, math.log(2.0)))
    dist_p = _check_distribution(sample_p, "sample_p")
    dist_q = _check_distribution(sample_q, "sample_q")
    event = max(math.prod(dist_p.event_shape), math.prod(dist_q.event_shape))
    num_samples = check_int(num_samples, "num_samples", minimum=2, maximum=_max_draws(event) // 2)
    generator = check_generator(generator)
    with torch.no_grad():
        zp = sample(dist_p, (num_samples,), generator)
        zq = sample(dist_q, (num_samples,), generator)
        tp, _ = _js_terms(call_log_density(log_p, zp, "log_p").numpy(),
                          call_log_density(log_q, zp, "log_q").numpy())
        _, tq = _js_terms(call_log_density(log_p, zq, "log_p").numpy(),
                          call_log_density(log_q, zq, "log_q").numpy())
    estimate = 0.5 * (tp.mean() + tq.mean())
    standard_error = 0.5 * math.sqrt((tp.var(ddof=1) + tq.var(ddof=1)) / num_samples)
    return float(estimate), float(standard_error)


# --------------------------------------------------------------------------- fitting


class _Parameters:
    """Pack a Gaussian's ``(loc, scale_tril)`` into one unconstrained vector and back, in torch.

    The parameterisation of CONTRIBUTING.md: ``loc``, then for ``"full"`` the
    lower triangle of ``scale_tril`` (row by row) with its diagonal stored as a
    log, for ``"diag"`` the log standard deviations.  With ``learn_scale=False``
    the vector is ``loc`` alone and ``scale_tril`` stays at its initial value.
    """

    def __init__(self, loc: np.ndarray, scale_tril: np.ndarray, covariance_type: str,
                 learn_scale: bool):
        self.d = d = loc.shape[0]
        self.covariance_type, self.learn_scale = covariance_type, learn_scale
        self.rows, self.cols = np.tril_indices(d)
        self.on_diag = torch.from_numpy(self.rows == self.cols)
        self.fixed_tril = torch.from_numpy(scale_tril.copy())
        if not learn_scale:
            self.x0 = loc.copy()
        elif covariance_type == "diag":
            self.x0 = np.concatenate([loc, np.log(np.diag(scale_tril))])
        else:
            raw = scale_tril[self.rows, self.cols].copy()
            raw[self.rows == self.cols] = np.log(raw[self.rows == self.cols])
            self.x0 = np.concatenate([loc, raw])

    def unpack(self, x: torch.Tensor):
        """``loc``, ``scale_tril`` and :math:`\\log\\det L` from the vector ``x``."""
        d = self.d
        loc = x[:d]
        if not self.learn_scale:
            return loc, self.fixed_tril, torch.log(torch.diagonal(self.fixed_tril)).sum()
        if self.covariance_type == "diag":
            return loc, torch.diag(torch.exp(x[d:])), x[d:].sum()
        raw = x[d:]
        values = torch.where(self.on_diag, torch.exp(raw), raw)
        tril = torch.zeros(d, d, dtype=torch.float64).index_put(
            (torch.from_numpy(self.rows), torch.from_numpy(self.cols)), values)
        return loc, tril, raw[self.on_diag].sum()

    def fit(self, x: np.ndarray, elbos, n_iter: int, converged: bool, info: dict) -> GaussianFit:
        with torch.no_grad():
            loc, tril, _ = self.unpack(torch.from_numpy(np.asarray(x, dtype=np.float64)))
        return GaussianFit(loc=loc.numpy().copy(), scale_tril=tril.numpy().copy(),
                           covariance_type=self.covariance_type,
                           elbos=np.asarray(elbos, dtype=np.float64), n_iter=n_iter,
                           converged=converged, info=info)


def _lbfgs(loss, record, x0: np.ndarray, tol: float, max_iter: int, what: str, advice: str):
    """L-BFGS-B on ``loss(x) -> scalar tensor`` with autograd gradients, in the course's loop.

    After every iteration ``record(x)`` gives the value whose change is
    compared with ``tol``; the loop stops when it changes by less than ``tol``,
    when L-BFGS-B finds a stationary point, or, with a
    :class:`~vicourse.ConvergenceWarning`, at ``max_iter`` or where the line
    search can no longer make progress away from a stationary point.  Returns
    ``(x, recorded, n_iter, converged, message)``.
    """
    recorded: list[float] = []
    state = {"iteration": 0, "rule_met": False, "x": np.asarray(x0, dtype=np.float64)}

    def value_and_grad(x):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = loss(xt)
        if torch.isposinf(value):
            # A trial point of the line search where q puts mass on p_hat = 0: reject it.
            return math.inf, np.zeros_like(x)
        if not torch.isfinite(value):
            raise ValueError(f"{what}: the objective became {float(value)} at iteration "
                             f"{state['iteration'] + 1}; {advice}")
        (grad,) = torch.autograd.grad(value, xt)
        if not bool(torch.isfinite(grad).all()):
            raise ValueError(f"{what}: the gradient became non-finite at iteration "
                             f"{state['iteration'] + 1}; {advice}")
        return float(value.detach()), grad.numpy().astype(np.float64)

    def callback(intermediate_result):
        state["iteration"] += 1
        recorded.append(record(intermediate_result.x))
        # An iteration whose line search rejected every trial point (each gave an
        # infinite objective) ends where it began: an unchanged value there is a
        # stalled search, not convergence.
        moved = not np.array_equal(intermediate_result.x, state["x"])
        state["x"] = np.array(intermediate_result.x, dtype=np.float64)
        if moved and len(recorded) >= 2 and abs(recorded[-1] - recorded[-2]) < tol:
            state["rule_met"] = True
            raise StopIteration

    # ftol=0 leaves the stopping rule to the callback (CONTRIBUTING's tolerance);
    # gtol stops at a point where every gradient entry vanishes to rounding.
    # L-BFGS-B's BLAS calls work on vectors of a few numbers: one BLAS thread, because
    # handing them to a second thread cost five times the whole fit on a busy machine.
    with _threadpools().limit(limits=1, user_api="blas"):
        result = minimize(value_and_grad, x0, jac=True, method="L-BFGS-B", callback=callback,
                          options={"maxiter": max_iter, "ftol": 0.0, "gtol": 1e-10})
    # L-BFGS-B's status 0 covers both a vanishing gradient and a step that no longer
    # lowers the objective (with ftol=0, also a stalled line search): only the
    # gradient tells them apart.
    stationary = result.status in (0, 2) and float(np.max(np.abs(result.jac))) < 1e-6
    if not recorded:   # the start is already stationary: no iteration was taken
        recorded.append(record(result.x))
    converged = state["rule_met"] or stationary
    if not converged:
        change = abs(recorded[-1] - recorded[-2]) if len(recorded) >= 2 else float("nan")
        warnings.warn(f"{what} did not converge in {state['iteration']} iterations: the last "
                      f"change of its objective was {change:.3g}, tol = {tol:g} "
                      f"({result.message}); try a larger max_iter, another starting point or "
                      "a larger tol", ConvergenceWarning, stacklevel=3)
    return result.x, recorded, state["iteration"], converged, str(result.message)


def i_projection(log_joint, init_loc, init_scale_tril, *, covariance_type: str = "full",
                 learn_scale: bool = True, method: str = "quadrature", num_nodes: int = 64,
                 num_samples: int = 1000, generator: torch.Generator | None = None,
                 tol: float = 1e-10, max_iter: int = 1000) -> GaussianFit:
    r"""The I-projection: the Gaussian :math:`q` maximising the ELBO, i.e. minimising
    :math:`\mathrm{KL}(q \,\|\, \hat p)`.

    Implements {eq}`eq-kl-i-projection` with the objective of
    {eq}`eq-kl-unnormalised` of Chapter 4:

    .. math::

        \mathcal L(q) = \mathbb E_q[\log \hat p(z)] + \mathbb H[q]
                      = -\mathrm{KL}(q \,\|\, \hat p)
                      = \log Z - \mathrm{KL}(q \,\|\, \hat p / Z),

    so the maximiser is the same as for the normalised target and :math:`Z` is
    never needed.  :math:`q = \mathcal N(\mu, L L^\top)`; the entropy is exact
    (:math:`\tfrac d2(1 + \log 2\pi) + \sum_i \log L_{ii}`), the expectation is
    a fixed rule of :func:`gaussian_expectation` through the
    reparameterisation :math:`z = \mu + L\epsilon`, and L-BFGS-B maximises over
    :math:`\mu` and the unconstrained entries of :math:`L` (log-diagonal) with
    exact autograd gradients of that deterministic objective.

    The loop is the course's: after every L-BFGS-B iteration the ELBO of the
    current :math:`q` is recorded, with every constant; the fit stops when it
    changes by less than ``tol`` (or L-BFGS-B finds a point where the gradient
    vanishes), and warns with :class:`~vicourse.ConvergenceWarning` at
    ``max_iter`` or where the line search stalls away from a stationary point.

    Accuracy: compare ``elbos[-1]`` with :func:`gaussian_elbo` at
    ``num_nodes=128`` to estimate the error of a given fit.  At the
    I-projections of the 2-D targets of Chapter 4 the default 64 nodes per
    axis (4096 points) agree with 128 to better than 1e-6.  Gauss--Hermite
    converges slowly when ``log_joint`` has a near-kink inside :math:`q`'s
    mass (the log of a well-separated mixture, seen by a broad :math:`q`):
    there 64 nodes were off by about 7e-4, and 24 by about 1e-2.  An
    evaluation costs ``num_nodes ** d`` calls of ``log_joint``; beyond a few
    dimensions use ``method="cubature"`` (2d points, exact for a Gaussian
    target) or ``"monte_carlo"``.

    ``method="monte_carlo"`` optimises a sample average over ``num_samples``
    fixed draws, and the fitted :math:`q` adapts to those draws: their average
    over-states the ELBO of the fit, by more the fewer the draws (with ten
    draws it often exceeds the log evidence, a "negative KL").  So the fit
    records the ELBO on a second, independent set of ``num_samples`` fixed
    draws, an unbiased estimate for every :math:`q` the optimiser visits, with
    its standard error in ``info``; the over-stated value is reported beside
    it.

    Parameters
    ----------
    log_joint : callable
        :math:`\log \hat p`, possibly unnormalised: maps a float64 tensor of
        shape ``(S, d)`` to shape ``(S,)``, differentiably in torch.
    init_loc : array of shape (d,)
    init_scale_tril : array of shape (d, d)
        The starting point :math:`q = \mathcal N(\mu_0, L_0 L_0^\top)`;
        ``init_scale_tril`` lower triangular with a positive diagonal (diagonal
        for ``covariance_type="diag"``).
    covariance_type : {"full", "diag"}
        The family: full covariance (:math:`d(d+3)/2` parameters) or
        diagonal (:math:`2d`).
    learn_scale : bool
        Whether ``scale_tril`` is fitted; with ``False`` only the mean moves.
    method, num_nodes, num_samples, generator
        The rule for :math:`\mathbb E_q`, as in :func:`gaussian_expectation`.
        The Monte Carlo draws (two sets) are made once and reused at every step.
    tol : float, > 0
        Stop when the recorded ELBO changes by less than ``tol`` nats between
        iterations (a target with no data counts as one data point).
    max_iter : int, >= 1
        L-BFGS-B iterations.

    Returns
    -------
    GaussianFit
        ``loc``, ``scale_tril``, ``covariance_type``; ``elbos`` the ELBO after
        each iteration (``elbos[-1]`` is the ELBO of the returned :math:`q`
        under the rule; on independent draws for ``"monte_carlo"``);
        ``n_iter``; ``converged``; ``info`` with ``"message"`` (L-BFGS-B's
        last message) and, for ``"monte_carlo"``, ``"fitted_draws_elbo"`` (the
        objective on the draws it was fitted to) and ``"elbo_standard_error"``
        (of ``elbos[-1]``).  If the start is already stationary, ``n_iter``
        is 0 and ``elbos`` holds the ELBO of the start.

    Raises
    ------
    ValueError
        On malformed arguments, naming the argument; if ``log_joint`` is not
        differentiable in torch; if ``log_joint`` is ``-inf`` where the initial
        :math:`q` puts weight (then :math:`\mathrm{KL}(q \,\|\, p) = \infty`:
        fit in an unconstrained variable instead); if the objective or its
        gradient becomes NaN, naming the iteration.

    Warns
    -----
    ConvergenceWarning
        If the fit stops without meeting its stopping rule: at ``max_iter``, or
        where L-BFGS-B's line search stalls away from a stationary point.

    References
    ----------
    Murphy (2023), Section 5.1 (forward and reverse KL); Blei et al. (2017).
    """
    check_callable(log_joint, "log_joint")
    covariance_type = check_covariance_type(covariance_type)
    init_loc, init_tril = check_loc_scale_tril(init_loc, init_scale_tril, covariance_type,
                                               names=("init_loc", "init_scale_tril"))
    learn_scale = check_bool(learn_scale, "learn_scale")
    d = init_loc.shape[0]
    method, num_nodes, num_samples, generator = _check_rule(
        method, num_nodes, num_samples, generator, d, sets=2 if method == "monte_carlo" else 1)
    tol = check_scalar(tol, "tol", positive=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1, maximum=10**6)
    eps, w = _rule(d, method, num_nodes, num_samples, generator)
    held_out = _rule(d, method, num_nodes, num_samples, generator) if method == "monte_carlo" \
        else None
    const = 0.5 * d * (1.0 + _LOG_2PI)
    params = _Parameters(init_loc, init_tril, covariance_type, learn_scale)

    def elbo_terms(x, rule):
        """The summands of the ELBO's expectation, and the entropy."""
        loc, tril, log_det_tril = params.unpack(x)
        points = loc + rule[0] @ tril.T
        values = call_log_density(log_joint, points, "log_joint", allow_neg_inf=True,
                                  differentiable=True)
        return values, const + log_det_tril

    def elbo(x, rule=(eps, w)):
        values, entropy = elbo_terms(x, rule)
        if bool(torch.isneginf(values).any()):
            return torch.tensor(-math.inf, dtype=torch.float64)
        return rule[1] @ values + entropy

    start = torch.tensor(params.x0, dtype=torch.float64, requires_grad=True)
    if not torch.isfinite(elbo(start).detach()):
        raise ValueError("log_joint is -inf where the initial q puts mass, so KL(q || p) is "
                         "infinite; a Gaussian q cannot fit a target with restricted support: "
                         "transform to an unconstrained variable (e.g. log z) and add the "
                         "log-Jacobian")

    record_rule = held_out if held_out is not None else (eps, w)

    def record(x):
        with torch.no_grad():
            return float(elbo(torch.from_numpy(x), record_rule))

    x, elbos, n_iter, converged, message = _lbfgs(
        lambda xt: -elbo(xt),   # L-BFGS-B minimises: hand it -ELBO = KL(q || p_hat)
        record, params.x0, tol, max_iter, "i_projection",
        "log_joint may return NaN or overflow far from its mass; start closer or check it")
    info = {"message": message}
    if method == "monte_carlo":
        with torch.no_grad():
            xt = torch.from_numpy(x)
            fitted_values, entropy = elbo_terms(xt, (eps, w))
            held_values, _ = elbo_terms(xt, held_out)
        info["fitted_draws_elbo"] = float(fitted_values.mean() + entropy)
        info["elbo_standard_error"] = float(held_values.std()) / math.sqrt(num_samples)
    return params.fit(x, elbos, n_iter, converged, info)


def _grid_cell_volume(points: np.ndarray) -> float:
    """The cell volume of a regular grid given as its points, or a ValueError naming points."""
    m, d = points.shape
    volume, size = 1.0, 1
    for k in range(d):
        axis = np.unique(points[:, k])
        steps = np.diff(axis)
        if axis.size < 2 or not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0):
            raise ValueError(f"points must be a regular grid (equally spaced values along each "
                             f"axis, at least two); axis {k} has {axis.size} distinct values"
                             + ("" if axis.size < 2 else " unequally spaced"))
        volume *= float(steps.mean())
        size *= axis.size
    if size != m or np.unique(points, axis=0).shape[0] != m:
        raise ValueError(f"points must be a regular grid with each point once: {size} points "
                         f"expected from the axes, got {m}")
    return volume


def js_projection(log_p, points, init_loc, init_scale_tril, *, covariance_type: str = "full",
                  tol: float = 1e-10, max_iter: int = 1000) -> GaussianFit:
    r"""The Gaussian :math:`q` minimising :math:`\mathrm{JS}(p, q)` on a regular grid.

    Implements {eq}`eq-kl-js` of Chapter 4, minimised over :math:`q = \mathcal N(\mu,
    LL^\top)` by L-BFGS-B with autograd gradients.  Both densities are
    discretised on ``points`` and normalised there, as in
    :func:`js_divergence` with ``method="grid"``, so the objective is the JS
    divergence of two discrete distributions (and ``log_p`` may be
    unnormalised).  Choose a grid that covers the mass of :math:`p` and of the
    candidate :math:`q`, fine enough to resolve both.

    The loop is the course's, with the JS divergence as the objective: it is
    recorded after every iteration (``info["js"]``) and the fit stops when it
    changes by less than ``tol``.  ``elbos`` records the ELBO of each iterate
    against ``log_p``, :math:`\mathbb E_q[\log \hat p(z) - \log q(z)]`, as a
    Riemann sum over the grid, so that the fit can be compared with the
    I-projection.

    Parameters
    ----------
    log_p : callable
        Log-density callable of the target, evaluated once on ``points``.
    points : array of shape (m, d)
        A regular grid: every combination of equally spaced values along each axis.
    init_loc : array of shape (d,)
    init_scale_tril : array of shape (d, d)
        The starting point, lower triangular with a positive diagonal.
    covariance_type : {"full", "diag"}
    tol : float, > 0
    max_iter : int, >= 1

    Returns
    -------
    GaussianFit
        ``info["js"]``: the grid JS divergence after each iteration;
        ``info["message"]``: L-BFGS-B's last message.

    Raises
    ------
    ValueError
        On malformed arguments, naming the argument (``points`` that are not a
        regular grid among them), or if ``log_p`` is ``-inf`` on the whole grid.

    Warns
    -----
    ConvergenceWarning
        If the fit stops without meeting its stopping rule: at ``max_iter``, or
        where L-BFGS-B's line search stalls away from a stationary point.

    References
    ----------
    Lin (1991); Minka (2005) on the family of divergences between the two KLs.
    """
    check_callable(log_p, "log_p")
    covariance_type = check_covariance_type(covariance_type)
    init_loc, init_tril = check_loc_scale_tril(init_loc, init_scale_tril, covariance_type,
                                               names=("init_loc", "init_scale_tril"))
    points = _check_points(points, init_loc.shape[0])
    log_volume = math.log(_grid_cell_volume(points.numpy()))
    tol = check_scalar(tol, "tol", positive=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1, maximum=10**6)
    with torch.no_grad():
        lp_hat = call_log_density(log_p, points, "log_p", allow_neg_inf=True)
    if bool(torch.isneginf(lp_hat).all()):
        raise ValueError("log_p must be finite somewhere on points; got -inf everywhere")
    lp = lp_hat - torch.logsumexp(lp_hat, 0)
    p = torch.exp(lp)
    log2 = math.log(2.0)
    d = init_loc.shape[0]
    params = _Parameters(init_loc, init_tril, covariance_type, True)

    def log_q(x):
        """log q at the points, normalised as a density (not on the grid)."""
        loc, tril, log_det_tril = params.unpack(x)
        white = torch.linalg.solve_triangular(tril, (points - loc).T, upper=False)
        return -0.5 * (white**2).sum(0) - 0.5 * d * _LOG_2PI - log_det_tril

    def js(x):
        lq = log_q(x)
        lq = lq - torch.logsumexp(lq, 0)   # normalised on the grid, as js_divergence does
        log_m = torch.logaddexp(lp, lq) - log2
        kl_pm = torch.where(p > 0, p * (lp - log_m), torch.zeros_like(lp)).sum()
        return 0.5 * kl_pm + 0.5 * (torch.exp(lq) * (lq - log_m)).sum()

    def grid_elbo(x):
        lq = log_q(x)
        q_mass = torch.exp(lq + log_volume)
        if bool(torch.isneginf(lp_hat[q_mass > 0]).any()):
            return -math.inf
        return float(torch.where(q_mass > 0, q_mass * (lp_hat - lq), torch.zeros_like(lq)).sum())

    elbos = []

    def record(x):
        with torch.no_grad():
            xt = torch.from_numpy(x)
            elbos.append(grid_elbo(xt))
            return float(js(xt))

    x, js_values, n_iter, converged, message = _lbfgs(js, record, params.x0, tol, max_iter,
                                                      "js_projection", "check log_p and the grid")
    return params.fit(x, elbos, n_iter, converged,
                      {"js": np.array(js_values), "message": message})


# --------------------------------------------------------------------------- targets


def correlated_gaussian(dim: int = 2, rho: float = 0.9) -> MultivariateNormal:
    r"""The correlated Gaussian target :math:`\mathcal N(0, \Sigma)`, :math:`\Sigma_{ij} = \rho^{|i-j|}`.

    In 2-D, :math:`\Sigma = \begin{pmatrix} 1 & \rho \\ \rho & 1 \end{pmatrix}`:
    the full-covariance family contains it and the diagonal one does not
    (Chapter 4).  In :math:`d` dimensions it is a stationary AR(1) sequence
    with unit variances, :math:`z_1 \sim \mathcal N(0, 1)` and
    :math:`z_{i+1} = \rho z_i + \sqrt{1 - \rho^2}\, \epsilon_{i+1}`, which gives
    its Cholesky factor in closed form,
    :math:`L_{ij} = \rho^{i-j} c_j` for :math:`i \ge j`, :math:`c_1 = 1`,
    :math:`c_j = \sqrt{1 - \rho^2}` otherwise; the distribution is built from it,
    so that no factorisation fails however close :math:`|\rho|` is to 1.

    Parameters
    ----------
    dim : int, in [1, 4096]
    rho : float, in (-1, 1)

    Returns
    -------
    torch.distributions.MultivariateNormal
        float64, ``batch_shape ()``, ``event_shape (dim,)``.

    Raises
    ------
    ValueError
        If ``dim`` is not an integer in range or ``rho`` is not in (-1, 1).
    """
    dim = check_int(dim, "dim", minimum=1, maximum=4096)
    rho = check_in_interval(rho, "rho", -1.0, 1.0, closed=(False, False))
    index = torch.arange(dim, dtype=torch.float64)
    lag = index[:, None] - index[None, :]
    column_scale = torch.full((dim,), math.sqrt((1.0 - rho) * (1.0 + rho)), dtype=torch.float64)
    column_scale[0] = 1.0
    tril = torch.where(lag >= 0, torch.tensor(rho, dtype=torch.float64) ** lag.clamp_min(0), 0.0)
    return MultivariateNormal(torch.zeros(dim, dtype=torch.float64),
                              scale_tril=tril * column_scale)


def two_component_mixture(shift: float = 1.0) -> MixtureSameFamily:
    r"""The equal-weight mixture of two 2-D Gaussians of Chapter 4.

    .. math::

        p(z) = \tfrac12 \mathcal N\big(z \mid (s, s), \Sigma_1\big)
             + \tfrac12 \mathcal N\big(z \mid (-s, -s), \Sigma_2\big), \quad
        \Sigma_1 = \begin{pmatrix} 0.5 & 0.25 \\ 0.25 & 1 \end{pmatrix}, \quad
        \Sigma_2 = \begin{pmatrix} 0.5 & -0.25 \\ -0.25 & 1 \end{pmatrix},

    with :math:`s` = ``shift``: 1 gives the *overlapping* target, 2 the
    *separated* one.  The parameters, in scikit-learn's names for
    :func:`m_projection`, are ``mixture_distribution.probs``,
    ``component_distribution.loc`` and ``component_distribution.covariance_matrix``.

    Parameters
    ----------
    shift : float

    Returns
    -------
    torch.distributions.MixtureSameFamily
        float64, ``batch_shape ()``, ``event_shape (2,)``.

    Raises
    ------
    ValueError
        If ``shift`` is not one finite real number.
    """
    shift = check_scalar(shift, "shift")
    means = torch.tensor([[shift, shift], [-shift, -shift]], dtype=torch.float64)
    covariances = torch.tensor([[[0.5, 0.25], [0.25, 1.0]], [[0.5, -0.25], [-0.25, 1.0]]],
                               dtype=torch.float64)
    return MixtureSameFamily(Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)),
                             MultivariateNormal(means, covariance_matrix=covariances))


class _NormalThenNormal(Distribution):
    r"""A 2-D density :math:`\mathcal N(z_1 \mid 0, s_1^2)\, \mathcal N(z_2 \mid m(z_1), s_2(z_1)^2)`.

    ``conditional(z1)`` returns the mean and standard deviation of :math:`z_2`
    given :math:`z_1`.  Sampling is reparameterised:
    :math:`z_1 = s_1\epsilon_1`, :math:`z_2 = m(z_1) + s_2(z_1)\epsilon_2`.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, scale1: float, conditional, validate_args=None):
        self._first = Normal(torch.tensor(0.0, dtype=torch.float64),
                             torch.tensor(scale1, dtype=torch.float64))
        self._conditional = conditional
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([2]),
                         validate_args=validate_args)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z1, z2 = value[..., 0], value[..., 1]
        loc2, scale2 = self._conditional(z1)
        return self._first.log_prob(z1) + Normal(loc2, scale2).log_prob(z2)

    def rsample(self, sample_shape=_NO_SHAPE):
        eps = torch.randn(self._extended_shape(sample_shape), dtype=torch.float64)
        z1 = self._first.scale * eps[..., 0]
        loc2, scale2 = self._conditional(z1)
        return torch.stack([z1, loc2 + scale2 * eps[..., 1]], dim=-1)


def banana() -> Distribution:
    r"""The banana target of Chapter 4: a Gaussian bent along a parabola.

    .. math::

        z_1 \sim \mathcal N(0, 1.5^2), \qquad
        z_2 \mid z_1 \sim \mathcal N(0.5 z_1^2 + 0.8 z_1 - 1,\ 0.5^2).

    Its log-density is a polynomial of degree 4 in :math:`z`, so
    Gauss--Hermite quadrature with three or more nodes per axis integrates it
    exactly under a Gaussian :math:`q`.  Mean :math:`(0, 0.125)`.

    Returns
    -------
    torch.distributions.Distribution
        float64, ``batch_shape ()``, ``event_shape (2,)``, with ``log_prob``,
        ``sample`` and ``rsample``; normalised.
    """
    return _NormalThenNormal(1.5, lambda z1: (0.5 * z1**2 + 0.8 * z1 - 1.0,
                                              torch.full_like(z1, 0.5)))


def neal_funnel(scale: float = 3.0) -> Distribution:
    r"""Neal's funnel in 2-D: a log-scale and a variable whose spread it sets.

    .. math::

        z_1 \sim \mathcal N(0, \sigma^2), \qquad z_2 \mid z_1 \sim \mathcal N(0, e^{z_1}),

    with :math:`\sigma` = ``scale`` (3 in Neal, 2003).  The variance of
    :math:`z_2` given :math:`z_1` varies by a factor :math:`e^{\sigma}` (its
    standard deviation by :math:`e^{\sigma/2}`) over one standard deviation of
    :math:`z_1`: a narrow neck and a wide mouth, which no single Gaussian fits.

    Parameters
    ----------
    scale : float, > 0

    Returns
    -------
    torch.distributions.Distribution
        float64, ``batch_shape ()``, ``event_shape (2,)``, with ``log_prob``,
        ``sample`` and ``rsample``; normalised.

    Raises
    ------
    ValueError
        If ``scale`` is not one finite number > 0.

    References
    ----------
    Neal, R. M. (2003), Slice sampling, Annals of Statistics 31(3), Section 8.
    """
    scale = check_scalar(scale, "scale", positive=True)
    return _NormalThenNormal(scale, lambda z1: (torch.zeros_like(z1), torch.exp(0.5 * z1)))
