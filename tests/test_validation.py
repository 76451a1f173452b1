"""The shared argument checks: each rejects what it should, naming the argument."""

import numpy as np
import pytest
import torch
from bad_inputs import assert_rejects, bad_arrays, bad_ints, bad_scalars, huge_ints, not_numbers
from hypothesis import given, settings
from hypothesis import strategies as st

from vicourse import _validation as v


def test_as_float_array_checks_dimensions_emptiness_and_finiteness():
    np.testing.assert_array_equal(v.as_float_array([1, 2], "x", ndim=1), [1.0, 2.0])
    with pytest.raises(ValueError, match="x must be a 2-D array; got 1-D"):
        v.as_float_array([1.0], "x", ndim=2)
    with pytest.raises(ValueError, match="x must not be empty"):
        v.as_float_array([], "x")
    with pytest.raises(ValueError, match="x must be finite; got 1 NaN and 0 infinite"):
        v.as_float_array([1.0, np.nan], "x")
    np.testing.assert_array_equal(v.as_float_array(torch.ones(2), "x"), [1.0, 1.0])
    np.testing.assert_array_equal(v.as_float_array(np.arange(3, dtype=np.uint8), "x"), [0, 1, 2])


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.one_of(st.floats(width=32), st.sampled_from([3e38, -3e38])),
                       min_size=1, max_size=20),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_all_finite_agrees_with_the_elementwise_test(values, dtype):
    # NaN, +-inf anywhere, and finite entries whose float32 sum overflows.
    tensor = torch.tensor(values, dtype=dtype)
    assert v.all_finite(tensor) == bool(torch.isfinite(tensor).all())


@settings(max_examples=60, deadline=None)
@given(bad=bad_arrays(shape=(3, 2)))
def test_as_float_array_rejects_every_kind_of_bad_array(bad):
    assert_rejects(lambda: v.as_float_array(bad, "X", ndim=2), "X", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=not_numbers())
def test_values_that_are_not_real_numbers_are_never_converted(bad):
    # "1.0", True and None used to become 1.0, 1.0 and NaN.
    with pytest.raises(ValueError, match=r"^x must be (a )?real number") as info:
        v.as_float_array(bad, "x")
    assert "NaN" not in str(info.value)


def test_meta_tensors_are_refused_before_their_missing_data_is_read():
    with pytest.raises(ValueError, match="x must hold data; got a tensor on the 'meta' device"):
        v.as_float_array(torch.empty(3, device="meta"), "x")


def test_as_float_tensor_keeps_the_graph_of_a_float_tensor():
    leaf = torch.ones(3, dtype=torch.float32, requires_grad=True)
    out = v.as_float_tensor(leaf, "x", ndim=1)
    assert out.dtype == torch.float64 and out.requires_grad
    out.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.ones(3))
    with pytest.raises(ValueError, match="x must be finite"):
        v.as_float_tensor(torch.tensor([1.0, float("inf")]), "x")
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        v.as_float_tensor(torch.ones(3), "x", ndim=2)


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


@settings(max_examples=60, deadline=None)
@given(bad=bad_ints(minimum=1))
def test_check_int_rejects_every_kind_of_bad_integer(bad):
    assert_rejects(lambda: v.check_int(bad, "num_samples"), "num_samples", exceptions=ValueError)


@settings(max_examples=30, deadline=None)
@given(bad=huge_ints())
def test_seeds_too_large_for_torch_are_refused_at_the_door(bad):
    if bad <= v.MAX_SEED:
        assert v.check_seed(bad) == bad
        torch.Generator().manual_seed(bad)        # and torch accepts it
    else:
        assert_rejects(lambda: v.check_seed(bad), "seed", exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=bad_scalars(positive=True))
def test_check_scalar_rejects_every_kind_of_bad_scalar(bad):
    assert_rejects(lambda: v.check_scalar(bad, "lr", positive=True), "lr", exceptions=ValueError)


def test_probability_vector_check():
    np.testing.assert_allclose(v.check_probability_vector([[0.2, 0.8], [1.0, 0.0]], "w").sum(-1), 1)
    with pytest.raises(ValueError, match="w must sum to 1"):
        v.check_probability_vector([0.2, 0.7], "w")
    with pytest.raises(ValueError, match="w must be non-negative"):
        v.check_probability_vector([1.2, -0.2], "w")


@settings(max_examples=30, deadline=None)
@given(logits=st.lists(st.floats(-30, 30), min_size=2, max_size=12))
def test_float32_probabilities_that_sum_to_one_in_float32_are_accepted(logits):
    p = torch.softmax(torch.tensor(logits, dtype=torch.float32), 0)
    assert abs(float(p.double().sum()) - 1.0) < 64 * np.finfo(np.float32).eps
    v.check_probability_vector(p, "resp")
    v.check_probability_vector(p.numpy(), "resp")


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
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        v.as_rng(-1)
    assert v.check_generator(None) is None
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        v.check_generator(np.random.default_rng(0))


def test_interval_choice_and_callable_checks():
    assert v.check_in_interval(0.5, "kappa", 0.0, 1.0) == 0.5
    with pytest.raises(ValueError, match=r"kappa must lie in \(0.5, 1\]"):
        v.check_in_interval(0.5, "kappa", 0.5, 1.0, closed=(False, True))
    assert v.check_choice("full", "covariance_type", ("full", "diag")) == "full"
    for bad in ("diagonal", None, 1, True):
        with pytest.raises(ValueError, match="covariance_type must be one of"):
            v.check_choice(bad, "covariance_type", ("full", "diag"))
    with pytest.raises(ValueError, match="log_joint must be callable"):
        v.check_callable(3, "log_joint")


@pytest.mark.parametrize("fn, message", [
    (lambda z: z, r"shape \(4,\), one value per row; got shape \(4, 2\)"),
    (lambda z: torch.full((4,), float("nan"), dtype=z.dtype), "must return finite values"),
    (lambda z: torch.full((4,), float("inf"), dtype=z.dtype), "must return finite values"),
    (lambda z: "abc", "must be (a )?real number"),
    (lambda z: torch.zeros(4, dtype=torch.complex128), "must return real numbers"),
    (lambda z: z.numpy() @ np.ones(3), "failed on points"),
])
def test_call_log_density_names_the_callable_and_what_is_wrong(fn, message):
    z = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=message) as info:
        v.call_log_density(fn, z, "log_joint")
    assert "log_joint" in str(info.value)


def test_call_log_density_allows_minus_infinity_only_when_asked():
    z = torch.zeros(3, 1, dtype=torch.float64)
    minus_inf = lambda z: torch.full((3,), -float("inf"), dtype=z.dtype)  # noqa: E731
    assert bool(torch.isneginf(v.call_log_density(minus_inf, z, "f", allow_neg_inf=True)).all())
    with pytest.raises(ValueError, match="f must return finite values"):
        v.call_log_density(minus_inf, z, "f")


def test_call_log_density_tells_huge_finite_values_from_bad_ones():
    # The common path checks the sum of the values; a sum that overflows, or an allowed
    # -inf next to a NaN, must still be judged value by value.
    z = torch.zeros(3, 1, dtype=torch.float64)
    huge = torch.tensor([1e308, 1e308, -1.0], dtype=torch.float64)
    torch.testing.assert_close(v.call_log_density(lambda z: huge, z, "f"), huge)
    mixed = torch.tensor([-float("inf"), float("nan"), 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"f must return finite or -inf values; got 1 .*rows \[1\]"):
        v.call_log_density(lambda z: mixed, z, "f", allow_neg_inf=True)


def test_call_log_density_requires_a_graph_when_differentiating():
    z = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    detached = lambda z: torch.as_tensor(z.detach().numpy().sum(1))  # noqa: E731
    with pytest.raises(ValueError, match="log_joint must be differentiable"):
        v.call_log_density(detached, z, "log_joint", differentiable=True)
    assert v.call_log_density(lambda z: z.sum(1), z, "log_joint", differentiable=True).requires_grad
