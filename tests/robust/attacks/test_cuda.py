"""The attacks run on the inputs' device (skipped without a GPU)."""

import pytest
import torch

from captum_robust.attr import CAM, BatchedIntegratedGradients
from captum_robust.models import Small
from captum_robust.robust.attacks import AAI, ISA, PGD, L2TopKAttack, TopKAttack, softplus_surrogate
from captum_robust.robust.evaluation import attribution_robustness
from tests.robust.attacks._models import gradient_map

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attacks_on_cuda_match_invariants_and_cpu(dtype):
    torch.manual_seed(0)
    model_cpu = Small().to(dtype).eval()
    x_cpu = torch.rand(6, 1, 28, 28, dtype=dtype)
    model = Small().to(dtype).cuda().eval()
    model.load_state_dict(model_cpu.state_dict())
    x = x_cpu.cuda()
    cam = CAM(model, model.feature_layer, model.classifier)
    ig = BatchedIntegratedGradients(model)
    smooth = softplus_surrogate(model, beta=10.0)
    gen = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    cases = [
        (TopKAttack(model, ig, k=50, eps=0.1, step_size=0.03, n_iterations=3, surrogate=smooth,
                    attribution_kwargs={"n_steps": 4}), 0.1, "linf"),
        (AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=4), 0.2, "linf"),
        (L2TopKAttack(model, gradient_map, k=50, rho=1.0, n_iterations=3, n_restarts=2, surrogate=smooth), 1.0, "l2"),
        (PGD(model, eps=0.1, step_size=0.03, n_iterations=3), 0.1, "linf"),
    ]
    for attack, eps, norm in cases:
        x_adv, result = attack.perturb(x, generator=gen())
        assert x_adv.is_cuda and result.norm.is_cuda and x_adv.dtype == dtype
        d = (x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert bool((size <= eps + 1e-5).all())
        assert bool((x_adv >= 0).all()) and bool((x_adv <= 1).all())
        if hasattr(attack, "similarity"):
            assert torch.allclose(result.similarity, attack.similarity(x, x_adv), atol=1e-5)
            assert torch.equal(result.predictions, result.clean_predictions)
    # deterministic attacks agree with the CPU (same weights, same inputs)
    cam_cpu = CAM(model_cpu, model_cpu.feature_layer, model_cpu.classifier)
    aai_cpu = AAI(model_cpu, cam_cpu, eps=0.2, step_size=0.05, n_iterations=4, random_start=False)
    aai_gpu = AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=4, random_start=False)
    adv_cpu, r_cpu = aai_cpu.perturb(x_cpu)
    adv_gpu, r_gpu = aai_gpu.perturb(x)
    agree = (adv_gpu.cpu() - adv_cpu).flatten(1).abs().amax(1) < 1e-4
    assert float(agree.float().mean()) >= 0.5  # sign steps may differ where a gradient is ~0
    isa = ISA(model, cam, eps_max=0.3, n_eps_rounds=3, n_weight_rounds=2)
    with torch.no_grad():
        target = (model(x).argmax(1) + 1) % 10
    x_adv, result = isa.perturb(x, target=target)
    assert result.eps_star.is_cuda
    report = attribution_robustness(model, cam, AAI(model, cam, n_iterations=2), (x, target), k=8, pgd=None)
    assert report.summary["n_examples"] == 6
