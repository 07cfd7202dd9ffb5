"""Composing a config with Hydra's compose API, for the checks and ``lossmix show``.

The app itself composes as ``@hydra.main`` does (:func:`lossmix.utilities.compat.compose_like_hydra_main`,
with the ``hydra`` node); everything that only needs the job's config composes here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from lossmix.app.hydra_nodes import check_search_path
from lossmix.errors import LossConfigError
from lossmix.registry.nodes import register_resolvers
from lossmix.utilities.compat import primary_search_path

__all__ = ["CONFIG_MODULE", "compose_config"]

#: the package of lossmix's own config tree (``train.yaml`` and its groups)
CONFIG_MODULE = "lossmix.conf"


def compose_config(
    overrides: Sequence[str],
    config_name: str | None = None,
    config_dir: str | None = None,
) -> DictConfig:
    """A config composed with ``overrides`` (Hydra's compose API): lossmix's training config
    (``lossmix/conf/train.yaml``), or ``config_name`` from the user's ``config_dir``.

    Command-line flags among ``overrides`` (``-m``) are left out. The primary config's search
    path is checked before Hydra imports anything it names
    (:func:`lossmix.app.hydra_nodes.check_search_path`).
    """
    overrides = [o for o in overrides if not o.startswith("-")]
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise LossConfigError(f"--config-dir {config_dir}: no such directory.")
        if config_name is None:
            found = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "no .yaml file there"
            raise LossConfigError(
                f"--config-dir {config_dir} needs --config-name, the primary config's name (one of: {found})."
            )
    GlobalHydra.instance().clear()
    try:
        if config_dir is not None:
            with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
                # before Hydra imports what the primary config's search path names
                given = any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides)
                entries = None if given else primary_search_path(GlobalHydra.instance().hydra, config_name)
                check_search_path(entries, user_dirs=[str(folder)], from_command_line=given)
                return compose(config_name, overrides=list(overrides))
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name or "train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
