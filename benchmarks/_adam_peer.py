"""The hand-written peer of the black-box fits (``bench_vi.py``, ``bench_flows.py``).

The loop a user would write around a Monte Carlo ELBO: Adam on minus the
estimate, torch's ``LambdaLR`` scheduler for the step size
``lr * (tau0 / (tau0 + t)) ** kappa``, and a running sum for the mean of the
second half of the iterates.
"""

from __future__ import annotations

import torch


def adam_loop(params, step, *, steps: int, lr: float, tau0: float, kappa: float = 0.0,
              average: bool = False):
    """Run ``steps`` Adam steps on ``params``.

    ``step(t)`` returns ``(elbo, recorded)``: the differentiable ELBO estimate
    of step ``t`` and the number to record for it.  Returns ``(elbos, means)``:
    the recorded numbers, a tensor of shape (steps,), and with ``average`` the
    mean of each parameter over the second half of the iterates (else None).
    """
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (tau0 / (tau0 + t)) ** kappa)
    running = [torch.zeros_like(p) for p in params]
    elbos = torch.empty(steps, dtype=torch.float64)
    for t in range(steps):
        elbo, recorded = step(t)
        elbos[t] = recorded
        optimizer.zero_grad(set_to_none=True)
        (-elbo).backward()
        optimizer.step()
        scheduler.step()
        if average and t >= steps // 2:  # the mean of the second half of the iterates
            with torch.no_grad():
                for acc, p in zip(running, params, strict=True):
                    acc.add_(p)
    if not average:
        return elbos, None
    return elbos, [acc / (steps - steps // 2) for acc in running]
