#!/usr/bin/env bash
# GPU check: CUDA tests (kernel, public path, front end), then the kernel and front-end benchmarks.
# Usage: benchmarks/gpu_check.sh OUTDIR      (one H100: under 8 minutes)
# Writes OUTDIR/{env.txt, cuda_tests.txt, cuda_tests.xml, bench.txt, bench_kernel.csv, bench_kernel.json,
# bench_frontend.txt, bench_train_step.txt} (8 files: the device tool brings back at most 8).
# Python: $PYTHON, else the repo's .venv if it sees a GPU, else python3.
set -u -o pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
start=$(date +%s)
{
  echo "date: $(date -u +%FT%TZ)  git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  "$PY" -c "import torch, triton; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== CUDA tests"
timeout 240 "$PY" -m pytest tests/test_cuda.py tests/test_frontend_learning.py -m cuda -q -rs -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" 2>&1 | tee "$OUT/cuda_tests.txt"
tests_rc=${PIPESTATUS[0]}
echo "tests exit code: $tests_rc ($(( $(date +%s) - start ))s)"

echo "== benchmark"
left=$(( 400 - ($(date +%s) - start) ))
[ "$left" -lt 60 ] && left=60
timeout "$left" "$PY" benchmarks/bench_kernel.py --quick --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "benchmark exit code: $bench_rc (total $(( $(date +%s) - start ))s)"

echo "== front end benchmark"
left=$(( 465 - ($(date +%s) - start) ))
[ "$left" -lt 45 ] && left=45
timeout "$left" "$PY" benchmarks/bench_frontend.py --device cuda --batch 64 --seconds 8 2>&1 | tee "$OUT/bench_frontend.txt"
fe_rc=${PIPESTATUS[0]}
echo "front end benchmark exit code: $fe_rc (total $(( $(date +%s) - start ))s)"
echo "== training step per front end (the recipe's small model; only with time left)"
left=$(( 530 - ($(date +%s) - start) ))
if [ "$left" -ge 45 ]; then
  # torchaudio's MFSC on cuFFT against the learnable front ends; a random batch (no audio libraries)
  timeout "$left" "$PY" benchmarks/bench_train_step.py --device cuda --random-batch --n-fft 400 512 \
    --threads 1 --rounds 10 --memory --decompose 2>&1 | tee "$OUT/bench_train_step.txt"
else
  echo "skipped: ${left}s left" | tee "$OUT/bench_train_step.txt"
fi
echo "total $(( $(date +%s) - start ))s"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$fe_rc" -eq 0 ]
