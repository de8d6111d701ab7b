#!/usr/bin/env bash
# bench/gpu.py on the GPU machine (no package registry), from the repository root there.
#
# Prepared here first (both folders are git-ignored, ~51 MiB together):
#   pip download --dest build/gpu-wheels --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_28_x86_64 --only-binary=:all: --no-deps -r bench/gpu_wheels.txt
#   python bench/gpu.py --prepare          # the default model's tokenizer -> build/gpu-tokenizer
# The device call: command "bash bench/gpu_run.sh", carry ["build/gpu-wheels", "build/gpu-tokenizer"],
# timeout_s 420 (the script takes about 4 minutes; each part's process is killed after 60 s).
# Arguments are passed to bench/gpu.py (e.g. --parts build,dpo to rerun one part).
# The table (stdout) and the parts' logs (stderr) are also written to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=build/gpu-wheels
OUT_DIR=${OUT:-build/gpu-out}
mkdir -p "$OUT_DIR"
for carried in "$WHEELS" build/gpu-tokenizer; do
    [ -d "$carried" ] || { echo "gpu_run.sh: $carried is missing: carry it (see the top of this file)" >&2; exit 2; }
done
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1  # a throwaway machine's Python

"$PYTHON" -m pip list 2>/dev/null | grep -i -E '^(torch|transformers|accelerate|peft|huggingface.hub|numpy|pyarrow|pandas|setuptools) ' || true
# Each pin read as ">=": what the machine already has at that version or newer stays.
mapfile -t requirements < <(sed -e 's/#.*//' -e 's/==/>=/' -e '/^[[:space:]]*$/d' bench/gpu_wheels.txt)
"$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "${requirements[@]}"
# The project itself, against the machine's torch (no build isolation: no registry to fetch setuptools from).
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import trl, datasets, faiss, matplotlib, pydantic, agents.backends.hf, sandbox, align"

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" bench/gpu.py --tokenizer build/gpu-tokenizer "$@" 2> >(tee "$OUT_DIR/gpu-stderr.log" >&2) \
    | tee "$OUT_DIR/gpu-table.txt"
