"""Run the model tests single-threaded.

The tensors here are tiny; with several intra-op threads on a shared 2-core machine, OpenMP's
busy-waiting makes a forward pass 10-100x slower whenever another process is using a core.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
