"""Offline intersphinx inventories for the projects the API pages refer to.

``sphinx.ext.intersphinx`` normally downloads each project's ``objects.inv`` at build time;
this documentation must build without network access. So the entries it needs -- the names
our docstrings and signatures use -- are listed here with their pages in the projects'
documentation, and ``write_inventories`` writes them as ``objects.inv`` files (Sphinx
inventory format 2) that ``intersphinx_mapping`` reads from disk. The links point to the live
documentation; nothing is fetched while building. Add a name here when a new docstring
refers to another project's object.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict, List, Tuple

# project -> (base URL, version, [(name, role, relative URI), ...]); a URI ending in "$"
# stands for the URI with "$" replaced by the name (the inventory format's shorthand).
Entry = Tuple[str, str, str]

_TORCH_GEN = "generated/$"

INVENTORIES: Dict[str, Tuple[str, str, List[Entry]]] = {
    "python": ("https://docs.python.org/3/", "3", [
        ("pathlib.Path", "class", "library/pathlib.html#$"),
        ("os.PathLike", "class", "library/os.html#$"),
        ("argparse.ArgumentParser", "class", "library/argparse.html#$"),
        ("copy.deepcopy", "function", "library/copy.html#$"),
        ("callable", "function", "library/functions.html#$"),
    ]),
    "torch": ("https://pytorch.org/docs/stable/", "2", [
        ("torch.Tensor", "class", "tensors.html#$"),
        ("torch.Generator", "class", "generated/torch.Generator.html#$"),
        ("torch.device", "class", "tensor_attributes.html#$"),
        ("torch.dtype", "class", "tensor_attributes.html#$"),
        ("torch.manual_seed", "function", "generated/torch.manual_seed.html#$"),
        ("torch.random.fork_rng", "function", "random.html#$"),
        ("torch.nn.Module", "class", "generated/torch.nn.Module.html#$"),
        ("torch.nn.Linear", "class", "generated/torch.nn.Linear.html#$"),
        ("torch.nn.Sequential", "class", "generated/torch.nn.Sequential.html#$"),
        ("torch.nn.ReLU", "class", "generated/torch.nn.ReLU.html#$"),
        ("torch.nn.Softplus", "class", "generated/torch.nn.Softplus.html#$"),
        ("torch.nn.parallel.DistributedDataParallel", "class",
         "generated/torch.nn.parallel.DistributedDataParallel.html#$"),
        ("torch.utils.data.DataLoader", "class", "data.html#$"),
        ("torch.utils.data.TensorDataset", "class", "data.html#$"),
        ("torch.autograd.gradcheck", "function", "generated/torch.autograd.gradcheck.gradcheck.html#$"),
        # the names autodoc writes for the same objects (their defining modules) and the
        # short names our Google-style docstrings use
        ("torch._C.Generator", "class", "generated/torch.Generator.html#torch.Generator"),
        ("torch.nn.modules.module.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("torch.nn.modules.linear.Linear", "class", "generated/torch.nn.Linear.html#torch.nn.Linear"),
        ("torch.nn.modules.container.Sequential", "class",
         "generated/torch.nn.Sequential.html#torch.nn.Sequential"),
        ("torch.utils.data.dataset.TensorDataset", "class", "data.html#torch.utils.data.TensorDataset"),
        ("torch.utils.data.dataloader.DataLoader", "class", "data.html#torch.utils.data.DataLoader"),
        ("Tensor", "class", "tensors.html#torch.Tensor"),
        ("nn.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("nn.Linear", "class", "generated/torch.nn.Linear.html#torch.nn.Linear"),
        ("nn.Sequential", "class", "generated/torch.nn.Sequential.html#torch.nn.Sequential"),
        ("TensorDataset", "class", "data.html#torch.utils.data.TensorDataset"),
    ]),
    "captum": ("https://captum.ai/api/", "0.9", [
        ("captum.attr.Attribution", "class", "base_classes.html#$"),
        ("captum.attr.GradientAttribution", "class", "base_classes.html#$"),
        ("captum.attr.LayerAttribution", "class", "base_classes.html#$"),
        ("captum.attr.IntegratedGradients", "class", "integrated_gradients.html#$"),
        ("captum.attr.LayerGradCam", "class", "layer.html#$"),
        ("captum.attr.NoiseTunnel", "class", "noise_tunnel.html#$"),
        ("captum.attr.Saliency", "class", "saliency.html#$"),
    ]),
    "numpy": ("https://numpy.org/doc/stable/", "2", [
        ("numpy.ndarray", "class", "reference/generated/numpy.ndarray.html#$"),
        ("numpy.load", "function", "reference/generated/numpy.load.html#$"),
    ]),
    "scipy": ("https://docs.scipy.org/doc/scipy/", "1", [
        ("scipy.stats.kendalltau", "function", "reference/generated/scipy.stats.kendalltau.html#$"),
        ("scipy.stats.spearmanr", "function", "reference/generated/scipy.stats.spearmanr.html#$"),
        ("scipy.stats.norm", "data", "reference/generated/scipy.stats.norm.html#$"),
    ]),
    "matplotlib": ("https://matplotlib.org/stable/", "3", [
        ("matplotlib.figure.Figure", "class", "api/_as_gen/matplotlib.figure.Figure.html#$"),
        ("matplotlib.figure.Figure.savefig", "method", "api/_as_gen/matplotlib.figure.Figure.html#$"),
        ("matplotlib.pyplot", "module", "api/pyplot_summary.html#module-$"),
    ]),
}


def _encode(project: str, version: str, entries: List[Entry]) -> bytes:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = "".join(f"{name} py:{role} 1 {uri} -\n" for name, role, uri in entries)
    return header + zlib.compress(lines.encode())


def write_inventories(folder: Path) -> Dict[str, Tuple[str, str]]:
    """Write one ``<project>.inv`` per project into ``folder``; return ``intersphinx_mapping``."""
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for project, (url, version, entries) in INVENTORIES.items():
        path = folder / f"{project}.inv"
        data = _encode(project, version, entries)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        mapping[project] = (url, str(path))
    return mapping
