# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/odrec-export
SHARED ?= ../shared/data
DEMO   := build/demo

.PHONY: demo demo-train test install clean figures

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

ARM_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/odrec-export
test: $(VENV)/.installed
	@test -d $(ARM_CACHE) || echo "note: the first run fetches the ARM64 runtime (~230 MB, pinned) into $(ARM_CACHE)"
	@test -d android_demo/.cache/dl || ! command -v javac >/dev/null || \
	  echo "note: the first run fetches onnxruntime Java from a ~180 MB PyPI wheel (pinned) into android_demo/.cache"
	$(PY) -m pytest

# The main job on the committed Tmall student (no ../shared needed): build the artifact, verify it
# on x86 and emulated ARM64, report its bytes, benchmark it against the uncompressed baseline.
# With ../shared beside the checkout, build also evaluates the artifact on the real Tmall test set.
STUDENT ?= models/tmall/student.pt
EVAL    := $(if $(wildcard $(SHARED)/tmall/test_samples.txt),--eval-data $(SHARED)/tmall,)
demo: $(VENV)/.installed
	$(CLI) build --ckpt $(STUDENT) --out $(DEMO)/artifact --force $(EVAL)
	$(CLI) verify $(DEMO)/artifact --ckpt $(STUDENT) $(if $(EVAL),--data $(SHARED)/tmall,) --record $(DEMO)/verify.json
	$(CLI) size-report $(DEMO)/artifact --baseline $(STUDENT)
	$(CLI) bench $(DEMO)/artifact --quick
	@echo; $(CLI) summary $(DEMO)/artifact --verify $(DEMO)/verify.json

# Train a small teacher on the Diginetica sample (or SYNTHETIC sessions without ../shared).
demo-train: $(VENV)/.installed
	@mkdir -p $(DEMO)
	@if [ -f $(SHARED)/diginetica_sample/sample_train-item-views.csv ]; then \
	  echo $(SHARED)/diginetica_sample/sample_train-item-views.csv > $(DEMO)/data_path; \
	else \
	  echo "demo data: SYNTHETIC sessions (../shared not found)"; \
	  $(PY) -m odrec_export.data.synthetic $(DEMO)/synthetic > $(DEMO)/data_path; \
	fi
	$(CLI) train --data $$(cat $(DEMO)/data_path) --out $(DEMO)/teacher.pt --epochs 5 --dim 64
	$(CLI) eval --ckpt $(DEMO)/teacher.pt --data $$(cat $(DEMO)/data_path)

clean:
	rm -rf build

# The bad-input matrix of docs/results.md: every case one error line, under 2 GB, nothing half-written.
.PHONY: bad-inputs
bad-inputs: $(VENV)/.installed
	$(PY) scripts/bad_input_matrix.py

# The docs' figures (docs/figures/*.png) from the tools' JSON in docs/figures/data; docs/results.md
# ("Figures") has the commands that wrote each JSON file.
figures: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[figures]'
	$(CLI) figures --data docs/figures/data --out docs/figures

# Re-measure the figures' JSON (benchmarks: ~20 min, on a quiet machine).
.PHONY: figures-data
figures-data: $(VENV)/.installed
	bash scripts/figure_data.sh

# Android demo (see docs/android.md): tools are fetched into ignored caches with pinned sha256.
ARTIFACT ?= $(DEMO)/artifact
ABIS     ?= arm64-v8a
.PHONY: apk android-test
apk: $(VENV)/.installed
	bash android_demo/build_apk.sh "$(ARTIFACT)" "$(ABIS)"

android-test: $(VENV)/.installed
	bash android_demo/jvm_test.sh "$(ARTIFACT)"

# Every compressor side by side on Tmall (docs/results.md): needs a Tmall teacher checkpoint.
# Students of the other compressors are fitted at ~30x, then distilled for KD_EPOCHS epochs of
# MAX_BATCHES batches (KD_EPOCHS=0: undistilled fits). All artifacts fp32, evaluated through
# onnxruntime, then `bench --compare` with the codes student (STUDENT) first.
TEACHER     ?= runs/tmall_teacher.pt
KD_EPOCHS   ?= 1
MAX_BATCHES ?= 300
CMP       := build/compare
.PHONY: compare
compare: $(VENV)/.installed
	@mkdir -p $(CMP)
	for c in stt tt cprec; do \
	  test -f $(CMP)/$$c.pt || $(CLI) train --data $(SHARED)/tmall --compressor $$c --teacher $(TEACHER) \
	    --epochs $(KD_EPOCHS) --max-batches $(MAX_BATCHES) --out $(CMP)/$$c.pt || exit 1; \
	done
	$(CLI) build --ckpt $(STUDENT) --out $(CMP)/codes --quant fp32 --force --eval-data $(SHARED)/tmall
	for c in stt tt cprec; do \
	  $(CLI) build --ckpt $(CMP)/$$c.pt --out $(CMP)/$$c --quant fp32 --force --eval-data $(SHARED)/tmall || exit 1; \
	done
	$(CLI) build --ckpt $(CMP)/cprec.pt --out $(CMP)/cprec_top3 --quant fp32 --force --expand-top 3 \
	  --eval-data $(SHARED)/tmall
	$(CLI) build --ckpt $(TEACHER) --out $(CMP)/none --quant fp32 --force --eval-data $(SHARED)/tmall
	$(CLI) bench --compare $(CMP)/codes $(CMP)/stt $(CMP)/tt $(CMP)/cprec $(CMP)/cprec_top3 $(CMP)/none
