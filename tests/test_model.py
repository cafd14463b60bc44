"""training.model: the released IndexNet's size, names, shapes and outputs, and every variant."""

from __future__ import annotations

import pytest
import torch

from configs import ConfigError, ModelConfig, load_config
from training.families import build_model, count_parameters
from training.loss import matting_loss
from training.model import IndexNet


@pytest.fixture(scope="module")
def released() -> IndexNet:
    torch.manual_seed(0)
    return IndexNet().eval()


def _inputs(batch: int, h: int, w: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_released_variant_size(released):
    assert count_parameters(released) == 5_953_515
    assert len(released.state_dict()) == 549  # with BatchNorm num_batches_tracked
    assert released.cfg == ModelConfig() == load_config().model


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("layer0.0.weight", (32, 4, 3, 3)),
        ("layer1.0.conv.0.weight", (32, 1, 3, 3)),
        ("layer1.0.conv.3.weight", (16, 32, 1, 1)),
        ("layer2.1.conv.7.running_var", (24,)),
        ("layer7.0.conv.6.weight", (320, 960, 1, 1)),
        ("index0.indexnet1.0.weight", (32, 32, 4, 4)),
        ("index6.indexnet1.0.weight", (160, 160, 4, 4)),
        ("index6.indexnet4.1.running_mean", (160,)),
        ("index6.indexnet4.3.weight", (160, 160, 1, 1)),
        ("dconv_pp.aspp1.atrous_conv.0.weight", (256, 320, 1, 1)),
        ("dconv_pp.aspp4.atrous_conv.0.weight", (320, 1, 3, 3)),
        ("dconv_pp.aspp4.atrous_conv.3.weight", (256, 320, 1, 1)),
        ("dconv_pp.global_avg_pool.1.weight", (256, 320, 1, 1)),
        ("dconv_pp.global_avg_pool.2.num_batches_tracked", ()),
        ("dconv_pp.bottleneck_conv.0.weight", (160, 1280, 1, 1)),
        ("decoder_layer6.dconv.0.weight", (96, 320, 5, 5)),
        ("decoder_layer0.dconv.1.bias", (32,)),
        ("pred.0.0.weight", (1, 32, 5, 5)),
        ("pred.1.weight", (1, 1, 5, 5)),
    ],
)
def test_official_names_and_shapes(released, name, shape):
    assert tuple(released.state_dict()[name].shape) == shape


def test_state_dict_order_follows_the_official_modules(released):
    tops = list(dict.fromkeys(k.split(".")[0] for k in released.state_dict()))
    assert tops == [
        *(f"layer{i}" for i in range(8)),
        *("index0", "index2", "index3", "index4", "index6"),
        "dconv_pp",
        *(f"decoder_layer{i}" for i in range(6, -1, -1)),
        "pred",
    ]


@pytest.mark.parametrize(("h", "w"), [(32, 32), (64, 96), (96, 64)])
def test_output_shape(released, h, w):
    with torch.no_grad():
        out = released(_inputs(2, h, w))
    assert out.shape == (2, 1, h, w) and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 4, 60, 64), "multiples of 32, got 60x64; pad .* to 64x64"),
        ((1, 4, 64, 100), "multiples of 32, got 64x100"),
        ((1, 3, 64, 64), r"expects \(B, 4, H, W\)"),
        ((4, 64, 64), r"got shape \(4, 64, 64\)"),
    ],
)
def test_bad_input_is_a_clear_error(released, shape, message):
    with pytest.raises(ValueError, match=message):
        released(torch.zeros(shape))


def test_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = IndexNet().train()
    pred = model(_inputs(2, 64, 64))
    g = torch.Generator().manual_seed(1)
    alpha, fg, bg = (torch.rand(2, c, 64, 64, generator=g) for c in (1, 3, 3))
    merged = alpha * fg + (1 - alpha) * bg
    unknown = torch.rand(2, 1, 64, 64, generator=g) > 0.5
    loss = matting_loss(pred, alpha, fg, bg, merged, unknown).total
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["layer0.0.weight"].abs().sum() > 0 and grads["pred.1.weight"].abs().sum() > 0


def test_eval_output_is_identical_twice(released):
    x = _inputs(1, 64, 64)
    with torch.no_grad():
        assert torch.equal(released(x), released(x))


def test_channels_last_gives_the_same_output(released):
    x = _inputs(1, 64, 64)
    with torch.no_grad():
        reference = released(x)
        model = IndexNet().eval()
        model.load_state_dict(released.state_dict())
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def _seeded_state(model: IndexNet) -> dict[str, torch.Tensor]:
    """Deterministic float64 weights in state-dict order (BN variances in [0.5, 1.5))."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, value in model.state_dict().items():
        if not value.is_floating_point():
            state[name] = value
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=g, dtype=torch.float64) + 0.5
        else:
            state[name] = torch.randn(value.shape, generator=g, dtype=torch.float64) * 0.2
    return state


# Produced by the official release's own code (scripts/hlmobilenetv2.py,
# hlMobileNetV2UNetDecoderIndexLearning with the demo's settings; index_mode='o2o' for the
# second row) given the same _seeded_state weights and input, in float64 and eval mode: mean,
# mean |alpha| and alpha at (0, 0), (31, 32), (63, 63). Non-zero BN means and biases make the
# official padding rule of the inverted residuals (pad the block input, not the depthwise conv)
# visible at every border, so these pin it.
OFFICIAL_GOLDEN = {
    "m2o": (
        0.2020468582557523,
        0.21358629660800021,
        (-0.20315742152534644, 0.15916709405541776, 0.5913259426287224),
    ),
    "o2o": (
        -0.08755280762882303,
        0.08879572508114605,
        (-0.08889096959262265, -0.09094755948478332, 0.025770382585399702),
    ),
}


@pytest.mark.parametrize("kind", sorted(OFFICIAL_GOLDEN))
def test_matches_the_official_implementation(kind):
    model = IndexNet(ModelConfig(index_block=kind)).double()
    model.load_state_dict(_seeded_state(model))
    model.eval()
    with torch.no_grad():
        out = model(_inputs(1, 64, 64, seed=1, dtype=torch.float64))[0, 0]
    mean, abs_mean, pixels = OFFICIAL_GOLDEN[kind]
    assert out.mean().item() == pytest.approx(mean, rel=1e-9)
    assert out.abs().mean().item() == pytest.approx(abs_mean, rel=1e-9)
    got = out[[0, 31, 63], [0, 32, 63]].tolist()
    assert got == pytest.approx(list(pixels), rel=1e-9, abs=1e-12)


# Parameter counts of the official code's variants (hlmobilenetv2 with the same switches).
VARIANTS = [
    ({}, 5_953_515),
    ({"index_block": "o2o"}, 3_776_971),
    ({"index_block": "holistic"}, 4_791_243),
    ({"nonlinear": False}, 5_821_739),
    ({"context": False}, 4_402_155),
    ({"index_block": "holistic", "nonlinear": False, "context": False}, 3_758_251),
    ({"aspp": False}, 5_377_195),
    ({"output_stride": 16}, 4_211_435),
    ({"decoder_kernel_size": 3}, 5_113_307),
    ({"decoder_conv": "dep_sep_conv"}, 4_716_987),
]


@pytest.mark.parametrize(("switches", "params"), VARIANTS, ids=lambda v: str(v))
def test_every_variant_builds_and_runs(switches, params):
    torch.manual_seed(0)
    model = IndexNet(ModelConfig(**switches)).train()
    assert count_parameters(model) == params
    out = model(_inputs(2, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_variant_names_follow_the_official_modules():
    holistic = IndexNet(ModelConfig(index_block="holistic")).state_dict()
    assert holistic["index0.indexnet.0.weight"].shape == (64, 32, 4, 4)
    assert holistic["index0.indexnet.3.weight"].shape == (4, 64, 1, 1)
    linear = IndexNet(ModelConfig(index_block="holistic", nonlinear=False, context=False))
    assert linear.state_dict()["index6.indexnet.weight"].shape == (4, 160, 2, 2)
    o2o = IndexNet(ModelConfig(index_block="o2o", nonlinear=False)).state_dict()
    assert o2o["index6.indexnet2.0.weight"].shape == (160, 1, 4, 4)
    assert "dconv_pp.0.weight" in IndexNet(ModelConfig(aspp=False)).state_dict()
    os16 = IndexNet(ModelConfig(output_stride=16))
    assert not hasattr(os16, "index6")
    assert os16.layer6[1].conv[3].dilation == (2, 2) and os16.layer6[0].conv[3].dilation == (1, 1)
    assert os16.layer7[0].conv[3].dilation == (2, 2)
    with pytest.raises(ValueError, match="multiples of 16"):
        os16(torch.zeros(1, 4, 40, 48))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.output_stride=8", "model.output_stride: must be 32 or 16, got 8"),
        ("model.decoder_kernel_size=4", "model.decoder_kernel_size: must be an odd size"),
        ("model.index_block=m2m", "model.index_block: expected one of m2o, o2o, holistic"),
        ("model.decoder_conv=sep", "model.decoder_conv: expected one of std_conv, dep_sep_conv"),
        ("model.aspp=maybe", "model.aspp: expected true or false"),
    ],
)
def test_model_config_is_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_parameter_groups_split_encoder_from_the_rest():
    model = IndexNet()
    encoder = {id(p) for p in model.encoder_parameters()}
    decoder = {id(p) for p in model.decoder_parameters()}
    assert not encoder & decoder and len(encoder | decoder) == len(list(model.parameters()))
    # the official trainer's rule: names with dconv, pred or index learn at the full rate
    official = {
        id(p)
        for n, p in model.named_parameters()
        if not any(s in n for s in ("dconv", "pred", "index"))
    }
    assert encoder == official
    assert sum(p.numel() for p in model.encoder_parameters()) == 1_812_000


def test_freeze_encoder_bn_survives_train():
    torch.manual_seed(0)
    model = IndexNet().freeze_encoder_bn()
    model.train()
    encoder_bn = model.layer3[0].conv[1]
    decoder_bn = model.decoder_layer3.dconv[1]
    before = encoder_bn.running_mean.clone(), decoder_bn.running_mean.clone()
    model(_inputs(2, 64, 64))
    assert not encoder_bn.training and decoder_bn.training
    assert torch.equal(encoder_bn.running_mean, before[0])
    assert not torch.equal(decoder_bn.running_mean, before[1])
    assert model.freeze_encoder_bn(False).train().layer3[0].conv[1].training


def test_build_model_without_backbone_is_a_fresh_model():
    model = build_model(ModelConfig(index_block="o2o"))
    assert isinstance(model, IndexNet) and model.training and model.backbone_report is None
    assert model.describe() == "o2o nonlinear context aspp os32 k5 std_conv"
