# Two commands work on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The trainer's torch goes in first and pinned, so the [train] extra never pulls a CUDA build here.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: setup setup-train demo test bench schemas clean

setup: $(VENV)/.setup-done
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $@

setup-train: $(VENV)/.train-done
$(VENV)/.train-done: $(VENV)/.setup-done
	$(PIP) '$(TORCH_SPEC)'
	$(PIP) -e '.[train,dev]'
	touch $@

demo: setup
	rm -rf demo-out
	$(BIN)/datagen generate --teacher mock --captions data/captions.json --instances data/instances.json --out demo-out --seed 0
	$(BIN)/datagen export demo-out --out demo-out/llava_instruct.json
	$(BIN)/datagen align --captions data/captions.json --out demo-out/llava_pretrain.json
	@echo "demo-out/ holds conversation/detail/complex_reasoning.jsonl, rejects.jsonl, manifest.json and the exports"

test: setup-train
	$(BIN)/python -m pytest

bench: setup-train
	$(BIN)/python bench/generate_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/checks_bench.py
	$(BIN)/python bench/grounding_bench.py
	cat bench/results_generate.md bench/results_train.md bench/results_checks.md bench/results_grounding.md > bench/results.md
	@echo "wrote bench/results.md"

schemas: setup
	$(BIN)/python -m datagen.schemas schemas

clean:
	rm -rf $(VENV) demo-out .pytest_cache
