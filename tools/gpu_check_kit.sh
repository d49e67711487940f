#!/usr/bin/env bash
# The GPU check as one device call (docs/bench.md, "GPU check").
#
#   tools/gpu_check_kit.sh prepare        # here, with network: .whl/ = the nst wheel + the small wheels the lent
#                                         # GPU machine lacks (pure Python, well under the 64 MiB a call carries)
#   tools/gpu_check_kit.sh run [OUTDIR] [gpu_check options...]
#                                         # there, from the repository root, with .whl carried: install them with
#                                         # --no-deps (no network there), then python -m nst_bench.gpu_check
#
# The device call (run tool): carry [".whl"], command
#   set -o pipefail; bash tools/gpu_check_kit.sh run $OUT/gpu_check 2>&1 | tee $OUT/gpu_check.log
# then commit $OUT/gpu_check/gpu_check.{json,md} under benchmarks/results/<gpu>/.
#
# What the lent machine already has (device KINDS.md): PyTorch with CUDA, onnx, onnxscript, CPU onnxruntime,
# scikit-image, tqdm, safetensors, pytest, hypothesis, click. Not carried: onnxruntime-gpu (~256 MB) and TensorRT
# (~1 GB of libraries): the check lists those paths as skipped with that reason.
set -euo pipefail
PY=${PYTHON:-python3}
case "${1:-}" in
  prepare)
    PY=${PYTHON:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl
    "$PY" -m pip wheel -q --no-deps -w .whl .          # nst itself (pure Python; pip fetches hatchling to build)
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "onnxconverter-common==1.16.0"
    ls -l .whl && du -sh .whl
    ;;
  run)
    out=${2:-${OUT:-gpu-check-out}/gpu_check}
    shift $(( $# >= 2 ? 2 : 1 ))
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ here: run 'tools/gpu_check_kit.sh prepare' first and carry .whl" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nst-site .whl/*.whl
    export PYTHONPATH=/tmp/nst-site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    exec "$PY" -m nst_bench.gpu_check --out "$out" --device cuda "$@"
    ;;
  *)
    echo "usage: $0 prepare | run [OUTDIR] [gpu_check options]" >&2
    exit 2
    ;;
esac
