"""Frozen feature networks for the feature losses: built-in VGG and LightCNN, or your own.

* :class:`VGGFeatures`: torchvision's VGG-11/13/16/19 ``features`` written in lossmix, with
  torchvision's module indices and state-dict keys (``features.{i}.weight``), so a file
  saved from torchvision (``torch.save(torchvision.models.vgg19(weights=...).state_dict(),
  path)``) loads as is. Nothing is ever downloaded.
* :class:`LightCNNFeatures`: the LightCNN feature extractor of DIC-GAN, MMagic's layout
  (``features.{i}.filter.weight``).
* :func:`build_encoder`: any other network (a CLIP model, a face-id net) from an
  allow-listed ``_target_`` node, or a module given directly.

Weights files are read by :func:`lossmix.losses.pretrained.load_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossmix.errors import LossConfigError
from lossmix.losses.pretrained import load_weights
from lossmix.registry.allowlist import resolve_target
from lossmix.registry.nodes import to_plain
from lossmix.registry.registry import bind_arguments

__all__ = [
    "VGG_LAYOUTS",
    "FrozenNet",
    "LightCNNFeatures",
    "VGGFeatures",
    "build_encoder",
    "check_vgg_type",
    "freeze",
    "vgg_feature_count",
]

# torchvision's ``features`` of each VGG: channels of a 3×3 conv (+ ReLU), "M" a 2×2 max pool.
VGG_LAYOUTS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def check_vgg_type(owner: str, vgg_type: Any) -> str:
    """``vgg_type`` if lossmix builds that VGG, else raise."""
    if vgg_type not in VGG_LAYOUTS:
        raise LossConfigError(f"{owner}: vgg_type={vgg_type!r} is not valid; use one of {list(VGG_LAYOUTS)}.")
    checked: str = vgg_type
    return checked


def vgg_feature_count(vgg_type: str) -> int:
    """How many modules torchvision's ``features`` of ``vgg_type`` has (a conv counts with its ReLU).

    >>> vgg_feature_count("vgg16"), vgg_feature_count("vgg19")
    (31, 37)
    """
    return sum(1 if item == "M" else 2 for item in VGG_LAYOUTS[vgg_type])


def freeze(module: nn.Module) -> nn.Module:
    """``module`` with gradients off (a loss network never trains)."""
    return module.requires_grad_(False)


def _vgg_layers(layout: Sequence[int | str]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(channels, int(item), kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
            assert conv.bias is not None  # a Conv2d built with bias=True
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            channels = int(item)
    return layers


class VGGFeatures(nn.Module):
    """torchvision's VGG ``features``, cut after the last requested layer, returning those layers.

    Args:
        layers: indices into ``features`` (``'4'`` or ``4``: MMagic's layer names), e.g.
            ``[2, 7, 16]`` for VGG-16's relu1_2, relu2_2 and pool3.
        vgg_type: ``vgg11``, ``vgg13``, ``vgg16`` or ``vgg19``.
        use_input_norm: normalise inputs in ``[0, 1]`` with ImageNet's mean and std.
        pretrained: a weights file in torchvision's key layout, ``torchvision://<vgg_type>``
            (torchvision's cached file), or ``None``: torchvision's random initialisation.
        owner: who builds it, for messages.

    ``forward(x)`` takes ``(N, 3, H, W)`` and returns ``{layer: features}`` (string keys).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        *,
        layers: Sequence[int | str],
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        pretrained: str | None = None,
        owner: str = "VGGFeatures",
    ) -> None:
        super().__init__()
        full = nn.Sequential(*_vgg_layers(VGG_LAYOUTS[check_vgg_type(owner, vgg_type)]))
        self.layers = [self.check_layer(owner, vgg_type, layer) for layer in layers]
        if pretrained is not None:
            holder = nn.Module()
            holder.features = full
            how = (
                f"torch.save(torchvision.models.{vgg_type}(weights='IMAGENET1K_V1').state_dict(), "
                f"'{vgg_type}.pth') on a machine with torchvision"
            )
            load_weights(owner, "pretrained", pretrained, holder, ignore_prefixes=("classifier.",), how=how)
        self.features = freeze(full[: max(map(int, self.layers)) + 1])
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @staticmethod
    def check_layer(owner: str, vgg_type: str, layer: Any) -> str:
        """``layer`` as MMagic's string index if ``vgg_type``'s features have it, else raise."""
        count = vgg_feature_count(vgg_type)
        index = int(layer) if isinstance(layer, int | str) and str(layer).isdigit() else None
        if isinstance(layer, bool) or index is None or index >= count:
            relus: list[str] = []
            position = 0
            for item in VGG_LAYOUTS[vgg_type]:
                position += 1 if item == "M" else 2
                if item != "M":
                    relus.append(str(position - 1))
            raise LossConfigError(
                f"{owner}: layer {layer!r} is not a layer of {vgg_type}, whose features are 0..{count - 1} "
                f"(ReLUs: {', '.join(relus)}); name layers by that index, e.g. '{relus[1]}'."
            )
        return str(index)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        wanted = set(self.layers)
        found: dict[str, Tensor] = {}
        for name, module in self.features.named_children():
            x = module(x)
            if name in wanted:
                found[name] = x
        return found


class _MaxFeature(nn.Module):
    """A conv or linear layer with twice the outputs, keeping the larger half (max-feature-map)."""

    def __init__(self, inp: int, out: int, kernel: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.filter = nn.Conv2d(inp, 2 * out, kernel_size=kernel, stride=1, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.chunk(self.filter(x), 2, dim=1)
        return torch.max(a, b)


def _pool() -> nn.Module:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class LightCNNFeatures(nn.Module):
    """LightCNN's feature extractor (DIC-GAN's face-feature loss), MMagic's ``LightCNNFeature``.

    ``(N, 3, 128, 128)`` → ``(N, 128, 8, 8)``; keys ``features.{i}.filter.weight`` as MMagic's
    ``light_cnn_feature.pth``. ``pretrained``: that file, or ``None`` (random init).
    """

    def __init__(self, *, pretrained: str | None = None, owner: str = "LightCNNFeatures") -> None:
        super().__init__()
        self.features = nn.Sequential(
            *(_MaxFeature(3, 48, 5, 2), _pool(), _MaxFeature(48, 48, 1, 0), _MaxFeature(48, 96)),
            *(_pool(), _MaxFeature(96, 96, 1, 0), _MaxFeature(96, 192), _pool()),
            *(_MaxFeature(192, 192, 1, 0), _MaxFeature(192, 128), _MaxFeature(128, 128, 1, 0)),
            *(_MaxFeature(128, 128), _pool()),
        )
        if pretrained is not None:
            how = "download MMagic's light_cnn_feature.pth (download.openmmlab.com/mmediting/restorers/dic/)"
            load_weights(owner, "pretrained", pretrained, self, ignore_prefixes=("classifier.",), how=how)
        freeze(self)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out


class FrozenNet(nn.Module):
    """A network given by the user, frozen and kept in eval mode whatever mode its owner is
    put in (MMagic calls ``eval()`` on its loss networks for the same reason: dropout, batch
    norm). The built-in VGG and LightCNN have neither, so they are only frozen."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = freeze(net).eval()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def train(self, mode: bool = True) -> FrozenNet:
        super().train(mode)
        self.net.eval()
        return self


def build_encoder(owner: str, key: str, node: Any, *, methods: Sequence[str] = ()) -> FrozenNet:
    """A frozen network from a module or an allow-listed ``{_target_: pkg.Net, **kwargs}`` node.

    The ``_target_`` goes through :func:`lossmix.registry.allowlist.resolve_target` (a class deriving from
    ``torch.nn.Module``, under an allowed package), and the kwargs are checked against its
    signature before it is built; Hydra never instantiates the node.

    Args:
        owner, key: who asks and under which argument, for messages (``FaceIdLoss``, ``facenet``).
        node: an ``nn.Module``, or a mapping with ``_target_``.
        methods: methods the network must have (CLIP's ``encode_image``, ``encode_text``).
    """
    node = to_plain(node)
    if isinstance(node, nn.Module):
        module = node
    elif isinstance(node, Mapping) and isinstance(node.get("_target_"), str):
        kwargs = {k: v for k, v in node.items() if k not in ("_target_", "_recursive_", "_convert_")}
        try:
            cls = resolve_target(node["_target_"], base=nn.Module, functions=False, what="encoder")
            bind_arguments(f"{owner} {key}", cls, kwargs)
        except LossConfigError as err:
            raise LossConfigError(f"{owner}: {key}: {err}") from None
        module = cls(**kwargs)
    else:
        raise LossConfigError(
            f"{owner}: {key}={node!r} is not valid; give a network node such as "
            f"{{_target_: my_project.nets.Encoder, ...}} (its package allowed), or an nn.Module."
        )
    lacking = [m for m in methods if not callable(getattr(module, m, None))]
    if lacking:
        raise LossConfigError(
            f"{owner}: {key} is a {type(module).__name__}, which has no {lacking[0]}(); "
            f"give a network with {', '.join(f'{m}()' for m in methods)}."
        )
    return FrozenNet(module)
