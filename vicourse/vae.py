r"""Variational autoencoders: amortised inference with the IWAE bound (Chapter 6).

A VAE replaces one variational distribution per data point with an encoder
network that maps any :math:`x` to the parameters of
:math:`q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag} \sigma_\phi^2(x))`,
and trains it jointly with a decoder :math:`p_\theta(x \mid z)` by maximising
the per-example ELBO

.. math::

    \mathcal L(\phi, \theta; x) = \mathbb E_{q_\phi(z \mid x)} \log p_\theta(x \mid z)
        - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big), \qquad p(z) = \mathcal N(0, I).

Functions here return the ELBO (or the importance-weighted bound), a quantity to
maximise; only the training loss is its negative.

Names follow the package's vocabulary: ``X`` is a data matrix of shape
``(n_samples, data_dim)``, one example per row; ``loc`` is a Gaussian's mean
(:math:`\mu_\phi(x)`) and ``logvar`` its log variances
(:math:`\log \sigma^2_\phi(x)`); ``num_samples`` counts Monte Carlo draws per
example; ``generator`` is a :class:`torch.Generator` and ``seed`` a fit's own
randomness.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vicourse._validation import (
    _describe,
    all_finite,
    as_float_tensor,
    check_bool,
    check_generator,
    check_int,
    check_scalar,
    check_seed,
    finite_or_raise,
)

__all__ = ["VAE", "TrainingHistory", "gaussian_kl_to_standard_normal", "train"]

_LOG_2PI = math.log(2.0 * math.pi)
#: Most memory the draws of one call may take, in bytes, and the weights of a model.
_MAX_BYTES = 2**31
#: The draws of one call form tensors of num_samples * n_samples * max(data_dim,
#: hidden_dim) numbers, and up to about this many of them are alive at once
#: (hidden layer, logits, the cross-entropy and its temporaries): with 2**21 draws of
#: 3 digits (1.5 GiB per tensor) one call peaked at about 5 GiB.
_TENSORS_ALIVE = 4
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}<{remaining}{postfix}]"


def _as_real_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a finite floating-point tensor; a float tensor keeps its dtype."""
    dtype = value.dtype if isinstance(value, torch.Tensor) and value.is_floating_point() \
        else torch.float64
    return as_float_tensor(value, name, dtype=dtype)


def _kl_standard_normal(loc: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    # 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2), eq-vae-gaussian-kl, with
    # sigma^2 - 1 computed as expm1(logvar): written as exp(logvar) - 1 - logvar it
    # cancels to nothing for |logvar| << 1 (float32 keeps no correct digit at 1e-6).
    return 0.5 * (loc.square() + torch.expm1(logvar) - logvar).sum(-1)


def gaussian_kl_to_standard_normal(loc, logvar) -> torch.Tensor:
    r"""KL divergence of a diagonal Gaussian from the standard normal, in closed form.

    Implements {eq}`eq-vae-gaussian-kl` of Chapter 6 (Kingma and Welling, 2014,
    appendix B):

    .. math::

        \mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2) \,\|\, \mathcal N(0, I)\big)
        = \frac12 \sum_{j=1}^{L} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big),

    with :math:`\mu` given as ``loc`` and :math:`\log \sigma_j^2` as ``logvar``,
    the encoder's two outputs.

    Parameters
    ----------
    loc : tensor of shape (..., L)
        Means :math:`\mu`; the last axis is the latent dimension.
    logvar : tensor of shape (..., L)
        Log variances :math:`\log \sigma^2`.

    Returns
    -------
    tensor of shape (...)
        One KL per leading index (per example), differentiable in both inputs.
        Floating-point tensors keep their dtype; anything else is computed in
        float64.

    Raises
    ------
    ValueError
        If an input is not real numbers (bools, strings, complex numbers,
        ``None`` and meta tensors are refused), is a scalar or empty, contains
        NaN or infinity, or the two shapes differ.

    Notes
    -----
    :math:`\sigma^2 - 1 - \log \sigma^2` is computed as
    ``expm1(logvar) - logvar``.  For :math:`|\log \sigma^2| < 1` the
    subtraction is exact, so the term's only error is the rounding of
    ``expm1``, half a unit in the last place of a number close to
    :math:`\log \sigma^2`; against the term, about
    :math:`(\log \sigma^2)^2 / 2`, that is a relative error of at most about
    :math:`\varepsilon / |\log \sigma^2|` (:math:`\varepsilon` the dtype's
    machine epsilon; :math:`2 \times 10^{-10}` at
    :math:`\log \sigma^2 = 10^{-6}` in float64), twice that where ``expm1``
    is accurate to one unit only.  The textbook form ``exp(logvar) - 1 - logvar``
    carries the rounding error of ``exp`` near 1 instead, a relative error of up
    to about :math:`\varepsilon / (\log \sigma^2)^2`.  A very large ``logvar``
    overflows to ``inf`` as the exact value does in the dtype (beyond about
    88 in float32).

    References
    ----------
    Kingma and Welling (2014), appendix B.
    """
    loc = _as_real_tensor(loc, "loc")
    logvar = _as_real_tensor(logvar, "logvar")
    for name, tensor in (("loc", loc), ("logvar", logvar)):
        if tensor.ndim < 1:
            raise ValueError(f"{name} must have at least one dimension (the latent one); "
                             f"got a scalar")
    if loc.shape != logvar.shape:
        raise ValueError(f"loc and logvar must have the same shape; got {tuple(loc.shape)} "
                         f"and {tuple(logvar.shape)}")
    if loc.dtype != logvar.dtype:
        dtype = torch.promote_types(loc.dtype, logvar.dtype)
        loc, logvar = loc.to(dtype), logvar.to(dtype)
    return _kl_standard_normal(loc, logvar)


def _log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    # log N(z | 0, I), summed over the latent axis.
    return -0.5 * (z.square() + _LOG_2PI).sum(-1)


def _bernoulli_log_lik(logits: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    # log Bernoulli(x | sigmoid(eta)) = x eta - softplus(eta) = -BCE(eta, x), from the
    # logits (eq-vae-bernoulli-logits): log(sigmoid(eta)) underflows to -inf for eta below
    # about -88.7 in float32, and log(1 - sigmoid(eta)) already for eta above about 16.6.
    # (Broadcasting X over the sample axis only where there is one: expand_as costs a
    # few microseconds of every training step.)
    target = X if X.shape == logits.shape else X.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


class VAE(nn.Module):
    r"""A variational autoencoder with a Gaussian encoder and a Bernoulli decoder.

    The model of Kingma and Welling (2014) with one hidden ``tanh`` layer in
    each network (their appendix C):

    .. math::

        p(z) = \mathcal N(0, I_L), \qquad
        p_\theta(x \mid z) = \prod_{j=1}^{D} \mathrm{Bernoulli}\big(x_j \mid
            \operatorname{sigmoid}(\eta_j(z))\big), \qquad
        q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x)\big),

    where the decoder returns the logits :math:`\eta(z)` and the encoder returns
    :math:`(\mu_\phi(x), \log \sigma^2_\phi(x))`.  Implements
    {eq}`eq-vae-objective`, {eq}`eq-vae-bernoulli` (computed from the logits,
    {eq}`eq-vae-bernoulli-logits`) and {eq}`eq-vae-iwae` of Chapter 6.

    Parameters
    ----------
    data_dim : int >= 1
        :math:`D`, the number of pixels (64 for the 8 x 8 digits).
    latent_dim : int >= 1
        :math:`L`.
    hidden_dim : int >= 1
        Width of the hidden layer of the encoder and of the decoder.
    generator : torch.Generator, optional
        Source of the initial weights, drawn as torch's default for
        :class:`torch.nn.Linear` does (uniform on :math:`\pm 1/\sqrt{\text{fan in}}`);
        without it the global torch generator is used, as torch does.

    Raises
    ------
    ValueError
        If a dimension is not an integer in [1, 2**20], the weights would take
        more than 2 GiB, or ``generator`` is not a :class:`torch.Generator`.

    Notes
    -----
    The data must lie in [0, 1].  For binary data :math:`p_\theta(x \mid z)` is
    a probability; for grey levels the same formula is the usual cross-entropy
    reconstruction term but not a normalised density, so the bounds are then
    not bounds on a log-likelihood.

    The methods that draw :math:`z` (:meth:`elbo`, :meth:`log_importance_weights`,
    :meth:`iwae_bound`) refuse a call whose draws would need more than 2 GiB of
    intermediate tensors (counted as four tensors of ``num_samples * n_samples *
    max(data_dim, hidden_dim)`` numbers); evaluate large data sets in blocks of
    rows.  Every method refuses a model whose weights are NaN or infinite (what
    :func:`train` leaves when it breaks down) rather than return NaN.

    References
    ----------
    Kingma and Welling (2014); Rezende, Mohamed and Wierstra (2014);
    Burda, Grosse and Salakhutdinov (2016).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden_dim: int, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        # 2**20 units per layer is far beyond a course-sized network; it keeps a typo
        # such as 10**9 from trying to allocate the weights.
        self.data_dim = check_int(data_dim, "data_dim", maximum=2**20)
        self.latent_dim = check_int(latent_dim, "latent_dim", maximum=2**20)
        self.hidden_dim = check_int(hidden_dim, "hidden_dim", maximum=2**20)
        # Weights and biases of the four layers, refused before torch tries to allocate them.
        n_weights = ((data_dim + 1) * hidden_dim + (hidden_dim + 1) * 2 * latent_dim
                     + (latent_dim + 1) * hidden_dim + (hidden_dim + 1) * data_dim)
        if 4 * n_weights > _MAX_BYTES:
            raise ValueError(f"data_dim={data_dim}, latent_dim={latent_dim} and "
                             f"hidden_dim={hidden_dim} make {n_weights:,} weights "
                             f"({4 * n_weights / 2**30:.1f} GiB in float32), more than the "
                             f"{_MAX_BYTES / 2**30:.0f} GiB allowed; use smaller layers")
        generator = check_generator(generator)
        self.encoder = nn.Sequential(nn.Linear(data_dim, hidden_dim), nn.Tanh(),
                                     nn.Linear(hidden_dim, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.Tanh(),
                                     nn.Linear(hidden_dim, data_dim))
        if generator is not None:
            with torch.no_grad():
                for layer in (*self.encoder, *self.decoder):
                    if isinstance(layer, nn.Linear):
                        bound = 1.0 / math.sqrt(layer.in_features)
                        layer.weight.uniform_(-bound, bound, generator=generator)
                        layer.bias.uniform_(-bound, bound, generator=generator)

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, latent_dim={self.latent_dim}, hidden_dim={self.hidden_dim}"

    # -- validation -----------------------------------------------------------------

    def _check_weights(self) -> None:
        """Refuse a model whose weights are not finite, which would answer NaN."""
        if not all(all_finite(p) for p in self.parameters()):
            raise ValueError("the VAE's weights must be finite; some are NaN or infinite "
                             "(training that broke down leaves them so): start again from a "
                             "new VAE")

    def _check_data(self, X, name: str = "X") -> torch.Tensor:
        """``X`` as a tensor of the model's dtype, shape (n, data_dim), entries in [0, 1]."""
        self._check_weights()
        dtype = self.decoder[-1].weight.dtype
        X = as_float_tensor(X, name, dtype=dtype)
        if X.ndim != 2 or X.shape[1] != self.data_dim:
            raise ValueError(f"{name} must have shape (n_samples, {self.data_dim}) "
                             f"(data_dim={self.data_dim}); got shape {tuple(X.shape)}")
        low, high = (float(v) for v in torch.aminmax(X.detach()))
        if low < 0 or high > 1:
            raise ValueError(f"{name} must lie in [0, 1] for the Bernoulli decoder; got values in "
                             f"[{low:.3g}, {high:.3g}]")
        return X

    def _check_draws(self, X: torch.Tensor, num_samples) -> int:
        """``num_samples`` as an int >= 1 whose draws for ``X`` fit the memory budget."""
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        width = max(self.data_dim, self.hidden_dim, 2 * self.latent_dim)
        size = _TENSORS_ALIVE * num_samples * X.shape[0] * width * X.element_size()
        if size > _MAX_BYTES:
            raise ValueError(
                f"num_samples={num_samples} draws for each of the {X.shape[0]} rows of X need "
                f"intermediate tensors of {size / 2**30:.1f} GiB, more than the "
                f"{_MAX_BYTES / 2**30:.0f} GiB allowed; use fewer samples or pass X in blocks "
                f"of rows")
        return num_samples

    # -- the two networks ---------------------------------------------------------

    def encode(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Parameters of :math:`q_\phi(z \mid x)` for each row: means and log variances.

        Parameters
        ----------
        X : tensor of shape (n_samples, data_dim), entries in [0, 1]

        Returns
        -------
        loc, logvar : tensors of shape (n_samples, latent_dim)
            :math:`\mu_\phi(x)` and :math:`\log \sigma^2_\phi(x)`.

        Raises
        ------
        ValueError
            If ``X`` is not real numbers, has the wrong shape, is empty, is not
            finite or has entries outside [0, 1], or the model's weights are not
            finite.
        """
        return self._encode(self._check_data(X))

    def _encode(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, logvar = self.encoder(X).chunk(2, dim=-1)
        return loc, logvar

    def decode(self, z) -> torch.Tensor:
        r"""Logits :math:`\eta(z)` of the Bernoulli decoder :math:`p_\theta(x \mid z)`.

        Parameters
        ----------
        z : tensor of shape (..., latent_dim)

        Returns
        -------
        tensor of shape (..., data_dim)
            The logits; ``torch.sigmoid`` of them are the pixel probabilities.

        Raises
        ------
        ValueError
            If ``z`` is not real numbers, is empty or not finite, or its last axis
            is not ``latent_dim`` long, or the model's weights are not finite.
        """
        self._check_weights()
        z = as_float_tensor(z, "z", dtype=self.decoder[0].weight.dtype)
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (..., {self.latent_dim}) "
                             f"(latent_dim={self.latent_dim}); got shape {tuple(z.shape)}")
        return self.decoder(z)

    # -- the bounds ---------------------------------------------------------------

    def _sample_terms(self, X: torch.Tensor, num_samples: int, generator, *,
                      log_ratio: bool = True):
        """Encode, reparameterise and score ``num_samples`` draws per example (no checks).

        Returns ``log p(x | z)`` and, if ``log_ratio``, ``log p(z) - log q(z | x)``
        (else None), both of shape ``(num_samples, n)``, and the encoder outputs.
        """
        loc, logvar = self._encode(X)
        eps = torch.randn((num_samples, *loc.shape), generator=generator, dtype=loc.dtype)
        z = loc + torch.exp(0.5 * logvar) * eps  # eq-vae-reparam
        log_lik = _bernoulli_log_lik(self.decoder(z), X)
        if not log_ratio:
            return log_lik, None, loc, logvar
        # log q(z | x) at z = mu + sigma * eps: (z - mu) / sigma is eps itself.
        log_q = -0.5 * (eps.square() + logvar + _LOG_2PI).sum(-1)
        return log_lik, _log_standard_normal(z) - log_q, loc, logvar

    def _elbo(self, X: torch.Tensor, num_samples: int, analytic_kl: bool, generator):
        if num_samples == 1 and analytic_kl:
            # Every training step lands here. The same estimate as the general path
            # below, computed without its sample axis, whose extra operations cost
            # about a tenth of a step on these small networks. The noise is the same
            # draw (randn fills the same numbers whatever the leading axis).
            loc, logvar = self._encode(X)
            eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
            logits = self.decoder(loc + torch.exp(0.5 * logvar) * eps)  # eq-vae-reparam
            return _bernoulli_log_lik(logits, X) - _kl_standard_normal(loc, logvar)
        log_lik, log_prior_ratio, loc, logvar = self._sample_terms(
            X, num_samples, generator, log_ratio=not analytic_kl)
        if analytic_kl:
            return log_lik.mean(0) - _kl_standard_normal(loc, logvar)
        return (log_lik + log_prior_ratio).mean(0)

    def elbo(self, X, *, num_samples: int = 1, analytic_kl: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Reparameterised Monte Carlo estimate of the ELBO of each example.

        Implements {eq}`eq-vae-objective` of Chapter 6 with the two estimators
        of {eq}`eq-vae-estimators`.  With
        :math:`z^{(s)} = \mu_\phi(x) + \sigma_\phi(x) \odot \epsilon^{(s)}`,
        :math:`\epsilon^{(s)} \sim \mathcal N(0, I)` ({eq}`eq-vae-reparam`):

        .. math::

            \hat{\mathcal L}_{\text{analytic}} &= \frac1S \sum_{s=1}^S
                \log p_\theta(x \mid z^{(s)}) - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big), \\
            \hat{\mathcal L}_{\text{MC}} &= \frac1S \sum_{s=1}^S \big[\log p_\theta(x \mid z^{(s)})
                + \log p(z^{(s)}) - \log q_\phi(z^{(s)} \mid x)\big].

        Both are unbiased for :math:`\mathcal L(\phi, \theta; x)` and
        differentiable in the network weights (pathwise gradients).  The
        Bernoulli log-likelihood is computed from the logits
        ({eq}`eq-vae-bernoulli-logits`).

        Parameters
        ----------
        X : tensor of shape (n_samples, data_dim), entries in [0, 1]
        num_samples : int >= 1, default 1
            :math:`S`, draws of :math:`z` per example, in one batch.
        analytic_kl : bool, default True
            Use the closed-form KL ({eq}`eq-vae-gaussian-kl`) instead of its
            Monte Carlo estimate.
        generator : torch.Generator, optional
            Source of :math:`\epsilon`; the global torch generator if omitted.

        Returns
        -------
        tensor of shape (n_samples,)
            One estimate per example (average them for the data set's ELBO).

        Raises
        ------
        ValueError
            If ``X`` is not real numbers in [0, 1] of shape (n, data_dim),
            ``num_samples`` is not an integer >= 1 or its draws would exceed the
            memory budget, ``analytic_kl`` is not a bool, ``generator`` is
            not a torch.Generator, or the model's weights are not finite.
        """
        X = self._check_data(X)
        num_samples = self._check_draws(X, num_samples)
        analytic_kl = check_bool(analytic_kl, "analytic_kl")
        return self._elbo(X, num_samples, analytic_kl, check_generator(generator))

    def log_importance_weights(self, X, num_samples: int, *,
                               generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Log importance weights :math:`\log w = \log p_\theta(x, z) - \log q_\phi(z \mid x)`.

        For each example (row of ``X``), ``num_samples`` draws
        :math:`z^{(s)} \sim q_\phi(z \mid x)` by {eq}`eq-vae-reparam`, and

        .. math::

            \log w_s = \log p_\theta(x \mid z^{(s)}) + \log p(z^{(s)})
                - \log q_\phi(z^{(s)} \mid x),

        the weights of {eq}`eq-vae-iwae` in log space.  Their mean over the draws
        is the Monte Carlo-KL ELBO estimate, and
        ``logsumexp(log_w, 0) - log(num_samples)`` is :meth:`iwae_bound`'s
        estimate with the same draws.  They are what importance-sampling
        diagnostics (effective sample size, Pareto :math:`\hat k`) take as input,
        one column per data point.

        Parameters
        ----------
        X : tensor of shape (n_samples, data_dim), entries in [0, 1]
        num_samples : int >= 1
            :math:`S`, draws per example, in one batch.
        generator : torch.Generator, optional
            Source of the draws; the global torch generator if omitted.

        Returns
        -------
        tensor of shape (num_samples, n_samples)
            Column ``i`` holds the ``num_samples`` log weights of row ``i`` of ``X``;
            differentiable in the network weights.

        Raises
        ------
        ValueError
            As :meth:`iwae_bound`.
        """
        X = self._check_data(X)
        num_samples = self._check_draws(X, num_samples)
        log_lik, log_prior_ratio, _, _ = self._sample_terms(
            X, num_samples, check_generator(generator))
        return log_lik + log_prior_ratio

    def iwae_bound(self, X, num_samples: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Estimate of the importance-weighted bound :math:`\mathcal L_k` of each example.

        Implements {eq}`eq-vae-iwae` of Chapter 6 (Burda et al., 2016):

        .. math::

            \hat{\mathcal L}_k = \log \frac1k \sum_{s=1}^k w_s, \qquad
            w_s = \frac{p_\theta(x \mid z^{(s)})\, p(z^{(s)})}{q_\phi(z^{(s)} \mid x)}, \quad
            z^{(s)} \sim q_\phi(z \mid x),

        computed in log space, ``logsumexp(log w) - log k``, from
        :meth:`log_importance_weights`.  Its expectation :math:`\mathcal L_k`
        satisfies
        :math:`\mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p_\theta(x)`;
        :math:`\hat{\mathcal L}_1` is the Monte Carlo-KL ELBO estimate with one sample.

        Parameters
        ----------
        X : tensor of shape (n_samples, data_dim), entries in [0, 1]
        num_samples : int >= 1
            :math:`k`, importance samples per example, drawn in one batch.
        generator : torch.Generator, optional
            Source of the samples; the global torch generator if omitted.

        Returns
        -------
        tensor of shape (n_samples,)

        Raises
        ------
        ValueError
            If ``X`` is not real numbers in [0, 1] of shape (n, data_dim),
            ``num_samples`` is not an integer >= 1 or its draws would exceed the
            memory budget, ``generator`` is not a torch.Generator, or the
            model's weights are not finite.

        References
        ----------
        Burda, Grosse and Salakhutdinov (2016), Theorem 1.
        """
        log_w = self.log_importance_weights(X, num_samples, generator=generator)
        return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@dataclass(frozen=True)
class TrainingHistory:
    """What :func:`train` recorded, one entry per epoch.

    Attributes
    ----------
    train_elbo : tuple of float
        Average per-example ELBO estimate over each epoch's minibatches, taken
        while the weights move (as the usual running training loss is).
    test_elbo : tuple of float or None
        Per-example ELBO estimate (one sample, analytic KL) averaged over the
        held-out data at the end of each epoch; None without ``X_test``.
    """

    train_elbo: tuple[float, ...]
    test_elbo: tuple[float, ...] | None


def train(model: VAE, X, *, epochs: int, batch_size: int, lr: float, seed: int,
          X_test=None, progress: bool = True) -> TrainingHistory:
    r"""Fit a :class:`VAE` by stochastic gradient ascent on the ELBO, with Adam.

    Each epoch visits the rows of ``X`` in a fresh random order, in minibatches
    of ``batch_size``; each step maximises the average of the one-sample,
    analytic-KL ELBO estimate of {eq}`eq-vae-estimators` (Kingma and Welling,
    2014, Algorithm 1).  The shuffles and the reparameterisation noise come
    from a :class:`torch.Generator` seeded with ``seed``, the held-out
    evaluation from a second generator seeded from the first, so the same seed
    and the same initial weights give the same history, with or without
    ``X_test``.

    Training runs for ``epochs`` passes over the data: it has no stopping rule,
    so it neither converges nor warns.  It stops with an error if it breaks
    down (a non-finite ELBO or weight).

    Parameters
    ----------
    model : VAE
        Trained in place.
    X : tensor of shape (n_samples, data_dim), entries in [0, 1]
        The training data, one example per row.
    epochs : int >= 1
        Passes over ``X``.
    batch_size : int >= 1
        The last minibatch of an epoch holds the remainder.
    lr : float > 0
        Adam's learning rate (Kingma and Ba, 2015).
    seed : int in [0, 2**63 - 1]
    X_test : tensor of shape (m, data_dim), optional
        Held-out data, evaluated after every epoch.
    progress : bool, default True
        Show a ``tqdm`` progress bar on standard error: one line of at most 80
        characters, redrawn at most once a second, with the latest training
        ELBO and, with ``X_test``, the held-out one.

    Returns
    -------
    TrainingHistory
        ``train_elbo`` and ``test_elbo``, one entry per epoch, in nats per example.

    Raises
    ------
    ValueError
        If ``model`` is not a VAE or its weights are not finite, the data are
        not real numbers in [0, 1] of shape (n, data_dim), or a setting is out
        of range.  Also if training breaks down: a minibatch ELBO, a held-out
        ELBO or a weight that becomes NaN or infinite stops training with a
        message naming the epoch (and the step) and what to try; the model's
        weights are then unusable.

    Notes
    -----
    The optimiser is :class:`torch.optim.Adam` with ``fused=True``, created
    afresh on each call: a second call continues from the model's weights but
    not from Adam's moment estimates.

    References
    ----------
    Kingma and Welling (2014), Algorithm 1; Kingma and Ba (2015).
    """
    if not isinstance(model, VAE):
        raise ValueError(f"model must be a vicourse.vae.VAE; got {_describe(model)}")
    X = model._check_data(X, "X")
    if X_test is not None:
        X_test = model._check_data(X_test, "X_test")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_scalar(lr, "lr", positive=True)
    seed = check_seed(seed)
    progress = check_bool(progress, "progress")

    generator = torch.Generator().manual_seed(seed)
    # Drawn unconditionally, so the training path does not depend on X_test.
    eval_generator = torch.Generator().manual_seed(
        int(torch.randint(0, 2**62, (1,), generator=generator)))
    # fused: one kernel per step for all parameters instead of a loop over them; on
    # these small networks it takes a quarter off the time of a step.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    n = X.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    advice = (f"training diverged. Try a smaller lr (it was {lr:g}) or a larger batch_size "
              f"(it was {batch_size}); the model's weights are now unusable, so start again "
              f"from a new VAE")
    train_elbo, test_elbo = [], []
    # One line of at most 80 characters (a terminal's width, and less than the book's
    # column): the bar shrinks to fit; the rate, which changes every run, is left out.
    bar = tqdm(range(1, epochs + 1), desc="training", disable=not progress, file=sys.stderr,
               mininterval=1.0, leave=True, ncols=80, bar_format=_BAR_FORMAT)
    try:
        for epoch in bar:
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for step, start in enumerate(range(0, n, batch_size), start=1):
                batch = X[order[start:start + batch_size]]
                elbo = model._elbo(batch, 1, True, generator)
                loss = -elbo.mean()  # the optimiser minimises, so it is handed -ELBO
                value = -loss.item()
                finite_or_raise(value, f"the minibatch ELBO at epoch {epoch}, step {step} of "
                                f"{steps_per_epoch}", advice)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += value * batch.shape[0]
            # A non-finite gradient in the epoch's last step leaves non-finite weights
            # that no minibatch ELBO of this epoch has seen.
            if not all(all_finite(p) for p in model.parameters()):
                raise ValueError(f"a weight of the model is NaN or infinite after epoch "
                                 f"{epoch} (step {steps_per_epoch}); {advice}")
            train_elbo.append(total / n)
            postfix = {"ELBO": f"{train_elbo[-1]:.2f}"}
            if X_test is not None:
                with torch.no_grad():
                    held_out = float(model._elbo(X_test, 1, True, eval_generator).mean())
                test_elbo.append(finite_or_raise(
                    held_out, f"the held-out ELBO after epoch {epoch}", advice))
                postfix["held out"] = f"{test_elbo[-1]:.2f}"
            bar.set_postfix(postfix, refresh=False)
    finally:
        bar.close()   # also when training breaks down
    return TrainingHistory(train_elbo=tuple(train_elbo),
                           test_elbo=None if X_test is None else tuple(test_elbo))
