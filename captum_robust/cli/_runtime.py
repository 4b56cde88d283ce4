"""Run-time setup shared by the subcommands: the output folder, threads and the global RNG,
the device, the torchrun process group, progress bars, and the ``run`` options of
``evaluate`` and ``certify``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from captum_robust.cli import _types

__all__ = [
    "UsageError", "prepare_out", "run_settings", "resolve_device", "distributed_run", "progress", "my_batches",
    "batch_generator", "print_outputs", "write_results", "write_report", "run_line", "report_tail", "add_run_options",
]


class UsageError(Exception):
    """An expected user error: reported as one line on stderr with exit status 2."""


def prepare_out(out: str) -> Path:
    """Create the output folder (or accept an existing one); UsageError if unusable."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out '{out}' cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{out}' is not writable")
    return path


@contextlib.contextmanager
def run_settings(threads: Optional[int], seed: int) -> Iterator[None]:
    """Set the torch intra-op threads (None: leave them) and seed a forked global RNG.

    Everything random happens inside ``fork_rng`` and the thread count is restored on exit, so
    calling :func:`captum_robust.cli.main` from Python leaves the caller's global RNG and torch
    settings as they were.
    """
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``--device`` -> a torch device; under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but CUDA is not available on this machine; use --device cpu")
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        index = local_rank if world > 1 else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local_rank} has no CUDA device (only {torch.cuda.device_count()} visible)")
        return torch.device("cuda", index)
    return torch.device("cpu")


def distributed_run(args: argparse.Namespace, body: Callable[[Any, torch.device], int]) -> int:
    """Resolve the device, join the torchrun process group (if any) and run ``body(ctx, device)``
    under :func:`run_settings` (``--threads``, ``--seed``)."""
    from captum_robust._utils.distributed import distributed_session, env_world

    try:
        _, _, local_rank = env_world()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    device = resolve_device(args.device, local_rank)
    with distributed_session(device) as ctx, run_settings(args.threads, args.seed):
        return body(ctx, device)


@contextlib.contextmanager
def progress(ctx: Any, total: int, desc: str, show: bool) -> Iterator[Any]:
    """A tqdm bar on stderr, shown on rank 0 only and only when ``show``; closed on exit."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not (show and ctx.is_main), file=sys.stderr, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def my_batches(args: argparse.Namespace, ctx: Any, n: int) -> List[Tuple[int, range]]:
    """This process's share ``(batch index, example indices)`` of the fixed batches of
    ``--batch-size`` over ``n`` examples; the batches do not depend on the number of processes."""
    from captum_robust._utils.distributed import assign_batches

    return assign_batches(n, args.batch_size, ctx.rank, ctx.world_size)


def batch_generator(args: argparse.Namespace, b: int, device: torch.device) -> torch.Generator:
    """The generator of batch ``b``, seeded with ``(--seed, b)``."""
    from captum_robust._utils.distributed import batch_seed

    return torch.Generator(device=device).manual_seed(batch_seed(args.seed, b))


def print_outputs(table: str, paths: Sequence[Path]) -> None:
    """Print the result table and the files written."""
    print()
    print(table)
    print()
    for path in paths:
        print(f"wrote {path}")


def write_results(out: Path, results: Dict[str, Any]) -> Path:
    """Write ``results.json`` into ``out`` (NaN and infinities kept as ``NaN`` / ``Infinity``); returns its path."""
    from captum_robust._utils.reporting import write_json

    return write_json(out / "results.json", results, nan="keep")


def write_report(out: Path, text: str) -> Path:
    """Write ``report.md`` into ``out``; returns its path."""
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


def run_line(args: argparse.Namespace, settings: Dict[str, Any]) -> str:
    """The report's line on the ``run`` options: seed, batches, processes, device."""
    return (f"- seed {args.seed}, batches of {args.batch_size}, {settings['world_size']} process(es), "
            f"device {settings['device']}")


def report_tail(results: str, figures: Sequence[str], wall: float) -> List[str]:
    """The last lines of a report: the files written (``results.json``, described by ``results``,
    the report, then one line per figure) and the wall time."""
    return ["## Files", "", f"- `results.json`: {results}", "- `report.md`: this report", *figures, "",
            f"Wall time: {wall:.1f} s.", ""]


def add_run_options(p: argparse.ArgumentParser, out: str, batch: int) -> None:
    """The ``run`` options of ``evaluate`` and ``certify``: batches, seed, output, device, threads."""
    r = p.add_argument_group("run")
    r.add_argument(
        "--batch-size", type=_types.positive_int, default=batch, metavar="B",
        help=(
            f"examples per batch (default: {batch}); the batches and their random seeds do not depend on the number "
            "of processes, so a torchrun run gives the single-process results"
        ),
    )
    r.add_argument("--seed", type=_types.seed, default=0,
                   help="seed of every random choice; batch b draws from a generator seeded with (seed, b) "
                        "(default: 0)")
    r.add_argument("--out", default=out, metavar="DIR", help=f"output folder, created if missing (default: {out})")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs (default: cpu); under torchrun, cuda means cuda:LOCAL_RANK")
    r.add_argument("--threads", type=_types.positive_int, default=None, metavar="T",
                   help="torch intra-op threads during the run, restored afterwards (default: leave as is)")
    r.add_argument("--no-progress", action="store_true", help="do not show progress bars")
