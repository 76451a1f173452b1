"""The shared argument checks: each rejects what it should, naming the argument."""

import numpy as np
import pytest
import torch

from vicourse import _validation as v


def test_as_float_array_checks_dimensions_emptiness_and_finiteness():
    np.testing.assert_array_equal(v.as_float_array([1, 2], "x", ndim=1), [1.0, 2.0])
    with pytest.raises(ValueError, match="x must be a 2-D array; got 1-D"):
        v.as_float_array([1.0], "x", ndim=2)
    with pytest.raises(ValueError, match="x must not be empty"):
        v.as_float_array([], "x")
    with pytest.raises(ValueError, match="x must be finite; got 1 NaN"):
        v.as_float_array([1.0, np.nan], "x")
    with pytest.raises(ValueError, match="x must be numeric"):
        v.as_float_array("abc", "x")
    np.testing.assert_array_equal(v.as_float_array(torch.ones(2), "x"), [1.0, 1.0])


def test_positive_scalar_and_int_checks():
    assert v.check_positive(2, "s") == 2.0
    with pytest.raises(ValueError, match="s must be > 0"):
        v.check_positive([1.0, 0.0], "s")
    assert v.check_scalar(0, "tol", nonnegative=True) == 0.0
    with pytest.raises(ValueError, match="tol must be >= 0"):
        v.check_scalar(-1e-9, "tol", nonnegative=True)
    with pytest.raises(ValueError, match="tol must be a scalar"):
        v.check_scalar([1.0, 2.0], "tol")
    assert v.check_int(np.int64(3), "n") == 3
    for bad in (True, 2.0, 0):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            v.check_int(bad, "n")
    assert v.check_bool(np.bool_(True), "flag") is True
    with pytest.raises(ValueError, match="flag must be a bool"):
        v.check_bool(1, "flag")


def test_probability_vector_check():
    np.testing.assert_allclose(v.check_probability_vector([[0.2, 0.8], [1.0, 0.0]], "w").sum(-1), 1)
    with pytest.raises(ValueError, match="w must sum to 1"):
        v.check_probability_vector([0.2, 0.7], "w")
    with pytest.raises(ValueError, match="w must be non-negative"):
        v.check_probability_vector([1.2, -0.2], "w")


def test_spd_check_accepts_covariances_and_rejects_the_rest():
    a = np.random.default_rng(0).normal(size=(3, 4, 4))
    stack = a @ np.swapaxes(a, -1, -2) + 1e-3 * np.eye(4)
    assert v.check_spd(stack, "cov").shape == (3, 4, 4)
    with pytest.raises(ValueError, match="cov must be square"):
        v.check_spd(np.ones((2, 3)), "cov")
    with pytest.raises(ValueError, match="cov must be 2 x 2"):
        v.check_spd(np.eye(3), "cov", dim=2)
    with pytest.raises(ValueError, match="cov must be symmetric"):
        v.check_spd([[1.0, 0.5], [0.0, 1.0]], "cov")
    with pytest.raises(ValueError, match="cov must be positive definite"):
        v.check_spd([[1.0, 2.0], [2.0, 1.0]], "cov")


def test_randomness_arguments():
    gen = np.random.default_rng(1)
    assert v.as_rng(gen) is gen
    assert v.as_rng(5).integers(100) == np.random.default_rng(5).integers(100)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        v.as_rng(-1)
    assert v.check_generator(None) is None
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        v.check_generator(np.random.default_rng(0))
