"""``CompiledStep``: the whole ``training_step`` under ``torch.compile(fullgraph=True)``.

Turned on with ``loss_compile = True`` on a :class:`~lossmix.CompositeLoss` module (the
app: ``lossmix.compile=true``), or a mapping of ``torch.compile`` options
(``{"mode": "max-autotune"}``, ``{"backend": "aot_eager"}``). At ``fit`` start, on the
module's device, the callback

1. fixes the seed and the counter of every random stream in the module
   (:func:`~lossmix.utilities.rng.prime_generators`), which a graph cannot read;
2. replaces the module's ``training_step`` by its compiled form: the model, the terms, the
   samplers, the normalisers and the write into the term buffer are one graph, with no
   graph break (``fullgraph=True``; a step that cannot be one graph fails at its first
   call with the reason, instead of running slower in pieces).

The optimizer step, backward and logging stay Lightning's. The step counter and the other
integers the step reads are traced as symbols, so the graph is not recompiled every
step: a run compiles a few variants (the first step, a lazy term's on and off steps, the
first step of an epoch) and then reuses them. ``fit`` restores the plain method at its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from lossmix.errors import LossConfigError, did_you_mean
from lossmix.utilities.rng import prime_generators

__all__ = ["COMPILE_KEYS", "CompiledStep", "check_compile_option"]

#: the ``torch.compile`` arguments ``loss_compile`` may set. Not ``options``: Inductor's
#: options name compilers and tools to execute (``cpp.cxx``), which a config must not choose.
COMPILE_KEYS = ("backend", "mode", "dynamic", "fullgraph")
_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_RECOMPILE_LIMIT = 32  # variants of one step (lazy-term patterns, first steps) before eager


def check_compile_option(value: Any, owner: str = "loss_compile") -> dict[str, Any] | None:
    """``value`` as ``torch.compile`` keyword arguments (``None``: off), or a clear error.

    >>> check_compile_option(True), check_compile_option({"backend": "eager"})
    ({'fullgraph': True}, {'fullgraph': True, 'backend': 'eager'})
    """
    if value is None or value is False:
        return None
    if value is True:
        return {"fullgraph": True}
    if not isinstance(value, Mapping):
        raise LossConfigError(
            f"{owner}={value!r} is not valid; use true, false or a mapping of torch.compile "
            f"options ({', '.join(COMPILE_KEYS)}), e.g. {{mode: max-autotune}}."
        )
    kwargs: dict[str, Any] = {"fullgraph": True}
    for key, given in value.items():
        if key == "options":
            raise LossConfigError(
                f"{owner}: 'options' (Inductor's settings) cannot come from a config: some of them "
                "name programs to run (a C++ compiler); set them in Python with "
                "torch._inductor.config, or choose a mode (e.g. {mode: max-autotune})."
            )
        if key not in COMPILE_KEYS:
            raise LossConfigError(
                f"{owner}: unknown torch.compile option {key!r}.{did_you_mean(str(key), COMPILE_KEYS)} "
                f"Options: {', '.join(COMPILE_KEYS)}."
            )
        kwargs[str(key)] = given
    backend = kwargs.get("backend", "inductor")
    known = torch._dynamo.list_backends(exclude_tags=())
    if not isinstance(backend, str) or backend not in known:
        raise LossConfigError(
            f"{owner}: backend={backend!r} is not a registered torch.compile backend; use one of "
            f"{', '.join(sorted(known))}."
        )
    if kwargs.get("mode") not in _MODES:
        raise LossConfigError(
            f"{owner}: mode={kwargs['mode']!r} is not valid; use one of "
            f"{', '.join(str(m) for m in _MODES[1:])}."
        )
    for key in ("fullgraph", "dynamic"):
        if key in kwargs and not (kwargs[key] is None or isinstance(kwargs[key], bool)):
            raise LossConfigError(f"{owner}: {key}={kwargs[key]!r} is not valid; use true or false.")
    return kwargs


class CompiledStep(pl.Callback):
    """Compile ``training_step`` as one graph for the run; see the module docstring.

    Args:
        options: ``torch.compile`` keyword arguments (``fullgraph`` defaults to ``True``).
    """

    def __init__(self, options: Mapping[str, Any] | bool = True) -> None:
        self.options = check_compile_option(options, "CompiledStep") or {"fullgraph": True}
        self._installed = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        prime_generators(pl_module, pl_module.device)
        step = pl_module.training_step  # the class's (or the user's own) method, bound
        compiled = torch.compile(step, **self.options)
        fullgraph = bool(self.options.get("fullgraph"))

        def training_step(*args: Any, **kwargs: Any) -> Any:
            with torch._dynamo.config.patch(
                allow_unspec_int_on_nn_module=True,  # the step counter: a symbol, not a constant
                recompile_limit=_RECOMPILE_LIMIT,
                fail_on_recompile_limit_hit=True,  # never fall back to eager silently
            ):
                try:
                    return compiled(*args, **kwargs)
                except torch._dynamo.exc.Unsupported as error:
                    if not fullgraph:
                        raise
                    raise RuntimeError(_graph_break_message(type(pl_module).__name__, error)) from error

        pl_module.training_step = training_step  # type: ignore[method-assign]
        self._installed = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore(pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore(pl_module)

    def _restore(self, pl_module: pl.LightningModule) -> None:
        if self._installed and "training_step" in vars(pl_module):
            del pl_module.training_step
        self._installed = False


def _graph_break_message(model: str, error: BaseException) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"{model}.training_step cannot be compiled as one graph (loss_compile=True): {reason}. "
        "Keep host work (.item(), print, numpy, data-dependent Python branches) out of "
        "training_step, or allow graph breaks with loss_compile={fullgraph: false}."
    )
