"""
Evaluate your own model from the command line
=============================================

``captum-robust evaluate`` and ``captum-robust certify`` run the library's robustness
protocols on *your* model: you give a factory (``module:function``) that builds the
network and a ``state_dict`` saved with ``torch.save``; the command loads the weights with
``torch.load(weights_only=True)``, explains test images, attacks the explanations (or
certifies them) and writes ``results.json``, ``report.md`` and figures. This tutorial
writes a tiny model module and its weights into a temporary folder, trains it for a few
seconds on the embedded digits, and runs both commands through
:func:`captum_robust.cli.main` -- the same as typing them in a shell::

    captum-robust evaluate --model tiny_net:make --weights model.pt --image-size 8 \\
        --attribution ig --attack topk --eps 0.1 --examples 48 --out evaluate/

To split the examples over several processes, start the same command with
``torchrun --nproc_per_node=2 -m captum_robust.cli evaluate ...``: rank 0 gathers the
per-example results and writes the same files as a single process would.
"""

# %%
# A model module and its weights
# ------------------------------
#
# Any importable module works; the command also searches the current directory. The
# factory is called with no arguments (``--model-kwargs '{"width": 16}'`` passes some).
# The model receives images in [0, 1]; put any input normalization inside it.

import sys
import tempfile
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from captum_robust.cli import main
from captum_robust.data import load_digits
from captum_robust.training import train_classifier

torch.set_num_threads(1)
work = Path(tempfile.mkdtemp(prefix="captum_robust_cli_"))
(work / "tiny_net.py").write_text(textwrap.dedent('''
    from torch import nn


    class TinyNet(nn.Module):
        """conv -> ReLU -> conv -> global average pooling -> linear: CAM applies too."""

        def __init__(self, width=16):
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.act = nn.ReLU()
            self.conv2 = nn.Conv2d(width, 32, 3, stride=2, padding=1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.conv2(self.act(self.conv1(x))).mean(dim=(2, 3)))


    def make(width=16):
        return TinyNet(width)
'''))
sys.path.insert(0, str(work))
from tiny_net import make  # noqa: E402  (the module we just wrote)

torch.manual_seed(0)
model = make()
data = load_digits(size=8)  # the original 8x8 digits: small and fast
loader = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
train_classifier(model, loader, epochs=30, lr=1e-2)
model.eval()
x_test, y_test = data.test.tensors
with torch.no_grad():
    print(f"test accuracy: {(model(x_test).argmax(1) == y_test).float().mean():.3f}")
torch.save(model.state_dict(), work / "model.pt")

# %%
# ``evaluate``: attack the explanations
# -------------------------------------
#
# Integrated Gradients maps of the true class on the first 48 test images, attacked with
# Ghorbani et al.'s top-k attack (l-inf, two radii) while every prediction is kept; the
# report gives the top-k intersection and Kendall's tau between the clean and the attacked
# maps (1 = unchanged) and the accuracy under PGD with the same budget. The attack takes
# its gradients through a softplus copy of the ReLU network.

# ``tiny_net`` is importable because its folder is on ``sys.path`` (the command also looks in
# the current directory); the paths are absolute, so this works from any directory.
code = main([
    "evaluate", "--model", "tiny_net:make", "--weights", str(work / "model.pt"), "--image-size", "8",
    "--attribution", "ig", "--attack", "topk", "--eps", "0.05", "0.1", "--examples", "48",
    "--iterations", "10", "--pgd-iterations", "20", "--out", str(work / "evaluate"), "--no-progress",
])
print("exit status:", code)

# %%
# The markdown report holds the table printed above and links the figures.

print((work / "evaluate" / "report.md").read_text())

# %%
# Maps before and after the attack (each on its own colour scale), drawn over the
# attacked images:

fig, ax = plt.subplots(figsize=(5, 6))
ax.imshow(plt.imread(work / "evaluate" / "figure_maps.png"))
ax.axis("off")
plt.show()

# %%
# Every per-example value is in ``results.json``: one entry per radius, with the
# summary statistics and the columns of
# :class:`~captum_robust.robust.evaluation.RobustnessReport`.

import json  # noqa: E402

results = json.loads((work / "evaluate" / "results.json").read_text())
for run in results["runs"]:
    s = run["summary"]
    print(f"eps {run['eps']}: Kendall mean {s['measures']['kendall']['mean']:.3f} over {s['n_kept']} kept examples, "
          f"PGD accuracy {s['adversarial_accuracy']:.3f}")

# %%
# ``certify``: a certified top-K
# ------------------------------
#
# Sparsified SmoothGrad maps of the prediction with their top-K certificate (Levine et
# al.): per image the certified overlap at l2 radius ``--rho`` and the certified radius,
# the largest l2 radius at which half of the top-K stays certified.

code = main([
    "certify", "--model", "tiny_net:make", "--weights", str(work / "model.pt"), "--image-size", "8",
    "--examples", "32", "--n-samples", "1024", "--k", "0.25", "--rho", "0.05", "--out", str(work / "certify"), "--no-progress",
])
print("exit status:", code)

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.imshow(plt.imread(work / "certify" / "figure_radius_cdf.png"))
ax.axis("off")
plt.show()

# %%
# Mistakes are reported in one line with exit status 2, e.g. a CAM on a layer that is
# not followed by global average pooling:

code = main([
    "evaluate", "--model", "tiny_net:make", "--weights", str(work / "model.pt"), "--image-size", "8",
    "--attribution", "cam", "--layer", "conv1", "--out", str(work / "never"),
])
print("exit status:", code)

# %%
# Clean up: ``sys.path`` as it was (if the runner has not already restored it).

if str(work) in sys.path:
    sys.path.remove(str(work))
