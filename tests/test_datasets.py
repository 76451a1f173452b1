"""Chapter 6: the 8 x 8 digits, scaled, binarised and split without a download."""

import numpy as np
import pytest
import sklearn.datasets
import torch
from bad_inputs import assert_rejects, bad_scalars, bad_seeds, not_bools
from hypothesis import given, settings
from hypothesis import strategies as st

from vicourse.datasets import load_digits

IMAGES, LABELS = sklearn.datasets.load_digits(return_X_y=True)


def rows_as_multiset(x, y):
    """Sorted (label, pixels) rows, to compare data sets regardless of order."""
    table = np.column_stack([np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)])
    return table[np.lexsort(table.T[::-1])]


@pytest.mark.parametrize("binarize", [True, False])
def test_split_is_a_partition_of_the_scaled_images(binarize):
    train, test, y_train, y_test = load_digits(binarize=binarize, return_labels=True)
    # The expected pixels are computed here from scikit-learn's raw counts (0..16).
    expected = IMAGES / 16.0
    if binarize:
        expected = (IMAGES >= 8).astype(np.float64)
    combined = rows_as_multiset(np.vstack([train, test]), np.concatenate([y_train, y_test]))
    np.testing.assert_array_equal(combined, rows_as_multiset(expected, LABELS))


def test_binarised_pixels_are_zero_or_one_and_grey_levels_lie_in_the_unit_interval():
    train, test = load_digits()
    for x in (train, test):
        assert x.dtype == torch.float32 and x.shape[1] == 64
        assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    grey, _ = load_digits(binarize=False)
    assert float(grey.min()) == 0.0 and float(grey.max()) == 1.0
    # Grey levels are multiples of 1/16.
    np.testing.assert_array_equal((grey * 16).round() / 16, grey)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_test_fraction_sets_the_size_and_the_split_is_stratified(fraction):
    train, test, y_train, y_test = load_digits(test_fraction=fraction, return_labels=True)
    assert test.shape[0] == int(np.ceil(fraction * len(IMAGES)))
    assert train.shape[0] + test.shape[0] == len(IMAGES)
    # Stratified: each digit's share of the test set is within one image of its share overall.
    counts = np.bincount(y_test.numpy(), minlength=10)
    expected = np.bincount(LABELS, minlength=10) * test.shape[0] / len(IMAGES)
    assert np.all(np.abs(counts - expected) <= 1.0)


def test_the_seed_fixes_the_split():
    a_train, a_test = load_digits(seed=3)
    b_train, b_test = load_digits(seed=3)
    c_train, _ = load_digits(seed=4)
    assert torch.equal(a_train, b_train) and torch.equal(a_test, b_test)
    assert not torch.equal(a_train, c_train)


def test_every_seed_up_to_the_largest_gives_a_stratified_split():
    # Seeds beyond 2**32 (which scikit-learn's integer random_state refuses) work too.
    splits = [load_digits(seed=seed, return_labels=True) for seed in (2**32, 2**63 - 1)]
    for _, test, _, y_test in splits:
        assert test.shape[0] == 360
        assert np.bincount(y_test.numpy(), minlength=10).min() >= 35
    assert not torch.equal(splits[0][1], splits[1][1])


@pytest.mark.parametrize("fraction", [10 / 1797, 1 - 10 / 1797])
def test_the_most_extreme_test_fractions_keep_every_digit_in_both_parts(fraction):
    train, test, y_train, y_test = load_digits(test_fraction=fraction, return_labels=True)
    assert min(train.shape[0], test.shape[0]) == 10
    assert set(y_train.tolist()) == set(y_test.tolist()) == set(range(10))


def rejects(call, name):
    assert_rejects(call, name, exceptions=ValueError)


@settings(max_examples=40, deadline=None)
@given(bad=not_bools(), which=st.sampled_from(["binarize", "return_labels"]))
def test_load_digits_rejects_flags_that_are_not_bools(bad, which):
    rejects(lambda: load_digits(**{which: bad}), which)


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(bad_scalars(), st.floats(max_value=8.5 / 1797),
                     st.floats(min_value=1 - 8.5 / 1797)))
def test_load_digits_rejects_bad_test_fractions(bad):
    # Outside (0, 1), or so close to an end that a part would lack some digit.
    rejects(lambda: load_digits(test_fraction=bad), "test_fraction")


@settings(max_examples=40, deadline=None)
@given(bad=bad_seeds())
def test_load_digits_rejects_bad_seeds(bad):
    rejects(lambda: load_digits(seed=bad), "seed")
