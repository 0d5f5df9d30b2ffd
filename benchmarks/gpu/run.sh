#!/usr/bin/env bash
# GPU check and benchmark for rnnedge, about 8 minutes on one NVIDIA GPU, offline.
#
# Expects: Python 3.12 with torch (CUDA build), onnx, numpy and the CPU onnxruntime; the
# onnxruntime-gpu wheel as parts in /tmp/parts (made by shared/tools/device-wheels; set
# PARTS_SHA256 to the sum it printed to have the parts checked). It
#   1. joins the parts and installs onnxruntime-gpu into /tmp/site (--target, no deps), which
#      goes first on PYTHONPATH, so it shadows the CPU wheel without touching it;
#   2. puts the nvidia-* wheels' lib folders on LD_LIBRARY_PATH for ONNX Runtime's CUDA
#      provider (they come with the CUDA build of torch);
#   3. runs the GPU tests, `pytest -m gpu`, with TF32 off so fp32 parity means fp32;
#   4. runs benchmarks/gpu/bench_gpu.py, which writes
#      benchmarks/results/<date>-<gpu>-gpu.{json,md}.
# Results and logs are also copied to $OUT when it is set.
#
#     bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
RESULTS=benchmarks/results
LOGS=$(mktemp -d)
mkdir -p "$RESULTS"
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*"; }

# 1. onnxruntime-gpu from the carried wheel parts
if compgen -G "/tmp/parts/part.*" > /dev/null; then
  if [ -n "${PARTS_SHA256:-}" ]; then
    sum=$(cat /tmp/parts/part.* | sha256sum | cut -d' ' -f1)
    [ "$sum" = "$PARTS_SHA256" ] || { say "wheel parts missing or stale (sha256 $sum)"; exit 3; }
  fi
  if ! compgen -G "/tmp/site/onnxruntime_gpu-*.dist-info" > /dev/null; then
    say "installing onnxruntime-gpu into /tmp/site"
    mkdir -p /tmp/whl /tmp/site
    cat /tmp/parts/part.* | tar -xf - -C /tmp/whl || { say "could not unpack /tmp/parts"; exit 3; }
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site /tmp/whl/*.whl \
      || { say "pip could not install the onnxruntime-gpu wheel"; exit 3; }
  fi
else
  say "no /tmp/parts/part.*: ORT CUDA will be reported unavailable, the rest still runs"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 2. CUDA/cuDNN libraries from the nvidia-* wheels
NV_LIBS=$("$PY" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += sorted(d for d in glob.glob(os.path.join(sp, "nvidia", "*", "lib")) if os.path.isdir(d))
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" - <<'EOF'
import torch
from rnnedge.runtime.backends.ortdist import diagnose
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu:", torch.cuda.is_available())
print(diagnose().describe())
EOF

# 3. GPU tests
say "pytest -m gpu"
NVIDIA_TF32_OVERRIDE=0 timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests \
  > "$LOGS/pytest-gpu.log" 2>&1
test_rc=$?
tail -n 30 "$LOGS/pytest-gpu.log"
summary=$(grep -E "passed|failed|error|skipped|no tests ran" "$LOGS/pytest-gpu.log" | tail -n 1)
say "pytest exit $test_rc: $summary"

# 4. benchmark
say "benchmark"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of extra arguments, e.g. "--seconds 1"
timeout 240 "$PY" benchmarks/gpu/bench_gpu.py --out "$RESULTS" --pytest "exit $test_rc: $summary" \
  ${BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench.log"
bench_rc=${PIPESTATUS[0]}
say "benchmark exit $bench_rc"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$LOGS"/*.log "$OUT"/ 2>/dev/null || true
  cp "$RESULTS"/*-gpu.json "$RESULTS"/*-gpu.md "$OUT"/ 2>/dev/null || true
fi
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
