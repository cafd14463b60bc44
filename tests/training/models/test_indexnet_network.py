"""training.models.indexnet.network: the released IndexNet's size, names, shapes and outputs,
and every variant."""

from __future__ import annotations

import json

import pytest
import torch

from configs import ConfigError, IndexNetConfig, ModelConfig, load_config
from tests.conftest import load_golden
from training.models.build import build_model, count_parameters
from training.models.indexnet.loss import matting_loss
from training.models.indexnet.network import IndexNet


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


# The official release's outputs, made by its own code (regenerate with
# tests/golden/make_official_golden.py): the weights, input and summaries come from there.
official = load_golden("make_official_golden")
VARIANT_IDS = [name for name, _ in official.VARIANTS]


@pytest.fixture(scope="module")
def official_record() -> dict[str, dict]:
    record = json.loads(official.GOLDEN.read_text())
    assert record["official"]["commit"] == official.OFFICIAL_COMMIT
    return {variant["name"]: variant for variant in record["variants"]}


def _flat(value) -> list[float]:
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


@pytest.mark.parametrize(("name", "switches"), official.VARIANTS, ids=VARIANT_IDS)
def test_matches_the_official_implementation(official_record, name, switches):
    """Same seeded float64 weights and input as the official code: the same outputs.

    Non-zero BN means and biases make the official padding rule of the inverted residuals (pad
    the block input, not the depthwise conv) visible at every border, so the corner pixels pin
    it; each top-level module's summary says where a difference starts.
    """
    expected = official_record[name]
    assert expected["switches"] == switches
    model = IndexNet(ModelConfig(indexnet=IndexNetConfig(**switches))).double()
    state = model.state_dict()
    assert count_parameters(model) == expected["parameters"]
    assert len(state) == expected["state_entries"]
    assert official.layout_sha256(state) == expected["layout_sha256"], (
        "the state dict's names, order or shapes differ from the official code's"
    )
    model.load_state_dict(official.seeded_state(state))
    got = official.trace(model.eval(), official.make_input())
    assert set(got["modules"]) == set(expected["modules"])
    for module, stats in expected["modules"].items():  # in the official call order
        approx = pytest.approx(_flat(stats), rel=1e-9, abs=1e-12)
        assert _flat(got["modules"][module]) == approx, f"{module}'s output differs"
    assert got["mean"] == pytest.approx(expected["mean"], rel=1e-9, abs=1e-12)
    assert got["abs_mean"] == pytest.approx(expected["abs_mean"], rel=1e-9, abs=1e-12)
    assert got["pixels"] == pytest.approx(expected["pixels"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("name", "switches"), official.VARIANTS, ids=VARIANT_IDS)
def test_every_variant_builds_and_runs(official_record, name, switches):
    torch.manual_seed(0)
    model = IndexNet(ModelConfig(indexnet=IndexNetConfig(**switches))).train()
    assert count_parameters(model) == official_record[name]["parameters"]  # the official code's
    out = model(_inputs(2, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_variant_names_follow_the_official_modules():
    holistic = IndexNet(ModelConfig(indexnet=IndexNetConfig(index_block="holistic"))).state_dict()
    assert holistic["index0.indexnet.0.weight"].shape == (64, 32, 4, 4)
    assert holistic["index0.indexnet.3.weight"].shape == (4, 64, 1, 1)
    linear = IndexNet(
        ModelConfig(indexnet=IndexNetConfig(index_block="holistic", nonlinear=False, context=False))
    )
    assert linear.state_dict()["index6.indexnet.weight"].shape == (4, 160, 2, 2)
    o2o = IndexNet(
        ModelConfig(indexnet=IndexNetConfig(index_block="o2o", nonlinear=False))
    ).state_dict()
    assert o2o["index6.indexnet2.0.weight"].shape == (160, 1, 4, 4)
    assert (
        "dconv_pp.0.weight"
        in IndexNet(ModelConfig(indexnet=IndexNetConfig(aspp=False))).state_dict()
    )
    os16 = IndexNet(ModelConfig(indexnet=IndexNetConfig(output_stride=16)))
    assert not hasattr(os16, "index6")
    assert os16.layer6[1].conv[3].dilation == (2, 2) and os16.layer6[0].conv[3].dilation == (1, 1)
    assert os16.layer7[0].conv[3].dilation == (2, 2)
    with pytest.raises(ValueError, match="multiples of 16"):
        os16(torch.zeros(1, 4, 40, 48))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.indexnet.output_stride=8", "model.indexnet.output_stride: must be 32 or 16, got 8"),
        (
            "model.indexnet.decoder_kernel_size=4",
            "model.indexnet.decoder_kernel_size: must be an odd size",
        ),
        (
            "model.indexnet.index_block=m2m",
            "model.indexnet.index_block: expected one of m2o, o2o, holistic",
        ),
        (
            "model.indexnet.decoder_conv=sep",
            "model.indexnet.decoder_conv: expected one of std_conv, dep_sep_conv",
        ),
        ("model.indexnet.aspp=maybe", "model.indexnet.aspp: expected true or false"),
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
    model = build_model(ModelConfig(indexnet=IndexNetConfig(index_block="o2o")))
    assert isinstance(model, IndexNet) and model.training and model.backbone_report is None
    assert model.describe() == "o2o nonlinear context aspp os32 k5 std_conv"
