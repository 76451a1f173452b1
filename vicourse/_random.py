"""Draw from :mod:`torch.distributions` without touching global random state.

``torch.distributions.Distribution.sample`` takes no generator argument; it
draws from torch's global generator.  The course passes randomness in
explicitly, so these helpers seed a private fork of the global state from the
caller's :class:`torch.Generator` and restore the global state afterwards.
"""

from __future__ import annotations

import torch


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def sample(distribution, sample_shape, generator: torch.Generator | None = None,
           *, reparameterized: bool = False) -> torch.Tensor:
    """Draw ``distribution.sample(sample_shape)`` (or ``rsample``) from ``generator``.

    With ``generator=None`` the global torch generator is used, as torch does.
    """
    draw = distribution.rsample if reparameterized else distribution.sample
    if generator is None:
        return draw(torch.Size(sample_shape))
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also seed (and
        # lazily initialise) every accelerator backend, at ~3 ms per call.
        torch.default_generator.manual_seed(_seed_from(generator))
        return draw(torch.Size(sample_shape))
