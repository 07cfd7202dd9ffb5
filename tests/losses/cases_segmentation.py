"""Battery cases for the segmentation overlap losses (Dice, Tversky, Jaccard).

Their ``'none'`` output is one loss per sample, ``(N,)``, and so is ``weight``.
References are plain Python loops over samples and classes, written from the formulas.
"""

from __future__ import annotations

import torch

from lossmix import functional as F
from lossmix.losses import DiceLoss, JaccardLoss, TverskyLoss
from tests.losses.battery import LossCase

N, C, H, W = 4, 3, 4, 4
IGNORE = 255


def binary_inputs(dtype: torch.dtype, gen: torch.Generator, scale: float):
    pred = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(dtype) * scale
    target = (torch.rand(N, C, H, W, generator=gen) < 0.4).to(dtype)
    return pred, target


def index_inputs(dtype: torch.dtype, gen: torch.Generator, scale: float):
    pred = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(dtype) * scale
    target = torch.randint(0, C, (N, H, W), generator=gen)
    target[0, 0, :] = IGNORE
    target[2, :, 1] = IGNORE
    target[1] = target[1] % 2  # class 2 absent from sample 1
    return pred, target


def units(pred, target, *, use_sigmoid=True, per_class=False, ignore_index=None):
    """``[[(p list, t list) per unit] per sample]`` over the valid elements, from loops."""
    prob = pred.sigmoid() if use_sigmoid else pred.softmax(1)
    out = []
    for n in range(pred.shape[0]):
        classes = range(pred.shape[1]) if per_class or not use_sigmoid else [None]
        sample = []
        for c in classes:
            ps, ts = [], []
            for idx in torch.ones(pred.shape[1:], dtype=torch.bool).nonzero().tolist():
                k, pos = idx[0], tuple(idx[1:])
                if c is not None and k != c:
                    continue
                if use_sigmoid:
                    t = float(target[n][tuple(idx)])
                    if ignore_index is not None and t == ignore_index:
                        continue
                else:
                    label = int(target[n][pos])
                    if label == ignore_index:
                        continue
                    t = 1.0 if label == k else 0.0
                ps.append(prob[n][tuple(idx)])
                ts.append(t)
            sample.append((ps, ts))
        out.append(sample)
    return out


def dice_value(ps, ts, *, eps=1e-3, naive=False):
    a = sum(p * t for p, t in zip(ps, ts, strict=True))
    if naive:
        return 1 - (2 * a + eps) / (sum(ps) + sum(ts) + eps)
    b = sum(p * p for p in ps) + eps
    c = sum(t * t for t in ts) + eps
    return 1 - 2 * a / (b + c)


def tversky_value(ps, ts, *, alpha, beta, gamma=1.0, eps=1e-3):
    tp = sum(p * t for p, t in zip(ps, ts, strict=True))
    fp = sum(p * (1 - t) for p, t in zip(ps, ts, strict=True))
    fn = sum((1 - p) * t for p, t in zip(ps, ts, strict=True))
    return (1 - (tp + eps) / (tp + alpha * fp + beta * fn + eps)) ** gamma


def jaccard_value(ps, ts, *, eps=1e-3):
    inter = sum(p * t for p, t in zip(ps, ts, strict=True))
    union = sum(ps) + sum(ts) - inter
    return 1 - (inter + eps) / (union + eps)


def reference(value, *, skip_empty=False, **unit_kw):
    def ref(pred, target):
        rows = []
        for sample in units(pred, target, **unit_kw):
            vals = [value(ps, ts) for ps, ts in sample if not skip_empty or sum(ts) > 0]
            rows.append(torch.stack(vals).mean() if vals else pred.new_zeros(()))
        return torch.stack(rows)

    return ref


def per_sample(pred, target):
    return (pred.shape[0],)


def _case(id_, make, inputs, ref, kernel):
    return LossCase(id_, make, inputs, reference=ref, kernel=kernel, weight_shape=per_sample)


def _soft(p, t):
    return F.overlap_inputs(p, t, use_sigmoid=False, ignore_index=IGNORE)


CASES = [
    _case(
        "DiceLoss-vnet",
        lambda **kw: DiceLoss(**kw),
        binary_inputs,
        reference(dice_value),
        lambda p, t: F.dice_loss(p.sigmoid(), t),
    ),
    _case(
        "DiceLoss-naive",
        lambda **kw: DiceLoss(naive_dice=True, eps=0.5, **kw),
        binary_inputs,
        reference(lambda p, t: dice_value(p, t, eps=0.5, naive=True)),
        lambda p, t: F.dice_loss(p.sigmoid(), t, naive_dice=True, eps=0.5),
    ),
    _case(
        "DiceLoss-softmax-ignore",
        lambda **kw: DiceLoss(use_sigmoid=False, ignore_index=IGNORE, **kw),
        index_inputs,
        reference(dice_value, use_sigmoid=False, ignore_index=IGNORE),
        lambda p, t: F.dice_loss(*_soft(p, t), start_dim=2),
    ),
    _case(
        "DiceLoss-softmax-skip",
        lambda **kw: DiceLoss(
            use_sigmoid=False, naive_dice=True, ignore_index=IGNORE, empty_target="skip", **kw
        ),
        index_inputs,
        reference(
            lambda p, t: dice_value(p, t, naive=True), skip_empty=True, use_sigmoid=False, ignore_index=IGNORE
        ),
        lambda p, t: F.dice_loss(*_soft(p, t), naive_dice=True, start_dim=2),
    ),
    _case(
        "TverskyLoss-softmax-focal",
        lambda **kw: TverskyLoss(
            alpha=0.3, beta=0.7, gamma=0.75, use_sigmoid=False, ignore_index=IGNORE, **kw
        ),
        index_inputs,
        reference(
            lambda p, t: tversky_value(p, t, alpha=0.3, beta=0.7, gamma=0.75),
            use_sigmoid=False,
            ignore_index=IGNORE,
        ),
        lambda p, t: F.tversky_loss(*_soft(p, t), alpha=0.3, beta=0.7, gamma=0.75, start_dim=2),
    ),
    _case(
        "TverskyLoss-sigmoid-per-class",
        lambda **kw: TverskyLoss(alpha=0.7, beta=0.3, gamma=2.0, per_class=True, **kw),
        binary_inputs,
        reference(lambda p, t: tversky_value(p, t, alpha=0.7, beta=0.3, gamma=2.0), per_class=True),
        lambda p, t: F.tversky_loss(p.sigmoid(), t, alpha=0.7, beta=0.3, gamma=2.0, start_dim=2),
    ),
    _case(
        "JaccardLoss",
        lambda **kw: JaccardLoss(**kw),
        binary_inputs,
        reference(jaccard_value),
        lambda p, t: F.jaccard_loss(p.sigmoid(), t),
    ),
    _case(
        "JaccardLoss-softmax",
        lambda **kw: JaccardLoss(use_sigmoid=False, ignore_index=IGNORE, **kw),
        index_inputs,
        reference(jaccard_value, use_sigmoid=False, ignore_index=IGNORE),
        lambda p, t: F.jaccard_loss(*_soft(p, t), start_dim=2),
    ),
]
