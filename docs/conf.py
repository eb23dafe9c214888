"""Sphinx configuration of the skanomclust documentation (offline build)."""

import os
import re
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "sphinxext"))
sys.path.insert(0, str(HERE.parent))

import skanomclust
from skanomclust.cli import build_parser

project = "skanomclust"
author = "skanomclust developers"
copyright = "skanomclust developers"
version = release = skanomclust.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "sphinxext", "Thumbs.db", ".DS_Store"]
default_role = "literal"  # `text` is code, not a cross-reference
root_doc = "index"

# API reference: one page per object, written into gen_modules/ (not versioned).
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False  # the autosummary template lists the methods
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# HTML
html_theme = "pydata_sphinx_theme"
html_title = f"skanomclust {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "cli": [], "user_guide": []}

# Examples gallery. plot_mtd.py is shown but not run (it needs the MTD data and
# minutes of CPU); every other plot_*.py runs during the build.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_(?!mtd)",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "capture_repr": (),
    "doc_module": ("skanomclust",),
    "backreferences_dir": "gen_modules/backreferences",
    "inspect_global_variables": False,
}
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings(
    "ignore", category=UserWarning, message="Matplotlib is currently using agg"
)


def _write_cli_help():
    """The --help text of every command, included by cli.rst (always current)."""
    os.environ["COLUMNS"] = "88"
    out = HERE / "gen_modules" / "cli"
    out.mkdir(parents=True, exist_ok=True)
    parser = build_parser()
    texts = {"skanomclust": parser.format_help()}
    for action in parser._actions:  # argparse keeps the sub-commands in a private action
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            texts.update(action.choices.items())
    for name, text in texts.items():
        text = text if isinstance(text, str) else text.format_help()
        target = out / f"{name}.txt"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


_write_cli_help()

# A type such as "ndarray of shape (n_clusters_, n_features)" reads, in reStructuredText,
# as a link to a target "n_clusters" that does not exist. Until the docstrings quote such
# names (scikit-learn writes `n_clusters_`), quote fitted-attribute names in type fields.
_PARAM_LINE = re.compile(r"^(\s*[\w*][\w*, ]* : )(.+)$")
_BARE_ATTRIBUTE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _quote_attribute_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        match = _PARAM_LINE.match(line)
        if match:
            lines[i] = match.group(1) + _BARE_ATTRIBUTE.sub(r"``\1``", match.group(2))


def setup(app):
    # before numpydoc turns the sections into reStructuredText
    app.connect("autodoc-process-docstring", _quote_attribute_names, priority=100)
