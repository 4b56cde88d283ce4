"""
Text models: explain, attack, certify and regularize through the embedding layer
================================================================================

Token ids are integers: there is no gradient with respect to them, no straight path from a
baseline to them and no small ball around them. The library handles text classifiers the way
Captum's ``LayerIntegratedGradients`` does: every method runs in the space of the output of an
*embedding module* of the model, named by ``embedding_layer=``. The model is run on the token ids
with that module's output replaced by the point the method needs (a path point, a noisy copy, an
attacked embedding), and a token's score is the sum of its map over the embedding dimension.

The task is synthetic so that the right answer is known:
:func:`~captum_robust.data.make_token_task` draws sequences of random filler tokens with one or
two *signal* tokens of the sequence's class at random positions, and
:class:`~captum_robust.models.TokenBagClassifier` (embedding, a per-token MLP, a masked mean, a
linear head) learns it in a second or two. The same calls work on a Hugging Face text
classifier with ``embedding_layer=model.bert.embeddings`` (the end of this example).

The script runs in well under a minute on one CPU core.
"""

# %%
# A text task whose important tokens are known
# --------------------------------------------
#
# 2,000 sequences of 6 to 16 tokens from a vocabulary of 50 ids; id 0 is the padding, at the end
# of each row, and the attention mask marks the real tokens. Ids 1-4 are the signal tokens of
# class 0, ids 5-8 those of class 1; ``task.important`` marks the positions that hold them.

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from captum.attr import LayerIntegratedGradients
from transformers import BertConfig, BertForSequenceClassification

from captum_robust.attr import (
    BatchedIntegratedGradients, CertifiedTopK, SparsifiedSmoothGrad, embed_tokens, token_attributions,
)
from captum_robust.data import make_token_task
from captum_robust.models import TokenBagClassifier
from captum_robust.robust.attacks import TokenSwapAttack, TopKAttack
from captum_robust.robust.regularizers import IGNorm

torch.set_num_threads(1)  # a tiny model: one thread is as fast, and robust to busy machines
train_task = make_token_task(1600, n_classes=2, vocab_size=50, seq_len=16, seed=0)
test_task = make_token_task(400, n_classes=2, vocab_size=50, seq_len=16, seed=1)
print(f"signal ids per class: {train_task.signal_tokens.tolist()}")
print(f"first sequence: ids {train_task.ids[0].tolist()}, label {int(train_task.labels[0])}")


def train(task, steps=300, seed=0):
    """Adam on the cross-entropy, batches of 128."""
    torch.manual_seed(seed)
    # softplus: a smooth MLP, so that attacks and regularizers see non-zero second derivatives
    model = TokenBagClassifier(task.vocab_size, embedding_dim=16, n_classes=task.n_classes, hidden=32, softplus=5.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(task), (128,), generator=order)
        ids, mask, y = task.ids[idx], task.attention_mask[idx], task.labels[idx]
        loss = F.cross_entropy(model(ids, mask), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def accuracy(model, task):
    with torch.no_grad():
        return (model(task.ids, task.attention_mask).argmax(1) == task.labels).double().mean().item()


start = time.perf_counter()
model = train(train_task)
print(f"trained in {time.perf_counter() - start:.1f} s; test accuracy {accuracy(model, test_task):.3f}")

# %%
# Integrated Gradients per token
# ------------------------------
#
# ``embedding_layer=model.embedding`` makes the path of Integrated Gradients run between the
# embeddings of the baseline ids (all padding: the pad row of the embedding is zero) and of the
# input ids; the attention mask goes to the model through ``additional_forward_args``. The result
# is ``B x T x D``; :func:`~captum_robust.attr.token_attributions` sums it over the embedding
# dimension (``D = 16``), one score per token, 0 at the padding. By completeness the scores of a
# sequence sum to its logit minus the logit of the all-padding sequence.

ids, mask, labels = test_task.ids, test_task.attention_mask, test_task.labels
ig = BatchedIntegratedGradients(model)
attr = ig.attribute(ids, baselines=test_task.pad_id, target=labels, embedding_layer=model.embedding,
                    additional_forward_args=(mask,), n_steps=20)
scores = token_attributions(attr, mask)
print(f"IG: {tuple(attr.shape)} -> token scores {tuple(scores.shape)}")

# Do the top tokens find the signal? k = the number of signal tokens of each sequence.
k = test_task.n_important
rank = scores.masked_fill(mask == 0, -math.inf).argsort(1, descending=True).argsort(1)
recovered = ((rank < k.unsqueeze(1)) & test_task.important).sum(1) == k
chance = torch.tensor([1 / math.comb(int(n), int(m)) for n, m in zip(test_task.lengths, k)]).mean()
print(f"top-k tokens = the signal tokens in {recovered.double().mean():.1%} of the test sequences "
      f"(a random ranking: {chance:.1%})")


def show_tokens(ax, ids_row, scores_row, important_row, title):
    """One sequence as a strip of cells coloured by score, the ids written in, the signal framed."""
    n = int((ids_row != 0).sum())
    vmax = float(scores_row[:n].abs().max())
    ax.imshow(scores_row[:n].unsqueeze(0).detach().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for t in range(n):
        dark = abs(float(scores_row[t])) > 0.6 * vmax
        ax.text(t, 0, str(int(ids_row[t])), ha="center", va="center", fontsize=8, color="white" if dark else "black")
        if important_row[t]:
            ax.add_patch(plt.Rectangle((t - 0.5, -0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xlim(-0.5, ids_row.shape[0] - 0.5)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title(title, fontsize=9, loc="left")


fig, axes = plt.subplots(4, 1, figsize=(7, 3.6))
for i, ax in enumerate(axes):
    show_tokens(ax, ids[i], scores[i], test_task.important[i], f"test sequence {i}, class {int(labels[i])}")
fig.suptitle("IG per token (red supports the class; framed: the signal tokens)", fontsize=10)
fig.tight_layout()

# %%
# An attack in the embedding space
# --------------------------------
#
# :class:`~captum_robust.robust.attacks.TopKAttack` with ``embedding_layer=`` (Ghorbani et al.'s
# top-k attack) perturbs the *embeddings* of the real tokens, never the padding, inside an
# :math:`\ell_\infty` ball, keeps the prediction, and tries to push the clean top-k tokens of the map
# out of the top-k. The radius is in embedding units; here it is set relative to the model's own
# scale: ``rel_eps`` times the mean norm of the real tokens' embeddings divided by :math:`\sqrt{D}`
# (the typical size of one coordinate), so ``rel_eps = 0.6`` moves every coordinate by up to about
# 60% of its typical size. The sequences below hold one signal token each, so the clean top-1 token
# *is* the signal: can the attack hide it?

single = test_task.subset(test_task.n_important == 1).subset(slice(0, 100))


def attack_ig(model, task, rel_eps, k=1):
    """TopKAttack on the IG token maps; returns the adversarial embeddings and the result."""
    with torch.no_grad():
        norms = model.embedding(task.ids).norm(dim=-1)[task.attention_mask.bool()]
    eps = rel_eps * float(norms.mean()) / model.embedding.embedding_dim**0.5
    attack = TopKAttack(model, BatchedIntegratedGradients(model), k=k, eps=eps, step_size=eps / 8, n_iterations=20,
                        embedding_layer=model.embedding, attribution_kwargs={"n_steps": 10, "method": "riemann_middle"})
    return attack.perturb(task.ids, task.labels, additional_forward_args=(task.attention_mask,),
                          token_mask=task.attention_mask, generator=torch.Generator().manual_seed(0))


start = time.perf_counter()
for rel_eps in (0.4, 0.6, 0.8):
    e_adv, result = attack_ig(model, single, rel_eps)
    print(f"radius {rel_eps}: top-1 token kept in {result.similarity.mean():.0%} of 100 sequences, predictions kept: "
          f"{bool((result.predictions == result.clean_predictions).all())}")
print(f"three attacks in {time.perf_counter() - start:.1f} s")

# %%
# The attacked maps of the last radius, computed on the adversarial embeddings (the model with its
# embedding output replaced by ``e_adv``): the same IG, now explaining :math:`e_{adv}`.

tokens = embed_tokens(model, model.embedding, single.ids, (single.attention_mask,))
adv_attr = BatchedIntegratedGradients(tokens.model).attribute(
    e_adv, baselines=0.0, target=single.labels, additional_forward_args=tokens.forward_args, n_steps=20)
adv_scores = token_attributions(adv_attr, single.attention_mask)
clean_scores = token_attributions(ig.attribute(single.ids, baselines=0, target=single.labels,
                                               embedding_layer=model.embedding,
                                               additional_forward_args=(single.attention_mask,), n_steps=20),
                                  single.attention_mask)
moved = int((result.similarity < 1).nonzero()[0]) if bool((result.similarity < 1).any()) else 0
fig, axes = plt.subplots(2, 1, figsize=(7, 1.9))
show_tokens(axes[0], single.ids[moved], clean_scores[moved], single.important[moved], "clean embeddings")
show_tokens(axes[1], single.ids[moved], adv_scores[moved], single.important[moved],
            "attacked embeddings (same ids, same prediction)")
fig.tight_layout()

# %%
# A discrete attack: swapping tokens
# ----------------------------------
#
# The embedding attack leaves the vocabulary: its points are no text.
# :class:`~captum_robust.robust.attacks.TokenSwapAttack` returns real ids: at each step it swaps one
# token for one of its nearest neighbours in the embedding table, ranked to first order by the
# gradient at the embedding output and evaluated exactly, keeping the prediction. The signal ids are
# forbidden (never swapped in nor out), so the evidence stays and only filler tokens change; the
# attack lowers the map's mass on its clean top-3 tokens.

swap = TokenSwapAttack(model, BatchedIntegratedGradients(model), model.embedding, k=3, max_swaps=3, n_neighbours=10,
                       forbidden_ids=train_task.signal_tokens.flatten().tolist(),
                       attribution_kwargs={"n_steps": 10, "method": "riemann_middle"})
few = single.subset(slice(0, 50))
start = time.perf_counter()
ids_adv, swapped = swap.perturb(few.ids, few.labels, additional_forward_args=(few.attention_mask,),
                                token_mask=few.attention_mask)
signal_first = few.important.gather(1, swapped.adversarial_token_maps.argmax(1, keepdim=True)).double().mean()
print(f"token swaps: {swapped.n_swaps.double().mean():.1f} per sequence ({time.perf_counter() - start:.1f} s), "
      f"predictions kept: {bool(swapped.prediction_kept.all())}; top-3 tokens kept: "
      f"{swapped.topk_intersection.mean():.0%}; the signal token still first: {signal_first:.0%}")

# %%
# The fillers in the top 3 are easily replaced, the signal token is not: swapping fillers for their
# neighbours changes the order of the unimportant tokens, but no filler comes near the signal's score.

# %%
# A certificate in the embedding space
# ------------------------------------
#
# Levine et al.'s certificate (:class:`~captum_robust.attr.CertifiedTopK`) wraps a smoothed map:
# here :class:`~captum_robust.attr.SparsifiedSmoothGrad` in token mode, Gaussian noise on the
# embedding output (``relative_sigma=True``: 0.25 times the mean token-embedding norm over
# :math:`\sqrt{D}` per coordinate), one score per token (the sum over ``D`` of :math:`|g|`) and the
# top 10% of the real tokens set to 1 in each sample. With probability 0.95, for *every* embedding
# tensor within :math:`\ell_2` distance ``rho`` of the clean one (the whole ``T x D`` tensor), the
# smoothed map keeps at least ``overlap`` of its top-k tokens. Padding is never in a top-k.

ssg = SparsifiedSmoothGrad(model, sparsity=0.1, sigma=0.25, n_samples=512, relative_sigma=True)
sub = test_task.subset(slice(0, 64))
for rho in (0.05, 0.1, 0.2):
    smoothed, certificate = CertifiedTopK(ssg, k=1, rho=rho, confidence=0.95).attribute(
        sub.ids, target=sub.labels, additional_forward_args=(sub.attention_mask,), embedding_layer=model.embedding,
        token_mask=sub.attention_mask, generator=torch.Generator().manual_seed(0))
    print(f"rho {rho}: top-1 token certified for {certificate.overlap.double().mean():.0%} of 64 sequences")
top_is_signal = sub.important.gather(1, certificate.top_k[:, :1]).double().mean()
print(f"the smoothed gradient map's top-1 token is a signal token in {top_is_signal:.0%} of them")

# %%
# The last line is a lesson, not a bug: on this model the *gradient* (what the SmoothGrad family
# smooths) is not largest at the signal tokens. The gradient is the local slope of the logit at the
# token's embedding; Integrated Gradients measures how much the logit changes along the whole path from
# the padding embedding to it (and sums to the logit difference), and finds the signal every time. A certificate says a map is
# *stable*, not that it is *faithful*; check both (``captum_robust.robust.evaluation.roar`` for the
# latter).

# %%
# Training for stable token explanations
# --------------------------------------
#
# :class:`~captum_robust.robust.regularizers.IGNorm` with ``embedding_layer=`` adds Chen et al.'s
# term to the loss: the :math:`\ell_1` norm of the Integrated Gradients of the loss between the
# embeddings and the worst point of an :math:`\ell_\infty` ball of 0.5 around them (embedding units),
# found by a short inner attack. The model trained above is trained for 300 more steps twice, on
# the same batches, with and without the term (on 64 examples of each batch), and attacked as above.


def finetune(init, with_ig_norm):
    model = TokenBagClassifier(train_task.vocab_size, 16, 2, 32, softplus=5.0)
    model.load_state_dict(init.state_dict())
    reg = IGNorm(model, eps=0.5, lam=1.0, n_steps=10, attack_n_steps=5, n_iterations=5, step_size=0.125,
                 embedding_layer=model.embedding, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(1)
    for _ in range(300):
        idx = torch.randint(0, len(train_task), (128,), generator=order)
        ids, mask, y = train_task.ids[idx], train_task.attention_mask[idx], train_task.labels[idx]
        loss = F.cross_entropy(model(ids, mask), y)
        if with_ig_norm:
            loss = loss + reg(ids[:64], y[:64], additional_forward_args=(mask[:64],), token_mask=mask[:64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


start = time.perf_counter()
models = {"cross-entropy only": finetune(model, False), "with IG-Norm": finetune(model, True)}
print(f"trained both in {time.perf_counter() - start:.1f} s")
radii = (0.4, 0.6, 0.7, 0.8)
kept = {name: [float(attack_ig(m, single, r)[1].similarity.mean()) for r in radii] for name, m in models.items()}
for name, m in models.items():
    print(f"{name}: test accuracy {accuracy(m, test_task):.3f}, top-1 kept under attack "
          + ", ".join(f"{v:.0%} (radius {r})" for v, r in zip(kept[name], radii)))

fig, ax = plt.subplots(figsize=(4.5, 3))
for name, values in kept.items():
    ax.plot(radii, values, marker="o", label=name)
ax.set_xlabel("attack radius (x mean token norm / sqrt(D))")
ax.set_ylabel("top-1 token kept")
ax.set_ylim(0, 1.05)
ax.legend()
fig.tight_layout()

# %%
# The same calls on a Hugging Face text classifier
# ------------------------------------------------
#
# Nothing above is specific to the bag model. A ``BertForSequenceClassification`` (tiny, random
# weights here; ``from_pretrained`` for a real one) is explained through ``model.bert.embeddings``
# (word, position and segment embeddings and their LayerNorm), the attention mask passed as an
# additional argument. Eager attention is needed wherever a method differentiates twice (attacks,
# regularizers); the result equals Captum's ``LayerIntegratedGradients``.

config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=16, num_labels=2)
config._attn_implementation = "eager"
bert = BertForSequenceClassification(config).eval()
ids, mask = test_task.ids[:4], test_task.attention_mask[:4]
ours = BatchedIntegratedGradients(bert).attribute(ids, baselines=0, target=0, embedding_layer=bert.bert.embeddings,
                                                  additional_forward_args=(mask,), n_steps=20)
captum = LayerIntegratedGradients(lambda i, m: bert(i, attention_mask=m).logits, bert.bert.embeddings).attribute(
    ids, baselines=torch.zeros_like(ids), target=0, additional_forward_args=(mask,), n_steps=20)
print(f"BERT: token scores {tuple(token_attributions(ours, mask).shape)}, "
      f"largest difference to Captum {(ours - captum).abs().max():.1e}")
