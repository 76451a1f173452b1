"""Settings shared by the unit tests."""

import os

import pytest
import torch
from hypothesis import settings

# The property tests draw the same examples on every run ("repeatable", the
# default), so that a run of `make test` is reproducible; a failure names its
# example.  HYPOTHESIS_PROFILE=explore draws fresh examples on each run, to look
# for bad inputs the fixed draws miss (CONTRIBUTING.md, "Tests").
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The tests' tensors are small: one thread is faster than several (thread
    # hand-offs cost more than they save, badly so on a loaded CI machine), and a
    # fixed thread count fixes the order of floating-point reductions.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
