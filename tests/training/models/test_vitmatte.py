"""training.models.vitmatte: the ViTMatte family through the registry (transformers' network, the
official input, layer-wise decay, its loss), trained, saved and loaded like IndexNet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("transformers")  # the vitmatte extra (in dev)

from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting  # noqa: E402

from configs import ModelConfig, load_config  # noqa: E402
from evaluation.export import export_model  # noqa: E402
from indexnet_cli import app  # noqa: E402
from shards.reader import resolve_shards, scored_samples  # noqa: E402
from tests.conftest import REPO
from training.checkpoint import (  # noqa: E402
    load_checkpoint,
    load_for_inference,
    load_model,
    save_checkpoint,
)
from training.inference import predict_alpha  # noqa: E402
from training.models.build import build_model, count_parameters, parameter_groups  # noqa: E402
from training.models.registry import get_family  # noqa: E402
from training.models.vitmatte.input import make_input  # noqa: E402
from training.models.vitmatte.network import hf_config  # noqa: E402
from training.models.vitmatte.optim import LAYER_DECAY  # noqa: E402
from training.run.trainer import RunOptions, train  # noqa: E402

VITMATTE_S = ModelConfig(family="vitmatte")


def _tiny_run(*extra: str):
    """A ViTMatte-S config for short CPU runs on the sample shards (64-pixel crops)."""
    base = [
        "model.family=vitmatte",
        "augment.input_size=64",
        "augment.crop_sizes=[64]",
        "augment.small_image_min_side=100",
        "train.batch_size=2",
        "validation.enabled=false",
    ]
    return load_config(overrides=[*base, *extra])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(VITMATTE_S).eval()


def test_vitmatte_s_is_reference_md_s_network_and_transformers_own(model):
    """25.8M parameters, and the same outputs as transformers' model built from docs/reference.md
    section 5's config by hand, with the same weights."""
    assert count_parameters(model) == 25_814_753
    assert count_parameters(model.net.backbone) == 23_745_792  # 23.7M backbone, 2.1M decoder
    backbone = VitDetConfig(
        num_channels=4, image_size=512, pretrain_image_size=224, patch_size=16, hidden_size=384,
        num_attention_heads=6, use_absolute_position_embeddings=True,
        use_relative_position_embeddings=True, window_size=14,
        window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indices=[2, 5, 8, 11],
        out_features=["stage12"],
    )  # fmt: skip
    config = VitMatteConfig(
        backbone_config=backbone,
        hidden_size=384,
        convstream_hidden_sizes=[48, 96, 192],
        fusion_hidden_sizes=[256, 128, 64, 32],
    )
    theirs = VitMatteForImageMatting(config).eval()
    theirs.load_state_dict(model.net.state_dict())
    x = torch.randn(2, 4, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, want = model(x), theirs(pixel_values=x).alphas
    assert ours.shape == (2, 1, 64, 96) and torch.allclose(ours, want, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1  # a sigmoid head
    assert get_family("vitmatte").pad_multiple == 32


def test_the_input_is_the_official_one():
    rgb = torch.rand(3, 4, 5)
    trimap = torch.tensor([0, 84, 85, 128, 169, 170, 255, 30, 200, 100] * 2, dtype=torch.uint8)
    planes = make_input(rgb, trimap.reshape(4, 5))
    assert planes.shape == (4, 4, 5)
    assert planes[3].flatten().tolist() == [0, 0, 0.5, 0.5, 0.5, 1, 1, 0, 1, 0.5] * 2
    imagenet = get_family("indexnet").make_input(rgb, trimap.reshape(4, 5))
    assert torch.equal(planes[:3], imagenet[:3])  # the same ImageNet normalisation
    batch = make_input(rgb[None].repeat(2, 1, 1, 1), trimap.reshape(1, 1, 4, 5).repeat(2, 1, 1, 1))
    assert batch.shape == (2, 4, 4, 5) and torch.equal(batch[1], planes)


def test_layer_wise_decay_groups_hold_every_parameter_once(model):
    groups = {g.name: g for g in parameter_groups(model)}
    assert list(groups) == ["embeddings", *(f"block{i}" for i in range(12)), "decoder"]
    assert groups["embeddings"].lr_scale == pytest.approx(LAYER_DECAY**13)
    for i in range(12):
        assert groups[f"block{i}"].lr_scale == pytest.approx(0.65 ** (12 - i))
    assert groups["decoder"].lr_scale == 1 and not any(g.backbone for g in groups.values())
    residual = {id(p) for n, p in model.named_parameters() if ".residual." in n}
    assert residual and residual <= {id(p) for p in groups["decoder"].params}


def test_a_vitmatte_run_trains_with_its_own_loss_and_its_checkpoint_loads(shard_set, tmp_path):
    cfg = _tiny_run("runtime.log_every=1")
    run = tmp_path / "run"
    summary = train(cfg, RunOptions(str(shard_set), run, max_steps=2, loader_workers=0))
    assert summary.step == 2 and torch.isfinite(torch.tensor(summary.last_loss))
    records = [
        r
        for r in map(__import__("json").loads, (run / "train.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    terms = {"loss_unknown_l1", "loss_known_l1", "loss_laplacian", "loss_gradient"}
    assert terms <= records[-1].keys() and records[-1]["lr"] == cfg.optim.learning_rate
    loaded = load_model(run / "checkpoints" / "last.pt")
    assert loaded.cfg == cfg.model and type(loaded).__name__ == "VitMatte"
    again = load_model(save_checkpoint(tmp_path / "copy.pt", loaded))
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), again.eval()(x))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A transformers-format ViTMatte-S folder, as save_pretrained writes it (seeded weights)."""
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("vitmatte-s")
    VitMatteForImageMatting(hf_config("small")).save_pretrained(folder)
    return folder


def test_import_hf_converts_a_transformers_folder_into_our_checkpoint(hf_folder, tmp_path):
    out = tmp_path / "vitmatte.pt"
    result = CliRunner().invoke(app, ["model", "import-hf", str(hf_folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "ViTMatte-S" in result.output and "25,814,753 parameters" in result.output
    ours = load_model(out).eval()
    assert ours.cfg == VITMATTE_S
    theirs = VitMatteForImageMatting.from_pretrained(hf_folder, local_files_only=True).eval()
    x = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = theirs(pixel_values=x).alphas
        assert torch.equal(ours(x), want)
        assert torch.equal(load_for_inference(hf_folder)(x), want)  # the folder as --checkpoint


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c, f: (f / "config.json").unlink(), "no config.json; a transformers-format"),
        (lambda c, f: c.update(model_type="vitdet"), "model_type is 'vitdet', not 'vitmatte'"),
        (lambda c, f: c["backbone_config"].update(hidden_size=512), "hidden_size is 512"),
        (
            lambda c, f: c["backbone_config"].update(window_size=7),
            "not ViTMatte-small as docs/reference.md section 5 defines it: "
            "backbone_config.window_size: 7",
        ),
        (lambda c, f: c.update(fusion_hidden_sizes=[8, 8, 8, 8]), "fusion_hidden_sizes: [8, 8"),
        (lambda c, f: (f / "model.safetensors").unlink(), "cannot load its weights"),
    ],
)
def test_import_hf_names_what_is_wrong_and_writes_nothing(hf_folder, tmp_path, edit, message):
    folder = shutil.copytree(hf_folder, tmp_path / "broken")
    config = json.loads((folder / "config.json").read_text())
    edit(config, folder)
    if (folder / "config.json").exists():
        (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out.pt"
    result = CliRunner().invoke(app, ["model", "import-hf", str(folder), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_init_fine_tunes_vitmatte_from_a_transformers_folder(hf_folder, shard_set, tmp_path):
    cfg = _tiny_run("optim.learning_rate=1e-30")  # the weights stay as loaded
    run = tmp_path / "tuned"
    options = RunOptions(str(shard_set), run, max_steps=1, loader_workers=0, init=hf_folder)
    train(cfg, options)
    tuned = load_model(run / "checkpoints" / "last.pt")
    released = VitMatteForImageMatting.from_pretrained(hf_folder, local_files_only=True)
    ours = dict(tuned.net.named_parameters())
    assert max(float((p - ours[n]).abs().max()) for n, p in released.named_parameters()) < 1e-12


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated")
def test_torchscript_export_equals_transformers_model(model, tmp_path):
    """The exported file takes any multiple of 32 and equals transformers' network on random
    inputs to 1e-4."""
    report = export_model(model, "torchscript", tmp_path / "vitmatte.pt")
    assert report.max_abs_diff <= 1e-4 and report.signature.startswith("x (B, 4, 32*h, 32*w)")
    scripted = torch.jit.load(tmp_path / "vitmatte.pt")
    x = torch.randn(1, 4, 96, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.allclose(scripted(x), model.net(pixel_values=x).alphas, atol=1e-4)


@pytest.mark.slow  # torch.onnx's export of a ViT-S takes ~100 s on two cores
def test_onnx_export_equals_transformers_model(model, tmp_path):
    """ONNX (run by onnxruntime) at sizes below, at and off the 512 pixels transformers' position
    tables are made for equals transformers' unpatched network to 1e-4; the lookup swapped in
    while exporting (``training.models.vitmatte.network.exportable``) is put back."""
    pytest.importorskip("onnxruntime")
    from transformers.models.vitdet import modeling_vitdet

    original = modeling_vitdet.get_rel_pos
    report = export_model(
        model, "onnx", tmp_path / "vitmatte.onnx", check_sizes=[(64, 96), (512, 512), (544, 480)]
    )
    assert modeling_vitdet.get_rel_pos is original
    assert report.checked_with.startswith("onnxruntime")
    assert report.max_abs_diff <= 1e-4
    assert report.signature == "input (1, 4, 32*h, 32*w) float32 -> alpha (1, 1, 32*h, 32*w)"


def test_exportable_relative_positions_equal_transformers_lookup():
    """The export lookup gives transformers' tables for self-attention at any token count, with
    and without resizing the table, and defers to transformers when q and k differ."""
    from transformers.models.vitdet.modeling_vitdet import get_rel_pos

    from training.models.vitmatte.export import _square_rel_pos

    table = torch.randn(63, 8, generator=torch.Generator().manual_seed(1))
    for size in (1, 5, 14, 32, 40):
        assert torch.equal(
            _square_rel_pos(size, size, table, get_rel_pos), get_rel_pos(size, size, table)
        )
    assert torch.equal(_square_rel_pos(4, 8, table, get_rel_pos), get_rel_pos(4, 8, table))


def _dino_state(width: int = 384, depth: int = 12, seed: int = 5) -> dict[str, torch.Tensor]:
    """A ViT/16 state dict in DINO's (timm's) names and shapes, as dino_deitsmall16_pretrain.pth
    holds it: 3-channel patch embedding, class token, 197 positions, final norm."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    state = {
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, 197, width),
        "patch_embed.proj.weight": r(width, 3, 16, 16),
        "patch_embed.proj.bias": r(width),
        "norm.weight": r(width),
        "norm.bias": r(width),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": r(width), b + "norm1.bias": r(width),
            b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
            b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
            b + "norm2.weight": r(width), b + "norm2.bias": r(width),
            b + "mlp.fc1.weight": r(4 * width, width), b + "mlp.fc1.bias": r(4 * width),
            b + "mlp.fc2.weight": r(width, 4 * width), b + "mlp.fc2.bias": r(width),
        }  # fmt: skip
    return state


def test_backbone_loads_dino_vit_s_as_the_official_recipe_does(tmp_path):
    """Every DINO tensor lands in transformers' ViT under its name; the patch embedding gains a
    zero trimap channel; class token and final norm are ignored; the relative position tables
    start at zero, the residual blocks and the decoder keep their initialisation."""
    dino = _dino_state()
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(dino, path)
    torch.manual_seed(0)
    fresh = build_model(VITMATTE_S).net.state_dict()
    torch.manual_seed(0)
    model = build_model(VITMATTE_S, path)
    report = model.backbone_report
    own = model.net.state_dict()
    vit = "backbone.encoder.layer."
    assert torch.equal(own["backbone.embeddings.position_embeddings"], dino["pos_embed"])
    patch = own["backbone.embeddings.projection.weight"]
    assert torch.equal(patch[:, :3], dino["patch_embed.proj.weight"])
    assert not patch[:, 3].any()
    assert torch.equal(own[vit + "7.attention.qkv.bias"], dino["blocks.7.attn.qkv.bias"])
    assert torch.equal(own[vit + "11.mlp.fc2.weight"], dino["blocks.11.mlp.fc2.weight"])
    assert (
        not own[vit + "2.attention.rel_pos_h"].any() and fresh[vit + "2.attention.rel_pos_h"].any()
    )
    kept = [k for k in own if ".residual." in k or k.startswith("decoder.")]
    assert kept and all(torch.equal(own[k], fresh[k]) for k in kept)
    assert report.loaded == len(dino) - 3 == 1 + 2 + 12 * 12
    assert set(report.ignored) == {"cls_token", "norm.weight", "norm.bias"}
    assert "trimap" in report.summary() and "start at zero" in report.summary()

    # the same through DINO's training checkpoint layout, and through the CLI's report
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in dino.items()}}, wrapped)
    result = CliRunner().invoke(
        app, ["model", "summary", "--set", "model.family=vitmatte", "--backbone", str(wrapped)]
    )
    assert result.exit_code == 0, result.output
    assert f"{wrapped}: ViT (timm/DINO names), 147 tensors loaded" in result.output


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (_dino_state(width=768, depth=1), r"wrong shape .*pos_embed \[1, 197, 768\]"),
        ({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, r"unexpected \(1\): features\.0\.0"),
        (
            {k: v for k, v in _dino_state().items() if not k.startswith("blocks.11.")},
            r"missing \(12\): encoder\.layer\.11\.",
        ),
    ],
    ids=["vit-b-into-s", "mobilenet", "a-block-short"],
)
def test_backbone_refuses_what_does_not_fit_and_leaves_the_model(tmp_path, state, message):
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    model = build_model(VITMATTE_S)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message) as info:
        get_family("vitmatte").load_backbone(model, torch.load(path), str(path))
    assert str(path) in str(info.value) and "ViT/16 of width 384" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


VITMATTE_YAML = REPO / "configs" / "vitmatte.yaml"


def test_inference_zero_pads_as_the_official_code_and_crops_back(model):
    """predict_alpha feeds ViTMatte its input zero-padded bottom/right to a multiple of 32 (the
    official ``preprocess_inputs``), and the prediction is the crop of that forward pass."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    trimap = np.full((50, 70), 128, np.uint8)
    got = predict_alpha(model, rgb, trimap)
    planes = make_input(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, torch.tensor(trimap))
    padded = torch.zeros(1, 4, 64, 96)
    padded[0, :, :50, :70] = planes
    with torch.no_grad():
        want = model(padded)[0, 0, :50, :70].clamp(0, 1).numpy()
    assert np.abs(got / 255.0 - want).max() <= 0.5 / 255 + 1e-6


def test_a_from_scratch_vitmatte_s_learns_then_evaluates_predicts_and_exports(shard_set, tmp_path):
    """The recipe of configs/vitmatte.yaml (AdamW, layer decay, a warmup shortened to 2 steps,
    a learning rate raised to 1e-2 so that 30 steps show learning) at 64-pixel crops: the L1
    terms fall (from 0.5 + 0.5, a network that ignores its input, as the trimap teaches the
    known alpha: the gradient term is too noisy over 30 random crops to show it); the run
    resumes; its checkpoint goes through `evaluate run`, `predict` in tiles and whole, and
    `export --format torchscript`, each checked."""
    tiny = [
        "augment.input_size=64", "augment.crop_sizes=[64]", "augment.small_image_min_side=100",
        "train.batch_size=2", "validation.enabled=false", "runtime.log_every=1",
        "optim.warmup_iters=2", "loader.shuffle_window=4", "runtime.checkpoint_every=0",
        "optim.learning_rate=1e-2",
    ]  # fmt: skip
    cfg = load_config(VITMATTE_YAML, tiny)
    run = tmp_path / "run"
    train(cfg, RunOptions(str(shard_set), run, max_steps=30, loader_workers=0))
    records = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    l1 = [r["loss_unknown_l1"] + r["loss_known_l1"] for r in records if "loss" in r]
    assert len(l1) == 30 and all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    first, last = sum(l1[:6]) / 6, sum(l1[-6:]) / 6
    assert last < 0.9 * first, l1
    ckpt = run / "checkpoints" / "last.pt"
    assert load_checkpoint(ckpt)["config"]["optim"]["optimizer"] == "adamw"

    resumed = train(
        cfg, RunOptions(str(shard_set), run, resume=True, max_steps=32, loader_workers=0)
    )
    assert resumed.resumed_from == 30 and resumed.step == 32

    runner = CliRunner()
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", "run", "--checkpoint", str(ckpt), "--shards", str(shard_set / "validation"),
         "--out", str(out), "--workers", "0", "--baseline"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 4 and all(np.isfinite(metrics[m]) for m in ("sad", "grad"))
    key, rgb, trimap, _ = next(scored_samples(resolve_shards(str(shard_set), "validation").urls))
    net = load_model(ckpt).eval()
    written = np.asarray(Image.open(out / "predictions" / f"{key}.png"))
    assert np.array_equal(written, predict_alpha(net, rgb, trimap))

    image, tri = tmp_path / "photo.png", tmp_path / "trimap.png"
    Image.fromarray(rgb).save(image)
    Image.fromarray(trimap).save(tri)
    for extra, name in (([], "whole.png"), (["--max-pixels", "4096"], "tiled.png")):
        result = runner.invoke(
            app,
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                str(image),
                str(tri),
                "-o",
                str(tmp_path / name),
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
    whole = np.asarray(Image.open(tmp_path / "whole.png"))
    tiled = np.asarray(Image.open(tmp_path / "tiled.png"))
    assert np.array_equal(whole, written)
    assert tiled.shape == trimap.shape and np.array_equal(
        tiled, predict_alpha(net, rgb, trimap, max_pixels=4096, tile=1536)
    )
    assert (tiled[trimap == 0] == 0).all() and (tiled[trimap == 255] == 255).all()

    exported = tmp_path / "vitmatte.ts"
    result = runner.invoke(
        app, ["export", "--checkpoint", str(ckpt), "--format", "torchscript", "-o", str(exported)]
    )
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(exported))
    x = torch.randn(1, 4, 64, 96)
    with torch.no_grad():
        assert (scripted(x) - net(x)).abs().max() <= 1e-4


def test_model_summary_lists_the_layer_decay_groups():
    result = CliRunner().invoke(app, ["model", "summary", "--set", "model.family=vitmatte"])
    assert result.exit_code == 0, result.output
    assert "ViTMatte-S" in result.output and "parameters:  25,814,753" in result.output
    lines = {line.split(":")[0].strip(): line for line in result.output.splitlines()}
    assert "469,248" in lines["embeddings"] and "lr x0.0037" in lines["embeddings"]
    assert "lr x0.65)" in lines["block11"] and "lr x" not in lines["decoder"]
    assert all(f"block{i}" in lines for i in range(12))
    assert "multiples of 32" in result.output
