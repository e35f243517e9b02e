# tlframe: `make train` runs the embedded default experiment, `make test` runs the tests.
# Both set everything up first (a .venv with the package, its dev tools, the Optuna sweeper
# and timm).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train test lint bench bench-gpu results tensorboard clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  pass Hydra overrides with ARGS, e.g. make train ARGS='method=target_only seed=1'"

install: $(STAMP) ## create .venv and install tlframe with its dev, optuna, timm, peft and text extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e ".[dev,optuna,timm,peft,text]"
	touch $(STAMP)

train: install ## run the embedded default experiment (offline, CPU)
	$(BIN)/tlframe-train $(ARGS)

test: install ## run the test suite (slow tests excluded; ARGS='-m slow' runs them)
	$(BIN)/python -m pytest $(ARGS)

lint: install ## ruff over the package and the tests
	$(BIN)/ruff check tlframe tests

bench: install ## throughput of tlframe vs a plain PyTorch loop -> docs/PERFORMANCE.md
	$(BIN)/python -m tlframe.tools.bench --output docs/PERFORMANCE.md $(ARGS)

bench-gpu: install ## the same on a CUDA GPU: resnet50, 224 px, bf16, NHWC, compiled -> docs/PERFORMANCE_GPU.md
	$(BIN)/python -m tlframe.tools.bench --preset gpu --output docs/PERFORMANCE_GPU.md $(ARGS)

results: install ## run the sweeps of docs/RESULTS.md that are missing or stale (TABLE=<name>: that one), render it
	$(BIN)/tlframe-results run $(TABLE) $(if $(ARGS),-- $(ARGS))

tensorboard: install ## open TensorBoard on everything under outputs/
	$(BIN)/tensorboard --logdir outputs

clean: ## remove run outputs, caches and build files (keeps .venv and data/)
	rm -rf outputs/runs outputs/multirun .cache .pytest_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
