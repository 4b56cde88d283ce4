"""Integrated Gradients of a BERT classifier through its embedding module, against Captum (issue 16).

``BatchedIntegratedGradients(model).attribute(ids, embedding_layer=model.bert.embeddings, ...)``
against Captum's ``LayerIntegratedGradients(forward, model.bert.embeddings)`` on the same inputs,
target, baseline (the pad id), ``n_steps`` and method: a ``BertForSequenceClassification`` with
random weights (``--hidden 64 --layers 2 --heads 4``, eager attention), ``--batch 16`` sequences of
``--seq 32`` tokens (a quarter of them padded at the end, the attention mask passed as an
additional forward argument), ``n_steps=50``, Gauss-Legendre (both libraries' default).

Captum runs at several ``internal_batch_size`` values (and its default, None) and its best is
the reference; ours at its default (None: the whole path in one batch), ``"auto"`` and the same
chunk sizes. Target: ours (default) at most 1.0x Captum's best time. The floor of both is the
model's own cost: one forward and backward pass over the ``batch x n_steps`` path rows in the
same chunks ("model passes": ``model(inputs_embeds=...)`` and the gradient to it). Also
reported: the largest absolute difference between the two attributions (float32).

Timings alternate the configurations inside each round in a random order (round-robin) and
report medians; with one torch thread (the default) the clock is the thread's CPU time, robust
to other processes on a shared machine. Prints a markdown table and writes
``benchmarks/results/token_ig.json`` and ``benchmarks/results/token_ig.md``.

Usage::

    python benchmarks/token_ig.py [--repeats 15] [--batch 16] [--seq 32] [--n-steps 50] [--threads 1]
    python benchmarks/token_ig.py --profile   # torch.profiler tables: both libraries, whole path and 1/4 chunks
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict

import torch

from captum_robust.attr import BatchedIntegratedGradients

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    add_common_args,
    check_threads,
    fmt,
    load_benchmark,
    machine_info,
    markdown_table,
    medians,
    round_robin,
    torch_threads,
    write_json,
)


def build(args: argparse.Namespace):
    """The BERT classifier (random weights with the recipe of the tests), ids, mask, targets."""
    import transformers

    torch.manual_seed(args.seed)
    cfg = transformers.BertConfig(
        vocab_size=1000, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position_embeddings=max(64, args.seq), num_labels=3,
    )
    cfg._attn_implementation = "eager"
    model = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # larger weights and random biases: attributions far from 0 (see tests/attr/test_ig_tokens)
        for p in model.parameters():
            p.normal_(0, 0.5 / args.hidden**0.25) if p.dim() > 1 else p.add_(torch.randn_like(p), alpha=0.2)
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1, 1000, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=g)
    padded = torch.arange(args.batch) % 4 == 0  # a quarter of the sequences end in padding
    mask[padded] = (torch.arange(args.seq) < lengths[padded].unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, 0)
    target = torch.randint(0, 3, (args.batch,), generator=g)
    return model, ids, mask, target


def configs(model, ids, mask, target, n_steps: int) -> Dict[str, Callable[[], Any]]:
    from captum.attr import LayerIntegratedGradients

    warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
    lig = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings)
    ours = BatchedIntegratedGradients(model)
    base = torch.zeros_like(ids)
    rows = ids.shape[0] * n_steps
    sizes = sorted({rows // 16, rows // 8, rows // 4, rows // 2, rows})
    out: Dict[str, Callable[[], Any]] = {}
    for s in sizes + [None]:
        out[f"captum:{s}"] = lambda s=s: lig.attribute(
            ids, baselines=base, target=target, additional_forward_args=(mask,), n_steps=n_steps,
            internal_batch_size=s)
    for s in sizes + [None, "auto"]:
        out[f"ours:{s}"] = lambda s=s: ours.attribute(
            ids, baselines=0, target=target, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,),
            n_steps=n_steps, internal_batch_size=s)
    # the floor: one forward + backward of the model over the path's rows (batch x n_steps), in the same chunks
    emb = model.bert.embeddings.word_embeddings(ids).detach().repeat(n_steps, 1, 1)
    masks = mask.repeat(n_steps, 1)

    def passes(s):
        for e, m in zip(emb.split(s or rows), masks.split(s or rows)):
            e = e.clone().requires_grad_()
            torch.autograd.grad(model(inputs_embeds=e, attention_mask=m).logits[:, 0].sum(), e)

    for s in sizes + [None]:
        out[f"passes:{s}"] = lambda s=s: passes(s)
    return out


def profile(calls: Dict[str, Callable[[], Any]], names, rows: int = 12) -> Dict[str, str]:
    """``torch.profiler`` tables (self CPU time) of one call of each named config."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    tables = {}
    for name in names:
        calls[name]()  # warm
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            calls[name]()
        tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        print(f"\n### profile of {name}\n\n```\n{tables[name]}\n```")
    return tables


def run(args: argparse.Namespace) -> Dict[str, Any]:
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    clock_name = "thread CPU time" if args.threads == 1 else "wall time"
    model, ids, mask, target = build(args)
    calls = configs(model, ids, mask, target, args.n_steps)
    ours, ref = calls["ours:None"](), calls["captum:None"]()
    max_abs = float((ours - ref).abs().max())
    scale = float(ref.abs().max())
    if args.profile:
        quarter = args.batch * args.n_steps // 4
        return {"profiles": profile(calls, ["captum:None", "ours:None", f"captum:{quarter}", f"ours:{quarter}"])}
    picked = load_benchmark("integrated_gradients").auto_pick(calls["ours:auto"])
    times = round_robin(calls, args.repeats, clock, shuffle_seed=args.seed)
    med = medians(times)
    passes = {k: v for k, v in med.items() if k.startswith("passes:")}
    cap = {k: v for k, v in med.items() if k.startswith("captum:")}
    mine = {k: v for k, v in med.items() if k.startswith("ours:")}
    captum_best = min(cap, key=cap.get)
    ours_best = min(mine, key=mine.get)
    result = {
        "machine": machine_info(clock=clock_name, transformers=_version("transformers"), captum=_version("captum")),
        "model": dict(hidden=args.hidden, layers=args.layers, heads=args.heads, vocab=1000, attention="eager"),
        "batch": args.batch, "seq": args.seq, "n_steps": args.n_steps, "method": "gausslegendre",
        "repeats": args.repeats, "auto_chunk_rows": picked, "median_seconds": med,
        "captum_best": captum_best, "ours_best": ours_best,
        "ratio_ours_default_vs_captum_best": med["ours:None"] / cap[captum_best],
        "ratio_ours_best_vs_captum_best": mine[ours_best] / cap[captum_best],
        "ratio_ours_auto_vs_captum_best": med["ours:auto"] / cap[captum_best],
        "passes_whole_path_vs_best_chunk": passes["passes:None"] / min(passes.values()),
        "max_abs_difference": max_abs, "max_abs_attribution": scale,
    }
    return result


def report(r: Dict[str, Any]) -> str:
    med = r["median_seconds"]
    sizes = [k.split(":")[1] for k in med if k.startswith("captum:")]
    rows = [[s, fmt(1e3 * med[f"captum:{s}"], 1), fmt(1e3 * med[f"ours:{s}"], 1), fmt(1e3 * med[f"passes:{s}"], 1),
             fmt(med[f"ours:{s}"] / med[f"captum:{s}"], 2), fmt(med[f"ours:{s}"] / med[f"passes:{s}"], 2)]
            for s in sizes]
    rows.append([f"auto ({r['auto_chunk_rows']} rows)", "-", fmt(1e3 * med["ours:auto"], 1), "-", "-", "-"])
    m = r["model"]
    lines = [
        f"BERT (hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads, eager attention, random weights), "
        f"batch {r['batch']} x {r['seq']} tokens, n_steps {r['n_steps']}, {r['method']}; milliseconds per call "
        f"({r['machine']['clock']}, median of {r['repeats']}, round-robin)",
        "",
        markdown_table(["internal_batch_size", "Captum LayerIG", "ours embedding_layer=", "model passes",
                        "ours / Captum", "ours / passes"], rows),
        "",
        f"ours (default, None) / Captum best ({r['captum_best']}): **{r['ratio_ours_default_vs_captum_best']:.3f}x** "
        f"(target <= 1.0); ours best ({r['ours_best']}) / Captum best: {r['ratio_ours_best_vs_captum_best']:.3f}x; "
        f"ours auto / Captum best: {r['ratio_ours_auto_vs_captum_best']:.3f}x.",
        f"The model's own passes over the whole path in one batch take "
        f"{r['passes_whole_path_vs_best_chunk']:.2f}x their time in the best chunk size.",
        f"Largest absolute difference between the two attributions: {r['max_abs_difference']:.2e} "
        f"(largest attribution {r['max_abs_attribution']:.3f}).",
    ]
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return __import__(name).__version__
    except ImportError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="profile one call of each default config instead")
    add_common_args(parser)
    args = parser.parse_args()
    with torch_threads(check_threads(parser, args)):
        r = run(args)
    if args.profile:
        return
    text = report(r)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "token_ig.json", r)
    (args.out / "token_ig.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
