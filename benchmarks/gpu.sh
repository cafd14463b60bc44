#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run (issue 13): under 8 minutes on one CUDA GPU.
#
#   bash benchmarks/gpu.sh                 # on a machine with a CUDA GPU
#   bash benchmarks/gpu.sh --cpu-check     # here: the same steps, tiny, on the CPU
#
# 0. tests/test_augment.py (on CUDA: the step's composition equals the CPU's to 1e-6);
# 1. builds a shard set of realistic 1.5 MP samples (benchmarks/compose.py's inputs);
# 2. `indexnet train --data-only --device cuda` at 4 and 8 loader workers (samples/s per loader
#    process; the processes a GPU at a 50 ms step of 16 needs);
# 3. a 1-rank torchrun training run of 50 steps (bf16, channels_last) streaming the shards
#    over HTTP from a server on 127.0.0.1; the step time at batch 16 against the 50 ms goal;
# 4. benchmarks/model.py --device cuda (eager float32 against bf16 + channels_last + compile),
#    for IndexNet, then for ViTMatte-S (its JSON says "skipped" when transformers is missing);
# 5. benchmarks/inference.py --device cuda (images/s at full resolution; the official release
#    reports about 5.9 on a 2080 Ti);
# and prints one JSON summary (also written to $OUT/gpu.json when OUT is set, with each step's
# log beside it).
#
# Packages the machine lacks travel as wheels in .whl/ (`make gpu-wheels` here; carry .whl):
# they are installed to /tmp/site first when webdataset, dask, isal or transformers is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
[[ "${1:-}" == "--cpu-check" ]] && MODE=cpu
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && PY=${PYTHON:-.venv/bin/python}
if ! $PY -c "import webdataset, dask, distributed, isal, transformers" 2>/dev/null; then
    [[ -d .whl ]] || { echo "missing packages, and no .whl/ (make gpu-wheels) to install" >&2; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d /tmp/gpu-bench-XXXX)
LOGS=${OUT:-$WORK/logs}
mkdir -p "$LOGS"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [[ $MODE == gpu ]]; then
    DEVICE=cuda FGS=9 PER_FG=40 STEPS=200 TRAIN_STEPS=50 WORKERS="4 8" BATCH=16 INPUT=320
    MODEL_ARGS=(--device cuda) INFER_ARGS=(--device cuda)
else  # the same commands, small enough for 2 CPU cores
    DEVICE=cpu FGS=3 PER_FG=4 STEPS=3 TRAIN_STEPS=2 WORKERS="2" BATCH=2 INPUT=64
    MODEL_ARGS=(--device cpu --steps 1 --batch 2 --size 64 --skip-full-hd)
    INFER_ARGS=(--device cpu --foregrounds 2 --bgs-per-val-fg 1)
fi
SMALL=()
[[ $MODE == cpu ]] && SMALL=(--set augment.crop_sizes=[64] --set augment.small_image_min_side=100)

echo "== the device composes what the CPU composes (tests/test_augment.py)" >&2
$PY -m pytest -q -p no:cacheprovider tests/test_augment.py > "$LOGS/compose-test.log" 2>&1

echo "== shards: $((FGS - 1)) x $PER_FG train samples" >&2
$PY - "$WORK/inputs" "$FGS" "$PER_FG" <<'EOF'
import sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from compose import make_inputs
fgs, per_fg = int(sys.argv[2]), int(sys.argv[3])
make_inputs(Path(sys.argv[1]), fgs, fgs * per_fg + 8, 0)
EOF
$PY -m pipeline build --data-dir "$WORK/inputs/AIM-500" --bg-dir "$WORK/inputs/backgrounds" \
    --out "$WORK/shards" --workers 4 --set data.bgs_per_train_fg="$PER_FG" \
    --set data.bgs_per_val_fg=2 > "$LOGS/build.log" 2>&1

for w in $WORKERS; do
    echo "== data only, $w loader workers" >&2
    $PY -m training --shards "$WORK/shards" --out "$WORK/data-$w" --data-only \
        --device "$DEVICE" --loader-workers "$w" --max-steps "$STEPS" --batch-size "$BATCH" \
        --input-size "$INPUT" "${SMALL[@]}" > "$LOGS/data-$w.log" 2>&1
    cp "$WORK/data-$w/data_only.json" "$LOGS/data_only-$w.json"
done

echo "== training, 1 rank under torchrun, shards over HTTP" >&2
PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
$PY -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/shards" > "$LOGS/http.log" 2>&1 &
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORT/index.json" > /dev/null && break
    sleep 0.2
done
$PY -m torch.distributed.run --standalone --nproc-per-node 1 -m training \
    --shards "http://127.0.0.1:$PORT/" --out "$WORK/train" --device "$DEVICE" \
    --max-steps "$TRAIN_STEPS" --batch-size "$BATCH" --input-size "$INPUT" "${SMALL[@]}" \
    --set runtime.bf16=true --set runtime.channels_last=true --set validation.enabled=false \
    --set runtime.log_every=1 > "$LOGS/train.log" 2>&1
cp "$WORK/train/train.jsonl" "$LOGS/train.jsonl"

echo "== benchmarks/model.py" >&2
$PY benchmarks/model.py "${MODEL_ARGS[@]}" > "$LOGS/model.json" 2> "$LOGS/model.log"
echo "== benchmarks/model.py --family vitmatte" >&2
$PY benchmarks/model.py --family vitmatte "${MODEL_ARGS[@]}" > "$LOGS/model-vitmatte.json" \
    2> "$LOGS/model-vitmatte.log"
echo "== benchmarks/inference.py" >&2
$PY benchmarks/inference.py "${INFER_ARGS[@]}" > "$LOGS/inference.json" 2> "$LOGS/inference.log"

$PY - "$LOGS" "$MODE" "$WORKERS" "$BATCH" <<'EOF' | tee "$LOGS/gpu.json"
import json, statistics, sys
from pathlib import Path
logs, mode, workers, batch = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(), int(sys.argv[4])
steps = [json.loads(line) for line in (logs / "train.jsonl").read_text().splitlines()]
steps = [r for r in steps if "ms_per_step" in r]
warm = steps[len(steps) // 5 :] or steps  # the first fifth is warm-up (cuDNN autotuning)
summary = {
    "mode": mode,
    "data_only": {w: json.loads((logs / f"data_only-{w}.json").read_text()) for w in workers},
    "train": {
        "steps": len(steps),
        "batch": batch,
        "median_ms_per_step": statistics.median(r["ms_per_step"] for r in warm),
        "median_data_wait_ms": statistics.median(r["data_wait_ms"] for r in warm),
        "goal_ms_per_step": 50,
        "last_loss": steps[-1]["loss"],
    },
    "model": json.loads((logs / "model.json").read_text()),
    "model_vitmatte": json.loads((logs / "model-vitmatte.json").read_text()),
    "inference": json.loads((logs / "inference.json").read_text()),
}
print(json.dumps(summary, indent=1))
EOF
