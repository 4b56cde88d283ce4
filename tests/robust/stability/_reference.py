"""An independent brute-force NumPy reference of the six stability metrics, written from the
papers' formulas (with Quantus 0.6's conventions where the library follows them): one loop over
examples, one over perturbations, every map explained on its own (batch of one)."""

import numpy as np
import torch

ORD = {"l2": 2, "l1": 1, "linf": np.inf}


def _np(t):
    return t.detach().cpu().double().numpy()


def _explain(explainer, x, target):
    """The map of one example (1 x ...), flattened, as float64 NumPy."""
    return _np(explainer.attribute(x.clone().requires_grad_(), target=target)).reshape(-1)


def _normalise(e, how):
    if how == "max":
        m = np.max(np.abs(e))
    elif how == "second_moment":
        m = np.sqrt(np.mean(e ** 2))
    else:
        return e
    return e if m == 0 else e / m


def reference(metric, explainer, model, x, target, P, *, norm="l2", normalise=None, absolute=False,
              eps=1e-6, layer=None, exclude=False, relative=True):
    """``metric`` of every example of ``x`` (B x ...) with perturbed inputs ``P`` (n x B x ...)."""
    n, b = P.shape[0], P.shape[1]
    p = ORD[norm]

    def emap(xi, ti):
        e = _normalise(_explain(explainer, xi, ti), normalise)
        return np.abs(e) if absolute else e

    def rep(xi):
        out = {}
        if layer is not None:
            h = layer.register_forward_hook(lambda m, a, o: out.__setitem__("L", _np(o).reshape(-1)))
        with torch.no_grad():
            logits = _np(model(xi)).reshape(-1)
        if layer is not None:
            h.remove()
        return logits, out.get("L")

    values, changed = np.zeros(b), np.zeros(b, dtype=int)
    for i in range(b):
        xi, ti = x[i:i + 1], int(target[i])
        e, xf = emap(xi, ti), _np(xi).reshape(-1)
        h, L = rep(xi) if model is not None else (None, None)
        scores = []
        for s in range(n):
            xs = P[s, i:i + 1]
            es, xsf = emap(xs, ti), _np(xs).reshape(-1)
            if model is not None:
                hs, Ls = rep(xs)
                if np.argmax(hs) != np.argmax(h):
                    changed[i] += 1
                    if exclude:
                        continue
            if metric in ("max_sensitivity", "avg_sensitivity"):
                num = np.linalg.norm(e - es, ord=p)
                den = np.linalg.norm(e, ord=p) if relative else 1.0
                scores.append(np.nan if den == 0 else num / den)
            elif metric == "local_lipschitz_estimate":
                den = np.linalg.norm(xf - xsf, ord=p)
                scores.append(np.nan if den == 0 else np.linalg.norm(e - es, ord=p) / den)
            else:
                num = np.linalg.norm((e - es) / np.where(e == 0, eps, e), ord=p)
                if metric == "relative_input_stability":
                    den = np.linalg.norm((xf - xsf) / np.where(xf == 0, eps, xf), ord=p)
                elif metric == "relative_output_stability":
                    den = np.linalg.norm(h - hs, ord=p)
                else:
                    den = np.linalg.norm((L - Ls) / np.where(L == 0, eps, L), ord=p)
                scores.append(num / (eps if den == 0 else den))
        if not scores:
            values[i] = np.nan
        elif metric == "avg_sensitivity":
            values[i] = np.mean(scores)
        else:
            values[i] = np.max(scores)
    return values, changed
