#!/usr/bin/env bash
# The GPU check: real-size random qwen2_5_vl_7b and qwen3_vl_4b (bf16) on one GPU, in about five minutes; a JSON and
# a table under OUTDIR (gpu_check.json, gpu_check.txt). Stages and goals: benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh OUTDIR                        # on the GPU machine (installs what is missing from PyPI)
#   benchmarks/gpu_check.sh OUTDIR --wheels DIR           # no network there: wheels from DIR (made by the next line)
#   benchmarks/gpu_check.sh --download-wheels DIR [--python-version 3.12]   # here, before carrying DIR
#   benchmarks/gpu_check.sh OUTDIR --device cpu --tiny    # the dry run: every stage, tiny model, CPU, < 1 minute
#
# torch is never installed: the machine's own (CUDA) torch is used, and pip is held to its version.
# PYTHON picks the interpreter (default: the checkout's .venv when present, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
DRIVER="$ROOT/benchmarks/gpu_check.py"
TOTAL_LIMIT_S="${GPU_CHECK_LIMIT_S:-300}"

if [[ "${1:-}" == "--download-wheels" ]]; then
  shift
  exec "$PYTHON" "$DRIVER" wheels "$@"
fi
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUTDIR [--wheels DIR] [--device cpu --tiny] [--archs a,b]" >&2
  exit 2
fi
OUT="$1"
shift
WHEELS=()
RUN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS=(--wheels "$2"); shift 2 ;;
    *) RUN_ARGS+=("$1"); shift ;;
  esac
done

mkdir -p "$OUT"
"$PYTHON" "$DRIVER" deps "${WHEELS[@]}" 2>&1 | tee "$OUT/deps.log"
cd "$ROOT"
timeout --kill-after=10 "$TOTAL_LIMIT_S" "$PYTHON" "$DRIVER" run --out "$OUT" "${RUN_ARGS[@]}" 2>"$OUT/gpu_check.log"
