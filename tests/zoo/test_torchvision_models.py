"""torchvision's own ResNet and DenseNet (random weights), where ``import torchvision`` works.

The registry's torchvision wheels are CUDA builds; beside the CPU-only torch 2.13 that the tests
use, ``import torchvision`` fails with "operator torchvision::nms does not exist". These tests then
skip with that reason (never fail); the same structures are covered by the torchvision-shaped
modules of tests/attr/test_layer_finder.py and tests/_utils/test_layers.py.
"""

import pytest
import torch
from captum.attr import LayerGradCam

try:
    import torchvision
except Exception as err:  # ImportError, or the RuntimeError of a CUDA build beside a CPU torch
    pytest.skip(f"torchvision does not import here ({type(err).__name__}: {err}); the registry's wheels are CUDA "
                "builds that do not load beside the CPU-only torch", allow_module_level=True)

from captum_robust.attr import GradCAM, find_cam_layers  # noqa: E402


@pytest.mark.parametrize("name, layer, classifier", [
    ("resnet18", "layer4", "fc"),
    ("densenet121", "features", None),  # DenseNet: F.relu(features, inplace=True) before the pool: no CAM head
])
def test_torchvision_gradcam_equals_captum_and_layers_are_found(name, layer, classifier):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    module = dict(model.named_modules())[layer]
    ours = GradCAM(model, module).attribute(x, target=[0, 3])
    captum = LayerGradCam(model, module).attribute(x, target=[0, 3])
    torch.testing.assert_close(ours, captum, rtol=1e-4, atol=1e-6)
    if classifier is not None:
        found = find_cam_layers(model, x)
        assert (found.layer_name, found.classifier_name) == (layer, classifier)
