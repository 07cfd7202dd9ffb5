"""AdvLoss (DeblurGAN-v2's losses) against MMagic's criteria, written out here with torch.nn
pieces and explicit pools of past discriminator outputs."""

from __future__ import annotations

from collections import deque

import pytest
import torch
from torch import nn

from lossmix.errors import LossConfigError, LossInputError
from lossmix.losses import AdvLoss
from tests.losses.battery import assert_close, make_generator

F64 = torch.float64
BCE = nn.BCEWithLogitsLoss()


def disc_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, stride=2, padding=1)
    ).double()


def batch(seed=0, n=2):
    gen = make_generator(seed)
    return torch.randn(n, 3, 6, 6, generator=gen, dtype=F64), torch.randn(
        n, 3, 6, 6, generator=gen, dtype=F64
    )


def test_gan_and_lsgan_match_mmagic():
    net = disc_net()
    fake, real = batch()
    df, dr = net(fake), net(real)
    assert_close(
        AdvLoss(loss_type="gan")(net, fake, real),
        0.5 * (BCE(df, torch.zeros_like(df)) + BCE(dr, torch.ones_like(dr))),
        F64,
    )
    assert_close(
        AdvLoss(loss_type="gan")(net, fake, real, model="generator"), BCE(df, torch.ones_like(df)), F64
    )
    # MMagic's 'lsgan' is GANLoss('l1'): an L1 to the labels
    assert_close(
        AdvLoss(loss_type="lsgan")(net, fake, real), 0.5 * (df.abs().mean() + (dr - 1).abs().mean()), F64
    )
    assert_close(AdvLoss(loss_type="lsgan")(net, fake, real, model="generator"), (df - 1).abs().mean(), F64)


def test_wgan_gp_matches_mmagic():
    net = disc_net()
    fake, real = batch()
    torch.manual_seed(3)
    value = AdvLoss(loss_type="wgan-gp")(net, fake, real)
    torch.manual_seed(3)
    alpha = torch.rand(2, 1, 1, 1, dtype=torch.float32).to(real)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_()
    (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    penalty = ((grad.norm(2, dim=1) - 1) ** 2).mean()
    assert_close(value, net(fake).mean() - net(real).mean() + 10 * penalty, F64)
    assert_close(AdvLoss(loss_type="wgan-gp")(net, fake, real, model="generator"), -net(fake).mean(), F64)


class Pool:
    """MMagic's ImagePool: the last ``size`` items (one per sample) of the outputs added."""

    def __init__(self, size=50):
        self.items: deque = deque(maxlen=size)

    def add(self, preds):
        for item in preds.detach():
            self.items.append(item)

    def mean(self):
        return torch.stack(list(self.items)).mean()


@pytest.mark.parametrize("loss_type", ["ragan", "ragan-ls"])
def test_relativistic_losses_and_their_pools_match_mmagic(loss_type):
    net = disc_net(1)
    loss = AdvLoss(loss_type=loss_type, pool_size=3)
    fake_pool, real_pool = Pool(3), Pool(3)
    for step in range(3):  # 2 samples per step: the pools wrap around
        fake, real = batch(seed=step)
        df, dr = net(fake), net(real)
        fake_pool.add(df)
        real_pool.add(dr)
        rr, rf = dr - fake_pool.mean(), df - real_pool.mean()
        if loss_type == "ragan":
            d_value = (BCE(rr, torch.ones_like(rr)) + BCE(rf, torch.zeros_like(rf))) / 2
            g_value = (BCE(rr, torch.zeros_like(rr)) + BCE(rf, torch.ones_like(rf))) / 2
        else:
            d_value = (((rr - 1) ** 2).mean() + ((rf + 1) ** 2).mean()) / 2
            g_value = (((rr + 1) ** 2).mean() + ((rf - 1) ** 2).mean()) / 2
        assert_close(loss(net, fake, real), d_value, torch.float32)
        assert_close(loss(net, fake, real, model="generator"), g_value, torch.float32)  # pools unchanged
    assert loss.fake_count.item() == 6 and loss.fake_pool.shape == (3,)
    assert set(loss.state_dict()) == {"fake_pool", "fake_count", "real_pool", "real_count"}


def test_adv_loss_gradients_and_extremes():
    net = disc_net()
    fake, real = (t[:1, :, :4, :4] for t in batch())  # 48 inputs for gradcheck
    fake.requires_grad_()
    for loss_type in ("gan", "lsgan", "ragan", "ragan-ls"):
        loss = AdvLoss(loss_type=loss_type)
        assert torch.autograd.gradcheck(lambda f, lt=loss: lt(net, f, real, model="generator"), (fake,))
        big = (fake.detach().float() * 1e4).requires_grad_()
        value = loss(net.float(), big, real.float() * 1e4, model="generator")
        (grad,) = torch.autograd.grad(value, big)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), loss_type
        net.double()


def test_adv_loss_bad_arguments():
    with pytest.raises(LossConfigError, match=r"loss_type='ragan_ls' is not valid.*Did you mean 'ragan-ls'"):
        AdvLoss(loss_type="ragan_ls")
    with pytest.raises(LossConfigError, match="pool_size=0 is not valid"):
        AdvLoss(loss_type="ragan", pool_size=0)
    fake, real = batch()
    with pytest.raises(LossInputError, match="net is a str"):
        AdvLoss(loss_type="gan")("disc", fake, real)
    with pytest.raises(LossConfigError, match="model='critic' is not valid"):
        AdvLoss(loss_type="gan")(disc_net(), fake, real, model="critic")
