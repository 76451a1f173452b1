"""Argument checks shared by every public function.

Every public function of :mod:`vicourse` validates its arguments at the door
and raises :class:`ValueError` with a message that names the argument, says
what was expected and shows what was given.  These helpers keep those messages
uniform; call them instead of writing new checks.

What counts as a number here: Python and NumPy integers and floats, and
arrays or tensors of them.  Booleans, strings (even ``"1.0"``), bytes,
complex numbers, ``None``, object arrays and tensors on the ``meta`` device
are refused with a message naming the argument, never converted silently.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

#: Largest integer accepted by :func:`check_int` unless a caller says otherwise:
#: beyond it torch's C++ core overflows (``int64``) or allocation fails anyway.
MAX_INT = 2**31 - 1
#: Largest seed: torch.Generator.manual_seed takes a signed 64-bit value.
MAX_SEED = 2**63 - 1
_NUMERIC_KINDS = "iuf"   # signed and unsigned integers, floats
#: The row sums of a large probability array are checked over blocks of about this
#: many entries, so that validating it allocates nothing of its size.
_CHECK_BLOCK = 2**16


def _describe(value) -> str:
    """A short description of ``value`` for error messages."""
    if isinstance(value, torch.Tensor):
        where = "" if value.device.type == "cpu" else f" on device {value.device.type!r}"
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}{where}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if value is None:
        return "None"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, bool | str | bytes | complex):
        return f"{text} ({type(value).__name__})"
    return text


def _to_numpy(value, name: str) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (any numeric dtype), or a ValueError."""
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":
            raise ValueError(f"{name} must hold data; got a tensor on the 'meta' device, "
                             "which has a shape but no values")
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be real numbers; got {_describe(value)}")
        value = value.detach().cpu().numpy()
    if isinstance(value, bool | np.bool_ | str | bytes | complex | np.complexfloating) or value is None:
        raise ValueError(f"{name} must be a real number or an array of them; got {_describe(value)}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):   # ragged nested sequences
        raise ValueError(f"{name} must be a real number or a rectangular array of them; "
                         f"got {_describe(value)}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        what = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes",
                "O": "objects (None, mixed types or integers too large for 64 bits)"}
        raise ValueError(f"{name} must be real numbers; got {what.get(array.dtype.kind, array.dtype)}"
                         f" ({_describe(value)})")
    return array


def _row_blocks(array: np.ndarray):
    """Views of ``array`` (at least 1-D) split along its first axis into blocks of about
    ``_CHECK_BLOCK`` entries."""
    rows = max(1, _CHECK_BLOCK // max(1, array.size // max(1, array.shape[0])))
    return (array[start:start + rows] for start in range(0, array.shape[0], rows))


def as_float_array(value, name: str, *, ndim: int | None = None, allow_empty: bool = False):
    """Convert ``value`` to a finite float64 array, checking its number of dimensions.

    Raises
    ------
    ValueError
        If ``value`` is not real numbers (see the module docstring), has the
        wrong number of dimensions, is empty (unless ``allow_empty``) or
        contains NaN or infinity.
    """
    array = _to_numpy(value, name)
    with np.errstate(over="ignore"):
        array = array.astype(np.float64, copy=False)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got {array.ndim}-D input of shape {array.shape}"
        )
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")
    # min and max propagate NaN and show an infinity without a temporary array of
    # the input's size (np.isfinite(array) would make one); count only on failure.
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        nan = int(np.isnan(array).sum())
        inf = int((~np.isfinite(array)).sum()) - nan
        raise ValueError(f"{name} must be finite; got {nan} NaN and {inf} infinite entries")
    return array


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry of a floating-point tensor is finite (no NaN, no infinity).

    One reduction instead of an elementwise test, about twenty times faster on
    large tensors: a finite sum means every entry is finite, because a NaN or
    an infinity makes the sum NaN or infinite.  Only a sum that is not finite
    (an overflow, or a bad entry) is looked at entry by entry.
    """
    with torch.no_grad():
        return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def as_float_tensor(value, name: str, *, ndim: int | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Like :func:`as_float_array`, but return a tensor of ``dtype``.

    A floating-point tensor that requires grad is converted with ``.to``, so
    gradients still flow through it; anything else goes through
    :func:`as_float_array` first.
    """
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type != "meta":
        tensor = value.to(dtype)
        if ndim is not None and tensor.ndim != ndim:
            raise ValueError(f"{name} must be a {ndim}-D array; got {tensor.ndim}-D input of "
                             f"shape {tuple(tensor.shape)}")
        if tensor.numel() == 0:
            raise ValueError(f"{name} must not be empty; got shape {tuple(tensor.shape)}")
        if not all_finite(tensor.detach()):
            raise ValueError(f"{name} must be finite; got "
                             f"{int((~torch.isfinite(tensor.detach())).sum())} NaN or infinite entries")
        return tensor
    return torch.from_numpy(as_float_array(value, name, ndim=ndim).copy()).to(dtype)


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


def check_int(value, name: str, *, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """Check that ``value`` is an integer (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}; got {_describe(value)}")
    return int(value)


def check_seed(value, name: str = "seed") -> int:
    """Check that ``value`` is an integer seed in ``[0, 2**63 - 1]`` (what torch accepts)."""
    return check_int(value, name, minimum=0, maximum=MAX_SEED)


def check_probability_vector(value, name: str, *, atol: float | None = None) -> np.ndarray:
    """Check that the last axis of ``value`` holds non-negative entries summing to one.

    The default tolerance on the sums is 1e-8 for float64 input and a few
    units of rounding (``64 * eps``) for lower precision, so float32
    probabilities that sum to one within float32 rounding are accepted.
    """
    raw = _to_numpy(value, name)
    if atol is None:
        eps = np.finfo(raw.dtype).eps if raw.dtype.kind == "f" else 0.0
        atol = max(1e-8, 64 * float(eps))
    array = as_float_array(raw, name)
    if array.ndim == 0:
        raise ValueError(f"{name} must be a probability vector; got a scalar")
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative; smallest entry is {array.min():.3g}")
    if any(not np.allclose(block.sum(axis=-1), 1.0, rtol=0, atol=atol) for block in _row_blocks(array)):
        sums = array.sum(axis=-1)
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"{name} must sum to 1 along its last axis; got a sum of {worst!r} "
                         f"(off by {worst - 1.0:.3g})")
    return array


def check_spd(value, name: str, *, dim: int | None = None, single: bool = False) -> np.ndarray:
    """Check symmetric positive definite matrices: stacked ``(..., d, d)``, or one ``(d, d)`` if ``single``.

    Symmetry is checked to a relative tolerance of 1e-8; positive
    definiteness by attempting a Cholesky factorisation.
    """
    array = as_float_array(value, name)
    if single and array.ndim != 2:
        raise ValueError(f"{name} must be one (d, d) matrix; got shape {array.shape}")
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
    """Check that ``generator`` is ``None`` or a CPU :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None; got {_describe(generator)}")
    return generator


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """Turn ``seed`` (an int, a :class:`numpy.random.Generator` or None) into a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(check_seed(seed, name))


def check_scalar(value, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Check that ``value`` is one finite real number (not an array), optionally > 0 or >= 0.

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


def check_in_interval(value, name: str, low: float, high: float, *,
                      closed: tuple[bool, bool] = (True, True)) -> float:
    """Check that ``value`` is one finite real number in an interval; return it as a float.

    ``closed`` says whether each end belongs to the interval.
    """
    out = check_scalar(value, name)
    below = out < low if closed[0] else out <= low
    above = out > high if closed[1] else out >= high
    if below or above:
        interval = f"{'[' if closed[0] else '('}{low:g}, {high:g}{']' if closed[1] else ')'}"
        raise ValueError(f"{name} must lie in {interval}; got {_describe(value)}")
    return out


def check_choice(value, name: str, choices):
    """Check that ``value`` is one of ``choices`` (compared with ``==``, types checked first)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {_describe(value)}")
    return value


def check_callable(value, name: str):
    """Check that ``value`` can be called."""
    if not callable(value):
        raise ValueError(f"{name} must be callable; got {_describe(value)}")
    return value


def call_log_density(fn, z: torch.Tensor, name: str, *, allow_neg_inf: bool = False,
                     differentiable: bool = False) -> torch.Tensor:
    """Call a log-density callable on points ``z`` of shape (S, d) and check what it returns.

    The course's convention (CONTRIBUTING.md): a log-density callable maps a
    float64 tensor of shape (S, d) to a tensor of shape (S,), one value per
    row.  This checks the shape, that the values are real numbers, that none
    is NaN or ``+inf`` (nor ``-inf`` unless ``allow_neg_inf``), and, with
    ``differentiable=True``, that the values depend on ``z`` through autograd
    (for pathwise gradients).  An array-like return value is converted to a
    float64 tensor.

    Raises
    ------
    ValueError
        Naming ``name`` and the rows where the values are bad.
    """
    try:
        values = fn(z)
    except (TypeError, ValueError, RuntimeError, IndexError) as error:
        raise ValueError(f"{name} failed on points of shape {tuple(z.shape)}: "
                         f"{type(error).__name__}: {error}") from error
    if not isinstance(values, torch.Tensor):
        values = torch.from_numpy(_to_numpy(values, f"the output of {name}").astype(np.float64))
    elif values.is_complex() or values.dtype == torch.bool or values.device.type == "meta":
        raise ValueError(f"{name} must return real numbers; got {_describe(values)}")
    if values.shape != (z.shape[0],):
        raise ValueError(f"{name} must map points of shape {tuple(z.shape)} to shape "
                         f"({z.shape[0]},), one value per row; got shape {tuple(values.shape)}")
    if values.dtype != z.dtype:
        values = values.to(z.dtype)
    # This runs at every step of a stochastic fit, so the common path is one reduction:
    # the sum of the values is finite when every value is (it may also overflow, or hold
    # an allowed -inf; then the values are looked at one by one).
    if not math.isfinite(float(values.detach().sum())):
        detached = values.detach()
        bad = torch.isnan(detached) | torch.isposinf(detached)
        if not allow_neg_inf:
            bad = bad | torch.isneginf(detached)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:3].tolist()
            allowed = "finite or -inf" if allow_neg_inf else "finite"
            first = float(detached[rows[0]])
            raise ValueError(f"{name} must return {allowed} values; got {int(bad.sum())} that "
                             f"are not (first at rows {rows}: {first}), e.g. NaN from the log of "
                             "a negative number or +inf from an overflow")
    if differentiable and not values.requires_grad and z.requires_grad:
        raise ValueError(f"{name} must be differentiable with torch operations: its output "
                         "does not depend on its input through autograd")
    return values


def finite_or_raise(value: float, what: str, advice: str) -> float:
    """Raise a ValueError saying ``what`` became non-finite, with ``advice``, unless finite."""
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value}; {advice}")
    return value
