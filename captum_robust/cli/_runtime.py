"""Run-time setup shared by the subcommands: the output folder (written atomically), threads and
the global RNG, the device, the torchrun process group (joined with a time limit), progress
bars, and the ``run`` options of ``evaluate`` and ``certify``."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from captum_robust.cli import _types

__all__ = [
    "UsageError", "OutputFolder", "staged_output", "add_out_options", "run_settings", "resolve_device",
    "distributed_run", "joined_group", "deferred_interrupt", "progress", "my_batches",
    "batch_generator", "print_outputs", "write_results", "write_report", "run_line", "report_tail", "add_run_options",
]


class UsageError(Exception):
    """An expected user error: reported as one line on stderr with exit status 2."""


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) for the duration of the block and raise it afterwards, so that a
    folder is never left half moved or half removed. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class OutputFolder:
    """``--out``, written atomically: the files go to a hidden staging folder and appear in
    ``--out`` only when the run has finished (:meth:`commit`); an interrupted or failed run
    leaves nothing behind (:meth:`discard`).

    A new ``--out`` is the staging folder renamed (one atomic rename), created beside it as
    ``.NAME.XXXX.partial``. An existing ``--out`` keeps its other files: the staging folder is
    ``--out/.captum-robust-XXXX.partial`` and each file is moved into place with ``os.replace``,
    Ctrl-C held back meanwhile. An existing ``--out`` that already holds one of the files the
    command writes (an earlier run's results) is refused unless ``overwrite``; then those files
    are replaced, and the ones this run did not write (e.g. an optional figure) removed.

    Args:
        out (str): the ``--out`` text as given (messages quote it).
        names (sequence of str): the files the command writes.
        overwrite (bool): replace earlier results (``--overwrite``).
    """

    def __init__(self, out: str, names: Sequence[str], overwrite: bool = False) -> None:
        self.text, self.final, self.names = out, Path(out).expanduser(), tuple(names)
        self.stage: Optional[Path] = None
        self.committed = False
        self._created: List[Path] = []  # parent folders this run made (removed again on discard)
        final = self.final
        if final.exists() and not final.is_dir():
            raise UsageError(f"--out '{out}' exists and is not a directory")
        if final.is_dir():
            if not os.access(final, os.W_OK | os.X_OK):
                raise UsageError(f"--out '{out}' is not writable")
            clash = [name for name in self.names if os.path.lexists(final / name)]
            if clash and not overwrite:
                raise UsageError(
                    f"--out '{out}' already holds {', '.join(clash)} from an earlier run: pass --overwrite to "
                    "replace them, or choose another folder"
                )
            return
        ancestor = final.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise UsageError(f"--out '{out}' cannot be created: '{ancestor}' is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"--out '{out}' cannot be created: '{ancestor}' is not writable")

    def open(self) -> Path:
        """Create the staging folder and return it (the files are written there)."""
        try:
            if self.final.is_dir():
                self.stage = Path(tempfile.mkdtemp(prefix=".captum-robust-", suffix=".partial", dir=self.final))
            else:
                for parent in reversed(self.final.parents):
                    if not parent.exists():
                        parent.mkdir()
                        self._created.append(parent)
                self.stage = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".partial",
                                                   dir=self.final.parent))
        except OSError as exc:
            self.discard()
            raise UsageError(f"--out '{self.text}' cannot be created: {exc.strerror or exc}") from None
        return self.stage

    def path(self, name: str) -> Path:
        """Where file ``name`` will be once the run is committed (for messages and reports)."""
        return self.final / name

    def commit(self) -> List[Path]:
        """Move the staged files into ``--out`` (Ctrl-C held back meanwhile); returns their final paths."""
        if self.stage is None or self.committed:
            raise RuntimeError("commit() needs an open, uncommitted OutputFolder")
        with deferred_interrupt():
            names = sorted(os.listdir(self.stage))
            try:
                if not self.final.exists():
                    os.rename(self.stage, self.final)
                else:
                    for name in names:
                        target = self.final / name
                        if target.is_dir() and not target.is_symlink():
                            shutil.rmtree(target)
                        os.replace(self.stage / name, target)
                    os.rmdir(self.stage)
                    for name in set(self.names) - set(names):  # an earlier run's file this run did not write
                        stale = self.final / name
                        if stale.is_file() or stale.is_symlink():
                            stale.unlink()
            except OSError as exc:
                raise UsageError(f"--out '{self.text}': the results could not be moved into place: "
                                 f"{exc.strerror or exc}") from None
            self.stage, self.committed = None, True
        return [self.final / name for name in names]

    def discard(self) -> None:
        """Remove the staging folder and the parent folders this run created (Ctrl-C held back)."""
        with deferred_interrupt():
            if self.stage is not None:
                shutil.rmtree(self.stage, ignore_errors=True)
                self.stage = None
            for parent in reversed(self._created):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only if still empty
            self._created = []


@contextlib.contextmanager
def staged_output(args: argparse.Namespace, names: Sequence[str], write: bool = True) -> Iterator[OutputFolder]:
    """Check ``--out`` (and ``--overwrite``) and, when ``write`` (rank 0), open its staging folder for
    the block. The block calls :meth:`OutputFolder.commit` when its files are complete; whatever
    ends the block before that (an error, Ctrl-C) removes what the run created."""
    folder = OutputFolder(args.out, names, getattr(args, "overwrite", False))
    if write:
        folder.open()
    try:
        yield folder
    finally:
        if not folder.committed:
            folder.discard()


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


#: How long a torchrun process waits for the others to join the process group, in seconds
#: (``--join-timeout``); the collectives afterwards keep torch's default limit.
JOIN_TIMEOUT = 60.0


@contextlib.contextmanager
def _native_stderr_hidden() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to a discarded temporary file for the
    block (Python's own ``sys.stderr`` is flushed first and keeps working when it is not fd 2)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to hide
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def joined_group(device: torch.device, join_timeout: float) -> Iterator[None]:
    """Join the process group of ``WORLD_SIZE > 1`` processes, waiting at most ``join_timeout``
    seconds for the others, and leave it on exit (a barrier first on a normal exit). Does nothing
    for a single process or when a process group already exists (the caller's)."""
    import torch.distributed as dist
    from captum_robust._utils.distributed import env_world

    rank, world_size, local_rank = env_world()
    if world_size == 1 or not dist.is_available() or dist.is_initialized():
        yield
        return
    names = f"WORLD_SIZE={world_size}, RANK={rank}"
    where = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:
        raise UsageError(
            f"{names} asks for a process group, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not set: start the command with torchrun --nproc_per_node=P -m captum_robust.cli ..., or unset "
            "WORLD_SIZE and RANK to run one process"
        )
    from torch.distributed.rendezvous import rendezvous

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    try:
        with _native_stderr_hidden():  # c10d logs each failed connection with a C++ stack trace
            store, _, _ = next(rendezvous("env://", rank=rank, world_size=world_size,
                                          timeout=datetime.timedelta(seconds=join_timeout)))
        store.set_timeout(datetime.timedelta(minutes=30))  # the collectives' limit, torch's default
        dist.init_process_group(backend="nccl" if cuda else "gloo", store=store, rank=rank, world_size=world_size)
    except (RuntimeError, ValueError) as exc:  # DistStoreError / DistNetworkError are RuntimeErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{names}: the other processes did not join at MASTER_ADDR:MASTER_PORT = {where} within "
            f"{join_timeout:g} s ({first}); start all {world_size} with torchrun --nproc_per_node={world_size} "
            "-m captum_robust.cli ..., unset WORLD_SIZE and RANK to run one process, or wait longer with "
            "--join-timeout SECONDS"
        ) from None
    try:
        yield
        dist.barrier()  # no rank tears down while a peer still communicates
    finally:
        import gc

        gc.collect()  # objects holding the group go now, not during interpreter shutdown
        dist.destroy_process_group()


def distributed_run(args: argparse.Namespace, body: Callable[[Any, torch.device, OutputFolder], int],
                    names: Sequence[str]) -> int:
    """Check ``--out``, resolve the device, join the torchrun process group (if any, waiting at
    most ``--join-timeout`` seconds) and run ``body(ctx, device, out)`` under :func:`run_settings`
    (``--threads``, ``--seed``).

    ``names`` are the files the command writes; ``out`` is the :class:`OutputFolder` of
    ``--out``, checked on every rank (so that an unusable folder stops all of them before any
    work) and opened on rank 0, which writes into ``out.stage`` and calls ``out.commit()``."""
    from captum_robust._utils.distributed import distributed_session, env_world

    try:
        rank, _, local_rank = env_world()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    device = resolve_device(args.device, local_rank)
    with staged_output(args, names, write=rank == 0) as out, joined_group(device, args.join_timeout), \
            distributed_session(device) as ctx, run_settings(args.threads, args.seed):
        return body(ctx, device, out)


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


def add_out_options(p: Any, default: str) -> None:
    """``--out`` and ``--overwrite``, shared by every subcommand that writes files."""
    p.add_argument("--out", default=default, metavar="DIR",
                   help=f"output folder, created if missing (default: {default}); the files appear there only when "
                        "the run has finished (an interrupted run leaves nothing)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (without it, an --out that already holds "
                        "one of the files this command writes is refused); other files in --out are kept")


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
    add_out_options(r, out)
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs (default: cpu); under torchrun, cuda means cuda:LOCAL_RANK")
    r.add_argument("--threads", type=_types.positive_int, default=None, metavar="T",
                   help="torch intra-op threads during the run, restored afterwards (default: leave as is)")
    r.add_argument("--join-timeout", type=_types.positive_number, default=JOIN_TIMEOUT, metavar="S",
                   help=f"under torchrun (WORLD_SIZE > 1), seconds to wait for the other processes to join before "
                        f"stopping with an error (default: {JOIN_TIMEOUT:g})")
    r.add_argument("--no-progress", action="store_true", help="do not show progress bars")
