"""Training with a regularizer under DistributedDataParallel (gloo, CPU), and the same training
in one process on the concatenated batch, for tests/robust/regularizers/test_distributed.py.

Run as a script, it is one rank: ``python _ddp_worker.py RANK WORLD STORE_FILE WHICH OUT_FILE``.
Every rank draws its examples' random starts from the position of the shared random stream
those examples have in the single-process run, so both runs see the same inner attacks and
their parameters must agree to float rounding.
"""

import gc
import os
import sys
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

N_STEPS = 3
BATCH = 8  # the concatenated batch; every rank gets BATCH // world examples
SHAPE = (1, 6, 6)
SEED = 1234
RESULTS_WRITTEN = "ddp-worker: results written"  # printed once the output file is complete


class TinyCamNet(nn.Module):
    """conv -> softplus -> conv [feature layer] -> GAP -> linear (CAM-able, smooth)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.Softplus()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)
        self.feature_layer = self.conv2
        self.classifier = self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.act(self.conv1(x))).mean(dim=(2, 3)))


def make_regularizer(which: str, model: nn.Module, generator: torch.Generator) -> Optional[nn.Module]:
    from captum_robust.robust import regularizers as R

    if which == "none":
        return None
    if which == "ignorm":
        return R.IGNorm(
            model, eps=0.2, lam=1.0, n_steps=4, attack_n_steps=2, n_iterations=3, step_size=0.05, generator=generator
        )
    if which == "int":
        return R.Int(model, eps=0.2, gamma=0.5, n_iterations=3, step_size=0.05, generator=generator)
    raise ValueError(f"unknown regularizer {which!r}")


def data() -> List[Dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(SEED)
    return [
        {"x": 0.2 + 0.6 * torch.rand((BATCH,) + SHAPE, generator=g), "y": torch.randint(0, 3, (BATCH,), generator=g)}
        for _ in range(N_STEPS)
    ]


def train(which: str, rank: int, world: int, wrap: Callable[[nn.Module], nn.Module]) -> Dict[str, torch.Tensor]:
    """``N_STEPS`` SGD steps of CE + regularizer on this rank's share of every batch."""
    torch.manual_seed(SEED)
    model = TinyCamNet()
    net = wrap(model)
    gen = torch.Generator()
    reg = make_regularizer(which, net, gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    per_rank = BATCH // world
    for step, batch in enumerate(data()):
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        x, y = batch["x"][rows], batch["y"][rows]
        # the random start of this rank's rows = the rows' part of the single-process draw
        gen.manual_seed(SEED + step)
        if rank:
            torch.rand((rank * per_rank,) + SHAPE, generator=gen)
        loss = F.cross_entropy(net(x), y)
        if reg is not None:
            loss = loss + reg(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def main(argv: List[str]) -> None:
    import torch.distributed as dist

    rank, world, store, which, out = int(argv[1]), int(argv[2]), argv[3], argv[4], argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        params = train(which, rank, world, lambda m: nn.parallel.DistributedDataParallel(m))
        torch.save(params, out + ".part")
        os.replace(out + ".part", out)  # the file exists only once it is complete
        print(RESULTS_WRITTEN, flush=True)
        # Teardown: no rank leaves while its peer still communicates, and the DDP reducer (which
        # holds the process group and pending gloo work) is collected while the interpreter is
        # fully alive, not during its finalization, where gloo's threads can abort the process.
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv)
