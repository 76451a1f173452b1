"""Benchmark: fitting a normalizing flow (vicourse.vi.fit_flow) against a plain PyTorch loop.

Both fit the same flow to Chapter 4's banana with the pathwise ELBO gradient,
64 samples per step, Adam, and record one ELBO estimate per step; the peer is
the loop a user would write by hand around the same flow module (it calls the
flow's unchecked forward map, the one ``fit_flow`` calls, so that the ratio
measures the loop and not the layers).  ``fit_flow`` runs every step
(``tol=0``) but still does all its bookkeeping (copying the flow, window means,
the checks for a non-finite bound or gradient, the check of the log density's
output); one more case adds a decreasing step size and iterate averaging,
which the peer does with torch's ``LambdaLR`` scheduler and a running sum.
Reported: steps per second of each, and the time ratio.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _adam_peer import adam_loop  # noqa: E402
from _report import compare, record, steps_row  # noqa: E402

from vicourse import kl  # noqa: E402
from vicourse.flows import coupling_flow, planar_flow  # noqa: E402
from vicourse.vi import fit_flow  # noqa: E402

NUM_SAMPLES = 64
STEPS = 300
LR = 0.01
TAU0 = 50.0
WINDOW = 50  # STEPS is a multiple: averaging the last half of the windows is the last half


def plain_loop(log_target, start, seed: int, kappa: float = 0.0, average: bool = False):
    """The hand-written peer: Adam on minus the Monte Carlo ELBO of the flow's samples."""
    flow = copy.deepcopy(start)
    generator = torch.Generator().manual_seed(seed)
    params = list(flow.parameters())

    def step(t):
        eps = torch.randn(NUM_SAMPLES, flow.dim, generator=generator, dtype=torch.float64)
        z, log_q = flow._push(eps)
        elbo = (log_target(z) - log_q).mean()
        return elbo, elbo.detach()

    elbos, means = adam_loop(params, step, steps=STEPS, lr=LR, tau0=TAU0, kappa=kappa,
                             average=average)
    if average:
        with torch.no_grad():
            for p, mean in zip(params, means, strict=True):
                p.copy_(mean)
    return flow, elbos


def main() -> None:
    # Small tensors (64 x 2): extra threads cost more than they save, and on a shared
    # machine they contend. Both sides run under the same setting.
    torch.set_num_threads(1)
    log_target = kl.banana().log_prob
    rows = []
    cases = [("planar, 8 layers", lambda g: planar_flow(2, 8, generator=g), {}),
             ("coupling, 4 layers of 32 units", lambda g: coupling_flow(2, 4, 32, generator=g), {}),
             ("coupling, 4 layers of 32 units", lambda g: coupling_flow(2, 4, 32, generator=g),
              {"kappa": 0.7, "average": True})]
    for label, build, extra in cases:
        start = build(torch.Generator().manual_seed(0))

        def ours(start=start, extra=extra):
            return fit_flow(log_target, start, num_samples=NUM_SAMPLES, steps=STEPS, lr=LR,
                            tau0=TAU0, tol=0, eval_window=WINDOW, seed=0, **extra)

        def peer(start=start, extra=extra):
            return plain_loop(log_target, start, seed=0, **extra)

        # Same seed, same noise, same maths: the two must agree before they are timed.
        fit, (peer_flow, peer_elbos) = ours(), peer()
        np.testing.assert_allclose(fit.elbos, peer_elbos.numpy(), rtol=1e-8, atol=1e-8)
        for mine, theirs in zip(fit.flow.parameters(), peer_flow.parameters(), strict=True):
            np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(),
                                       rtol=1e-8, atol=1e-10)
        result = compare(ours, peer, repeats=7)
        suffix = ", decreasing step size and averaging" if extra else ""
        rows.append(steps_row(f"{label}{suffix}", result, STEPS))
    record(
        "flows",
        title="Fitting a normalizing flow (vicourse.vi.fit_flow)",
        peer=("a plain PyTorch loop around the same flow, written in benchmarks/bench_flows.py "
              "and benchmarks/_adam_peer.py"),
        sizes=(f"Chapter 4's banana target, a planar flow of 8 layers and a RealNVP flow of 4 "
               f"coupling layers (one hidden layer of 32 units each), both on a full Gaussian "
               f"base; {NUM_SAMPLES} samples per step, {STEPS} Adam steps (every step run, "
               f"tol=0), float64, one thread; the last case adds the step size "
               f"lr * ({TAU0:g} / ({TAU0:g} + t))^0.7 and the average of the last half of the "
               "iterates."),
        rows=rows,
        target=1.1,
        notes=("Both sides compute the same iterates (checked to 1e-8 before timing) and call "
               "the same unchecked forward map of the flow, so the ratio is the cost of "
               "fit_flow's loop: copying the flow, checking the log density's output every "
               "step, the window means and the stopping-rule bookkeeping."),
    )


if __name__ == "__main__":
    main()
