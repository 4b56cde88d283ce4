"""The zoo: Hugging Face vision models built from tiny configs with random weights (no download).

Every test here runs on one torch thread (restored afterwards): the models are tiny, and the
CPU cores are shared with other test processes.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
