"""Looking up a model's submodules by name, for nodes that name one (``module: trunk``)."""

from __future__ import annotations

from torch import nn

# (module-level dicts that torch fills and empties in place, never rebinds)
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)

from lossmix.errors import LossConfigError, did_you_mean

__all__ = ["no_global_hooks", "trainable_parameters"]

_SHOWN = 30


def no_global_hooks() -> bool:
    """Whether no global module hook is registered (``nn.modules.module.register_module_forward_hook``
    and its kin): then ``Module.__call__`` of a module without hooks of its own runs its
    ``forward`` and nothing else.

    >>> no_global_hooks()
    True
    """
    hooks = (
        _global_backward_pre_hooks,
        _global_backward_hooks,
        _global_forward_hooks,
        _global_forward_pre_hooks,
    )
    return not any(hooks)


def trainable_parameters(
    model: nn.Module, name: str, *, owner: str, what: str = "module"
) -> list[nn.Parameter]:
    """The trainable parameters of ``model``'s submodule ``name`` (a ``get_submodule`` path).

    Args:
        model: the model that holds the submodule.
        name: its dotted name (``trunk``, ``backbone.layer4``).
        owner: who asks, for messages (``aggregation``, ``weighting: gradnorm shared layer``).
        what: what the owner calls it (``module``, ``shared layer``).

    Raises:
        LossConfigError: the name is not a submodule (naming the closest and the submodules
            that hold trainable parameters), or the submodule has none.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> [p.shape for p in trainable_parameters(net, "0", owner="aggregation")]
    [torch.Size([2, 2]), torch.Size([2])]
    """
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        names = [
            n
            for n, m in model.named_modules()
            if n and not n.startswith("loss_mix") and any(p.requires_grad for p in m.parameters())
        ]
        shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        raise LossConfigError(
            f"{owner}: {what} '{name}' is not in {type(model).__name__}.{did_you_mean(name, names)} "
            f"Submodules with trainable parameters: {shown or '(none)'}."
        ) from None
    found = [p for p in layer.parameters() if p.requires_grad]
    if not found:
        raise LossConfigError(f"{owner}: {what} '{name}' has no trainable parameters.")
    return found
