"""The training app's trust boundary: what it may import and build from a composed config.

Every ``_target_`` the app builds (``data``, ``model``, ``trainer``, ``callbacks``,
``logger``, anything nested in them, and Hydra's own ``hydra.callbacks``) is resolved
by :func:`lossmix.registry.allowlist.resolve_target` *before* Hydra's ``instantiate`` sees it, and
the node handed to ``instantiate`` carries the resolved class, so what runs is what was
checked. App nodes build classes only, each of its node's kind (a ``LightningModule``
for ``model``, a ``Callback`` under ``callbacks``, ...): no function is called at build
time.

Who may widen the allow-list is :class:`lossmix.app.trust.AppTrust`'s: the command line, the
environment and Python, never a config file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossmix.app.trust import AppTrust
from lossmix.errors import LossConfigError
from lossmix.registry.allowlist import resolve_target
from lossmix.registry.nodes import is_omegaconf, to_plain

__all__ = [
    "APP_ALLOWED_TARGETS",
    "AppTrust",
    "app_target",
    "check_app_nodes",
    "check_app_values",
    "check_children",
    "check_node_targets",
    "check_shared_hparams",
    "instantiate_children",
    "instantiate_node",
    "resolve_node",
    "resolve_node_class",
]

APP_ALLOWED_TARGETS: tuple[str, ...] = (
    "lossmix",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.strategies",
    "lightning.pytorch.accelerators",
    "lightning.pytorch.plugins",
    "lightning.pytorch.profilers",
)

#: the package each of Lightning's optional loggers needs (its own message names two)
_OPTIONAL_PACKAGES = {
    "TensorBoardLogger": "tensorboard",
    "WandbLogger": "wandb",
    "MLFlowLogger": "mlflow",
    "CometLogger": "comet-ml",
    "NeptuneLogger": "neptune",
}


def app_target(target: Any, path: str, allowed: Sequence[str], base: type | None) -> Any:
    """An app node's class under the ``_target_`` rule; the error names the node."""
    try:
        return resolve_target(
            target,
            extra_allowed=allowed,
            defaults=APP_ALLOWED_TARGETS,
            base=base,
            functions=False,
            what=f"'{path}' node",
        )
    except LossConfigError as err:
        raise LossConfigError(f"{path}: {err}") from None


def _resolve_tree(
    value: Any, path: str, allowed: Sequence[str], base: type | None, replace: bool, top: bool
) -> Any:
    if isinstance(value, list):
        return [_resolve_tree(v, f"{path}.{i}", allowed, None, replace, False) for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value
    target = value.get("_target_")
    if "_target_" in value:  # the node's own target first, then what it nests
        target = app_target(target, path, allowed, base)
    elif top:
        raise LossConfigError(f"{path}: the node needs a '_target_' naming the class to build.")
    out = {
        k: _resolve_tree(v, f"{path}.{k}", allowed, None, replace, False)
        for k, v in value.items()
        if k != "_target_"
    }
    if "_target_" in value:
        out = {"_target_": target if (replace or top) else value["_target_"], **out}
    return out


def resolve_node(
    node: Any, path: str, *, base: type | None, allowed: Sequence[str] = (), recursive: bool = True
) -> dict[str, Any]:
    """The node as plain containers with every ``_target_`` checked (and replaced by its class).

    Args:
        node: a DictConfig or dict with a ``_target_``.
        path: where it sits in the config (``model``, ``callbacks.loss_curves``), for messages.
        base: the class its own ``_target_`` must derive from.
        allowed: the user's extra prefixes (see :class:`AppTrust`).
        recursive: whether nested ``_target_`` nodes will be instantiated too; they are
            checked either way, and replaced by their classes only when they will be built
            (a model built with ``_recursive_=False`` receives its nested nodes as plain data).
    """
    plain = to_plain(node)
    if not isinstance(plain, Mapping):
        raise LossConfigError(f"{path}: expected a node with a '_target_'; got {plain!r}.")
    recursive = recursive and bool(plain.get("_recursive_", True))
    resolved: dict[str, Any] = _resolve_tree(plain, path, allowed, base, recursive, True)
    return resolved


def instantiate_node(
    node: Any, path: str, *, base: type | None, allowed: Sequence[str] = (), **kwargs: Any
) -> Any:
    """Hydra's ``instantiate`` on a node whose every ``_target_`` passed :func:`resolve_node`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    recursive = bool(kwargs.get("_recursive_", True))
    resolved = resolve_node(node, path, base=base, allowed=allowed, recursive=recursive)
    try:
        return instantiate(resolved, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, ImportError):
            raise
        target = resolved["_target_"]
        name = getattr(target, "__qualname__", str(target))
        missing = _OPTIONAL_PACKAGES.get(name) or cause.name
        first = str(cause).split("\n", 1)[0].strip()
        install = f"pip install {missing}" if missing else "install the package it names"
        raise LossConfigError(
            f"{path}: {name} needs a package that is not installed ({first}); {install}, or "
            f"choose another option for '{path.split('.')[0]}'."
        ) from None


def instantiate_children(node: Any, path: str, *, base: type, allowed: Sequence[str] = ()) -> list[Any]:
    """Instantiate every ``_target_`` child of a ``callbacks``/``logger`` node (None: nothing)."""
    if not node:
        return []
    check_children(node, path)
    children = to_plain(node)
    return [
        instantiate_node(child, f"{path}.{name}", base=base, allowed=allowed)
        for name, child in children.items()
        if child is not None
    ]


def _shipped_options(group: str) -> list[str]:
    """The options of one of lossmix's own config groups (``callback``, ``logger``)."""
    from importlib import resources

    folder = resources.files("lossmix.conf").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_children(node: Any, path: str) -> None:
    """Every child of a ``callbacks``/``logger`` node builds something (or is ``null``).

    A child with no ``_target_`` would be skipped and the run would go on without it, as
    when ``+callbacks.loss_weights.schedules.reg.end=200`` is given without first adding
    the callback; that is refused, naming the option that adds it.

    Raises:
        LossConfigError: naming the child and the override that adds it.
    """
    if not node:
        return
    from omegaconf import OmegaConf

    # unresolved: a child's ${hydra:...} paths have no value outside a run (lossmix show)
    children = OmegaConf.to_container(node, resolve=False) if is_omegaconf(node) else node
    if not isinstance(children, Mapping):
        raise LossConfigError(f"{path}: expected a mapping of named nodes; got {children!r}.")
    for key, child in children.items():
        if child is None:
            continue  # removed on purpose: callbacks.loss_curves=null
        name = str(key)
        where = f"{path}.{name}"
        if not isinstance(child, Mapping):
            raise LossConfigError(
                f"{where}={child!r} is not a node; give it a _target_ (a class to build), or "
                f"remove it with '~{where}'."
            )
        if "_target_" in child:
            continue
        group = "callback" if path == "callbacks" else path
        options = _shipped_options(group) if path in ("callbacks", "logger") else []
        keys = ", ".join(sorted(child)) or "nothing"
        if path == "callbacks" and name in options:
            fix = f"add the callback first: +callback@callbacks.{name}={name} (then set {keys})"
        elif path == "logger" and name in options:
            fix = f"choose the logger first: logger={name} (then set {keys})"
        elif path == "callbacks":
            fix = (
                f"add a callback with +callback@callbacks.{name}=<option> (options: "
                f"{', '.join(options)}), or give the node a _target_"
            )
        else:
            fix = (
                f"choose a logger with logger=<option> (options: {', '.join(options)}), or give "
                "the node a _target_"
            )
        raise LossConfigError(
            f"{where} has no _target_, so nothing would be built and the setting ({keys}) would do "
            f"nothing; {fix}."
        )


def app_node_bases() -> dict[str, type]:
    """The class each app node must derive from."""
    import lightning.pytorch as pl
    from hydra.experimental.callback import Callback as HydraCallback
    from lightning.pytorch.loggers import Logger

    return {
        "data": pl.LightningDataModule,
        "model": pl.LightningModule,
        "trainer": pl.Trainer,
        "callbacks": pl.Callback,
        "logger": Logger,
        "hydra.callbacks": HydraCallback,
    }


def _target_leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(tree, list):
        return [leaf for i, v in enumerate(tree) for leaf in _target_leaves(v, (*path, i))]
    if not isinstance(tree, Mapping):
        return []
    found = [((*path, "_target_"), tree["_target_"])] if "_target_" in tree else []
    return found + [
        leaf for k, v in tree.items() if k != "_target_" for leaf in _target_leaves(v, (*path, k))
    ]


def check_node_targets(node: Any, path: str, *, base: type | None, allowed: Sequence[str] = ()) -> None:
    """Resolve every ``_target_`` of ``node`` without building it or resolving its other values.

    Only the ``_target_`` values are resolved, so a node whose other values interpolate
    ``${hydra:...}`` can be checked outside a Hydra run (``lossmix show``).
    """
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(node, resolve=False) if is_omegaconf(node) else node
    if not isinstance(tree, Mapping) or "_target_" not in tree:
        raise LossConfigError(f"{path}: the node needs a '_target_' naming the class to build.")
    for where, value in _target_leaves(tree):
        if is_omegaconf(node) and isinstance(value, str) and "${" in value:
            value = OmegaConf.select(node, ".".join(map(str, where)))
        here = ".".join([path, *map(str, where[:-1])])
        app_target(value, here, allowed, base if len(where) == 1 else None)


def check_app_nodes(cfg: Any, allowed: Sequence[str] = ()) -> None:
    """Check every ``_target_`` of the app's nodes (and ``hydra.callbacks``) without building.

    Raises:
        LossConfigError: naming the node (``callbacks.x``) and why its target is refused.
    """
    bases = app_node_bases()
    for path in ("data", "model", "trainer"):
        node = cfg.get(path)
        if node is not None:
            check_node_targets(node, path, base=bases[path], allowed=allowed)
    for path in ("callbacks", "logger", "hydra.callbacks"):
        group: Any = cfg
        for part in path.split("."):
            group = group.get(part) if group is not None else None
        if path != "hydra.callbacks":
            check_children(group, path)
        for name in list(group or ()):
            child = group.get(name)
            if child is not None and hasattr(child, "get") and "_target_" in child:
                check_node_targets(child, f"{path}.{name}", base=bases[path], allowed=allowed)


#: (node, key) → (least value, what the value means): values of the shipped nodes that Torch or
#: Lightning would refuse only deep inside (a traceback) or not at all (a modulo by zero)
APP_VALUE_RULES: dict[tuple[str, str], tuple[int, str]] = {
    ("data", "batch_size"): (1, "samples per batch"),
    ("data", "num_workers"): (0, "loader processes, 0 loads in the main process"),
    ("trainer", "accumulate_grad_batches"): (1, "batches per optimizer step, 1 for none"),
    ("trainer", "log_every_n_steps"): (1, "steps between logged values"),
}


def check_app_values(cfg: Any) -> None:
    """Refuse an integer of :data:`APP_VALUE_RULES` below its least value, naming the key and
    a valid value (``data.batch_size=0`` is ``Error: data.batch_size=0 ...``).

    >>> check_app_values({"data": {"batch_size": 0}})
    Traceback (most recent call last):
    ...
    lossmix.errors.LossConfigError: data.batch_size=0 is not valid; it counts samples per batch: ...
    """
    for (node, key), (least, meaning) in APP_VALUE_RULES.items():
        parent: Any = cfg.get(node) if hasattr(cfg, "get") else None
        value = parent.get(key) if hasattr(parent, "get") else None
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise LossConfigError(
                f"{node}.{key}={value} is not valid; it counts {meaning}: give an integer >= {least} "
                f"(e.g. {node}.{key}={least})."
            )


def resolve_node_class(node: Any, path: str, allowed: Sequence[str] = ()) -> Any:
    """The class a node's ``_target_`` names (already checked by :func:`check_node_targets`)."""
    from omegaconf import OmegaConf

    target = OmegaConf.select(node, "_target_") if is_omegaconf(node) else node.get("_target_")
    return app_target(target, path, allowed, None)


def check_shared_hparams(datamodule: Any, model: Any) -> None:
    """The model and the data must agree on the hyper-parameters they share.

    Lightning merges both into one record and stops at ``fit`` when a shared key differs
    (``model.num_classes=2`` with ``data.num_classes=3``); this says so before, in one line.
    """
    data = dict(getattr(datamodule, "hparams", {}) or {})
    own = dict(getattr(model, "hparams", {}) or {})
    clash = sorted(k for k in set(data) & set(own) if data[k] != own[k])
    if clash:
        key = clash[0]
        raise LossConfigError(
            f"model.{key}={own[key]!r} but data.{key}={data[key]!r}: the model and the data share "
            f"{key}, so they must agree; set data.{key}={own[key]} (the model's config follows "
            "the data's by interpolation), or the same value on both."
        )
