"""``pipeline build --layout adobe|folders``: fixture folders written here in each layout's real
shape (Adobe's Combined_Dataset with its names files, a COCO- and a VOC-named background folder;
P3M-style train and validation folders), small images.

The pairing read back from the shards' json equals the lists'; the composite equals Adobe's
published composition procedure, transcribed here from its description; every input error is
listed at once, exit 2, nothing written; ``verify --deep`` passes; (slow) training and
``evaluate run`` on an Adobe-layout set.
"""

from __future__ import annotations

import json
import math
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from indexnet_cli import app
from pipeline.layouts import safe_key
from shards.index import read_index, read_samples
from shards.writer import sha256_file

runner = CliRunner()
LICENSED = "Adobe-licensed images"
TRAIN_FGS = ["c.png", "a b.jpg", "d.jpg"]  # file order, not sorted; a name with a space
TEST_FGS = ["t1.png", "t 2.jpg"]
COCO = [f"COCO_train2014_{i:012d}.jpg" for i in (9, 25, 30, 34, 36, 42)]
VOC = ["2008_000002.jpg", "2008_000003.jpg", "2008_000007.jpg", "2008_000008.png"]


def _matte(h: int, w: int, seed: int) -> np.ndarray:
    """A soft matte with 0, 255 and every value between (the float32 edge cases)."""
    rng = np.random.default_rng(seed)
    alpha = rng.integers(0, 256, (h, w)).astype(np.uint8)
    alpha[: h // 3] = 0
    alpha[-h // 4 :] = 255
    return alpha


def _trimap(alpha: np.ndarray) -> np.ndarray:
    return np.where(alpha == 0, 0, np.where(alpha == 255, 255, 128)).astype(np.uint8)


def _colour(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)


def _adobe(root: Path) -> tuple[Path, Path, Path]:
    """``Combined_Dataset``, ``train2014`` and ``VOC2012/JPEGImages`` as downloaded (small)."""
    data = root / "Combined_Dataset"
    sizes = {"c.png": (30, 40), "a b.jpg": (36, 28), "d.jpg": (24, 32), "t1.png": (32, 32),
             "t 2.jpg": (28, 36)}  # fmt: skip
    for i, name in enumerate(TRAIN_FGS + TEST_FGS):
        part, group = (("Training_set", LICENSED if name != "d.jpg" else "Other")
                       if name in TRAIN_FGS else ("Test_set", LICENSED))  # fmt: skip
        h, w = sizes[name]
        alpha = _matte(h, w, i)
        _save(data / part / group / "fg" / name, _colour(h, w, 10 + i))
        # "t1.png": an RGB matte with R = G = B (the unusual-input rules take it)
        _save(data / part / group / "alpha" / name, alpha, "RGB" if name == "t1.png" else None)
        if part == "Test_set":  # t1.png's trimap has its name, "t 2.jpg"'s is "t 2.png"
            _save(data / part / group / "trimaps" / (Path(name).stem + ".png"), _trimap(alpha))
    (data / "Training_set" / "training_fg_names.txt").write_text("\n".join(TRAIN_FGS) + "\n")
    (data / "Training_set" / "training_bg_names.txt").write_text("\r\n".join(COCO) + "\r\n")
    (data / "Test_set" / "test_fg_names.txt").write_text("\n".join(TEST_FGS))
    (data / "Test_set" / "test_bg_names.txt").write_text("\n".join(VOC) + "\n")
    coco, voc = root / "train2014", root / "VOC2012" / "JPEGImages"
    for i, name in enumerate(COCO + ["COCO_train2014_000000000049.jpg"]):  # one unlisted
        _save(coco / name, _colour(20 + 4 * i, 50 - 3 * i, 100 + i))
    for i, name in enumerate(VOC):
        # a greyscale and a CMYK background, as VOC and COCO have them
        _save(voc / name, _colour(26 + 5 * i, 30, 200 + i), ["L", "CMYK", None, None][i])
    return data, coco, voc


def _adobe_args(data: Path, coco: Path, voc: Path, out: Path) -> list[str]:
    return ["pipeline", "build", "--layout", "adobe", "--data-dir", str(data), "--bg-dir",
            str(coco), "--val-bg-dir", str(voc), "--out", str(out), "--workers", "1",
            "--samples-per-shard", "4"]  # fmt: skip


def _samples(out: Path) -> list[tuple[str, dict, dict]]:
    """(key, json, {member: bytes}) of every sample in the set's shards."""
    found = []
    for tar in sorted(out.glob("*/*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar) as f:
            for m in f.getmembers():
                key, member = m.name.split(".", 1)
                members.setdefault(key, {})[member] = f.extractfile(m).read()
        found += [(k, json.loads(v["json"]), v) for k, v in members.items()]
    return found


def _adobe_composite(fg_path: Path, alpha_path: Path, bg_path: Path) -> np.ndarray:
    """Adobe's composition code as published (docs/reference.md section 6), BGR."""
    fg = cv2.imread(str(fg_path))
    a = cv2.imread(str(alpha_path), 0)
    bg = cv2.imread(str(bg_path))
    h, w = fg.shape[:2]
    bh, bw = bg.shape[:2]
    ratio = max(w / bw, h / bh)
    if ratio > 1:
        bg = cv2.resize(
            bg, (math.ceil(bw * ratio), math.ceil(bh * ratio)), interpolation=cv2.INTER_CUBIC
        )
    bg = bg[0:h, 0:w]
    alpha = np.zeros((h, w, 1), np.float32)
    alpha[:, :, 0] = a / 255.0
    comp = alpha * fg.astype(np.float32) + (1 - alpha) * bg.astype(np.float32)
    return comp.astype(np.uint8)


@pytest.fixture(scope="module")
def adobe_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("adobe")
    data, coco, voc = _adobe(root)
    out = root / "shards"
    result = runner.invoke(app, _adobe_args(data, coco, voc, out))
    assert result.exit_code == 0, result.output
    return data, coco, voc, out


def test_adobe_pairing_rounding_and_verify(adobe_set):
    data, coco, voc, out = adobe_set
    samples = _samples(out)
    pairs = {(meta["split"], meta["foreground"], meta["k"]): meta["background"]
             for _, meta, _ in samples}  # fmt: skip
    want = {("train", fg, k): COCO[2 * i + k] for i, fg in enumerate(TRAIN_FGS) for k in (0, 1)}
    want |= {("validation", fg, k): VOC[2 * i + k] for i, fg in enumerate(TEST_FGS) for k in (0, 1)}
    assert pairs == want  # the lists' pairing, names (spaces included) as the dataset's
    index = read_index(out)
    assert index.meta["composition"]["rounding"] == "adobe"
    assert index.meta["split"]["rule"] == "dataset"
    inputs = index.meta["inputs"]
    assert inputs["layout"] == "adobe" and inputs["val_bg_dir"] == str(voc)
    assert any(c["file"].endswith("alpha/t1.png") for c in inputs["conversions"])
    for key, meta, members in samples:
        assert key == f"{safe_key(Path(meta['foreground']).stem)}-{meta['k']:03d}"
        part = "Training_set" if meta["split"] == "train" else "Test_set"
        group = "Other" if meta["foreground"] == "d.jpg" else LICENSED
        folder = coco if meta["split"] == "train" else voc
        if meta["background"] == VOC[1]:
            continue  # CMYK: OpenCV's imread converts it otherwise (the unusual-input rules)
        want_rgb = _adobe_composite(data / part / group / "fg" / meta["foreground"],
                                    data / part / group / "alpha" / meta["foreground"],
                                    folder / meta["background"])[..., ::-1]  # fmt: skip
        merged = cv2.imdecode(np.frombuffer(members["merged.png"], np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(merged[..., ::-1], want_rgb), key
        if meta["split"] == "validation":
            assert meta["trimap"]["source"] == "adobe"
    info = runner.invoke(app, ["shards", "info", str(out)])
    assert info.exit_code == 0 and "adobe" in info.output and str(voc) in info.output
    verified = runner.invoke(app, ["shards", "verify", str(out), "--deep", "--workers", "1"])
    assert verified.exit_code == 0, verified.output
    rows = read_samples(out).to_pylist()
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 10


def test_adobe_every_error_at_once(tmp_path):
    data, coco, voc = _adobe(tmp_path)
    train = data / "Training_set"
    (train / "training_bg_names.txt").write_text("\n".join(COCO[:5]))  # 5 for 3: not a multiple
    (data / "Test_set" / "test_bg_names.txt").write_text("\n".join(VOC[:3] + ["missing.jpg"]))
    (train / "training_fg_names.txt").write_text("\n".join([*TRAIN_FGS, "gone.png"]))
    (train / LICENSED / "alpha" / "a b.jpg").unlink()  # a foreground without its matte
    _save(train / LICENSED / "alpha" / "stray.png", _matte(4, 4, 0))  # a matte without fg
    (data / "Test_set" / LICENSED / "trimaps" / "t1.png").unlink()
    _save(train / "Other" / "alpha" / "d.jpg", _matte(10, 10, 1))  # a size mismatch
    out = tmp_path / "out"
    result = runner.invoke(app, _adobe_args(data, coco, voc, out))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for expected in ("5 background names for 4 foregrounds", "'gone.png' is not in",
                     "a b.jpg: no matte", "stray.png: a matte without a foreground",
                     "t1.png: no trimap", "background 'missing.jpg' is not in",
                     "mask is 10x10 but original is 32x24"):  # fmt: skip
        assert expected in text, expected
    assert not out.exists()


def _folders(root: Path) -> dict[str, Path]:
    """P3M-style folders: train/{blurred_image,mask,trimap}, validation/{...}; tif and webp."""
    dirs = {n: root / "P3M" / p for n, p in (
        ("fg", "train/blurred_image"), ("alpha", "train/mask"), ("trimap", "train/trimap"),
        ("val_fg", "validation/P3M-500-P/blurred_image"),
        ("val_alpha", "validation/P3M-500-P/mask"),
        ("val_trimap", "validation/P3M-500-P/trimap"))}  # fmt: skip
    for i, (stem, ext) in enumerate((("p_1", ".jpg"), ("p.2", ".tif"), ("p_3", ".webp"),
                                     ("p_4", ".png"))):  # fmt: skip
        alpha = _matte(24, 20, i)
        _save(
            dirs["fg"] / f"{stem}{ext}", _colour(24, 20, i)
        ) if ext != ".webp" else Image.fromarray(_colour(24, 20, i)).save(
            dirs["fg"] / f"{stem}{ext}", lossless=True
        )
        _save(dirs["alpha"] / f"{stem}.png", alpha)
    for i, stem in enumerate(("v_1", "v_2")):
        alpha = _matte(20, 24, 10 + i)
        _save(dirs["val_fg"] / f"{stem}.jpg", _colour(20, 24, 10 + i))
        _save(dirs["val_alpha"] / f"{stem}.png", alpha)
        _save(dirs["val_trimap"] / f"{stem}.png", _trimap(alpha))
    dirs["trimap"].mkdir(parents=True)
    bg = root / "backgrounds"
    for i in range(20):
        _save(bg / f"bg{i:02d}.jpg", _colour(30, 30, 300 + i))
    dirs["bg"] = bg
    return dirs


def _folders_args(dirs: dict[str, Path], out: Path, val: bool = True) -> list[str]:
    names = ["fg", "alpha", "bg"] + (["val_fg", "val_alpha", "val_trimap"] if val else [])
    args = ["pipeline", "build", "--layout", "folders", "--out", str(out), "--workers", "1",
            "--bgs-per-train-fg", "2", "--bgs-per-val-fg", "2",
            "--samples-per-shard", "4"]  # fmt: skip
    for n in names:
        args += [f"--{n.replace('_', '-')}-dir", str(dirs[n])]
    return args


def test_folders_layout_and_its_errors(tmp_path):
    dirs = _folders(tmp_path)
    out = tmp_path / "shards"
    result = runner.invoke(app, _folders_args(dirs, out))
    assert result.exit_code == 0, result.output
    samples = _samples(out)
    by_split = {s: sorted({m["foreground"] for _, m, _ in samples if m["split"] == s})
                for s in ("train", "validation")}  # fmt: skip
    assert by_split == {"train": ["p.2.tif", "p_1.jpg", "p_3.webp", "p_4.png"],
                        "validation": ["v_1.jpg", "v_2.jpg"]}  # fmt: skip
    assert {k.rsplit("-", 1)[0] for k, _, _ in samples} >= {safe_key("p.2"), "p_1", "v_1"}
    assert read_index(out).meta["split"]["rule"] == "folders"
    assert read_index(out).meta["composition"]["rounding"] == "nearest"
    verified = runner.invoke(app, ["shards", "verify", str(out), "--deep", "--workers", "1"])
    assert verified.exit_code == 0, verified.output

    # every error at once, nothing written
    (dirs["alpha"] / "p_4.png").unlink()  # a foreground without a matte
    _save(dirs["alpha"] / "q.png", _matte(4, 4, 0))  # a matte without a foreground
    _save(dirs["val_alpha"] / "v_1.png", _matte(8, 8, 0))  # sizes differ
    (dirs["val_trimap"] / "v_2.png").unlink()  # a validation foreground without a trimap
    bad = tmp_path / "bad"
    result = runner.invoke(app, _folders_args(dirs, bad))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    for expected in ("p_4.png: no matte", "q.png: a matte without a foreground",
                     "mask is 8x8 but original is 24x20", "v_2.jpg: no trimap"):  # fmt: skip
        assert expected in text, expected
    assert not bad.exists()
    wrong = runner.invoke(app, [*_folders_args(dirs, bad), "--data-dir", str(tmp_path)])
    assert wrong.exit_code == 2 and "does not read --data-dir" in wrong.output


def test_safe_key():
    assert safe_key("GT01") == "GT01"
    assert safe_key("a b") != safe_key("a_b") and " " not in safe_key("a b")
    assert "." not in safe_key("x.y") and safe_key("x.y") == safe_key("x.y")


@pytest.mark.slow
def test_train_and_evaluate_on_an_adobe_set(adobe_set, tmp_path):
    out = adobe_set[3]
    run = tmp_path / "run"
    args = ["train", "--shards", str(out), "--out", str(run), "--loader-workers", "0",
            "--input-size", "32", "--batch-size", "2", "--max-steps", "2", "--set",
            "crop_sizes=[32]", "--set", "augment.small_image_min_side=64", "--set",
            "validation.enabled=false"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    checkpoint = run / "checkpoints" / "last.pt"
    scored = runner.invoke(app, ["evaluate", "run", "--checkpoint", str(checkpoint),
                                 "--shards", str(out), "--out", str(tmp_path / "eval"),
                                 "--workers", "1"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["count"] == 4


def test_repair_rebuilds_an_adobe_set_from_the_folders_its_index_records(adobe_set, tmp_path):
    out = Path(shutil.copytree(adobe_set[3], tmp_path / "set"))
    shard = read_index(out).split("validation")[0]
    (out / shard.path).unlink()
    fixed = runner.invoke(app, ["shards", "repair", str(out), "--workers", "1"])
    assert fixed.exit_code == 0, fixed.output
    assert f"rebuilt {shard.path}" in fixed.output
    assert sha256_file(out / shard.path) == (shard.bytes, shard.sha256)
    (out / shard.path).unlink()  # another VOC folder: not the inputs the set was built from
    other = runner.invoke(app, ["shards", "repair", str(out), "--workers", "1",
                                "--val-bg-dir", str(adobe_set[1])])  # fmt: skip
    assert other.exit_code == 2 and "--val-bg-dir" in other.output, other.output
