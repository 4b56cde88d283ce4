"""Tiny Hugging Face text classifiers with random weights, for the token-model tests (no download),
and the hand references those tests share (logits with the embedding output replaced, the
embedding output, the masked top-k by a sorted list).

Built as the tests need them: eager attention (PyTorch's fused attention kernels have no double
backward) and, with ``large_weights=True``, weight matrices drawn from N(0, 0.5^2) and random
biases added: with the default zero biases the encoder is LayerNorm scale-invariant in its
input, so the output is constant along an IG path from 0 and jumps at 0, and the attributions
of the default initialisation are close to 0.
"""

import pytest
import torch

#: the embedding module of each architecture
EMBEDDINGS = {"bert": "bert.embeddings", "distilbert": "distilbert.embeddings", "roberta": "roberta.embeddings"}


def tiny_text_classifier(arch="bert", dtype=torch.float32, seed=0, vocab_size=50, large_weights=True, **overrides):
    """``(model, embedding_layer)``: a 1-layer, 16-wide ``arch`` classifier with 3 labels, in eval mode.

    ``torch.manual_seed(seed)`` is set first, so the same arguments give the same weights.
    ``overrides`` replace config fields (e.g. ``max_position_embeddings``, ``pad_token_id``).
    """
    transformers = pytest.importorskip("transformers", reason="transformers is needed for the token-model tests")
    torch.manual_seed(seed)
    if arch == "bert":
        kw = dict(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16, num_labels=3)
        config, model_cls = transformers.BertConfig, transformers.BertForSequenceClassification
    elif arch == "distilbert":
        kw = dict(vocab_size=vocab_size, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=16,
                  num_labels=3)
        config, model_cls = transformers.DistilBertConfig, transformers.DistilBertForSequenceClassification
    elif arch == "roberta":
        kw = dict(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=20, num_labels=3)
        config, model_cls = transformers.RobertaConfig, transformers.RobertaForSequenceClassification
    else:
        raise ValueError(f"arch must be one of {sorted(EMBEDDINGS)}, got {arch!r}")
    kw.update(overrides)
    cfg = config(**kw)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).to(dtype).eval()
    if large_weights:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5) if p.dim() > 1 else p.add_(torch.randn_like(p), alpha=0.2)
    return model, model.get_submodule(EMBEDDINGS[arch])


def logits_with_embeddings(model, layer, ids, mask, emb=None):
    """``model(ids, mask)``'s logits with ``layer``'s output replaced by ``emb`` (None: unchanged)."""
    h = layer.register_forward_hook(lambda mod, i, o: emb) if emb is not None else None
    try:
        out = model(ids, mask)
    finally:
        if h is not None:
            h.remove()
    return out.logits if hasattr(out, "logits") else out


def embedding_output(model, layer, ids, mask):
    """``layer``'s output (detached) when ``model(ids, mask)`` runs."""
    got = []
    h = layer.register_forward_hook(lambda mod, i, o: got.append(o.detach()))
    try:
        with torch.no_grad():
            model(ids, mask)
    finally:
        h.remove()
    return got[0]


def top_tokens(values, mask, k):
    """The set of the ``min(k, n)`` largest of the ``n`` masked-in entries of one map (a stable
    descending order: ties to the lower index), by sorting a list."""
    idx = mask.nonzero().flatten().tolist()
    return set(sorted(idx, key=lambda j: (-float(values[j]), j))[: min(k, len(idx))])


def brute_topk_intersection(a, b, mask, k, dtype=torch.float32):
    """The masked top-``k`` intersection of each row pair of ``a`` and ``b``, by :func:`top_tokens`."""
    out = []
    for i in range(a.shape[0]):
        n = min(k, int(mask[i].sum()))
        out.append(len(top_tokens(a[i], mask[i], k) & top_tokens(b[i], mask[i], k)) / n)
    return torch.tensor(out, dtype=dtype)
