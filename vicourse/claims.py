"""Checked claims: a sentence of the book, asserted and printed by the cell next to it.

Every claim the text makes about a result is a call of :func:`check` in the
cell that computes it.  The cell's output then shows one line, ``✓ <claim>``,
so a reader sees that the claim was checked, and a fresh run that breaks it
fails (``pytest --nbval`` re-runs every notebook).  The book's appendix page
*Checked claims* lists every such line of every chapter, generated from the
stored outputs by ``tools/claims_ledger.py``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check", "MARK", "MAX_WIDTH"]

#: The mark that starts a checked line; ``tools/claims_ledger.py`` looks for it.
MARK = "✓"
#: The widest output line the book's column shows without scrolling.
MAX_WIDTH = 88


def check(condition, claim: str) -> None:
    """Assert ``condition`` and print ``✓ claim``; raise ``AssertionError`` if it fails.

    Parameters
    ----------
    condition : bool
        The claim, evaluated: a Python or NumPy bool, or a one-element bool
        array or tensor (``np.all(...)``, ``abs(gap) < 1e-10``).
    claim : str
        What the text says, in a few words, with the tolerance or the setting
        it was checked at: ``"ELBO + KL = log p(x) for 1000 q, to 1e-10"``.
        One line, at most ``MAX_WIDTH - 2`` characters.

    Raises
    ------
    AssertionError
        ``✗ claim``, if ``condition`` is false.
    ValueError
        If ``condition`` is not a single bool or ``claim`` is not a short,
        non-empty, single-line string.

    Examples
    --------
    >>> check(1 + 1 == 2, "one plus one is two")
    ✓ one plus one is two
    """
    if not isinstance(claim, str) or not claim.strip() or "\n" in claim:
        raise ValueError(f"claim must be a non-empty, single-line string; got {claim!r:.60}")
    if len(claim) > MAX_WIDTH - 2:
        raise ValueError(f"claim must be at most {MAX_WIDTH - 2} characters, so that its line fits "
                         f"the page; got {len(claim)}: {claim[:40]!r}...")
    if isinstance(condition, torch.Tensor):
        condition = condition.detach().cpu().numpy()
    if isinstance(condition, np.ndarray):
        if condition.size != 1 or condition.dtype != np.bool_:
            raise ValueError("condition must be a single bool; got an array of shape "
                             f"{condition.shape} and dtype {condition.dtype} (use np.all or np.any)")
        condition = condition.item()
    if not isinstance(condition, bool | np.bool_):
        raise ValueError(f"condition must be a bool; got {type(condition).__name__} {condition!r:.40}")
    if not condition:
        raise AssertionError(f"✗ {claim}")
    print(f"{MARK} {claim}")
