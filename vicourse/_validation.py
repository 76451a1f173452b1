"""Argument checks shared by every public function.

Every public function of :mod:`vicourse` validates its arguments at the door
and raises :class:`ValueError` with a message that names the argument, says
what was expected and shows what was given.  These helpers keep those messages
uniform; call them instead of writing new checks.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def _describe(value) -> str:
    """A short description of ``value`` for error messages."""
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_array(value, name: str, *, ndim: int | None = None, allow_empty: bool = False):
    """Convert ``value`` to a finite float64 array, checking its number of dimensions.

    Raises
    ------
    ValueError
        If ``value`` is not numeric, has the wrong number of dimensions, is
        empty (unless ``allow_empty``) or contains NaN or infinity.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {_describe(value)}") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got {array.ndim}-D input of shape {array.shape}"
        )
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(array)))} "
                         "NaN or infinite entries")
    return array


def check_positive(value, name: str):
    """Check that ``value`` is finite and strictly positive (scalar or array, broadcast).

    Returns the value as a float (scalar input) or float64 array.
    """
    array = as_float_array(value, name)
    if np.any(array <= 0):
        raise ValueError(f"{name} must be > 0; got {_describe(value)}")
    return float(array) if array.ndim == 0 else array


def check_finite(value, name: str):
    """Check that ``value`` is finite (scalar or array); return float or float64 array."""
    array = as_float_array(value, name)
    return float(array) if array.ndim == 0 else array


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """Check that ``value`` is an integer (not a bool) no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def check_probability_vector(value, name: str, *, atol: float = 1e-8) -> np.ndarray:
    """Check that the last axis of ``value`` holds non-negative entries summing to one."""
    array = as_float_array(value, name)
    if array.ndim == 0:
        raise ValueError(f"{name} must be a probability vector; got a scalar")
    if np.any(array < 0):
        raise ValueError(f"{name} must be non-negative; smallest entry is {array.min():.3g}")
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0, atol=atol):
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"{name} must sum to 1 along its last axis; got a sum of {worst:.6g}")
    return array


def check_spd(value, name: str, *, dim: int | None = None) -> np.ndarray:
    """Check symmetric positive definite matrices, single ``(d, d)`` or stacked ``(..., d, d)``.

    Symmetry is checked to a relative tolerance of 1e-8; positive
    definiteness by attempting a Cholesky factorisation.
    """
    array = as_float_array(value, name)
    if array.ndim < 2 or array.shape[-1] != array.shape[-2]:
        raise ValueError(f"{name} must be square (..., d, d); got shape {array.shape}")
    if dim is not None and array.shape[-1] != dim:
        raise ValueError(f"{name} must be {dim} x {dim}; got shape {array.shape}")
    scale = max(float(np.max(np.abs(array))), 1e-300)
    if not np.allclose(array, np.swapaxes(array, -1, -2), rtol=0, atol=1e-8 * scale):
        raise ValueError(f"{name} must be symmetric; got an asymmetric matrix")
    try:
        np.linalg.cholesky(array)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be positive definite; Cholesky factorisation failed") from None
    return array


def check_bool(value, name: str) -> bool:
    """Check that ``value`` is a bool (Python or NumPy), not merely truthy; return it as bool."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool (True or False); got {_describe(value)}")
    return bool(value)


def check_generator(generator, name: str = "generator") -> torch.Generator | None:
    """Check that ``generator`` is ``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None; got {_describe(generator)}")
    return generator


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """Turn ``seed`` (an int, a :class:`numpy.random.Generator` or None) into a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
                        and seed >= 0):
        return np.random.default_rng(seed)
    raise ValueError(f"{name} must be a non-negative int, a numpy Generator or None; "
                     f"got {_describe(seed)}")


def check_scalar(value, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Check that ``value`` is one finite number (not an array), optionally > 0 or >= 0.

    Returns it as a float.  ``positive`` asks for ``value > 0`` and
    ``nonnegative`` for ``value >= 0`` (a tolerance of 0, say).
    """
    array = as_float_array(value, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {array.shape}")
    out = float(array)
    if positive and out <= 0:
        raise ValueError(f"{name} must be > 0; got {_describe(value)}")
    if nonnegative and out < 0:
        raise ValueError(f"{name} must be >= 0; got {_describe(value)}")
    return out
