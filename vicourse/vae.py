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
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vicourse._validation import _describe, check_bool, check_generator, check_int

_LOG_2PI = math.log(2.0 * math.pi)


def _check_same_shape_finite(mu, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for name, value in (("mu", mu), ("logvar", logvar)):
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a numeric tensor; got {_describe(value)}") from None
        if not torch.is_floating_point(tensor):
            tensor = tensor.to(torch.get_default_dtype())
        if tensor.ndim < 1:
            raise ValueError(f"{name} must have at least one dimension (the latent one); "
                             f"got a scalar")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} must be finite; got "
                             f"{int((~torch.isfinite(tensor)).sum())} NaN or infinite entries")
        tensors.append(tensor)
    if tensors[0].shape != tensors[1].shape:
        raise ValueError(f"mu and logvar must have the same shape; got {tuple(tensors[0].shape)} "
                         f"and {tuple(tensors[1].shape)}")
    return tensors[0], tensors[1]


def _kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    # 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2), eq-vae-gaussian-kl; no checks.
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_kl_to_standard_normal(mu, logvar) -> torch.Tensor:
    r"""KL divergence of a diagonal Gaussian from the standard normal, in closed form.

    Implements {eq}`eq-vae-gaussian-kl` of Chapter 6 (Kingma and Welling, 2014,
    appendix B):

    .. math::

        \mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2) \,\|\, \mathcal N(0, I)\big)
        = \frac12 \sum_{j=1}^{L} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big),

    with :math:`\log \sigma_j^2` given as ``logvar``, the encoder's output.

    Parameters
    ----------
    mu : tensor of shape (..., L)
        Means :math:`\mu`; the last axis is the latent dimension.
    logvar : tensor of shape (..., L)
        Log variances :math:`\log \sigma^2`.

    Returns
    -------
    tensor of shape (...)
        One KL per leading index (per example), differentiable in both inputs.

    Raises
    ------
    ValueError
        If an input is not numeric, is a scalar, contains NaN or infinity, or
        the two shapes differ.

    References
    ----------
    Kingma and Welling (2014), appendix B.
    """
    mu, logvar = _check_same_shape_finite(mu, logvar)
    return _kl_standard_normal(mu, logvar)


def _log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    # log N(z | 0, I), summed over the latent axis.
    return -0.5 * (z.square() + _LOG_2PI).sum(-1)


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
    {eq}`eq-vae-objective`, {eq}`eq-vae-bernoulli` and {eq}`eq-vae-iwae` of
    Chapter 6.

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
        If a dimension is not a positive integer or ``generator`` is not a
        :class:`torch.Generator`.

    Notes
    -----
    The data must lie in [0, 1].  For binary data :math:`p_\theta(x \mid z)` is
    a probability; for grey levels the same formula is the usual cross-entropy
    reconstruction term but not a normalised density, so the bounds are then
    not bounds on a log-likelihood.

    References
    ----------
    Kingma and Welling (2014); Rezende, Mohamed and Wierstra (2014);
    Burda, Grosse and Salakhutdinov (2016).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden_dim: int, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.data_dim = check_int(data_dim, "data_dim")
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.hidden_dim = check_int(hidden_dim, "hidden_dim")
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

    def _check_data(self, x, name: str = "x") -> torch.Tensor:
        dtype = self.decoder[-1].weight.dtype
        try:
            x = torch.as_tensor(x, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a numeric array; got {_describe(x)}") from None
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"{name} must have shape (n, {self.data_dim}) (data_dim={self.data_dim});"
                             f" got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one example; got shape {tuple(x.shape)}")
        # One pass over the data: a NaN makes both extremes NaN, an infinity lies outside [0, 1].
        low, high = (float(v) for v in torch.aminmax(x))
        if math.isnan(low) or math.isnan(high):
            raise ValueError(f"{name} must be finite; got NaN entries")
        if low < 0 or high > 1:
            raise ValueError(f"{name} must lie in [0, 1] for the Bernoulli decoder; got values in "
                             f"[{low:.3g}, {high:.3g}]")
        return x

    # -- the two networks ---------------------------------------------------------

    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Parameters of :math:`q_\phi(z \mid x)`: the means and the log variances.

        Parameters
        ----------
        x : tensor of shape (n, data_dim), entries in [0, 1]

        Returns
        -------
        mu, logvar : tensors of shape (n, latent_dim)

        Raises
        ------
        ValueError
            If ``x`` has the wrong shape or entries outside [0, 1].
        """
        return self._encode(self._check_data(x))

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

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
            If the last axis of ``z`` is not ``latent_dim`` long or ``z`` is not finite.
        """
        dtype = self.decoder[0].weight.dtype
        try:
            z = torch.as_tensor(z, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"z must be a numeric array; got {_describe(z)}") from None
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (..., {self.latent_dim}) "
                             f"(latent_dim={self.latent_dim}); got shape {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z must be finite; got NaN or infinite entries")
        return self.decoder(z)

    # -- the bounds ---------------------------------------------------------------

    def _sample_terms(self, x: torch.Tensor, num_samples: int, generator, *,
                      log_ratio: bool = True):
        """Encode, reparameterise and score ``num_samples`` draws per example (no checks).

        Returns ``log p(x | z)`` and, if ``log_ratio``, ``log p(z) - log q(z | x)``
        (else None), both of shape ``(num_samples, n)``, and the encoder outputs.
        """
        mu, logvar = self._encode(x)
        eps = torch.randn((num_samples, *mu.shape), generator=generator, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # eq-vae-reparam
        logits = self.decoder(z)
        # log Bernoulli(x | sigmoid(eta)) = -BCE(eta, x), computed stably from the logits.
        log_lik = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        if not log_ratio:
            return log_lik, None, mu, logvar
        # log q(z | x) at z = mu + sigma * eps: (z - mu) / sigma is eps itself.
        log_q = -0.5 * (eps.square() + logvar + _LOG_2PI).sum(-1)
        return log_lik, _log_standard_normal(z) - log_q, mu, logvar

    def _elbo(self, x: torch.Tensor, num_samples: int, analytic_kl: bool, generator):
        if num_samples == 1 and analytic_kl:
            # Every training step lands here. The same estimate as the general path
            # below, computed without its sample axis, whose extra operations cost
            # about a tenth of a step on these small networks. The noise is the same
            # draw (randn fills the same numbers whatever the leading axis).
            mu, logvar = self._encode(x)
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            logits = self.decoder(mu + torch.exp(0.5 * logvar) * eps)  # eq-vae-reparam
            log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            return log_lik - _kl_standard_normal(mu, logvar)
        log_lik, log_prior_ratio, mu, logvar = self._sample_terms(
            x, num_samples, generator, log_ratio=not analytic_kl)
        if analytic_kl:
            return log_lik.mean(0) - _kl_standard_normal(mu, logvar)
        return (log_lik + log_prior_ratio).mean(0)

    def elbo(self, x, *, num_samples: int = 1, analytic_kl: bool = True,
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
        differentiable in the network weights (pathwise gradients).

        Parameters
        ----------
        x : tensor of shape (n, data_dim), entries in [0, 1]
        num_samples : int >= 1, default 1
            :math:`S`, draws of :math:`z` per example, in one batch.
        analytic_kl : bool, default True
            Use the closed-form KL ({eq}`eq-vae-gaussian-kl`) instead of its
            Monte Carlo estimate.
        generator : torch.Generator, optional
            Source of :math:`\epsilon`; the global torch generator if omitted.

        Returns
        -------
        tensor of shape (n,)
            One estimate per example (average them for the data set's ELBO).

        Raises
        ------
        ValueError
            If ``x`` has the wrong width or entries outside [0, 1], ``num_samples``
            is not an integer >= 1, or ``generator`` is not a torch.Generator.
        """
        x = self._check_data(x)
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        analytic_kl = check_bool(analytic_kl, "analytic_kl")
        return self._elbo(x, num_samples, analytic_kl, check_generator(generator))

    def iwae_bound(self, x, num_samples: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Estimate of the importance-weighted bound :math:`\mathcal L_k` of each example.

        Implements {eq}`eq-vae-iwae` of Chapter 6 (Burda et al., 2016):

        .. math::

            \hat{\mathcal L}_k = \log \frac1k \sum_{i=1}^k w_i, \qquad
            w_i = \frac{p_\theta(x \mid z_i)\, p(z_i)}{q_\phi(z_i \mid x)}, \quad
            z_i \sim q_\phi(z \mid x),

        computed in log space, ``logsumexp(log w) - log k``.  Its expectation
        :math:`\mathcal L_k` satisfies
        :math:`\mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p_\theta(x)`;
        :math:`\hat{\mathcal L}_1` is the Monte Carlo-KL ELBO estimate with one sample.

        Parameters
        ----------
        x : tensor of shape (n, data_dim), entries in [0, 1]
        num_samples : int >= 1
            :math:`k`, importance samples per example, drawn in one batch.
        generator : torch.Generator, optional
            Source of the samples; the global torch generator if omitted.

        Returns
        -------
        tensor of shape (n,)

        Raises
        ------
        ValueError
            If ``x`` has the wrong width or entries outside [0, 1], ``num_samples``
            is not an integer >= 1, or ``generator`` is not a torch.Generator.

        References
        ----------
        Burda, Grosse and Salakhutdinov (2016), Theorem 1.
        """
        x = self._check_data(x)
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        log_lik, log_prior_ratio, _, _ = self._sample_terms(x, num_samples,
                                                             check_generator(generator))
        log_w = log_lik + log_prior_ratio
        return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


@dataclass
class TrainingHistory:
    """Per-epoch record of :func:`train`.

    Attributes
    ----------
    train_elbo : list of float
        Average per-example ELBO estimate over each epoch's minibatches, taken
        while the weights move (as the usual running training loss is).
    test_elbo : list of float or None
        Per-example ELBO estimate (one sample, analytic KL) averaged over the
        held-out data at the end of each epoch; None without ``test_data``.
    """

    train_elbo: list[float]
    test_elbo: list[float] | None


def train(model: VAE, train_data, *, epochs: int, batch_size: int, lr: float, seed: int,
          test_data=None, progress: bool = True) -> TrainingHistory:
    r"""Fit a :class:`VAE` by stochastic gradient ascent on the ELBO, with Adam.

    Each epoch visits the training examples in a fresh random order, in
    minibatches of ``batch_size``; each step maximises the average of the
    one-sample, analytic-KL ELBO estimate of {eq}`eq-vae-estimators`
    (Kingma and Welling, 2014, Algorithm 1).  The shuffles and the
    reparameterisation noise come from a :class:`torch.Generator` seeded with
    ``seed``, the held-out evaluation from a second generator seeded from the
    first, so the same seed and the same initial weights give the same history,
    with or without ``test_data``.

    Parameters
    ----------
    model : VAE
        Trained in place.
    train_data : tensor of shape (n, data_dim), entries in [0, 1]
    epochs : int >= 1
    batch_size : int >= 1
        The last minibatch of an epoch holds the remainder.
    lr : float > 0
        Adam's learning rate (Kingma and Ba, 2015).
    seed : int >= 0
    test_data : tensor of shape (m, data_dim), optional
        Held-out data, evaluated after every epoch.
    progress : bool, default True
        Show a ``tqdm`` progress bar on standard error, redrawn at most once a
        second, with the latest training and held-out ELBO.

    Returns
    -------
    TrainingHistory
        ``train_elbo`` and ``test_elbo`` per epoch, in nats per example.

    Raises
    ------
    ValueError
        If ``model`` is not a VAE, the data have the wrong width or entries
        outside [0, 1], or a setting is out of range.

    References
    ----------
    Kingma and Welling (2014), Algorithm 1; Kingma and Ba (2015).

    Notes
    -----
    The optimiser is :class:`torch.optim.Adam` with ``fused=True``, created
    afresh on each call: a second call continues from the model's weights but
    not from Adam's moment estimates.
    """
    if not isinstance(model, VAE):
        raise ValueError(f"model must be a vicourse.vae.VAE; got {_describe(model)}")
    train_data = model._check_data(train_data, "train_data")
    if test_data is not None:
        test_data = model._check_data(test_data, "test_data")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    if (isinstance(lr, bool) or not isinstance(lr, numbers.Real)
            or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a finite number > 0; got {_describe(lr)}")
    seed = check_int(seed, "seed", minimum=0)
    progress = check_bool(progress, "progress")

    generator = torch.Generator().manual_seed(seed)
    # Drawn unconditionally, so the training path does not depend on test_data.
    eval_generator = torch.Generator().manual_seed(
        int(torch.randint(0, 2**62, (1,), generator=generator)))
    # fused: one kernel per step for all parameters instead of a loop over them; on
    # these small networks it takes a quarter off the time of a step.
    optimizer = torch.optim.Adam(model.parameters(), lr=float(lr), fused=True)
    n = train_data.shape[0]
    history = TrainingHistory(train_elbo=[], test_elbo=None if test_data is None else [])
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress,
               file=sys.stderr, mininterval=1.0, leave=True)
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = train_data[order[start:start + batch_size]]
            elbo = model._elbo(batch, 1, True, generator)
            loss = -elbo.mean()  # the optimiser minimises, so it is handed -ELBO
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total -= loss.item() * batch.shape[0]
        history.train_elbo.append(total / n)
        postfix = {"train ELBO": f"{history.train_elbo[-1]:.2f}"}
        if test_data is not None:
            with torch.no_grad():
                history.test_elbo.append(
                    float(model._elbo(test_data, 1, True, eval_generator).mean()))
            postfix["test ELBO"] = f"{history.test_elbo[-1]:.2f}"
        bar.set_postfix(postfix, refresh=False)
    bar.close()
    return history
