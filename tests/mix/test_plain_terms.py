"""The engine's plain way: a term that only routes keys into its loss runs both phases at once
(``Term.evaluate_plain``), from one tuple read per call; every other term is prepared, then
evaluated. Both ways give the same result, the same records and the same messages."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from lossmix import LossInputError, LossMix, Term
from lossmix.losses import L1Loss
from lossmix.reduction import EPS32


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        "p": torch.randn(6, 4, generator=gen, requires_grad=True),
        "logits": torch.randn(6, 3, generator=gen, requires_grad=True),
    }
    batch = {"y": torch.randn(6, 4, generator=gen), "labels": torch.randint(0, 3, (6,), generator=gen)}
    return outputs, batch


NODE = {
    "reg": {"type": "SmoothL1Loss", "loss_weight": 2.0, "inputs": {"pred": "p", "target": "y"}},
    "cls": {"type": "CrossEntropyLoss", "loss_weight": 0.5, "inputs": {"pred": "logits", "target": "labels"}},
}


def _spy(monkeypatch) -> list[str]:
    """The names of the terms prepared (phase one of the full way)."""
    prepared: list[str] = []
    original = Term.prepare

    def prepare(self, outputs, batch):
        prepared.append(self.name)
        return original(self, outputs, batch)

    monkeypatch.setattr(Term, "prepare", prepare)
    return prepared


def test_plain_terms_skip_the_prepared_way_and_give_the_hand_written_sum(monkeypatch):
    prepared = _spy(monkeypatch)
    mix = LossMix.from_config(NODE)
    outputs, batch = _data()
    result = mix(outputs, batch, step=0)
    assert prepared == []
    reg = F.smooth_l1_loss(outputs["p"], batch["y"])
    cls = F.cross_entropy(outputs["logits"], batch["labels"])
    torch.testing.assert_close(result.total, 2.0 * reg + 0.5 * cls)
    torch.testing.assert_close(result.raw["reg"], reg)
    assert result.weights == {"reg": 2.0, "cls": 0.5}
    assert result.term_of == {"reg": "reg", "cls": "cls"}
    # the guard's 'raise' policy reads the routed inputs (kept by default)
    assert result.inputs["reg"]["pred"] is outputs["p"] and result.inputs["cls"]["target"] is batch["labels"]


def test_a_term_with_a_normaliser_is_prepared_beside_the_plain_ones(monkeypatch):
    prepared = _spy(monkeypatch)
    node = {**NODE, "norm": {"type": "L1Loss", "inputs": {"pred": "p", "target": "y"}, "normalizer": "batch"}}
    mix = LossMix.from_config(node)
    outputs, batch = _data()
    result = mix(outputs, batch, step=0)
    assert prepared == ["norm"]
    assert list(result.terms) == ["reg", "cls", "norm"]  # the configured order, whichever way
    expected = (outputs["p"] - batch["y"]).abs().sum() / (6 + EPS32)  # MMDetection's avg_factor
    torch.testing.assert_close(result.raw["norm"], expected)


@pytest.mark.parametrize("policy", ["zero", "raise", None])
def test_the_guard_policies_give_the_same_total(policy, monkeypatch):
    outputs, batch = _data()
    expected = LossMix.from_config(NODE)(outputs, batch, step=0).total
    prepared = _spy(monkeypatch)
    mix = LossMix.from_config(NODE)
    mix.set_guard(policy)
    torch.testing.assert_close(mix(outputs, batch, step=0).total, expected)
    # 'zero' gates each term's inputs, so its terms go the prepared way
    assert prepared == (["reg", "cls"] if policy == "zero" else [])


@pytest.mark.parametrize("step", [0, 1, 2, 3, None])
def test_a_lazy_plain_term_runs_every_kth_step_weighted_by_k(step):
    node = {"reg": {**NODE["reg"], "every": 2}, "cls": NODE["cls"]}
    result = LossMix.from_config(node)(*_data(), step=step)
    runs = step is None or step % 2 == 0
    assert result.weights["reg"] == (2.0 * (2 if step is not None else 1) if runs else 0.0)
    assert result.skipped == (() if runs else ("reg",))
    assert result.terms["reg"].requires_grad  # a skipped term is a connected zero


def test_changing_a_term_after_building_changes_its_plain_plan():
    mix = LossMix.from_config(NODE)
    outputs, batch = _data()
    term = mix.find_term("reg")
    term.in_total = False  # log only
    result = mix(outputs, batch, step=0)
    torch.testing.assert_close(result.total, result.terms["cls"])
    term.weight = 3.0
    mix.set_scale("reg", 0.5)  # a schedule's multiplier
    assert mix(outputs, batch, step=0).weights["reg"] == 1.5
    assert mix(outputs, batch, step=0).dynamic == ()
    mix.track_weight("reg")  # its weight is logged from now on
    assert mix(outputs, batch, step=0).dynamic == ("reg",)
    term.loss.loss_weight = 2.0  # the loss's own weight: its direct plan is built again
    torch.testing.assert_close(
        mix(outputs, batch, step=0).raw["reg"], 2.0 * F.smooth_l1_loss(outputs["p"], batch["y"])
    )


def test_an_optional_argument_found_by_its_own_name_takes_the_full_way():
    outputs, batch = _data()
    batch["labels"][0] = 2
    batch["ignore_index"] = 2  # CrossEntropyLoss takes ignore_index by name
    mix = LossMix.from_config({"cls": NODE["cls"]})
    with pytest.warns(UserWarning, match="routes 'ignore_index'"):
        result = mix(outputs, batch, step=0)
    rows = F.cross_entropy(outputs["logits"], batch["labels"], ignore_index=2, reduction="none")
    torch.testing.assert_close(result.raw["cls"], rows.sum() / 6)


def test_a_weight_key_in_the_batch_is_said_once_and_the_term_stays_plain(monkeypatch):
    outputs, batch = _data()
    batch["weight"] = torch.ones(6)
    mix = LossMix.from_config({"reg": NODE["reg"]})
    with pytest.warns(UserWarning, match="key 'weight'"):
        first = mix(outputs, batch, step=0)
    prepared = _spy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = mix(outputs, batch, step=0)
    assert prepared == []
    torch.testing.assert_close(first.total, second.total)


@pytest.mark.parametrize(
    ("batch_change", "message"),
    [
        ({"y": None}, "target"),  # a missing key: the route's message
        ({"y": [1.0, 2.0]}, "tensor"),  # not a tensor: the input check's message
    ],
)
def test_a_plain_term_names_the_term_and_the_key(batch_change, message):
    outputs, batch = _data()
    for key, value in batch_change.items():
        if value is None:
            del batch[key]
        else:
            batch[key] = value
    with pytest.raises(LossInputError, match=rf"term 'reg'.*{message}|{message}.*term 'reg'"):
        LossMix.from_config({"reg": NODE["reg"]})(outputs, batch, step=0)


# -- the loss called without Module.__call__, unless something would run there -----------------
def _hook_kinds(loss: torch.nn.Module, calls: list[str]):
    """Each way to hook or wrap a module's call: (name, register it, whether it runs in backward)."""

    def forward_wrapper():
        inner = loss.forward

        def wrapped(*args, **kwargs):
            calls.append("forward")
            return inner(*args, **kwargs)

        loss.forward = wrapped  # what accelerate's add_hook_to_module does

    def compiled():
        def call(*args, **kwargs):
            calls.append("compiled")
            return loss._call_impl(*args, **kwargs)

        loss._compiled_call_impl = call  # what Module.compile() sets

    return {
        "forward_pre_hook": lambda: loss.register_forward_pre_hook(lambda m, a: calls.append("pre")),
        "forward_hook_with_kwargs": lambda: loss.register_forward_hook(
            lambda m, a, k, o: calls.append("post"), with_kwargs=True
        ),
        "full_backward_hook": lambda: loss.register_full_backward_hook(lambda m, gi, go: calls.append("bw")),
        "full_backward_pre_hook": lambda: loss.register_full_backward_pre_hook(
            lambda m, go: calls.append("bwpre")
        ),
        "global_forward_hook": lambda: torch.nn.modules.module.register_module_forward_hook(
            lambda m, a, o: calls.append(type(m).__name__)
        ),
        "instance_forward": forward_wrapper,
        "compile": compiled,
    }


@pytest.mark.parametrize(
    "kind",
    [
        "forward_pre_hook",
        "forward_hook_with_kwargs",
        "full_backward_hook",
        "full_backward_pre_hook",
        "global_forward_hook",
        "instance_forward",
        "compile",
    ],
)
def test_a_hook_or_wrapper_on_a_plain_terms_loss_runs(kind):
    mix = LossMix.from_config({"reg": NODE["reg"]})
    outputs, batch = _data()
    expected = mix(outputs, batch, step=0).total
    calls: list[str] = []
    handle = _hook_kinds(mix.find_term("reg").loss, calls)[kind]()
    try:
        result = mix(outputs, batch, step=0)
        result.total.backward()
    finally:
        if handle is not None:
            handle.remove()
    assert calls, f"the {kind} did not run"
    if kind == "global_forward_hook":  # (it runs for the LossMix's own call as well)
        assert "SmoothL1Loss" in calls
    torch.testing.assert_close(result.total, expected)


def test_the_bare_call_gives_the_modules_value_and_gradient():
    mix = LossMix.from_config(NODE)
    outputs, batch = _data()
    total = mix(outputs, batch, step=0).total
    grads = torch.autograd.grad(total, list(outputs.values()))
    reg, cls = (mix.find_term(n).loss for n in ("reg", "cls"))
    by_hand = 2.0 * reg(outputs["p"], batch["y"]) + 0.5 * cls(outputs["logits"], batch["labels"])
    for got, want in zip(grads, torch.autograd.grad(by_hand, list(outputs.values())), strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(total, by_hand)


def test_a_loss_class_with_its_own_call_is_called_through_it():
    from lossmix.losses import L1Loss

    calls: list[str] = []

    class CountedL1(L1Loss):
        def __call__(self, *args, **kwargs):
            calls.append("call")
            return super().__call__(*args, **kwargs)

    mix = LossMix({"reg": Term("reg", CountedL1(), inputs={"pred": "p", "target": "y"})})
    outputs, batch = _data()
    torch.testing.assert_close(mix(outputs, batch, step=0).total, F.l1_loss(outputs["p"], batch["y"]))
    assert calls == ["call"]


def test_a_plain_terms_loss_is_called_without_module_call_when_nothing_hooks_it():
    mix = LossMix.from_config(NODE)
    outputs, batch = _data()
    calls: list[str] = []
    for name in ("reg", "cls"):
        loss = mix.find_term(name).loss
        original = loss._call_impl

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        loss.__dict__["_call_impl"] = counted  # what Module.__call__ runs
    mix(outputs, batch, step=0)
    assert calls == []  # the direct way
    handle = mix.find_term("reg").loss.register_forward_hook(lambda m, a, o: None)
    mix(outputs, batch, step=0)
    assert calls == ["reg"]  # a hooked loss is called through Module.__call__
    handle.remove()  # (as a model summary removes its hooks)
    mix(outputs, batch, step=0)
    assert calls == ["reg"]  # the direct way again
    with mix.find_term("cls").loss.register_forward_pre_hook(lambda m, a: None):
        mix(outputs, batch, step=0)
    mix(outputs, batch, step=0)
    assert calls == ["reg", "cls"]


@pytest.mark.parametrize("batch_value", [None, "tensor"])
def test_a_key_in_both_outputs_and_batch_is_named_on_the_plain_way(batch_value):
    mix = LossMix.from_config({"reg": NODE["reg"]})
    outputs, batch = _data()
    batch["p"] = None if batch_value is None else outputs["p"].detach()
    with pytest.raises(LossInputError, match=r"term 'reg': input 'pred' key 'p' is in both"):
        mix(outputs, batch, step=0)


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, "p"])
def test_a_routed_value_that_is_not_a_tensor_is_named_on_the_plain_way(value):
    mix = LossMix.from_config({"reg": NODE["reg"]})
    outputs, batch = _data()
    outputs["p"] = value
    with pytest.raises(LossInputError, match=r"term 'reg'.*'pred' \(key 'p'\) is a"):
        mix(outputs, batch, step=0)


# -- a change after the first call, eager and compiled ------------------------------------------
def _by_hand(outputs, batch, reg: float = 2.0, cls: float = 0.5):
    return reg * F.smooth_l1_loss(outputs["p"], batch["y"]) + cls * F.cross_entropy(
        outputs["logits"], batch["labels"]
    )


def _changes():
    """Ways to change a mix after its first call, and the total they lead to."""

    def scale(mix):
        mix.set_scale("reg", 3.0)
        return lambda o, b: _by_hand(o, b, reg=6.0)

    def weight(mix):
        mix.find_term("cls").weight = 2.0  # a term's attribute, set directly
        return lambda o, b: _by_hand(o, b, cls=2.0)

    def replaced(mix):
        mix.terms["cls"] = Term("cls", L1Loss(), weight=1.0, inputs={"pred": "p", "target": "y"})
        return lambda o, b: 2.0 * F.smooth_l1_loss(o["p"], b["y"]) + F.l1_loss(o["p"], b["y"])

    def removed(mix):
        del mix.terms["cls"]
        return lambda o, b: 2.0 * F.smooth_l1_loss(o["p"], b["y"])

    def in_total(mix):
        mix.find_term("cls").in_total = False
        return lambda o, b: 2.0 * F.smooth_l1_loss(o["p"], b["y"])

    return {"scale": scale, "weight": weight, "replaced": replaced, "removed": removed, "in_total": in_total}


@pytest.mark.parametrize("change", list(_changes()))
@pytest.mark.parametrize("compiled", [False, True])
def test_a_change_after_the_first_call_is_seen_by_the_next(change, compiled):
    mix = LossMix.from_config(NODE)
    outputs, batch = _data()

    def total(o, b):
        return mix(o, b, step=0).total

    run = torch.compile(total, fullgraph=True, backend="aot_eager") if compiled else total
    torch.testing.assert_close(run(outputs, batch), _by_hand(outputs, batch))
    expected = _changes()[change](mix)
    torch.testing.assert_close(run(outputs, batch), expected(outputs, batch))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_mix_keeps_its_own_program(how):
    import copy
    import pickle

    mix = LossMix.from_config(NODE)
    outputs, batch = _data()
    mix(outputs, batch, step=0)
    twin = copy.deepcopy(mix) if how == "deepcopy" else pickle.loads(pickle.dumps(mix))
    twin.find_term("reg").weight = 5.0
    torch.testing.assert_close(twin(outputs, batch, step=0).total, _by_hand(outputs, batch, reg=5.0))
    torch.testing.assert_close(mix(outputs, batch, step=0).total, _by_hand(outputs, batch))
    mix.find_term("cls").weight = 1.0
    torch.testing.assert_close(mix(outputs, batch, step=0).total, _by_hand(outputs, batch, cls=1.0))


def test_a_term_in_two_mixes_tells_both_of_a_change():
    shared = Term("reg", L1Loss(), weight=1.0, inputs={"pred": "p", "target": "y"})
    first, second = LossMix({"reg": shared}), LossMix({"grp": {"reg": shared}})
    outputs, batch = _data()
    first(outputs, batch), second(outputs, batch, group="grp")
    shared.weight = 4.0
    expected = 4.0 * F.l1_loss(outputs["p"], batch["y"])
    torch.testing.assert_close(first(outputs, batch).total, expected)
    torch.testing.assert_close(second(outputs, batch, group="grp").total, expected)
