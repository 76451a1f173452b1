"""Benchmark: black-box VI (vicourse.vi.fit_gaussian) against a plain PyTorch loop.

Both fit a Gaussian to the same correlated Gaussian target with the
reparameterised estimator and the closed-form entropy, 16 samples per step,
Adam, and record one ELBO estimate per step; the peer is the loop a user would
write by hand.  ``fit_gaussian`` runs every step (``tol=0``) but still does
all its bookkeeping (window means, the checks for a non-finite bound or
gradient); one more case adds a decreasing step size and iterate averaging,
which the peer does with torch's ``LambdaLR`` scheduler and a running sum.
Reported: steps per second of each, and the time ratio.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _adam_peer import adam_loop  # noqa: E402
from _report import compare, record, steps_row  # noqa: E402

from vicourse.vi import fit_gaussian  # noqa: E402

NUM_SAMPLES = 16
STEPS = 300
LR = 0.01
TAU0 = 50.0
WINDOW = 50  # STEPS is a multiple: averaging the last half of the windows is the last half


def make_target(dim: int, seed: int = 0):
    """A correlated Gaussian log-density (unnormalised), (S, d) -> (S,)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) / math.sqrt(dim)
    precision = torch.from_numpy(a @ a.T + np.eye(dim))
    mean = torch.from_numpy(rng.normal(size=dim))

    def log_joint(z):
        diff = z - mean
        return -0.5 * ((diff @ precision) * diff).sum(-1)

    return log_joint


def plain_loop(log_joint, dim: int, covariance_type: str, seed: int, kappa: float = 0.0,
               average: bool = False):
    """The hand-written peer: reparameterised ELBO with the entropy in closed form."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    if covariance_type == "diag":
        log_scale = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
        params = [loc, log_scale]
    else:
        raw = torch.zeros(dim, dim, dtype=torch.float64, requires_grad=True)
        params = [loc, raw]
    const = 0.5 * dim * (1.0 + math.log(2 * math.pi))

    def step(t):
        eps = torch.randn(NUM_SAMPLES, dim, generator=generator, dtype=torch.float64)
        if covariance_type == "diag":
            z = loc + eps * log_scale.exp()
            log_det = log_scale.sum()
        else:
            tril = torch.tril(raw, -1) + torch.diag(raw.diagonal().exp())
            z = loc + eps @ tril.T
            log_det = raw.diagonal().sum()
        log_p = log_joint(z)
        elbo = log_p.mean() + const + log_det
        # the Monte Carlo ELBO of the step, log p - log q at the samples
        recorded = (log_p.detach() + 0.5 * eps.square().sum(-1)).mean() \
            + 0.5 * dim * math.log(2 * math.pi) + log_det.detach()
        return elbo, recorded

    elbos, means = adam_loop(params, step, steps=STEPS, lr=LR, tau0=TAU0, kappa=kappa,
                             average=average)
    return (means[0] if average else loc.detach()), elbos


def main() -> None:
    # The tensors are small (16 x 100 at most): extra threads cost more than they save,
    # and on a shared machine they contend. Both sides run under the same setting.
    torch.set_num_threads(1)
    rows = []
    cases = [(dim, covariance_type, {}) for dim in (10, 100) for covariance_type in ("diag", "full")]
    cases.append((100, "full", {"kappa": 0.7, "average": True}))
    for dim, covariance_type, extra in cases:
        log_joint = make_target(dim)

        def ours(log_joint=log_joint, dim=dim, covariance_type=covariance_type, extra=extra):
            return fit_gaussian(log_joint, dim, covariance_type=covariance_type,
                                estimator="reparam",
                                num_samples=NUM_SAMPLES, steps=STEPS, lr=LR, tau0=TAU0, tol=0,
                                eval_window=WINDOW, seed=0, **extra)

        def peer(log_joint=log_joint, dim=dim, covariance_type=covariance_type, extra=extra):
            return plain_loop(log_joint, dim, covariance_type, seed=0, **extra)

        # Same seed, same noise, same maths: the two must agree before they are timed.
        fit, (peer_loc, peer_elbos) = ours(), peer()
        np.testing.assert_allclose(fit.loc, peer_loc.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.elbos, peer_elbos.numpy(), rtol=1e-8, atol=1e-8)
        result = compare(ours, peer, repeats=5)
        label = ", decreasing step size and averaging" if extra else ""
        rows.append(steps_row(f"d = {dim}, {covariance_type}{label}", result, STEPS))
    record(
        "vi",
        title="Black-box VI (vicourse.vi.fit_gaussian)",
        peer=("a plain PyTorch loop for the same objective, written in benchmarks/bench_vi.py "
              "and benchmarks/_adam_peer.py"),
        sizes=(f"Correlated Gaussian target, d = 10 and 100, diagonal and full families, "
               f"reparameterised estimator, {NUM_SAMPLES} samples per step, {STEPS} Adam steps "
               "(every step run, tol=0), float64, one thread; the last case adds the step size "
               f"lr * ({TAU0:g} / ({TAU0:g} + t))^0.7 and the average of the last half of the "
               "iterates."),
        rows=rows,
        target=1.2,
        notes="Both sides compute the same iterates (checked to 1e-8 before timing).",
    )


if __name__ == "__main__":
    main()
