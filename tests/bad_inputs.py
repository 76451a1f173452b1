"""Hypothesis strategies for invalid and extreme arguments, shared by the property tests.

Every public function of ``vicourse`` must answer a bad argument with a
``ValueError`` (or ``TypeError``) whose message names the argument; the
property tests of each module draw bad values from here and check that with
:func:`assert_rejects`.  Usage::

    from bad_inputs import assert_rejects, bad_arrays

    @given(bad=bad_arrays(shape=(5, 2)))
    def test_fit_rejects_bad_data(bad):
        assert_rejects(lambda: fit(bad), "X")
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: Values that are not a real number in any reading (the "types" of bad input).
NOT_NUMBERS = (None, "1.0", "abc", b"1", True, False, np.bool_(True), 1 + 2j, object(), {},
               [1.0, "a"], [[1.0, 2.0], [3.0]])


def not_numbers() -> st.SearchStrategy:
    """Values of the wrong kind: None, strings, bytes, bools, complex, objects, ragged lists."""
    return st.sampled_from(NOT_NUMBERS)


def huge_ints() -> st.SearchStrategy:
    """Integers too large for any count, size or seed (beyond int64 at the top)."""
    return st.one_of(st.integers(min_value=2**40, max_value=2**62),
                     st.integers(min_value=2**64, max_value=2**300))


def non_positive() -> st.SearchStrategy:
    """Finite numbers <= 0 (zero and negative scales, rates, learning rates)."""
    return st.one_of(st.just(0.0), st.just(-0.0),
                     st.floats(max_value=-1e-300, min_value=-1e300, allow_nan=False))


def non_finite() -> st.SearchStrategy:
    return st.sampled_from([np.nan, np.inf, -np.inf])


def non_finite_arrays(shape) -> st.SearchStrategy:
    """Arrays of ``shape`` (floats) with at least one NaN or infinity somewhere."""
    size = int(np.prod(shape))

    def build(args):
        values, index, bad = args
        out = np.asarray(values, dtype=float).reshape(shape)
        out.flat[index] = bad
        return out

    return st.tuples(
        st.lists(st.floats(-10, 10), min_size=size, max_size=size),
        st.integers(0, max(size - 1, 0)),
        non_finite(),
    ).map(build)


def wrong_ndim_arrays(ndim: int) -> st.SearchStrategy:
    """Finite float arrays whose number of dimensions is not ``ndim``."""
    dims = [k for k in range(0, 4) if k != ndim]
    return st.sampled_from(dims).flatmap(
        lambda k: hnp.arrays(np.float64, hnp.array_shapes(min_dims=k, max_dims=k, min_side=1,
                                                          max_side=3),
                             elements=st.floats(-5, 5)))


def meta_tensors(shape) -> st.SearchStrategy:
    """A tensor on the meta device: it has a shape but no values."""
    return st.just(torch.empty(shape, device="meta"))


def bad_arrays(shape) -> st.SearchStrategy:
    """Every kind of bad value for a float array argument of ``shape``."""
    ndim = len(shape)
    return st.one_of(
        not_numbers(),
        non_finite_arrays(shape),
        wrong_ndim_arrays(ndim),
        meta_tensors(shape),
        st.just(np.full(shape, 1 + 1j)),
        st.just(np.ones(shape, dtype=bool)),
        st.just(np.empty((0,) * max(ndim, 1))),
    )


def bad_scalars(*, positive: bool = False) -> st.SearchStrategy:
    """Every kind of bad value for a float scalar argument (and non-positive ones if asked)."""
    options = [not_numbers(), non_finite(), st.just(np.ones(2)), meta_tensors(())]
    if positive:
        options.append(non_positive())
    return st.one_of(*options)


def bad_ints(*, minimum: int = 1) -> st.SearchStrategy:
    """Every kind of bad value for an integer argument: wrong types, floats, too small, huge."""
    return st.one_of(
        not_numbers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(max_value=minimum - 1, min_value=minimum - 10**6),
        huge_ints(),
    )


def not_bools() -> st.SearchStrategy:
    """Values that are not a bool for a flag argument: None, strings, 0 and 1, floats, ..."""
    return st.one_of(not_numbers().filter(lambda v: not isinstance(v, bool | np.bool_)),
                     st.integers(0, 1), st.floats(0, 1))


def for_optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Bad values of an optional argument: ``strategy`` without None, which is its default."""
    return strategy.filter(lambda value: value is not None)


def bad_seeds() -> st.SearchStrategy:
    """Every kind of bad seed: wrong types, floats, negative, beyond 2**63 - 1."""
    return st.one_of(not_numbers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(max_value=-1), st.integers(min_value=2**63, max_value=2**300))


def bad_callables(expected_rows) -> st.SearchStrategy:
    """Log-density callables that break the convention: wrong shape, NaN, +inf, not a tensor.

    ``expected_rows`` is unused by the strategy but documents that the good
    callable returns one value per row.
    """
    del expected_rows
    return st.sampled_from([
        lambda z: z,                                          # (S, d): wrong shape
        lambda z: z.sum(),                                    # a scalar
        lambda z: torch.full((z.shape[0],), float("nan"), dtype=z.dtype),
        lambda z: torch.full((z.shape[0],), float("inf"), dtype=z.dtype),
        lambda z: torch.zeros(z.shape[0] + 1, dtype=z.dtype),
        lambda z: "not numbers",
        lambda z: None,
        "not callable",
        None,
    ])


def nan_gradient(z):
    """A log-density callable whose values are finite but whose gradient is NaN where z < 0.

    ``torch.where`` differentiates both branches: the derivative of ``sqrt`` at a
    negative ``z`` is NaN, and NaN times the zero weight of the unused branch stays NaN.
    """
    hidden = torch.where(z > 1e9, torch.sqrt(z), torch.zeros_like(z)).sum(-1)
    return -0.5 * (z**2).sum(-1) + hidden


def huge_values(z):
    """A log-density callable whose finite values (1e300) overflow once multiplied by 1e10."""
    return torch.full((z.shape[0],), 1e300, dtype=z.dtype)


def assert_rejects(call, name: str, exceptions=(ValueError, TypeError)) -> None:
    """``call()`` raises one of ``exceptions`` whose message names the argument ``name``."""
    with pytest.raises(exceptions) as info:
        call()
    message = str(info.value)
    assert re.search(rf"\b{re.escape(name)}\b", message), (
        f"the error does not name {name!r}: {type(info.value).__name__}: {message}")
