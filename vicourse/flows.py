r"""Normalizing flows as variational families (Chapter 9).

A flow pushes a simple base density through a chain of invertible,
differentiable maps.  If :math:`z_0 \sim q_0` and :math:`z_k = f_k(z_{k-1})`
for :math:`k = 1, \dots, K`, the change of variables gives the density of
:math:`z_K` in closed form,

.. math::

    \log q_K(z_K) = \log q_0(z_0) - \sum_{k=1}^K \log\Big\lvert \det
    \frac{\partial f_k}{\partial z_{k-1}} \Big\rvert ,

which is all the ELBO needs, and the samples are reparameterised by
construction.  This module holds the two layers the chapter teaches, written
out (they are the lesson), and the family built from them:

* :class:`PlanarFlow`: :math:`f(z) = z + \hat u\, \tanh(w^\top z + b)`
  (Rezende and Mohamed, 2015), whose log-determinant follows from the matrix
  determinant lemma and whose :math:`\hat u` keeps it invertible;
* :class:`AffineCoupling`: the affine coupling layer of RealNVP (Dinh et al.,
  2017), triangular by construction and invertible in closed form;
* :class:`Flow`: a Gaussian base :math:`\mathcal N(\mu, L L^\top)` (``loc``,
  ``scale_tril``, as everywhere in the package) followed by the layers, with
  ``rsample`` returning samples and their :math:`\log q`, and ``log_prob``
  where every layer is invertible in closed form;
* :func:`planar_flow` and :func:`coupling_flow` build the two families of the
  chapter; :func:`vicourse.vi.fit_flow` fits either by black-box VI and
  returns a :class:`FlowFit`.

Every layer maps a float64 batch of shape (S, d) to ``(z, log_abs_det_jacobian)``
of shapes (S, d) and (S,).  The parameters are float64, like every tensor of
the package.  A layer starts as the identity map, so a flow starts as its
Gaussian base.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vicourse._gaussian import check_covariance_type, scale_tril_from_unconstrained
from vicourse._validation import (
    _describe,
    _to_numpy,
    all_finite,
    check_generator,
    check_int,
)

__all__ = ["AffineCoupling", "Flow", "FlowFit", "FlowLayer", "PlanarFlow", "coupling_flow",
           "planar_flow"]

_LOG_2PI = math.log(2.0 * math.pi)
#: Largest dimension of a flow (its base has a d x d Cholesky factor).
MAX_DIM = 2**13
#: Largest number of hidden units of one layer of a coupling network.
MAX_HIDDEN = 2**16
#: Largest number of layers of the flows built by :func:`planar_flow`, :func:`coupling_flow`.
MAX_LAYERS = 2**12
#: Largest number of entries of a batch of samples (S * d): 2 GiB of float64.
MAX_ENTRIES = 2**28
#: :math:`\log(e - 1)`: the value of :math:`w^\top u` at which :math:`\hat u = 0`.
_LOG_E_MINUS_1 = math.log(math.e - 1.0)
_DTYPE = torch.float64


def _check_points(z, name: str, dim: int) -> torch.Tensor:
    """Check a batch of points: a float64 tensor of shape (S, dim), finite (gradients kept)."""
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name} must be a float64 torch.Tensor of shape (S, {dim}); got "
                         f"{_describe(z)}")
    if z.device.type == "meta" or z.dtype != _DTYPE:
        raise ValueError(f"{name} must be a float64 torch.Tensor of shape (S, {dim}) on the CPU; "
                         f"got {_describe(z)}")
    if z.dim() != 2 or z.shape[1] != dim or z.shape[0] == 0:
        raise ValueError(f"{name} must have shape (S, {dim}) with S >= 1; got shape "
                         f"{tuple(z.shape)}")
    if not all_finite(z.detach()):
        raise ValueError(f"{name} must be finite; got "
                         f"{int((~torch.isfinite(z.detach())).sum())} NaN or infinite entries")
    return z


def _check_dim(dim, *, minimum: int = 1) -> int:
    return check_int(dim, "dim", minimum=minimum, maximum=MAX_DIM)


# --------------------------------------------------------------------------- layers


class FlowLayer(nn.Module):
    """One invertible, differentiable map of a flow, with its log-determinant.

    A subclass sets ``self.dim`` and implements ``_transform(z)``, which maps a
    batch of shape (S, d) to ``(z_new, log_abs_det_jacobian)`` of shapes
    (S, d) and (S,) without checking its input; :meth:`forward` checks the
    input first.  A layer that is invertible in closed form also implements
    ``_inverse(z)`` (same convention, the log-determinant of the inverse map).
    """

    dim: int

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map a batch ``z`` of shape (S, d) to ``(f(z), log|det df/dz|)``, shapes (S, d), (S,).

        Raises
        ------
        ValueError
            If ``z`` is not a finite float64 tensor of shape (S, d).
        """
        return self._transform(_check_points(z, "z", self.dim))

    def _transform(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def invertible(self) -> bool:
        """Whether the layer has an inverse in closed form."""
        return type(self)._inverse is not FlowLayer._inverse

    def _inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse in closed form")


class PlanarFlow(FlowLayer):
    r"""A planar flow layer, :math:`f(z) = z + \hat u\, \tanh(w^\top z + b)`.

    Implements {eq}`eq-flow-planar`, {eq}`eq-flow-planar-logdet` and
    {eq}`eq-flow-planar-uhat` of Chapter 9 (Rezende and Mohamed, 2015).  The
    parameters are ``w`` (d,), ``u`` (d,) and ``bias`` (a 0-d tensor); the map
    uses

    .. math::

        \hat u = u + \big(m(w^\top u) - w^\top u\big) \frac{w}{\lVert w\rVert^2},
        \qquad m(a) = -1 + \log(1 + e^a),

    so that :math:`w^\top \hat u = m(w^\top u) > -1`, the condition under which
    :math:`f` is invertible (Theorem {prf:ref}`thm-flow-planar-invertible`).
    By the matrix determinant lemma,

    .. math::

        \log\Big\lvert\det\frac{\partial f}{\partial z}\Big\rvert
        = \log\big(1 + h'\, w^\top \hat u\big)
        = \log\big(h^2 + h' \log(1 + e^{w^\top u})\big),
        \qquad h = \tanh(w^\top z + b),\ h' = 1 - h^2 .

    The second form is the one computed: since :math:`1 + w^\top\hat u =
    \log(1 + e^{w^\top u})`, it is a sum of two non-negative terms, one of
    them positive, with no cancellation even where :math:`w^\top u` is far
    below :math:`-1` and :math:`1 + w^\top \hat u` is tiny.  The inverse
    exists but has no closed form (it needs a one-dimensional root), so a
    flow with a planar layer has ``rsample`` but no ``log_prob``.

    Parameters
    ----------
    dim : int, >= 1
        :math:`d`.
    generator : torch.Generator, optional
        Draws the initial :math:`w \sim \mathcal N(0, I/d)`; ``None`` uses
        torch's global generator, as :mod:`torch.nn`'s layers do.  The layer
        starts as the identity: :math:`b = 0` and
        :math:`u = \log(e - 1)\, w / \lVert w\rVert^2`, which gives
        :math:`\hat u = 0`.

    Raises
    ------
    ValueError
        If ``dim`` is not an integer in [1, 8192] or ``generator`` is not a
        torch.Generator; when the layer is applied, if ``w`` is zero, where
        :math:`\hat u` is undefined (it grows like :math:`1/\lVert w\rVert`
        as :math:`w \to 0`).

    References
    ----------
    Rezende, D. J. and Mohamed, S. (2015), Variational inference with
    normalizing flows, ICML, Section 4.1 and Appendix A.1.
    """

    def __init__(self, dim: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.dim = _check_dim(dim)
        generator = check_generator(generator)
        w = torch.randn(self.dim, generator=generator, dtype=_DTYPE) / math.sqrt(self.dim)
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(_LOG_E_MINUS_1 * w / w.square().sum())
        self.bias = nn.Parameter(torch.zeros((), dtype=_DTYPE))

    @property
    def u_hat(self) -> torch.Tensor:
        r""":math:`\hat u`, shape (d,): ``u`` moved along ``w`` so that :math:`w^\top\hat u > -1`."""
        return self._u_hat()[1]

    def _u_hat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + w'u_hat, u_hat)`` by eq-flow-planar-uhat; 1 + w'u_hat = softplus(w'u) > 0."""
        w, u = self.w, self.u
        norm2 = w @ w
        if not bool(norm2 > 0):
            raise ValueError("PlanarFlow's w must be nonzero and finite: u_hat "
                             "(eq-flow-planar-uhat) divides by |w|^2; got |w|^2 = "
                             f"{float(norm2.detach())}. Give w nonzero values (a new layer draws them)")
        alpha = w @ u
        one_plus_w_dot_u_hat = nn.functional.softplus(alpha)   # 1 + m(w'u) = log(1 + e^(w'u))
        return one_plus_w_dot_u_hat, u + ((one_plus_w_dot_u_hat - 1.0 - alpha) / norm2) * w

    def _transform(self, z):
        # A few fused operations per layer: a deep planar flow is many small layers, and
        # each torch operation costs microseconds whatever the size of its tensors.
        one_plus_w_dot_u_hat, u_hat = self._u_hat()
        h = torch.tanh(torch.addmv(self.bias, z, self.w))      # h(w'z + b), shape (S,)
        # det(I + u_hat psi') = 1 + psi' u_hat, psi = h'(w'z + b) w (the matrix determinant
        # lemma), = h^2 + h' (1 + w'u_hat) with h' = 1 - h^2: no cancellation when w'u_hat ~ -1
        h2 = h * h
        log_det = torch.log(torch.addcmul(h2, 1.0 - h2, one_plus_w_dot_u_hat))
        return torch.addr(z, h, u_hat), log_det


def _check_mask(mask, dim: int) -> np.ndarray:
    array = _to_numpy(mask, "mask")
    if array.shape != (dim,):
        raise ValueError(f"mask must be a 1-D array of {dim} zeros and ones (one per "
                         f"coordinate); got shape {array.shape}")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"mask must hold only zeros and ones; got {array.tolist()!r:.60}")
    if array.all() or not array.any():
        raise ValueError("mask must hold at least one 1 (a coordinate that passes unchanged) and "
                         f"one 0 (a coordinate that is transformed); got {array.tolist()!r:.60}")
    return array.astype(bool)


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, Sequence) and not isinstance(hidden, str | bytes):
        if len(hidden) == 0:
            raise ValueError("hidden must be a positive integer or a non-empty sequence of them; "
                             "got an empty sequence")
        return tuple(check_int(h, "hidden", minimum=1, maximum=MAX_HIDDEN) for h in hidden)
    return (check_int(hidden, "hidden", minimum=1, maximum=MAX_HIDDEN),)


class AffineCoupling(FlowLayer):
    r"""An affine coupling layer (RealNVP): half the coordinates scale and shift the other half.

    Implements {eq}`eq-flow-coupling` and {eq}`eq-flow-coupling-logdet` of
    Chapter 9 (Dinh et al., 2017).  With a binary ``mask`` :math:`m`, the
    coordinates with :math:`m_i = 1` pass unchanged and, through a network,
    set a log-scale :math:`s` and a shift :math:`t` for the others:

    .. math::

        y_{m} = z_{m}, \qquad
        y_{\bar m} = z_{\bar m} \odot \exp\big(s(z_m)\big) + t(z_m),
        \qquad
        \log\Big\lvert\det\frac{\partial y}{\partial z}\Big\rvert = \sum_i s_i(z_m).

    The Jacobian is triangular (after ordering the kept coordinates first), so
    its log-determinant is the sum of the log-scales, and the inverse is
    :math:`z_{\bar m} = (y_{\bar m} - t(y_m)) \odot \exp(-s(y_m))`.  The
    network is a multilayer perceptron with ``tanh`` activations whose output
    layer gives :math:`(t, s)`; its output layer starts at zero, so the layer
    starts as the identity.

    Parameters
    ----------
    dim : int, >= 2
        :math:`d`.
    hidden : int or sequence of int, each >= 1
        The widths of the network's hidden layers (one layer for an int).
    mask : array of shape (d,) of zeros and ones
        1 for a coordinate that passes unchanged, 0 for one that is
        transformed; at least one of each.
    generator : torch.Generator, optional
        Draws the initial weights of the hidden layers (uniform, scaled as
        :class:`torch.nn.Linear`'s); ``None`` uses torch's global generator.

    Raises
    ------
    ValueError
        If an argument is malformed (named in the message).

    References
    ----------
    Dinh, L., Sohl-Dickstein, J. and Bengio, S. (2017), Density estimation
    using Real NVP, ICLR, Section 3.
    """

    def __init__(self, dim: int, hidden, mask, *, generator: torch.Generator | None = None):
        super().__init__()
        self.dim = _check_dim(dim, minimum=2)
        widths = _check_hidden(hidden)
        kept = _check_mask(mask, self.dim)
        generator = check_generator(generator)
        self.register_buffer("mask", torch.from_numpy(kept.astype(np.float64)))
        self.register_buffer("kept", torch.from_numpy(np.flatnonzero(kept)))
        self.register_buffer("changed", torch.from_numpy(np.flatnonzero(~kept)))
        sizes = [len(self.kept), *widths]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            # skip_init: nn.Linear's own initialisation would draw from the global generator
            linear = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=_DTYPE)
            bound = 1.0 / math.sqrt(n_in)       # torch.nn.Linear's default scale
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.uniform_(-bound, bound, generator=generator)
            layers += [linear, nn.Tanh()]
        out = nn.utils.skip_init(nn.Linear, sizes[-1], 2 * len(self.changed), dtype=_DTYPE)
        with torch.no_grad():
            out.weight.zero_()
            out.bias.zero_()
        self.net = nn.Sequential(*layers, out)

    def shift_and_log_scale(self, z_kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`t` and :math:`s` for the kept coordinates ``z_kept`` (S, k); each (S, d - k)."""
        shift, log_scale = self.net(z_kept).chunk(2, dim=-1)
        return shift, log_scale

    def _transform(self, z):
        shift, log_scale = self.shift_and_log_scale(z[:, self.kept])
        new = z[:, self.changed] * log_scale.exp() + shift
        return z.index_copy(1, self.changed, new), log_scale.sum(-1)

    def _inverse(self, y):
        shift, log_scale = self.shift_and_log_scale(y[:, self.kept])
        old = (y[:, self.changed] - shift) * (-log_scale).exp()
        return y.index_copy(1, self.changed, old), -log_scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse map: ``(f^{-1}(y), log|det df^{-1}/dy|)``, shapes (S, d), (S,).

        The log-determinant of the inverse is minus that of the forward map at
        :math:`f^{-1}(y)`.

        Raises
        ------
        ValueError
            If ``y`` is not a finite float64 tensor of shape (S, d).
        """
        return self._inverse(_check_points(y, "y", self.dim))


# --------------------------------------------------------------------------- the family


class Flow(nn.Module):
    r"""A normalizing flow: a Gaussian base pushed through invertible layers.

    Implements {eq}`eq-flow-density` and {eq}`eq-flow-elbo` of Chapter 9.  A
    draw is :math:`\epsilon \sim \mathcal N(0, I)`,
    :math:`z_0 = \mu + L\epsilon` (the base, :math:`q_0 = \mathcal N(\mu, L L^\top)`),
    then :math:`z_k = f_k(z_{k-1})` through the layers, with

    .. math::

        \log q(z_K) = \log\mathcal N(\epsilon \mid 0, I) - \sum_i \log L_{ii}
        - \sum_{k=1}^K \log\Big\lvert\det\frac{\partial f_k}{\partial z_{k-1}}\Big\rvert .

    The base's parameters are learned with the layers' (``loc`` and the
    unconstrained ``scale_tril`` of CONTRIBUTING.md, :math:`L` with
    :math:`\log L_{ii}` on its diagonal); it starts at :math:`\mathcal N(0, I)`.
    With no layers a flow is the Gaussian family itself, and since every
    layer starts as the identity, a flow starts as its Gaussian base.

    Parameters
    ----------
    dim : int, >= 1
        :math:`d`.
    layers : sequence of FlowLayer
        The maps :math:`f_1, \dots, f_K`, applied in order (may be empty);
        each of dimension ``dim``.
    covariance_type : {"full", "diag"}
        The base's covariance: a Cholesky factor or a diagonal.

    Attributes
    ----------
    loc : Parameter of shape (d,)
        :math:`\mu`.
    scale_param : Parameter of shape (d, d) or (d,)
        The unconstrained ``scale_tril``: :math:`L` with :math:`\log L_{ii}` on
        its diagonal (its upper triangle is unused), or the vector
        :math:`\log L_{ii}` for ``"diag"``; :attr:`scale_tril` gives :math:`L`.
    layers : torch.nn.ModuleList
        The layers.

    Raises
    ------
    ValueError
        If ``dim`` is not an integer in range, ``layers`` is not a sequence of
        :class:`FlowLayer` of dimension ``dim``, or ``covariance_type`` is
        unknown.
    """

    def __init__(self, dim: int, layers: Sequence[FlowLayer] = (), *,
                 covariance_type: str = "full"):
        super().__init__()
        self.dim = _check_dim(dim)
        self.covariance_type = check_covariance_type(covariance_type)
        if isinstance(layers, nn.Module) or not isinstance(layers, Sequence):
            raise ValueError("layers must be a sequence (list or tuple) of FlowLayer modules; got "
                             f"{_describe(layers)}")
        for k, layer in enumerate(layers):
            if not isinstance(layer, FlowLayer):
                raise ValueError(f"layers must hold FlowLayer modules (PlanarFlow, AffineCoupling); "
                                 f"layers[{k}] is {_describe(layer)}")
            if layer.dim != self.dim:
                raise ValueError(f"layers must all have dimension dim={self.dim}; layers[{k}] has "
                                 f"dim={layer.dim}")
        self.layers = nn.ModuleList(layers)
        self.loc = nn.Parameter(torch.zeros(self.dim, dtype=_DTYPE))
        shape = (self.dim, self.dim) if self.covariance_type == "full" else (self.dim,)
        # the unconstrained scale_tril (log diagonal); zeros give L = I
        self.scale_param = nn.Parameter(torch.zeros(shape, dtype=_DTYPE))

    @property
    def scale_tril(self) -> torch.Tensor:
        """The base's Cholesky factor :math:`L`, shape (d, d) (diagonal for ``"diag"``)."""
        return scale_tril_from_unconstrained(self.scale_param, self.covariance_type)

    @property
    def invertible(self) -> bool:
        """Whether every layer is invertible in closed form (then ``log_prob`` is available)."""
        return all(layer.invertible for layer in self.layers)

    @property
    def num_parameters(self) -> int:
        """The number of real parameters of the family (base and layers)."""
        tril = self.dim * (self.dim + 1) // 2 if self.covariance_type == "full" else self.dim
        # the strictly upper triangle of a full scale_param is stored but unused
        return (self.dim + tril + sum(p.numel() for layer in self.layers
                                      for p in layer.parameters()))

    def _log_det_base(self) -> torch.Tensor:
        if self.covariance_type == "diag":
            return self.scale_param.sum()
        return self.scale_param.diagonal().sum()

    def _push(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log q(z))`` for base noise ``eps`` (S, d), unchecked: the inner loop of a fit."""
        if self.covariance_type == "diag":
            z = self.loc + eps * self.scale_param.exp()
        else:
            z = self.loc + eps @ self.scale_tril.T
        log_q = (-0.5 * self.dim * _LOG_2PI - self._log_det_base()) - 0.5 * eps.square().sum(-1)
        for layer in self.layers:
            z, log_det = layer._transform(z)
            log_q = log_q - log_det
        return z, log_q

    def forward(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Push base noise through the flow: ``(z, log q(z))``, shapes (S, d) and (S,).

        ``eps`` are draws of :math:`\mathcal N(0, I)`; differentiable in the
        parameters (the reparameterisation of Chapter 5).

        Raises
        ------
        ValueError
            If ``eps`` is not a finite float64 tensor of shape (S, d).
        """
        return self._push(_check_points(eps, "eps", self.dim))

    def rsample(self, num_samples: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Draw ``num_samples`` reparameterised samples and their log density.

        Parameters
        ----------
        num_samples : int, >= 1
            :math:`S`.
        generator : torch.Generator, optional
            Draws :math:`\epsilon` of shape (S, d); ``None`` uses torch's
            global generator.

        Returns
        -------
        z : tensor of shape (S, d)
        log_q : tensor of shape (S,)
            :math:`\log q(z^{(s)})`, by {eq}`eq-flow-density`; both differentiable
            in the flow's parameters.

        Raises
        ------
        ValueError
            If ``num_samples`` is not an integer >= 1 (or would need more than
            2 GiB) or ``generator`` is not a torch.Generator.
        """
        num_samples = self._check_num_samples(num_samples)
        generator = check_generator(generator)
        eps = torch.randn(num_samples, self.dim, generator=generator, dtype=_DTYPE)
        return self._push(eps)

    def _check_num_samples(self, num_samples) -> int:
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        if num_samples * self.dim > MAX_ENTRIES:
            raise ValueError(f"num_samples must be at most {MAX_ENTRIES // self.dim} for d="
                             f"{self.dim} (2 GiB of samples); got {num_samples}")
        return num_samples

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log q(z)` at any points ``z`` of shape (S, d), by inverting every layer.

        Implements {eq}`eq-flow-density` read backwards:
        :math:`z_{k-1} = f_k^{-1}(z_k)`, accumulating the log-determinants of
        the inverses, then the base density at :math:`z_0`.

        Raises
        ------
        ValueError
            If ``z`` is not a finite float64 tensor of shape (S, d).
        NotImplementedError
            If a layer has no inverse in closed form (a :class:`PlanarFlow`);
            use the ``log_q`` that :meth:`rsample` returns with its samples.
        """
        z = _check_points(z, "z", self.dim)
        for k, layer in enumerate(self.layers):
            if not layer.invertible:
                raise NotImplementedError(
                    f"log_prob needs every layer to be invertible in closed form; layers[{k}] is "
                    f"a {type(layer).__name__}, whose inverse needs a root search. Use the log_q "
                    "that rsample returns with its samples")
        log_det = torch.zeros(z.shape[0], dtype=_DTYPE)
        for layer in reversed(self.layers):
            z, inverse_log_det = layer._inverse(z)
            log_det = log_det + inverse_log_det
        tril = self.scale_tril
        eps = torch.linalg.solve_triangular(tril, (z - self.loc).T, upper=False).T
        return (-0.5 * self.dim * _LOG_2PI - self._log_det_base()
                - 0.5 * eps.square().sum(-1) + log_det)


def planar_flow(dim: int, n_layers: int, *, covariance_type: str = "full",
                generator: torch.Generator | None = None) -> Flow:
    r"""A :class:`Flow` of ``n_layers`` :class:`PlanarFlow` layers on a Gaussian base.

    Parameters
    ----------
    dim : int, >= 1
    n_layers : int, >= 0
    covariance_type : {"full", "diag"}
        The base's covariance.
    generator : torch.Generator, optional
        Draws the layers' initial parameters.

    Returns
    -------
    Flow
        A flow that starts as its base, :math:`\mathcal N(0, I)` (every layer
        starts as the identity).

    Raises
    ------
    ValueError
        If an argument is malformed (named in the message).
    """
    dim = _check_dim(dim)
    n_layers = check_int(n_layers, "n_layers", minimum=0, maximum=MAX_LAYERS)
    generator = check_generator(generator)
    return Flow(dim, [PlanarFlow(dim, generator=generator) for _ in range(n_layers)],
                covariance_type=covariance_type)


def coupling_flow(dim: int, n_layers: int, hidden, *, covariance_type: str = "full",
                  generator: torch.Generator | None = None) -> Flow:
    r"""A :class:`Flow` of ``n_layers`` :class:`AffineCoupling` layers with alternating masks.

    Layer :math:`k` (from 0) keeps the coordinates :math:`i` with
    :math:`i + k` even, so that consecutive layers transform complementary
    halves (in 2-D: :math:`z_2` given :math:`z_1`, then :math:`z_1` given
    :math:`z_2`, ...).

    Parameters
    ----------
    dim : int, >= 2
    n_layers : int, >= 0
    hidden : int or sequence of int
        The widths of each coupling network's hidden layers.
    covariance_type : {"full", "diag"}
        The base's covariance.
    generator : torch.Generator, optional
        Draws the layers' initial parameters.

    Returns
    -------
    Flow
        A flow that starts as its base, :math:`\mathcal N(0, I)` (every layer
        starts as the identity).

    Raises
    ------
    ValueError
        If an argument is malformed (named in the message).
    """
    dim = _check_dim(dim, minimum=2)
    n_layers = check_int(n_layers, "n_layers", minimum=0, maximum=MAX_LAYERS)
    hidden = _check_hidden(hidden)
    generator = check_generator(generator)
    index = np.arange(dim)
    return Flow(dim, [AffineCoupling(dim, hidden, (index + k + 1) % 2, generator=generator)
                      for k in range(n_layers)], covariance_type=covariance_type)


@dataclass(frozen=True)
class FlowFit:
    """A fitted flow: the result of :func:`vicourse.vi.fit_flow`.

    The fields mean what they mean in :class:`vicourse.GaussianFit`.

    Attributes
    ----------
    flow : Flow
        The fitted flow (a copy; the flow passed in is left as it was).
    elbos : ndarray of shape (n_iter,)
        One Monte Carlo ELBO estimate per step, from that step's draws, at
        the parameters before its update (CONTRIBUTING.md, *the recorded bound*).
    n_iter : int
        Steps run.
    converged : bool
        Whether the stopping rule held before ``steps`` ran out.
    info : dict
        What only :func:`~vicourse.vi.fit_flow` has; its docstring lists the keys.
    """

    flow: Flow
    elbos: np.ndarray
    n_iter: int
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)
