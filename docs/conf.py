"""Sphinx configuration: MyST Markdown pages, the API reference from the docstrings, and the
loss catalog generated from the registries (the data ``lossmix list`` and ``lossmix show``
print), so a renamed function or a new loss changes the site with the code.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (needs ``.[docs]``).
"""

from __future__ import annotations

from typing import Any

import lossmix

project = "lossmix"
author = "the lossmix developers"
release = lossmix.__version__
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_draft"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "lossmix"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False


def _catalog(app: Any, docname: str, source: list[str]) -> None:
    """Append the generated catalog to ``catalog.md``."""
    if docname == "catalog":
        from lossmix.app.catalog import catalog_markdown

        source[0] += "\n" + catalog_markdown()


def setup(app: Any) -> None:
    app.connect("source-read", _catalog)
