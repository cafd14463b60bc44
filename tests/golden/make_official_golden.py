"""Regenerate tests/golden/official_model.json with the official IndexNet release's own code.

    git clone https://github.com/poppinace/indexnet_matting /tmp/indexnet_matting
    python tests/golden/make_official_golden.py /tmp/indexnet_matting           # writes the file
    python tests/golden/make_official_golden.py /tmp/indexnet_matting --check   # compares only

SOURCE is a clone (a work tree or a bare repository: the files are read with ``git show
OFFICIAL_COMMIT:path``, so the clone may have anything checked out but must contain that commit)
or a plain folder such as GitHub's zip of that commit. Either way every file read is checked
against the sha256 recorded in ``OFFICIAL_FILES`` before anything is imported. Nothing is
downloaded and nothing of this project is imported: the official ``scripts/hlmobilenetv2.py``
and the modules it imports are copied to a temporary folder and imported from there. They are
not vendored into this repository because the release's LICENSE.md limits it to non-commercial
(academic) use, which our Apache-2.0 licence does not.

For each variant of ``VARIANTS`` (our ``ModelConfig`` switches; ``official_kwargs`` turns them
into ``hlmobilenetv2(decoder='indexnet', ...)`` arguments, the demo's settings for the released
model), the script builds the official network, fills it with ``seeded_state`` (deterministic
float64 weights drawn in state-dict order; BN variances in [0.5, 1.5), non-zero BN means and
biases so that the official padding rule of the inverted residuals, which pads the block's
input rather than the depthwise conv, shows at every border), runs ``make_input()`` in float64
and eval mode, and records its parameter count, its state-dict layout (a sha256 of the names
and shapes in order), the output's mean, mean |alpha| and a few pixels (corners and centre), and
the mean and mean |x| of every top-level module's output (``layer0`` ... ``pred``, the official
names, which ours shares). The module summaries say where two implementations part, and they
pin the variants whose single-channel head these weights leave dead (ReLU6 of a negative BN
output: the holistic and ``dep_sep_conv`` variants predict 0 everywhere, the linear one almost
everywhere) up to ``decoder_layer0``. tests/test_model.py builds our ``IndexNet`` with the same
switches, fills it with the same ``seeded_state`` (so a different order or shape of our state
dict gives different weights: the layout hash says which it is) and compares with a relative
tolerance of 1e-9.

Shims, all in ``_import_official`` and none touching the model code:
- ``scripts/hldecoder.py`` imports ``matplotlib.pyplot`` at module level for its
  ``visualize()`` debugging helpers, which the forward pass never calls; matplotlib is not
  one of our dependencies, so an empty stand-in module is registered when it is missing.
- The release keeps its modules flat in ``scripts/`` (``from hlaspp import ASPP``), so the
  temporary folder goes first on ``sys.path``; run this script in its own process.
The official code needs no other change under torch 2.x (checked with torch 2.13.0):
``SynchronizedBatchNorm2d`` from its ``lib/nn`` imports but is not built (``sync_bn=False``).

Regenerate only when the pinned commit or the recipe here changes, and say why in the commit;
our model changing is never a reason (fix the model instead).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

GOLDEN = Path(__file__).with_name("official_model.json")
OFFICIAL_REPO = "https://github.com/poppinace/indexnet_matting"
# master on 2021-09-15; the model's files last changed in 9036379 (2019-08-05).
OFFICIAL_COMMIT = "4beb06a47db2eecca87b8003a11f0b268506cea3"
# Every file the import of scripts/hlmobilenetv2.py loads, with its sha256 at OFFICIAL_COMMIT.
OFFICIAL_FILES = {
    "scripts/hlmobilenetv2.py": "80dc6a1049d563aef732b5a1afe9032a4fd3357f0d44383ba52fc9dd07acf722",
    "scripts/hlaspp.py": "4a0926780759c8557c70aa0c1a67f5c9b609f6c79a657ba551ec27c54019f3b8",
    "scripts/hlindex.py": "e2f37a2d6f214b1f66f3b8076b045d511a38581f4a725af20c60bee0f2ff3423",
    "scripts/hldecoder.py": "28cd07d4ea41295af1e6be46823178830b49949d573469a5f2b55d0fb6b1864e",
    "scripts/hlconv.py": "3544d83813a6bd94d89a7772187cc7accc6536ba5e99cc462d011a1eb4ce6bcd",
    "scripts/modelsummary.py": "cbf526a94e9dafff516633e2b8399a62a540f308ed2b8d034a141627204a820a",
    "scripts/lib/nn/__init__.py": (
        "2600acab3ede0102ff0bd8e8f8d62b21e4fff97f99a95996aa14679b6ec30d01"
    ),
    "scripts/lib/nn/modules/__init__.py": (
        "0701e2062245ab6c90b3df6934a21be5c942b44b13c2ebb70695433599af7a15"
    ),
    "scripts/lib/nn/modules/batchnorm.py": (
        "42258e18cef5fb033e63f6e1a06c2897432c095a7177606ac6bb1119f5f2c856"
    ),
    "scripts/lib/nn/modules/comm.py": (
        "a480d504d651eef51b8419254f00d97d5f0b2d9a4af590713605c0148725b234"
    ),
    "scripts/lib/nn/modules/replicate.py": (
        "4498b873404fce05202d4f891262e249a95733816d3877e3aee3d2401138a6af"
    ),
    "scripts/lib/nn/parallel/__init__.py": (
        "fa04ce76f0e4d7a130a7cefca60690b53238010bb11d65b1c305221c36d1aaa1"
    ),
    "scripts/lib/nn/parallel/data_parallel.py": (
        "3e4075dc485b063be061c308d88134a644d0b3bc1507f42f40abd3fc69977ee4"
    ),
}

# (name, our ModelConfig switches): the released model first, then one switch at a time.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("m2o", {}),
    ("o2o", {"index_block": "o2o"}),
    ("holistic", {"index_block": "holistic"}),
    ("linear", {"nonlinear": False}),
    ("no_context", {"context": False}),
    (
        "holistic_linear_no_context",
        {"index_block": "holistic", "nonlinear": False, "context": False},
    ),
    ("no_aspp", {"aspp": False}),
    ("os16", {"output_stride": 16}),
    ("k3", {"decoder_kernel_size": 3}),
    ("dep_sep_conv", {"decoder_conv": "dep_sep_conv"}),
]
# The output pixels recorded, (row, column) of the 64x64 output: the corners, where the padding
# rules act, and one inside.
PIXELS = [(0, 0), (31, 32), (63, 63), (0, 63), (63, 0)]
INPUT_SHAPE = (1, 4, 64, 64)
INPUT_SEED = 1
WEIGHT_SEED = 0


def official_kwargs(switches: Mapping[str, Any]) -> dict[str, Any]:
    """Our ``ModelConfig`` switches -> ``hlmobilenetv2(...)`` keyword arguments.

    The defaults are scripts/demo_indexnet_matting.py's (the released model); ``freeze_bn``
    only sets BN to eval mode at construction and ``pretrained=False`` downloads nothing.
    """
    index_block = switches.get("index_block", "m2o")
    return {
        "pretrained": False,
        "freeze_bn": True,
        "output_stride": switches.get("output_stride", 32),
        "apply_aspp": switches.get("aspp", True),
        "conv_operator": switches.get("decoder_conv", "std_conv"),
        "decoder": "indexnet",
        "decoder_kernel_size": switches.get("decoder_kernel_size", 5),
        "indexnet": "holistic" if index_block == "holistic" else "depthwise",
        "index_mode": "m2o" if index_block == "holistic" else index_block,
        "use_nonlinear": switches.get("nonlinear", True),
        "use_context": switches.get("context", True),
    }


def seeded_state(template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Deterministic float64 weights for a state dict, drawn in its order from one generator.

    Args:
        template: a model's ``state_dict()``; only names, order, shapes and dtypes are used.

    Returns:
        The same names: integer entries (``num_batches_tracked``) copied, running variances
        uniform in [0.5, 1.5), every other float entry N(0, 0.2^2), all float64.
    """
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    state = {}
    for name, value in template.items():
        if not value.is_floating_point():
            state[name] = value
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=g, dtype=torch.float64) + 0.5
        else:
            state[name] = torch.randn(value.shape, generator=g, dtype=torch.float64) * 0.2
    return state


def make_input() -> torch.Tensor:
    """The (1, 4, 64, 64) float64 input, N(0, 1) from a seeded generator."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn(INPUT_SHAPE, generator=g, dtype=torch.float64)


def layout_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the state dict's names and shapes, in order: what ``seeded_state`` depends on."""
    text = "".join(f"{name}:{tuple(value.shape)}\n" for name, value in state.items())
    return hashlib.sha256(text.encode()).hexdigest()


def _stats(value: torch.Tensor | tuple[torch.Tensor, ...]) -> list:
    """A module's output -> [mean, mean |x|], or one such pair per tensor of a tuple."""
    if isinstance(value, tuple):
        return [_stats(v) for v in value]
    return [value.mean().item(), value.abs().mean().item()]


def trace(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Run ``model`` on ``x`` and summarise every top-level module's output and the result.

    The top-level modules are the official ones (``layer0`` ... ``pred``; ours has the same
    names), so the first one whose summary differs says where two implementations part.

    Returns:
        ``mean``, ``abs_mean`` and ``pixels`` (the ``PIXELS`` values) of the (H, W) output,
        and ``modules``: name -> ``_stats`` of its output, in call order.
    """
    modules: dict[str, list] = {}
    hooks = [
        child.register_forward_hook(
            lambda _m, _in, out, name=name: modules.__setitem__(name, _stats(out))
        )
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            out = model(x)[0, 0]
    finally:
        for hook in hooks:
            hook.remove()
    rows, cols = zip(*PIXELS, strict=True)
    return {
        "mean": out.mean().item(),
        "abs_mean": out.abs().mean().item(),
        "pixels": out[list(rows), list(cols)].tolist(),
        "modules": modules,
    }


def _is_git(source: Path) -> bool:
    probe = ["git", "-C", str(source), "rev-parse", "--git-dir"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def read_official(source: Path) -> dict[str, bytes]:
    """The ``OFFICIAL_FILES`` at ``OFFICIAL_COMMIT`` from a clone or a plain folder, checked.

    Raises:
        ValueError: the commit is not in the clone, a file is missing, or its sha256 differs.
    """
    files = {}
    git = _is_git(source)
    for path, expected in OFFICIAL_FILES.items():
        if git:
            show = ["git", "-C", str(source), "show", f"{OFFICIAL_COMMIT}:{path}"]
            result = subprocess.run(show, capture_output=True)
            if result.returncode != 0:
                raise ValueError(
                    f"{source}: cannot read {path} at {OFFICIAL_COMMIT} "
                    f"({result.stderr.decode().strip()}); fetch that commit of {OFFICIAL_REPO}"
                )
            data = result.stdout
        else:
            file = source / path
            if not file.is_file():
                raise ValueError(
                    f"{file}: missing; SOURCE must be {OFFICIAL_REPO} at {OFFICIAL_COMMIT}"
                )
            data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise ValueError(
                f"{source}: {path} has sha256 {digest}, expected {expected} "
                f"(the file at {OFFICIAL_COMMIT}); use that commit of {OFFICIAL_REPO}"
            )
        files[path] = data
    return files


def _import_official(files: Mapping[str, bytes], folder: Path) -> Callable[..., torch.nn.Module]:
    """Write the official files under ``folder`` and import ``hlmobilenetv2`` from them."""
    for path, data in files.items():
        target = folder / Path(path).relative_to("scripts")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        # Shim: hldecoder imports pyplot only for visualize(), which the forward never calls.
        matplotlib = types.ModuleType("matplotlib")
        matplotlib.pyplot = types.ModuleType("matplotlib.pyplot")
        sys.modules.update({"matplotlib": matplotlib, "matplotlib.pyplot": matplotlib.pyplot})
    # Shim: the release's modules import each other as top-level modules (from hlaspp import ...).
    sys.path.insert(0, str(folder))
    return importlib.import_module("hlmobilenetv2").hlmobilenetv2


def official_golden(source: Path) -> dict[str, Any]:
    """Run every variant through the official code at ``OFFICIAL_COMMIT``; the golden record."""
    files = read_official(source)
    with tempfile.TemporaryDirectory() as folder:
        hlmobilenetv2 = _import_official(files, Path(folder))
        variants = []
        for name, switches in VARIANTS:
            kwargs = official_kwargs(switches)
            net = hlmobilenetv2(**kwargs).double()
            state = net.state_dict()
            net.load_state_dict(seeded_state(state))
            net.eval()
            variants.append(
                {
                    "name": name,
                    "switches": switches,
                    "official_kwargs": kwargs,
                    "parameters": sum(p.numel() for p in net.parameters()),
                    "state_entries": len(state),
                    "layout_sha256": layout_sha256(state),
                    **trace(net, make_input()),
                }
            )
    return {
        "about": "tests/golden/make_official_golden.py: the official IndexNet code's outputs",
        "official": {"repo": OFFICIAL_REPO, "commit": OFFICIAL_COMMIT, "files": OFFICIAL_FILES},
        "torch": torch.__version__,
        "input": {"shape": list(INPUT_SHAPE), "seed": INPUT_SEED, "dtype": "float64"},
        "weight_seed": WEIGHT_SEED,
        "pixels": [list(p) for p in PIXELS],
        "variants": variants,
    }


def _floats(variant: Mapping[str, Any]) -> list[float]:
    """A variant's recorded values as one flat list: output mean, |mean|, pixels, modules."""
    flat: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        else:
            flat.append(value)

    walk([variant["mean"], variant["abs_mean"], variant["pixels"]])
    walk(list(variant.get("modules", {}).values()))
    return flat


def _differences(new: dict[str, Any], old: dict[str, Any], rel: float) -> list[str]:
    """What differs between two records: exact fields exactly, floats beyond ``rel``."""
    problems = []
    old_variants = {v["name"]: v for v in old.get("variants", [])}
    for variant in new["variants"]:
        name, before = variant["name"], old_variants.get(variant["name"])
        if before is None:
            problems.append(f"{name}: not in the stored file")
            continue
        for key in ("switches", "official_kwargs", "parameters", "state_entries", "layout_sha256"):
            if variant[key] != before.get(key):
                problems.append(f"{name}.{key}: {variant[key]!r} != stored {before.get(key)!r}")
        got, stored = _floats(variant), _floats(before)
        if len(got) != len(stored):
            problems.append(f"{name}: {len(got)} values, stored {len(stored)}")
            continue
        worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, stored, strict=True))
        print(f"{name}: largest relative difference from the stored values {worst:.1e}")
        if worst > rel:
            problems.append(f"{name}: outputs differ by {worst:.1e} (relative; allowed {rel:g})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help=f"a clone or folder of {OFFICIAL_REPO}")
    parser.add_argument("--check", action="store_true", help="compare with the file, write nothing")
    parser.add_argument(
        "--out", type=Path, default=GOLDEN, help="where to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        record = official_golden(args.source)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        problems = _differences(record, json.loads(args.out.read_text()), rel=1e-9)
        print("\n".join(problems) or f"{args.out}: regenerated within 1e-9")
        return 1 if problems else 0
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(record['variants'])} variants, torch {record['torch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
