"""Cheap scalarizers in the ``weighting:`` family: balance tasks from their loss values alone.

None needs a per-task gradient, so each costs about what the plain sum costs. Like the
other weightings they return per-task factors ``λ_i`` (and a regulariser) and never call
``.backward()``; factors computed from the losses are detached, so the gradient is the
method's while the total's value is ``Σ λ_i L_i`` (compare runs by the per-term values).

========= ================================================ ========================== ============
``type``  gradient of                                      factors ``λ_i``             state
========= ================================================ ========================== ============
famo      ``Σ z_i log(L_i − b_i) / c`` (Liu et al. 2023)   ``z_i / (c (L_i − b_i))``   buffers
rlw       ``Σ λ_i L_i``, λ = softmax(N(0, I)) each step    random, Σλ = 1             generator
gls       ``(Π L_i)^{1/K}`` (Chennupati et al. 2019)       ``GLS / (K L_i)``          none
imtl_l    ``Σ e^{s_i} L_i − s_i`` (Liu et al. 2021)        ``e^{s_i}``                parameter
log_loss  ``Σ log(L_i + ε)`` (DB-MTL, Lin et al. 2023)     ``1 / (L_i + ε)``          none
========= ================================================ ========================== ============
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.mtl.shared_generator import SharedGenerator
from lossmix.mtl.weighting import WEIGHTING_KEY, BaseWeighting
from lossmix.registry.registry import WEIGHTINGS
from lossmix.utilities.checks import check_float
from lossmix.utilities.distributed import all_reduce_sum, world_size

__all__ = ["FAMO", "IMTLL", "GeometricLossStrategy", "LogLossBalancing", "RandomLossWeighting"]


@WEIGHTINGS.register(name="famo")
class FAMO(BaseWeighting):
    """FAMO (Liu et al. 2023): every task's loss should fall at the same log-rate.

    The step's gradient is that of ``Σ_i z_i log(L_i − b_i + ε) / c`` with
    ``z = softmax(ξ)`` and ``c = Σ_i z_i / (L_i − b_i + ε)`` held constant, i.e. factors
    ``λ_i = z_i / (c (L_i − b_i + ε))`` (``Σλ = 1``). After the optimizer step the logits
    learn from ``δ_i = log(L_i^before − b_i + ε) − log(L_i^after − b_i + ε)`` (the same
    batch re-evaluated, as the authors' code does): one Adam step on ``ξ`` along
    ``∂(zᵀδ)/∂ξ + γξ``. The Lightning callback re-runs ``training_step`` on the batch
    without gradients for ``L^after`` (one extra forward per step; modules stay in train
    mode, as in the paper's code). Under DDP ``δ`` is averaged over ranks (one collective
    of K numbers per step), so every rank keeps the same ``ξ``. The logits, the Adam
    moments and the last losses are buffers.

    Args:
        lr: Adam's learning rate for ``ξ`` (0.025 in the paper).
        weight_decay: ``γ`` (1e-3 in the paper's Algorithm 2 and LibMTL).
        min_losses: lower bounds ``b_i`` (default 0 for each task).
        eps: ``ε``.

    >>> famo = FAMO(["a", "b"])
    >>> famo(torch.tensor([4.0, 1.0]), training=True)[0]  # z = ½ each: λ ∝ 1/L, Σλ = 1
    tensor([0.2000, 0.8000])
    >>> famo.post_step(torch.tensor([2.0, 0.9]))  # a fell faster: its logit goes down
    >>> bool(famo.logits[0] < famo.logits[1])
    True
    """

    needs_post_step_losses = True
    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    adam_steps: Tensor
    before: Tensor
    min_losses: Tensor

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: Sequence[float] | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(tasks)
        owner = f"{WEIGHTING_KEY}: famo"
        self.lr = check_float(owner, "lr", lr, low=0.0)
        self.weight_decay = check_float(owner, "weight_decay", weight_decay, low=0.0)
        self.eps = check_float(owner, "eps", eps, low=0.0, low_open=True)
        k = len(self.tasks)
        bounds = (
            [0.0] * k if min_losses is None else [check_float(owner, "min_losses", b) for b in min_losses]
        )
        if len(bounds) != k:
            raise LossConfigError(f"{owner}: min_losses needs one value per task ({k}); got {len(bounds)}.")
        for name in ("logits", "exp_avg", "exp_avg_sq", "before"):
            self.register_buffer(name, torch.zeros(k))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("min_losses", torch.tensor(bounds))

    def _shifted(self, losses: Tensor) -> Tensor:
        return (losses.detach() - self.min_losses.to(losses.dtype)).clamp(min=0.0) + self.eps

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        z = torch.softmax(self.logits.to(losses.dtype), dim=0)
        shifted = self._shifted(losses)
        if training:
            self.before.copy_(losses.detach())
        return z / (shifted * (z / shifted).sum()), None

    def post_step(self, losses: Tensor) -> None:
        # the state's dtype whatever the model's (a float64 model, a bf16 autocast loss)
        losses = losses.detach().to(self.logits.dtype)
        delta = torch.log(self._shifted(self.before)) - torch.log(self._shifted(losses))
        if world_size() > 1:
            delta = all_reduce_sum(delta) / world_size()
        z = torch.softmax(self.logits, dim=0)
        grad = z * delta - z * (z @ delta) + self.weight_decay * self.logits
        beta1, beta2 = 0.9, 0.999
        self.adam_steps += 1
        step = self.adam_steps.to(grad.dtype)
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        corrected = self.exp_avg / (1 - beta1**step)
        spread = (self.exp_avg_sq / (1 - beta2**step)).sqrt() + 1e-8
        self.logits.sub_(self.lr * corrected / spread)


@WEIGHTINGS.register(name="rlw")
class RandomLossWeighting(BaseWeighting):
    """RLW (Lin et al. 2022): ``λ = softmax(z)`` with ``z ~ N(0, I)`` drawn anew each training step
    (``1/K`` each in evaluation).

    The draws come from a CPU generator seeded alike on every rank (so DDP ranks agree) whose
    state is checkpointed; moving ``K`` numbers to the device is the step's only extra work.

    Args:
        seed: the generator's seed.
    """

    def __init__(self, tasks: Sequence[str], *, seed: int = 0) -> None:
        super().__init__(tasks)
        self.generator = SharedGenerator(seed, owner=f"{WEIGHTING_KEY}: rlw")

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        k = len(self.tasks)
        if not training:
            return losses.new_full((k,), 1.0 / k), None
        draw = torch.randn(k, generator=self.generator.on(torch.device("cpu")))
        return torch.softmax(draw, dim=0).to(losses.device, losses.dtype, non_blocking=True), None

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.load(state.get("generator", {}))


@WEIGHTINGS.register(name="gls", aliases=["geometric_mean"])
class GeometricLossStrategy(BaseWeighting):
    """GLS (Chennupati et al. 2019): the geometric mean ``(Π_i L_i)^{1/K}`` (also
    ``type: geometric_mean``, TorchJD's name).

    Factors ``λ_i = GLS / (K L_i)`` (detached) give that value and that gradient exactly,
    since ``∂GLS/∂L_i = GLS / (K L_i)``. Losses are clamped at the smallest positive float.

    >>> factors, _ = GeometricLossStrategy(["a", "b"])(torch.tensor([4.0, 1.0]), training=True)
    >>> factors, (factors * torch.tensor([4.0, 1.0])).sum()  # GLS = √(4·1) = 2
    (tensor([0.2500, 1.0000]), tensor(2.))
    """

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        positive = losses.detach().clamp(min=torch.finfo(losses.dtype).tiny)
        mean = torch.exp(torch.log(positive).mean())
        return mean / (len(self.tasks) * positive), None


@WEIGHTINGS.register(name="imtl_l")
class IMTLL(BaseWeighting):
    """IMTL-L (Liu et al. 2021): ``Σ_i e^{s_i} L_i − s_i`` with learned scales ``s`` (init 0).

    At the optimum ``e^{s_i} L_i = 1``: every task's scaled loss is balanced. The factor is
    ``e^{s_i}``; the regulariser ``−Σ s_i`` is logged as ``{stage}/loss/weighting``. The
    scales are a parameter, so the model's optimizer learns them.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.log_scales = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        scales = self.log_scales.to(losses.dtype)
        return torch.exp(scales), -scales.sum()


@WEIGHTINGS.register(name="log_loss")
class LogLossBalancing(BaseWeighting):
    """DB-MTL's loss-scale balancing (Lin et al. 2023): the gradient of ``Σ_i log(L_i + ε)``.

    Factors ``1 / (L_i + ε)`` (detached): each task's gradient is divided by its loss, so
    a loss in the thousands and one near 1 pull alike. (The full DB-MTL, with its
    gradient-magnitude balancing, is the aggregator ``db_mtl``.)

    Args:
        eps: ``ε``.

    >>> LogLossBalancing(["a", "b"], eps=1e-8)(torch.tensor([1000.0, 0.5]), training=True)[0]
    tensor([1.0000e-03, 2.0000e+00])
    """

    def __init__(self, tasks: Sequence[str], *, eps: float = 1e-8) -> None:
        super().__init__(tasks)
        self.eps = check_float(f"{WEIGHTING_KEY}: log_loss", "eps", eps, low=0.0, low_open=True)

    def forward(self, losses: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        return 1.0 / (losses.detach().clamp(min=0.0) + self.eps), None
