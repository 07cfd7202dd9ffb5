"""lossmix's Hydra configs, shipped in the wheel.

Use them from your own Hydra app with ``hydra.searchpath: [pkg://lossmix.conf]`` in the
primary config, then put ``loss/cls: focal`` (any group here) in its defaults list.
"""
