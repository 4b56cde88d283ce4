"""Helpers shared by the benchmark scripts: machine description, markdown tables, round-robin
timing, JSON writing, thread settings and the usual command-line options.

The scripts in ``benchmarks/`` are run as files (``python benchmarks/attacks.py``), so this is a
plain module next to them, imported as ``_common``. A script that may also be loaded by path
(``importlib.util.spec_from_file_location``, as the tests and ``reproduce.py`` do) puts its own
folder on ``sys.path`` first::

    _HERE = str(Path(__file__).resolve().parent)
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
    from _common import markdown_table  # noqa: E402

The markdown table and the JSON writers are the package's own
(:mod:`captum_robust._utils.reporting`), re-exported here; :func:`fmt` keeps the benchmarks' cell
format (three decimals, ``-`` for a missing value). Strict JSON: NaN and infinities are written ``null``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch

from captum_robust._utils.reporting import fmt as _fmt
from captum_robust._utils.reporting import jsonable, markdown_table, write_json  # noqa: F401

#: the folder every benchmark writes its JSON, markdown and PNG files into by default
RESULTS = Path(__file__).resolve().parent / "results"

#: the clocks :func:`round_robin_clocks` knows by name: wall time, the process's CPU time
#: (user + system, all threads) and the calling thread's CPU time
CLOCKS: Dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
    "thread": time.thread_time,
}


# --------------------------------------------------------------------------- the machine


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: Any) -> Dict[str, Any]:
    """A description of the machine and software for a result file.

    Returns:
        dict: ``cpu`` (:func:`cpu_name`), ``platform``, ``python``, ``torch`` (version),
        ``cpu_count`` and ``threads`` (``torch.get_num_threads()`` now), then ``extra``.
    """
    info: Dict[str, Any] = {
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    info.update(extra)
    return info


def proc_status_mb(field: str) -> float:
    """A ``VmRSS`` / ``VmHWM``-style field of ``/proc/self/status``, in MiB (Linux).

    Raises:
        KeyError: the field is not there.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` and restore the previous count after.

    ``None`` leaves the setting alone. One thread is the usual choice for timings on a shared
    machine: small convolutions get no faster with more, and the CPU time stays comparable.

    Raises:
        ValueError: ``threads`` is not None and below 1.
    """
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- markdown


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``-`` for None and NaN (:func:`captum_robust._utils.reporting.fmt`
    with the benchmarks' defaults)."""
    return _fmt(value, digits, missing="-")


# --------------------------------------------------------------------------- timing


def sync(device: Optional[torch.device]) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU or for None."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def round_robin_clocks(
    configs: Mapping[str, Callable[[], Any]],
    repeats: int,
    clocks: Union[Sequence[str], Mapping[str, Callable[[], float]]] = ("wall", "cpu"),
    *,
    warmup: int = 1,
    shuffle_seed: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Dict[str, Dict[str, List[float]]]:
    """Time every config ``repeats`` times, taking turns inside each round, on several clocks at once.

    Interleaving the candidates (rather than timing one, then the next) makes load changes on a
    shared machine hit every candidate alike; ``shuffle_seed`` also draws a fresh order for each
    round. Every config is first called ``warmup`` times.

    Args:
        configs: name -> function of no arguments to time.
        repeats (int): timed calls per config.
        clocks: names from :data:`CLOCKS` (``"wall"``, ``"cpu"``, ``"thread"``), or a mapping
            name -> clock function.
        warmup (int): untimed rounds first.
        shuffle_seed (int, optional): shuffle the order of each round with ``random.Random(shuffle_seed)``;
            None keeps the order of ``configs``.
        device (torch.device, optional): synchronised before and after each call (CUDA).

    Returns:
        dict: clock name -> config name -> list of ``repeats`` seconds.
    """
    if isinstance(clocks, Mapping):
        clock_fns = dict(clocks)
    else:
        unknown = [c for c in clocks if c not in CLOCKS]
        if unknown:
            raise ValueError(f"clocks must be names from {sorted(CLOCKS)}, got {unknown}")
        clock_fns = {c: CLOCKS[c] for c in clocks}
    for _ in range(warmup):
        for fn in configs.values():
            fn()
    times: Dict[str, Dict[str, List[float]]] = {c: {name: [] for name in configs} for c in clock_fns}
    rng = random.Random(shuffle_seed)
    for _ in range(repeats):
        order = list(configs.items())
        if shuffle_seed is not None:
            rng.shuffle(order)
        for name, fn in order:
            sync(device)
            start = {c: f() for c, f in clock_fns.items()}
            fn()
            sync(device)
            for c, f in clock_fns.items():
                times[c][name].append(f() - start[c])
    return times


def round_robin(
    configs: Mapping[str, Callable[[], Any]],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
    *,
    warmup: int = 1,
    shuffle_seed: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> Dict[str, List[float]]:
    """:func:`round_robin_clocks` with one clock given as a function (default wall time).

    Returns:
        dict: config name -> list of ``repeats`` seconds.
    """
    return round_robin_clocks(
        configs, repeats, {"clock": clock}, warmup=warmup, shuffle_seed=shuffle_seed, device=device
    )["clock"]


def medians(times: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """The median of each list of times (``statistics.median``)."""
    return {name: statistics.median(ts) for name, ts in times.items()}


# --------------------------------------------------------------------------- command line


def add_common_args(
    parser: argparse.ArgumentParser,
    *,
    quick: Optional[str] = None,
    out: Optional[Path] = RESULTS,
    out_help: str = "output folder (default benchmarks/results)",
    threads: int = 1,
    seed: Optional[int] = 0,
) -> argparse.ArgumentParser:
    """Add the options most benchmarks share: ``--quick`` (when ``quick`` gives its help text),
    ``--seed`` (unless ``seed`` is None), ``--out`` (unless ``out`` is None; a ``Path``) and
    ``--threads`` (torch threads, checked >= 1 by :func:`check_threads`). Returns ``parser``."""
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed)
    if out is not None:
        parser.add_argument("--out", type=Path, default=out, help=out_help)
    parser.add_argument("--threads", type=int, default=threads, help=f"torch threads (default {threads})")
    return parser


def check_threads(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``args.threads`` when it is >= 1; otherwise ``parser.error`` (exit status 2)."""
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args.threads


def load_benchmark(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` by path as module ``name`` (registered in ``sys.modules``
    first, so its dataclasses and pickling can find it)."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
