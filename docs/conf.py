"""Sphinx configuration for the captum_robust documentation.

Build locally (from the repository root)::

    pip install -e ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html

The build is offline: the gallery examples use the data embedded in scikit-learn and
nothing here downloads anything.
"""

import os
import sys
from pathlib import Path

# Headless plotting for the gallery; must be set before matplotlib is imported.
os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

# Document the checkout this conf.py lives in, even if another copy is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import captum_robust  # noqa: E402

# -- Project information -----------------------------------------------------

project = "captum_robust"
author = "captum_robust developers"
copyright = "captum_robust developers"
release = captum_robust.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

# Intersphinx links to Python, PyTorch, Captum, NumPy, SciPy and matplotlib, from inventories
# written on disk by offline_inventories.py: intersphinx would otherwise download them, and
# the documentation must build without network access.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    # MathJax is loaded by the reader's browser (from a CDN) when a page is viewed;
    # nothing is fetched at build time.
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_inventories import write_inventories  # noqa: E402

intersphinx_mapping = write_inventories(Path(__file__).resolve().parent / "gen_modules" / "intersphinx")

# -- autodoc / napoleon ------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autoclass_content = "class"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# -- sphinx-gallery ----------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Scripts whose name starts with plot_ are executed at build time.
    "filename_pattern": r"/plot_",
    # A failing example fails the build instead of being reported and skipped.
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "plot_gallery": "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    # Link names in the example code to the API pages of this package (local, no network).
    "doc_module": ("captum_robust",),
    "reference_url": {"captum_robust": None},
    "backreferences_dir": "gen_modules/backreferences",
}

# -- HTML output -------------------------------------------------------------

html_theme = "furo"  # installed by the docs extra

html_title = f"captum_robust {release}"


# -- Generated pages ---------------------------------------------------------


def _write_cli_help(app):
    """Write ``captum-robust --help`` and each subcommand's ``--help`` for api/cli.rst.

    The text comes from the command's own argument parser at build time, so the page
    cannot drift from the code. It goes to docs/gen_modules/ (ignored by git).
    """
    import contextlib
    import importlib
    import io

    try:
        cli = importlib.import_module("captum_robust.cli")
    except ImportError:
        return  # api/cli.rst then fails on its own, with autodoc's import error

    out = Path(app.srcdir) / "gen_modules" / "cli"
    out.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width; fix it
    try:
        for name, argv in (("captum-robust", ["--help"]), ("demo", ["demo", "--help"]),
                           ("evaluate", ["evaluate", "--help"]), ("certify", ["certify", "--help"])):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                status = cli.main(argv)
            if status != 0:
                raise RuntimeError(f"captum-robust {' '.join(argv)} exited with status {status}")
            text = buf.getvalue()
            path = out / f"{name}.txt"
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def setup(app):
    app.connect("builder-inited", _write_cli_help)
