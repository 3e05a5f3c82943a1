import pytest
import torch

from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import Cond, UNet


def make(dims, **kw):
    args = dict(dims=dims, in_channels=1, channels=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2)
    args.update(kw)
    torch.manual_seed(0)
    net = UNet(**args)
    for p in net.parameters():  # zero-initialised outputs would hide wiring errors
        torch.nn.init.normal_(p, std=0.05)
    return net


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_with_every_condition(dims):
    net = make(dims, num_classes=5, num_scalars=2, cond_image_channels=3, out_channels=2)
    x = torch.randn(3, 1, *([8] * dims))
    cond = Cond(label=torch.tensor([0, 4, 2]), scalars=torch.randn(3, 2), image=torch.randn(3, 3, *([8] * dims)),
                drop=torch.tensor([False, True, False]))
    y = net(x, torch.randn(3), cond)
    assert y.shape == (3, 2, *([8] * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_conditions_change_the_output_and_drop_uses_null_tokens(dims):
    net = make(dims, num_classes=3, num_scalars=1)
    x, c = torch.randn(2, 1, *([8] * dims)), torch.zeros(2)
    a = net(x, c, Cond(label=torch.tensor([0, 0])))
    b = net(x, c, Cond(label=torch.tensor([1, 1])))
    assert (a - b).abs().max() > 1e-4
    dropped = net(x, c, Cond(label=torch.tensor([0, 1]), drop=torch.tensor([True, True])))
    uncond = net(x, c, Cond())
    assert torch.allclose(dropped, uncond, atol=1e-6)


@pytest.mark.parametrize("kw,cond,msg", [
    ({}, Cond(label=torch.tensor([0, 1])), "without labels"),
    ({}, Cond(scalars=torch.zeros(2, 1)), "without them"),
    ({}, Cond(image=torch.zeros(2, 1, 8, 8)), "without one"),
    ({"num_classes": 3}, Cond(label=torch.tensor([0, 9])), "out of range"),
    ({"cond_image_channels": 2}, Cond(), "needs a conditioning image"),
    ({"num_scalars": 2}, Cond(scalars=torch.zeros(2, 3)), "expected shape"),
])
def test_condition_not_built_for_is_an_error(kw, cond, msg):
    net = make(2, **kw)
    with pytest.raises(NeurodiffError, match=msg):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2), cond)


def test_wrong_rank_and_size_are_errors():
    net = make(2)
    with pytest.raises(NeurodiffError, match="2D model"):
        net(torch.randn(1, 1, 8, 8, 8), torch.zeros(1))
    with pytest.raises(NeurodiffError, match="multiple of 2"):
        net(torch.randn(1, 1, 9, 8), torch.zeros(1))


@pytest.mark.parametrize("dims", [2, 3])
def test_gradient_checkpointing_gives_same_values_and_grads(dims):
    x = torch.randn(2, 1, *([8] * dims))
    outs = []
    for ckpt in (False, True):
        net = make(dims, num_classes=2, checkpointing=ckpt).train()
        y = net(x, torch.ones(2), Cond(label=torch.tensor([0, 1])))
        y.square().mean().backward()
        outs.append((y.detach(), net.input.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6)


def test_attention_uses_sdpa(monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    make(2)(torch.randn(1, 1, 8, 8), torch.zeros(1))
    assert calls


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_gives_the_same_outputs_and_grads(dims):
    kw = dict(dims=dims, channels=8, channel_mult=(1, 2, 4), num_res_blocks=(1, 1, 2), attn_levels=(2,), groups=4)
    torch.manual_seed(0)
    a = UNet(**kw, channels_last=True)
    b = UNet(**kw, channels_last=False)
    b.load_state_dict(a.state_dict())
    conv = a.down[0][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    assert not conv.is_contiguous()
    x = torch.randn(2, 1, *([8] * dims))
    t = torch.tensor([0.1, -0.5])
    ya, yb = a(x, t), b(x, t)
    assert torch.allclose(ya, yb, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-4, rtol=1e-4), name


def test_blocks_per_level_and_initialisation():
    one = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=4)
    per = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=(1, 3), attn_levels=(), groups=4)
    assert len(per.down) == len(one.down) + 2 and len(per.up) == len(one.up) + 2
    with pytest.raises(NeurodiffError, match="num_res_blocks"):
        UNet(channels=8, channel_mult=(1, 2), num_res_blocks=(1, 2, 3))
    # default init: the output layer is live from the start; zero_init=True gives ADM's identity start
    assert UNet(channels=8, groups=4).out[2].weight.abs().sum() > 0
    zero = UNet(channels=8, groups=4, zero_init=True)
    assert zero.out[2].weight.abs().sum() == 0
    assert zero(torch.randn(1, 1, 8, 8), torch.zeros(1)).abs().max() == 0
