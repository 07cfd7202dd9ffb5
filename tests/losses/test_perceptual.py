"""Feature losses: the built-in VGG and LightCNN (layout, weights files), perceptual/style,
TTSR, LightCNN features, face identity and CLIP against MMagic's formulas written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from lossmix import LOSSES, LossMix, build_loss
from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import (
    CLIPLoss,
    FaceIdLoss,
    LightCNNFeatureLoss,
    PerceptualLoss,
    TransferalPerceptualLoss,
)
from lossmix.losses.encoders import LightCNNFeatures, VGGFeatures
from lossmix.registry.allowlist import trusting
from tests.losses.battery import assert_close, make_generator

F64 = torch.float64
# torchvision's VGG-16 ``features``: the indices of its convolutions and max pools
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_POOLS = (4, 9, 16, 23, 30)
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def images(n=2, size=8, seed=0, dtype=torch.float32, scale=1.0):
    gen = make_generator(seed)
    return tuple(torch.randn(n, 3, size, size, generator=gen, dtype=F64).to(dtype) * scale for _ in range(2))


def vgg16_state(seed=0, classifier=True):
    """A random state dict in torchvision's vgg16 key layout."""
    gen = make_generator(seed)
    state, inp = {}, 3
    for index, out in zip(VGG16_CONVS, VGG16_CHANNELS, strict=True):
        state[f"features.{index}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * 0.1
        state[f"features.{index}.bias"] = torch.randn(out, generator=gen) * 0.1
        inp = out
    if classifier:
        state["classifier.0.weight"] = torch.zeros(4, 3)
    return state


def vgg16_reference(x, state, layers):
    """The features at ``layers`` by torch.nn.functional calls on the state dict."""
    found = {}
    for index in range(max(layers) + 1):
        if index in VGG16_CONVS:
            x = TF.conv2d(
                x, state[f"features.{index}.weight"].to(x), state[f"features.{index}.bias"].to(x), padding=1
            )
        elif index in VGG16_POOLS:
            x = TF.max_pool2d(x, 2, 2)
        else:
            x = TF.relu(x)
        if index in layers:
            found[index] = x
    return found


def gram(f):
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


# -- the built-in VGG -----------------------------------------------------------------------------
def test_vgg_has_torchvisions_layout():
    vgg = VGGFeatures(layers=[30], vgg_type="vgg16")
    convs = tuple(i for i, m in enumerate(vgg.features) if isinstance(m, nn.Conv2d))
    pools = tuple(i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d))
    assert convs == VGG16_CONVS and pools == VGG16_POOLS and len(vgg.features) == 31
    assert set(vgg16_state(classifier=False)) == set(vgg.state_dict()) - {"mean", "std"}
    vgg19 = VGGFeatures(layers=[36], vgg_type="vgg19")
    assert sum(isinstance(m, nn.Conv2d) for m in vgg19.features) == 16 and len(vgg19.features) == 37
    assert not any(p.requires_grad for p in vgg.parameters())


def test_vgg_loads_a_torchvision_state_dict(tmp_path):
    path = tmp_path / "vgg16.pth"
    state = vgg16_state()
    torch.save(state, path)
    vgg = VGGFeatures(layers=[9], vgg_type="vgg16", pretrained=str(path))
    assert torch.equal(vgg.features[7].weight, state["features.7.weight"])
    assert len(vgg.features) == 10  # cut after the last requested layer, as MMagic
    torch.save({"state_dict": state}, tmp_path / "mmengine.pth")  # MMEngine's checkpoint shape
    VGGFeatures(layers=[2], vgg_type="vgg16", pretrained=str(tmp_path / "mmengine.pth"))


def test_torchvision_scheme_reads_the_cache_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        LossConfigError, match=r"pretrained='torchvision://vgg16': no such weights file \(torchvision's cache"
    ):
        VGGFeatures(layers=[2], vgg_type="vgg16", pretrained="torchvision://vgg16")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg16_state(seed=3), tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    vgg = VGGFeatures(layers=[2], vgg_type="vgg16", pretrained="torchvision://vgg16")
    assert torch.equal(vgg.features[0].bias, vgg16_state(seed=3)["features.0.bias"])


ONE = {"2": 1.0}
BAD_PERCEPTUAL = [
    (
        {"layer_weights": ONE, "pretrained": "{tmp}/nope.pth"},
        r"PerceptualLoss: pretrained='.*nope\.pth': no such weights file.*torchvision\.models\.vgg19\(",
    ),
    ({"layer_weights": ONE, "pretrained": "https://x/vgg19.pth"}, "is a URL; lossmix never downloads"),
    (
        {"layer_weights": ONE, "vgg_type": "vgg16"},
        r"pretrained='torchvision://vgg19' does not match vgg_type='vgg16'",
    ),
    (
        {"layer_weights": {"40": 1.0}, "pretrained": None},
        r"layer '40' is not a layer of vgg19, whose features are 0\.\.36 \(ReLUs: 1, 3, ",
    ),
    ({"layer_weights": {"relu1_1": 1.0}, "pretrained": None}, "layer 'relu1_1' is not a layer"),
    (
        {"layer_weights": ONE, "layer_weights_style": {"31": 1.0}, "vgg_type": "vgg16", "pretrained": None},
        "layer '31' is not a layer of vgg16",
    ),
    ({"layer_weights": {}, "pretrained": None}, "layer_weights={} is not valid"),
    ({"layer_weights": ONE, "vgg_type": "vgg17", "pretrained": None}, "vgg_type='vgg17' is not valid"),
    (
        {"layer_weights": ONE, "criterion": "l2", "pretrained": None},
        r"criterion='l2' is not valid; use one of \['l1', 'mse'\]",
    ),
    ({"layer_weights": ONE, "style_weight": -1.0, "pretrained": None}, "style_weight=-1.0 is not valid"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_PERCEPTUAL)
def test_perceptual_bad_arguments_are_one_line_errors(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if isinstance(kwargs.get("pretrained"), str):
        kwargs = {**kwargs, "pretrained": kwargs["pretrained"].format(tmp=tmp_path)}
    with pytest.raises(LossConfigError, match=message) as info:
        build_loss({"type": "PerceptualLoss", **kwargs})
    assert "\n" not in str(info.value)


def test_a_weights_file_that_does_not_fit_lists_the_keys(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(vgg16_state(), path)
    with pytest.raises(LossConfigError) as info:
        PerceptualLoss(layer_weights={"2": 1.0}, vgg_type="vgg19", pretrained=str(path))
    message = str(info.value)
    assert "pretrained='" in message and "does not fit" in message
    assert "missing keys [features.16.bias, features.16.weight" in message
    assert "unexpected keys [features.17.bias, features.17.weight" in message
    state = vgg16_state()
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(LossConfigError, match=r"'features\.0\.weight' has shape \(64, 1, 3, 3\)"):
        VGGFeatures(layers=[2], vgg_type="vgg16", pretrained=str(path))
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(LossConfigError, match="could not be read as weights"):
        VGGFeatures(layers=[2], vgg_type="vgg16", pretrained=str(tmp_path / "junk.pth"))


# -- PerceptualLoss ------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["l1", "mse"])
def test_perceptual_and_style_match_mmagics_formula(tmp_path, criterion):
    path = tmp_path / "vgg16.pth"
    state = vgg16_state(seed=1)
    torch.save(state, path)
    weights, style_weights = {"2": 1.0, "9": 0.5}, {"4": 2.0, "7": 1.0}
    loss = PerceptualLoss(
        layer_weights=weights,
        layer_weights_style=style_weights,
        vgg_type="vgg16",
        perceptual_weight=0.3,
        style_weight=7.0,
        pretrained=str(path),
        criterion=criterion,
    )
    x, y = images(dtype=torch.float32)
    out = loss(x, y)
    assert set(out) == {"percep", "style"} and loss.part_names == ("percep", "style")
    xs, ys = ((t + 1) * 0.5 for t in (x, y))
    xs, ys = ((t - MEAN) / STD for t in (xs, ys))
    fx, fy = vgg16_reference(xs, state, [2, 4, 7, 9]), vgg16_reference(ys, state, [2, 4, 7, 9])
    dist = nn.L1Loss() if criterion == "l1" else nn.MSELoss()
    percep = 0.3 * sum(w * dist(fx[int(k)], fy[int(k)]) for k, w in weights.items())
    style = 7.0 * sum(w * dist(gram(fx[int(k)]), gram(fy[int(k)])) for k, w in style_weights.items())
    assert_close(out["percep"], percep)
    assert_close(out["style"], style)
    per_sample = PerceptualLoss(
        layer_weights=weights, layer_weights_style=style_weights, vgg_type="vgg16", perceptual_weight=0.3,
        style_weight=7.0, pretrained=str(path), criterion=criterion, reduction="none",
    )(x, y)  # fmt: skip
    assert per_sample["percep"].shape == (2,)
    assert_close(per_sample["percep"].mean(), percep)


def test_perceptual_options_norm_img_and_zero_weights():
    loss = PerceptualLoss(
        layer_weights={"3": 1.0}, vgg_type="vgg16", pretrained=None, norm_img=False, use_input_norm=False
    )
    x, y = images()
    ref = vgg16_reference(x, loss.vgg.state_dict(), [3])[3], vgg16_reference(y, loss.vgg.state_dict(), [3])[3]
    assert_close(loss(x, y)["percep"], (ref[0] - ref[1]).abs().mean())
    no_percep = PerceptualLoss(
        layer_weights={"3": 1.0}, vgg_type="vgg16", pretrained=None, perceptual_weight=0.0
    )
    x = x.requires_grad_()
    out = no_percep(x, y)
    assert out["percep"].item() == 0.0 and out["style"].item() > 0
    (grad,) = torch.autograd.grad(out["percep"], x)
    assert torch.all(grad == 0)
    no_style = PerceptualLoss(layer_weights={"3": 1.0}, vgg_type="vgg16", pretrained=None, style_weight=0.0)
    assert no_style(x, y)["style"].item() == 0.0
    with pytest.raises(LossInputError, match=r"give RGB images \(N, 3, H, W\)"):
        no_style(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))


def test_perceptual_gradcheck_float64():
    loss = PerceptualLoss(layer_weights={"2": 1.0, "7": 0.5}, vgg_type="vgg16", pretrained=None).double()
    x, y = images(n=1, size=4, dtype=F64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: sum(loss(p, y).values()), (x,), eps=1e-6, atol=1e-5)


def test_perceptual_finite_at_extreme_inputs():
    loss = PerceptualLoss(layer_weights={"2": 1.0, "16": 1.0}, vgg_type="vgg16", pretrained=None)
    x, y = images(scale=1e4)
    x.requires_grad_()
    total = sum(loss(x, y).values())
    (grad,) = torch.autograd.grad(total, x)
    assert torch.isfinite(total) and torch.isfinite(grad).all()


def test_perceptual_term_logs_both_parts():
    node = {"type": "mmagic.PerceptualLoss", "layer_weights": ONE, "pretrained": None}
    mix = LossMix.from_config({"percep": {**node, "inputs": {"pred": "x", "target": "y"}}})
    x, y = images()
    result = mix({"x": x}, {"y": y})
    assert list(result.terms) == ["percep.percep", "percep.style"]
    assert not any(p.requires_grad for p in mix.parameters())


# -- TransferalPerceptualLoss -------------------------------------------------------------------
@pytest.mark.parametrize("use_attention", [True, False])
@pytest.mark.parametrize("criterion", ["mse", "l1"])
def test_transferal_matches_mmagics_formula(use_attention, criterion):
    gen = make_generator(4)
    maps = [
        torch.rand(2, 8, 4, 4, generator=gen, dtype=F64),
        torch.rand(2, 4, 8, 8, generator=gen, dtype=F64),
    ]
    textures = [
        torch.rand(2, 8, 4, 4, generator=gen, dtype=F64),
        torch.rand(2, 4, 8, 8, generator=gen, dtype=F64),
    ]
    soft = torch.rand(2, 1, 4, 4, generator=gen, dtype=F64)
    softs = [torch.sigmoid(soft), TF.interpolate(soft, size=(8, 8), mode="bicubic", align_corners=False)]
    if not use_attention:
        softs = [1.0, 1.0]
    dist = nn.MSELoss() if criterion == "mse" else nn.L1Loss()
    expected = sum(dist(m * s, t * s) for m, s, t in zip(maps, softs, textures, strict=True))
    loss = TransferalPerceptualLoss(use_attention=use_attention, criterion=criterion, loss_weight=2.0)
    assert_close(loss(maps, soft, textures), 2.0 * expected, F64)
    first = maps[0].requires_grad_()
    assert torch.autograd.gradcheck(lambda m: loss([m, maps[1]], soft, textures), (first,))


def test_transferal_bad_inputs():
    loss = TransferalPerceptualLoss()
    with pytest.raises(LossInputError, match="same length"):
        loss([torch.zeros(1, 2, 2, 2)], torch.zeros(1, 1, 2, 2), [])
    with pytest.raises(LossInputError, match="level 0"):
        loss([torch.zeros(1, 2, 2, 2)], torch.zeros(1, 1, 2, 2), [torch.zeros(1, 3, 2, 2)])
    with pytest.raises(LossConfigError, match="criterion='l2'"):
        TransferalPerceptualLoss(criterion="l2")


# -- LightCNN -----------------------------------------------------------------------------------
def lightcnn_reference(x, state):
    for index in range(13):
        key = f"features.{index}.filter.weight"
        if key in state:
            w, b = state[key], state[f"features.{index}.filter.bias"]
            y = TF.conv2d(x, w, b, padding=(w.shape[-1] - 1) // 2)
            a, c = torch.chunk(y, 2, dim=1)
            x = torch.max(a, c)
        else:
            x = TF.max_pool2d(x, 2, 2, ceil_mode=True)
    return x


def test_lightcnn_layout_and_weights(tmp_path):
    net = LightCNNFeatures()
    assert "features.0.filter.weight" in net.state_dict() and net.state_dict()[
        "features.0.filter.weight"
    ].shape == (96, 3, 5, 5)
    torch.save(
        {**net.state_dict(), "classifier.2.weight": torch.zeros(1, 256)}, tmp_path / "light_cnn_feature.pth"
    )
    loss = LightCNNFeatureLoss(pretrained=str(tmp_path / "light_cnn_feature.pth"), criterion="mse")
    assert torch.equal(loss.model.features[0].filter.weight, net.features[0].filter.weight)
    pred, gt = torch.rand(2, 3, 128, 128, generator=make_generator(2)), torch.rand(2, 3, 128, 128)
    fp, fg = lightcnn_reference(pred, net.state_dict()), lightcnn_reference(gt, net.state_dict())
    assert fp.shape == (2, 128, 8, 8)
    assert_close(loss(pred, gt), nn.MSELoss()(fp, fg))


def test_lightcnn_with_another_encoder_and_its_errors():
    loss = LightCNNFeatureLoss(pretrained=None, encoder={"_target_": "torch.nn.Flatten"})
    x, y = images(dtype=F64)
    assert_close(loss(x, y), (x - y).abs().mean(), F64)
    with pytest.raises(LossConfigError, match="encoder replaces it; set pretrained: null"):
        LightCNNFeatureLoss(pretrained="x.pth", encoder={"_target_": "torch.nn.Flatten"})
    with pytest.raises(LossConfigError, match="lossmix never downloads"):
        LightCNNFeatureLoss(pretrained="https://download.openmmlab.com/light_cnn_feature.pth")
    with pytest.raises(LossConfigError, match="missing required argument 'pretrained'"):
        build_loss({"type": "LightCNNFeatureLoss"})


# -- FaceIdLoss --------------------------------------------------------------------------------
def test_face_id_matches_mmagics_formula():
    loss = FaceIdLoss(facenet={"_target_": "torch.nn.Flatten"}, crop_face=False, loss_weight=2.5)
    x, y = images(dtype=F64)
    cos = TF.cosine_similarity(x.flatten(1), y.flatten(1))
    assert_close(loss(x, y), 2.5 * (1 - cos).mean(), F64)
    cropped = FaceIdLoss(facenet=nn.Flatten())
    big = tuple(torch.rand(2, 3, 64, 64, generator=make_generator(s), dtype=F64) for s in (1, 2))

    def embed(t):
        t = TF.adaptive_avg_pool2d(t, (256, 256))[:, :, 35:223, 32:220]
        return TF.adaptive_avg_pool2d(t, (112, 112)).flatten(1)

    expected = (1 - TF.cosine_similarity(embed(big[0]), embed(big[1]))).mean()
    assert_close(cropped(*big), expected, F64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: loss(p, y), (x,))


@pytest.mark.parametrize(
    ("facenet", "message"),
    [
        (
            {"_target_": "os.system", "command": "true"},
            r"FaceIdLoss: facenet: _target_='os\.system' is refused",
        ),
        (
            {"_target_": "my_faces.ArcFace"},
            r"_target_='my_faces\.ArcFace' is refused: it is outside the allowed packages",
        ),
        (
            {"_target_": "lossmix.registry.registry.Registry"},
            r"must be a subclass of torch\.nn\.modules\.module\.Module",
        ),
        ({"_target_": "torch.nn.Linear", "in_feature": 3}, "unknown argument 'in_feature'"),
        ({"type": "ArcFace", "ir_se50_weights": None}, "facenet=.* is not valid; give a network node"),
    ],
)
def test_face_id_encoder_node_is_checked(facenet, message):
    with pytest.raises(LossConfigError, match=message) as info:
        FaceIdLoss(facenet=facenet)
    assert "\n" not in str(info.value)


def test_user_encoders_stay_frozen_and_in_eval_mode():
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5))
    loss = FaceIdLoss(facenet=net, crop_face=False)
    loss.train()
    assert not net.training and not any(p.requires_grad for p in loss.parameters())
    x, y = images()
    assert torch.equal(loss(x, y), loss(x, y))  # no dropout noise


# -- CLIPLoss ----------------------------------------------------------------------------------
class TinyCLIP(nn.Module):
    """OpenAI CLIP's interface at toy size: 4 × 4 images and integer tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(48, 5)
        self.text = nn.Embedding(10, 5)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image(image.flatten(1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens).mean(1)


def test_clip_matches_mmagics_formula():
    net = TinyCLIP().double()
    loss = CLIPLoss(clip_model=net, in_size=8, scale_factor=2, pool_size=4, loss_weight=3.0)
    image = torch.rand(2, 3, 8, 8, generator=make_generator(7), dtype=F64)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    resized = TF.avg_pool2d(nn.Upsample(scale_factor=2)(image), kernel_size=2 * 8 // 4)
    fi, ft = net.encode_image(resized), net.encode_text(tokens)
    logits = 100.0 * TF.normalize(fi, dim=-1) @ TF.normalize(ft, dim=-1).t()  # CLIP, logit scale 100
    assert_close(loss(image, tokens), 3.0 * (1 - logits / 100).mean(), F64)
    assert CLIPLoss(clip_model=net, in_size=8, scale_factor=2, pool_size=4, reduction="none")(
        image, tokens
    ).shape == (2, 3)
    image.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, tokens), (image,))


def test_clip_encoder_from_an_allowed_target_and_errors():
    tiny = {"_target_": "tests.losses.test_perceptual.TinyCLIP"}
    with trusting(["tests"]):
        loss = build_loss(
            {"type": "mmagic.CLIPLoss", "clip_model": tiny, "in_size": 8, "scale_factor": 2, "pool_size": 4}
        )
    assert type(loss.clip.net).__name__ == "TinyCLIP"
    with pytest.raises(LossConfigError, match=r"clip_model is a Flatten, which has no encode_image\(\)"):
        CLIPLoss(clip_model={"_target_": "torch.nn.Flatten"})
    with pytest.raises(LossConfigError, match="outside the allowed packages"):
        CLIPLoss(clip_model={"_target_": "tests.losses.test_perceptual.TinyCLIP"})
    with pytest.raises(LossConfigError, match="clip_model=.* is not valid"):
        CLIPLoss(clip_model={"in_size": 32, "clip_type": "RN50"})


def test_feature_losses_are_registered_in_both_tables():
    for name in (
        "PerceptualLoss",
        "TransferalPerceptualLoss",
        "LightCNNFeatureLoss",
        "FaceIdLoss",
        "CLIPLoss",
    ):
        assert LOSSES.get(name) is LOSSES.get(f"mmagic.{name}")


def _extreme_calls():
    gen = make_generator(12)
    x, y = (torch.randn(2, 3, 8, 8, generator=gen) * 1e4 for _ in range(2))
    maps = [torch.randn(2, 4, 4, 4, generator=gen) * 1e4, torch.randn(2, 2, 8, 8, generator=gen) * 1e4]
    soft = torch.randn(2, 1, 4, 4, generator=gen) * 1e4
    tokens = torch.tensor([[1, 2, 3]])
    big = torch.rand(2, 3, 8, 8, generator=gen) * 1e4
    return {
        "TransferalPerceptualLoss": (lambda m: TransferalPerceptualLoss()([m, maps[1]], soft, maps), maps[0]),
        "LightCNNFeatureLoss": (
            lambda p: LightCNNFeatureLoss(pretrained=None, encoder=nn.Conv2d(3, 4, 3))(p, y),
            x,
        ),
        "FaceIdLoss": (lambda p: FaceIdLoss(facenet=nn.Flatten())(p, y), x),
        "CLIPLoss": (
            lambda p: CLIPLoss(clip_model=TinyCLIP(), in_size=8, scale_factor=2, pool_size=4)(p, tokens),
            big,
        ),
    }


@pytest.mark.parametrize("name", sorted(_extreme_calls()))
def test_feature_losses_finite_at_extreme_inputs(name):
    call, value = _extreme_calls()[name]
    value = value.detach().requires_grad_()
    loss = call(value)
    (grad,) = torch.autograd.grad(loss, value)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_lightcnn_feature_loss_gradcheck_float64():
    loss = LightCNNFeatureLoss(pretrained=None, encoder=nn.Conv2d(3, 4, 3).double(), criterion="mse")
    x, y = images(n=2, size=5, dtype=F64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: loss(p, y), (x,))
