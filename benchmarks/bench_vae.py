"""Benchmark: one epoch of ``vicourse.vae.train`` against a plain PyTorch training loop.

The peer is the loop a PyTorch user would write by hand for the same VAE: the
same layers, the same minibatches from ``torch.randperm``, the same one-sample
analytic-KL ELBO computed the same way (the Bernoulli term from the logits, the
KL term with ``expm1``) and the same optimiser (Adam with ``fused=True``, as
``train`` uses). What is measured is the overhead of ``train`` (argument
checks, the per-step and per-epoch checks that the ELBO and the weights are
finite, the history, the generators, the progress-bar machinery switched off)
and of the package's ``VAE.elbo`` code path, relative to the bare loop.

Run: ``.venv/bin/python benchmarks/bench_vae.py`` (``make bench`` runs them all).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import compare, record  # noqa: E402

from vicourse.datasets import load_digits  # noqa: E402
from vicourse.vae import VAE, train  # noqa: E402

LATENT, HIDDEN, LR = 8, 128, 5e-3


def plain_epoch(encoder, decoder, optimizer, data, batch_size, generator):
    """One epoch of the hand-written loop: shuffle, then an Adam step per minibatch."""
    order = torch.randperm(data.shape[0], generator=generator)
    for start in range(0, data.shape[0], batch_size):
        x = data[order[start:start + batch_size]]
        mu, logvar = encoder(x).chunk(2, dim=-1)
        eps = torch.randn(mu.shape, generator=generator)
        logits = decoder(mu + torch.exp(0.5 * logvar) * eps)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu.square() + torch.expm1(logvar) - logvar).sum(-1)
        loss = -(log_lik - kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    # Single-threaded as in the chapter's notebook, where these networks are trained.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data, _ = load_digits()
    n = data.shape[0]
    rows = []
    for batch_size in (64, 128):
        model = VAE(64, LATENT, HIDDEN, generator=torch.Generator().manual_seed(0))
        encoder = nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT))
        decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 64))
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=LR,
                                     fused=True)
        peer_generator = torch.Generator().manual_seed(0)

        def ours(model=model, batch_size=batch_size):
            train(model, data, epochs=1, batch_size=batch_size, lr=LR, seed=0, progress=False)

        def peer(encoder=encoder, decoder=decoder, optimizer=optimizer, batch_size=batch_size,
                 generator=peer_generator):
            plain_epoch(encoder, decoder, optimizer, data, batch_size, generator)

        result = compare(ours, peer, repeats=15, warmup=2)
        result["case"] = f"one epoch, {n} digits, batch {batch_size}"
        result["extra"] = {
            f"vicourse examples per second (batch {batch_size})": f"{n / result['ours_s']:,.0f}",
            f"plain loop examples per second (batch {batch_size})": f"{n / result['peer_s']:,.0f}",
        }
        rows.append(result)
    record(
        "vae",
        title="One epoch of VAE training (vicourse.vae.train)",
        peer="a plain PyTorch loop written in benchmarks/bench_vae.py",
        sizes=(f"The {n} binarised training digits of load_digits, a VAE with 64 pixels, "
               f"{LATENT} latent dimensions and {HIDDEN} tanh hidden units, Adam "
               f"(fused, lr {LR}), one thread."),
        rows=rows,
        target=1.1,
        notes=("Both sides draw their shuffles and noise from a torch.Generator and use the "
               "same layers and optimiser settings; train also builds the optimiser and its "
               "generators on each call, as a one-epoch call must."),
    )


if __name__ == "__main__":
    main()
