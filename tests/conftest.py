import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tests run tiny models, where intra-op threads cost more than they give (and under load
    on a 2-core machine, oversubscribed threads slowed some tests 10x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
