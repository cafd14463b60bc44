# The few commands a person types. Uses the active virtual environment, or creates .venv.
PYTHON ?= python3
# torch is installed first from this spec so pip never pulls a CUDA build on a CPU machine.
# GPU users: `make install TORCH=torch` (the default CUDA build) or any spec/index they need.
TORCH ?= torch==2.13.0
DEMO_DIR ?= demo

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.indexnet-installed

.PHONY: install demo test test-all docs lint format bench gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH)" ]; then $(PY) -m pip install -q "$(TORCH)"; fi
	$(PY) -m pip install -q -e ".[dev,docs]"
	@touch $(STAMP)

demo: install
	$(PY) -m pipeline sample-data $(DEMO_DIR) --foregrounds 12 --backgrounds 240 --overwrite
	$(PY) -m pipeline build --data-dir $(DEMO_DIR)/AIM-500 --bg-dir $(DEMO_DIR)/backgrounds \
		--out $(DEMO_DIR)/shards --workers 2 --bgs-per-train-fg 24 --bgs-per-val-fg 8 \
		--val-count 3 --samples-per-shard 8 --overwrite
	$(PY) -m indexnet_cli shards verify $(DEMO_DIR)/shards --deep --workers 2
	rm -rf $(DEMO_DIR)/run $(DEMO_DIR)/eval
	$(PY) -m training --shards $(DEMO_DIR)/shards --out $(DEMO_DIR)/run \
		--config configs/demo.yaml --loader-workers 1
	$(PY) -m indexnet_cli evaluate run --checkpoint $(DEMO_DIR)/run/checkpoints/best.pt \
		--shards $(DEMO_DIR)/shards/validation --out $(DEMO_DIR)/eval --workers 1 --baseline
	@echo "Demo: data in $(DEMO_DIR)/AIM-500 and $(DEMO_DIR)/backgrounds, shards in $(DEMO_DIR)/shards,"
	@echo "      training run in $(DEMO_DIR)/run, evaluation in $(DEMO_DIR)/eval (look at $(DEMO_DIR)/eval/contact_sheet.png)."

# The browser tests (tests/test_serve.py) need Chromium and its driver: installed with apt
# (as root, or with sudo when it needs no password) where missing, else skipped.
test: install
	@command -v chromedriver >/dev/null || (command -v apt-get >/dev/null && \
		( [ "$$(id -u)" = 0 ] && SUDO= || { sudo -n true 2>/dev/null && SUDO=sudo; } ) && \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver) || \
		echo "no chromium: browser tests will be skipped"
	$(PY) -m pytest -m "not slow" --durations=10

# the default suite, the documentation site, then the tests marked slow (long real-process and
# fault-injection runs)
test-all: test docs
	$(PY) -m pytest -m slow --durations=10

# the documentation site (mkdocs.yml, docs/*.md) into site/ (git-ignored); --strict fails on any
# warning, broken links between pages and missing anchors included (the variable only silences
# Material's banner about its successor)
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	@for script in $(filter-out benchmarks/s3_server.py,$(wildcard benchmarks/*.py)); do echo "== $$script"; $(PY) $$script || exit 1; done

# The packages a CUDA machine with PyTorch may lack, as Python 3.12 wheels in .whl/ (git-ignored),
# for benchmarks/gpu.sh, which installs them first (the device README's way of carrying them).
GPU_WHEELS := webdataset braceexpand dask distributed tornado zict tblib partd locket isal \
	transformers huggingface_hub tokenizers safetensors regex hf-xet httpx2 tqdm pyyaml fsspec
gpu-wheels: install
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl \
		$$(for p in $(GPU_WHEELS); do $(PY) -m pip show $$p | sed -n 's/^Version: /'$$p'==/p'; done)

clean:
	rm -rf $(DEMO_DIR) site .pytest_cache .ruff_cache *.egg-info
