"""Settings shared by the unit tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The tests' tensors are small: one thread is faster than several (thread
    # hand-offs cost more than they save, badly so on a loaded CI machine), and a
    # fixed thread count fixes the order of floating-point reductions.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
