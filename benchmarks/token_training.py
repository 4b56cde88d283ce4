"""Memory and time of one IG-Norm training step on a token model, with and without IG chunking (issue 16).

A small BERT (Hugging Face ``BertForSequenceClassification``: hidden size 64, 2 layers, 4 heads,
intermediate size 128, vocabulary 1000, 2 labels, eager attention for the double backward; random
weights, matrices re-drawn from N(0, 0.1^2) and the biases offset by 0.1 N(0, 1) so that the
gradients are not degenerate), a batch of 16 sequences of 32 token ids with padding (real lengths
uniform in [8, 32], an ``attention_mask``), random labels. One training step is

    loss = CE(model(ids, mask)) + IGNorm(model, eps=0.1, embedding_layer=model.bert.embeddings,
                                         n_steps=32, attack_n_steps=8, n_iterations=3, step_size=0.05,
                                         internal_batch_size=...)(ids, y, (mask,), token_mask=mask)
    opt.zero_grad(); loss.backward(); opt.step()                      # Adam

with the outer IG differentiated (``create_graph=True``) through the model and the embedding
weights. The configurations differ only in ``internal_batch_size`` (rows = path points x examples
per IG chunk, in the attack and in the outer term): ``None`` (the whole path, 32 x 16 = 512 rows, in
one pass), 64, 128 and ``"auto"``; the reference is the plain cross-entropy step (``ce``).

* **Time**: the configurations alternate inside each round (round robin, one warm-up round),
  median of ``--repeats`` rounds on the thread's CPU time and on wall time, one torch thread;
  reported in seconds and as a ratio to the unchunked step and to the cross-entropy step.
* **Peak memory**: each configuration once in a fresh child process: ``VmHWM`` (the process's
  high-water mark of resident memory) after the step, reset to the resident set after the setup
  through ``/proc/self/clear_refs`` (Linux); "added" is the peak minus the resident set after
  building the model and the batch.
* **Same gradients**: the parameter gradients of the chunked steps against the unchunked one (same
  generator seed, so the same attack), the largest absolute difference relative to the largest
  gradient entry.

Prints markdown tables, writes ``benchmarks/results/token_training.{json,md}``.

Usage::

    python benchmarks/token_training.py             # about 1-2 minutes on one thread
    python benchmarks/token_training.py --quick     # one round, no memory children (smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    add_common_args,
    check_threads,
    fmt,
    machine_info,
    markdown_table,
    medians,
    proc_status_mb,
    round_robin_clocks,
    write_json,
)

from captum_robust.robust.regularizers import IGNorm  # noqa: E402

BATCH, SEQ_LEN, VOCAB, MIN_LEN = 16, 32, 1000, 8
N_STEPS, ATTACK_N_STEPS, N_ITERATIONS, EPS, STEP_SIZE = 32, 8, 3, 0.1, 0.05
CONFIGS = ("ce", "ig_norm:None", "ig_norm:64", "ig_norm:128", "ig_norm:auto")


def build(seed: int) -> Tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model (train mode), ids, attention mask and labels."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=SEQ_LEN, num_labels=2,
    )
    cfg._attn_implementation = "eager"
    model = transformers.BertForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1) if p.dim() > 1 else p.add_(torch.randn_like(p), alpha=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(1, VOCAB, (BATCH, SEQ_LEN), generator=g)
    lengths = torch.randint(MIN_LEN, SEQ_LEN + 1, (BATCH,), generator=g)
    mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pad id 0
    y = torch.randint(0, 2, (BATCH,), generator=g)
    return model.train(), ids, mask, y


def parse_ibs(text: str) -> Any:
    return None if text == "None" else text if text == "auto" else int(text)


def step_function(config: str, model: Any, ids: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
                  seed: int) -> Callable[[], None]:
    """One training step of ``config`` (``ce`` or ``ig_norm:<internal_batch_size>``), no optimizer step
    when ``opt`` is None; the IG-Norm attack is re-seeded at every call (same attack every time)."""
    if config == "ce":
        def ce_step() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(ids, attention_mask=mask).logits, y).backward()

        return ce_step
    ibs = parse_ibs(config.split(":", 1)[1])
    generator = torch.Generator()
    reg = IGNorm(model, eps=EPS, n_steps=N_STEPS, attack_n_steps=ATTACK_N_STEPS, n_iterations=N_ITERATIONS,
                 step_size=STEP_SIZE, internal_batch_size=ibs, embedding_layer=model.bert.embeddings,
                 generator=generator)

    def ig_step() -> None:
        generator.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(ids, attention_mask=mask).logits, y)
        loss = loss + reg(ids, y, additional_forward_args=(mask,), token_mask=mask)
        loss.backward()

    return ig_step


def with_adam(step: Callable[[], None], model: Any) -> Callable[[], None]:
    """``step`` followed by an Adam step on a copy-free optimizer (lr 0: the weights stay the same, so
    every repeat times the same step; Adam's update is computed all the same)."""
    opt = torch.optim.Adam(model.parameters(), lr=0.0)

    def run() -> None:
        step()
        opt.step()

    return run


def child(config: str, seed: int, threads: int) -> None:
    """Run one configuration once in this (fresh) process and print its memory as JSON."""
    torch.set_num_threads(threads)
    model, ids, mask, y = build(seed)
    fn = with_adam(step_function(config, model, ids, mask, y, seed), model)
    reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        reset = False
    base = proc_status_mb("VmRSS")
    fn()
    peak = proc_status_mb("VmHWM")
    print(json.dumps({"config": config, "rss_after_setup_mib": base, "peak_rss_mib": peak,
                      "added_mib": peak - base, "hwm_reset_after_setup": reset}))


def peak_memory(config: str, seed: int, threads: int) -> Dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", config, "--seed", str(seed), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gradient_differences(seed: int) -> Dict[str, float]:
    """Largest |grad(chunked) - grad(unchunked)| over all parameters, relative to the largest entry."""
    grads: Dict[str, List[torch.Tensor]] = {}
    for config in CONFIGS[1:]:
        model, ids, mask, y = build(seed)
        step_function(config, model, ids, mask, y, seed)()
        grads[config] = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    ref = grads["ig_norm:None"]
    scale = max(float(g.abs().max()) for g in ref)
    return {c: max(float((a - b).abs().max()) for a, b in zip(gs, ref)) / scale for c, gs in grads.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="one round and no memory children (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = check_threads(parser, args)
    if args.child is not None:
        child(args.child, args.seed, threads)
        return
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(threads)

    model, ids, mask, y = build(args.seed)
    fns = {c: with_adam(step_function(c, model, ids, mask, y, args.seed), model) for c in CONFIGS}
    times = round_robin_clocks(fns, repeats, ("thread", "wall"), warmup=1, shuffle_seed=args.seed)
    cpu, wall = medians(times["thread"]), medians(times["wall"])
    memory = {} if args.quick else {c: peak_memory(c, args.seed, threads) for c in CONFIGS}
    diffs = gradient_differences(args.seed)

    rows = []
    for c in CONFIGS:
        m = memory.get(c, {})
        rows.append([
            c.replace("ig_norm:", "IG-Norm, internal_batch_size=") if c != "ce" else "cross-entropy only",
            fmt(cpu[c]), fmt(wall[c]), fmt(cpu[c] / cpu["ig_norm:None"], 2), fmt(cpu[c] / cpu["ce"], 1),
            fmt(m.get("peak_rss_mib"), 0), fmt(m.get("added_mib"), 0),
            fmt(m.get("added_mib", float("nan")) / memory["ig_norm:None"]["added_mib"], 2) if memory else "-",
            "-" if c == "ce" else f"{diffs[c]:.1e}",
        ])
    header = ["step", "time (thread CPU, s)", "time (wall, s)", "time / unchunked", "time / CE step",
              "peak RSS (MiB)", "added by the step (MiB)", "added / unchunked", "max grad diff (rel.)"]
    table = markdown_table(header, rows)
    print(table)
    info = machine_info()
    result = {
        "machine": info,
        "settings": {"batch": BATCH, "seq_len": SEQ_LEN, "vocab": VOCAB, "min_len": MIN_LEN, "n_steps": N_STEPS,
                     "attack_n_steps": ATTACK_N_STEPS, "n_iterations": N_ITERATIONS, "eps": EPS,
                     "step_size": STEP_SIZE, "repeats": repeats, "threads": threads, "seed": args.seed},
        "times_thread_cpu": times["thread"], "times_wall": times["wall"],
        "median_thread_cpu_s": cpu, "median_wall_s": wall, "memory": memory,
        "max_relative_gradient_difference_vs_unchunked": diffs,
    }
    name = "token_training_quick" if args.quick else "token_training"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", result)
    (args.out / f"{name}.md").write_text(
        f"Machine: {info['cpu']}, torch {info['torch']}, {threads} thread(s); median of {repeats}.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
