# Quick start: `make demo` and `make test` do all set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test install install-runtime dist bench clean fast-tier

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# runtime only (what a Raspberry Pi gets)
$(VENV)/.runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

# everything: training, conversion, MLflow tracking, tests
$(VENV)/.full: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[train,dev,onnx,mlflow]'
	touch $@ $(VENV)/.runtime

install-runtime: $(VENV)/.runtime
install: $(VENV)/.full

demo: $(VENV)/.runtime
	$(BIN)/edge-seg run --source demo --headless --max-frames 200 --save demo-out.mp4 --overwrite
	@echo "overlay video written to demo-out.mp4"

test: $(VENV)/.full
	$(BIN)/python -m pytest -q

# the wheel (runtime-only without extras: pip install dist/edge_seg-*.whl); build/ is
# emptied first so modules deleted from the tree cannot linger in the wheel
dist: $(VENV)/.full
	rm -rf build/lib build/bdist.*
	$(BIN)/python -m build --wheel --outdir dist .
	@ls dist/*.whl

# speed and memory targets, measured on demand (ratios in one run), never in CI; every
# benchmark prints the CPU (model, AVX2/AVX-512/VNNI/dotprod), threads, input, model sha256
# and date first, and bench-out/machine.txt keeps the CPU beside the numbers
bench: $(VENV)/.full
	mkdir -p bench-out
	$(BIN)/python benchmarks/machine.py | tee bench-out/machine.txt
	$(BIN)/python benchmarks/bench_int8.py --json bench-out/int8.json --markdown bench-out/int8.md
	$(BIN)/python benchmarks/bench_pipeline.py --threads 1,2 --rounds 3 --soak 10000 --json bench-out/pipeline.json
	$(BIN)/python benchmarks/bench_input_pipeline.py --json bench-out/input-pipeline.json
	$(BIN)/python benchmarks/bench_synthetic.py --json bench-out/synthetic.json
	$(BIN)/python benchmarks/bench_encode.py --json bench-out/encode.json

# the fast tier bundled from a trained checkpoint (a run's best.keras): copy (rebuilt at SIZE,
# default the checkpoint's own), calibrate once per size, convert, compare (own float and the
# reference's), tune, the model card's tables (models/unet-mobilenetv2-fast-camvid-idd.md);
# needs ../shared/datasets
fast-tier: $(VENV)/.full
	@test -n "$(FAST)" || { echo "error: make fast-tier FAST=runs/RUN/best.keras [SIZE=WxH]"; exit 2; }
	nice -n 5 $(BIN)/python tools/fast_tier.py $(FAST) $(if $(SIZE),--size $(SIZE))

clean:
	rm -rf $(VENV) dist build *.egg-info
