"""Collection rules for the doctest run over ``lossmix/`` (``--doctest-modules``): a module
that needs an optional extra is not imported when the extra is missing."""

from __future__ import annotations

import importlib.util

collect_ignore = [
    path
    for path, extra in (("lossmix/loops/hf.py", "transformers"),)
    if importlib.util.find_spec(extra) is None
]
