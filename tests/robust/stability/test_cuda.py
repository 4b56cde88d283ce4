"""The stability metrics run on the inputs' device and give the CPU's numbers (skipped without a GPU)."""

import copy

import pytest
import torch
from captum.attr import Saliency

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, perturbations, tiny

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("metric", METRICS)
def test_cuda_equals_cpu(metric):
    model, x, y = tiny()
    P = perturbations(x, 4)
    gpu = copy.deepcopy(model).cuda()
    layer = {"layer": model.conv2} if metric == "relative_representation_stability" else {}
    layer_gpu = {"layer": gpu.conv2} if layer else {}
    cpu_out = getattr(stability, metric)(Saliency(model), x, y, n_samples=4, perturb_func=lambda i, n, g: P, **layer)
    out = getattr(stability, metric)(Saliency(gpu), x.cuda(), y.cuda(), n_samples=4, internal_batch_size=5,
                                     perturb_func=lambda i, n, g: P.cuda(), **layer_gpu)
    assert out.values.device.type == "cuda"
    torch.testing.assert_close(out.values.cpu(), cpu_out.values, rtol=1e-7, atol=0)


def test_cuda_default_noise_is_seeded_on_the_device():
    model, x, y = tiny()
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    run = lambda: stability.max_sensitivity(Saliency(model), x, y, n_samples=3,  # noqa: E731
                                            generator=torch.Generator("cuda").manual_seed(0)).values
    assert torch.equal(run(), run())
    with pytest.raises(ValueError, match="generator is on device cpu"):
        stability.max_sensitivity(Saliency(model), x, y, n_samples=3, generator=torch.Generator().manual_seed(0))
