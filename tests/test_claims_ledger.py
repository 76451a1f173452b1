"""The checked-claims helper and the generated page that lists every checked claim."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vicourse.claims import MAX_WIDTH, check

ROOT = Path(__file__).resolve().parent.parent


def test_check_prints_the_claim_when_it_holds(capsys):
    check(np.float64(0.1) + 0.2 > 0.29, "0.1 + 0.2 exceeds 0.29")
    check(torch.tensor(True), "a one-element bool tensor counts")
    assert capsys.readouterr().out.splitlines() == ["✓ 0.1 + 0.2 exceeds 0.29",
                                                    "✓ a one-element bool tensor counts"]


def test_check_fails_loudly_and_prints_nothing_when_the_claim_is_false(capsys):
    with pytest.raises(AssertionError, match="✗ the moon is made of cheese"):
        check(False, "the moon is made of cheese")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("condition", [np.array([True, True]), 1, "yes", None, np.float64(1.0)])
def test_check_refuses_conditions_that_are_not_one_bool(condition):
    with pytest.raises(ValueError, match="condition must be"):
        check(condition, "a claim")


@pytest.mark.parametrize("claim", ["", "   ", "two\nlines", "x" * (MAX_WIDTH - 1), None])
def test_check_refuses_claims_that_do_not_fit_one_line_of_the_page(claim):
    with pytest.raises(ValueError, match="claim must be"):
        check(True, claim)


def test_claims_page_lists_the_claims_stored_in_the_notebooks():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "claims_ledger.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
