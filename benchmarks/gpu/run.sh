#!/usr/bin/env bash
# The GPU check and benchmark in four device calls issued back to back: one call carries at
# most 64 MiB (the onnxruntime-gpu package travels as 4 parts of 49 MiB) and the machine is
# given back 30 s after a call ends. docs/gpu.md has the exact calls. Once, here, before them:
#
#     bash benchmarks/gpu/run.sh prepare      # parts in .devwheels/p0..p3, their sum in p3
#
# then on the device, call k = 1..4 carrying .devwheels/p(k-1):
#
#     bash benchmarks/gpu/run.sh k
#
#   1  environment, torch-only baselines: W5 eager and the CUDA-graph floor, W6 eager cuDNN
#   2  N = 1/64/1024 streams on rnnedge's CPU runtime and as one torch CUDA graph; W6 on CPU
#   3  torch rows with TF32 allowed (labelled tf32)
#   4  check the parts' sum, unpack into /tmp/site, prove the CUDA provider loads without
#      LD_LIBRARY_PATH or torch, GPU tests with RNNEDGE_REQUIRE_GPU=1, ORT rows (placement, W5,
#      W6 fp32/fp16, streams, TensorRT as found), ORT TF32 rows, the report
#
# Every log line and every measured row lands in $OUT as it is written (a call stopped at its
# limit returns what it had); /tmp/rnnedge-bench keeps all calls' rows for the report.
set -uo pipefail
cd "$(dirname "$0")/../.."
step=${1:?usage: run.sh prepare|1|2|3|4}

if [ "$step" = prepare ]; then
  ../shared/tools/device-wheels "${PKG:-onnxruntime-gpu==1.31.1}" || exit 3
  parts=$(ls .devwheels/p*/part.* | sort -t. -k3 -n)
  last=$(dirname "$(echo "$parts" | tail -n 1)")
  # shellcheck disable=SC2086  # the part paths hold no spaces
  cat $parts | sha256sum | cut -c1-64 > "$last/SHA256"
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
  big=$(du -b .devwheels/p*/part.* | sort -n | tail -n 1 | cut -f1)
  echo "parts: $(echo "$parts" | tr '\n' ' '); sha256 $(cat "$last/SHA256") in $last/SHA256"
  echo "tree $((tree >> 20)) MiB + largest part $((big >> 20)) MiB of the 64 MiB a call carries"
  [ $((tree + big)) -lt $((64 << 20)) ] || { echo "too large to carry: trim the tree"; exit 3; }
  exit 0
fi

OUT=${OUT:-$PWD/bench-out}
STATE=/tmp/rnnedge-bench
mkdir -p "$OUT" "$STATE"
exec > >(tee -a "$OUT/run-$step.log") 2>&1
tee_pid=$!
trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT  # the log's last lines reach $OUT before we end
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD" NVIDIA_TF32_OVERRIDE=0
started=$(date +%s)
say() { echo "[call $step, $(( $(date +%s) - started ))s] $*"; }

carry() {  # whatever part this call brought (and any left from earlier calls) into /tmp/parts
  mkdir -p /tmp/parts
  for f in .devwheels/p*/part.* .devwheels/p*/SHA256; do [ -f "$f" ] && cp "$f" /tmp/parts/; done
  say "parts on this machine: $(cd /tmp/parts && ls | tr '\n' ' ')"
}

bench() {  # bench LIMIT_S [env ...] -- ARGS: one phase, killed at its limit
  local limit=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  timeout "$limit" env "${envs[@]}" "$PY" benchmarks/gpu/bench_gpu.py --out "$OUT" \
    --state "$STATE" "$@"
  local rc=$?
  say "bench $*: exit $rc"
  return $rc
}

unpack() {
  local want have
  want=$(cat /tmp/parts/SHA256 2>/dev/null) || { say "no SHA256 among the parts"; return 3; }
  have=$(cat /tmp/parts/part.? | sha256sum | cut -c1-64)
  [ "$have" = "$want" ] || { say "parts missing or stale"; ls -l /tmp/parts; return 3; }
  mkdir -p /tmp/site
  timeout 90 sh -c 'cat /tmp/parts/part.? | xz -dc -T0 | tar -xf - -C /tmp/site' || return 3
  say "onnxruntime-gpu unpacked into /tmp/site"
}

case $step in
  1)
    carry
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
    bench 120 -- --phase torch
    ;;
  2)
    carry
    bench 75 -- --phase cpu
    ;;
  3)
    carry
    bench 60 -u NVIDIA_TF32_OVERRIDE -- --phase tf32
    ;;
  4)
    carry
    unpack || exit 3
    export PYTHONPATH="/tmp/site:$PWD"
    # the CUDA provider must load from preload_dlls() and the nvidia namespace alone
    timeout 60 "$PY" - <<'EOF' 2>&1 | tee "$OUT/ort-check.log"
import onnxruntime as ort
from rnnedge.runtime.backends.ort_cuda import OrtCudaRunner
from rnnedge.runtime.backends.ortdist import diagnose, nvidia_lib_dirs
print("onnxruntime", ort.__version__, ort.get_available_providers())
print(diagnose().describe())
print("nvidia lib folders:", nvidia_lib_dirs())
runner = OrtCudaRunner("tests/fixtures/foreign_lstm.onnx")
try:
    runner.activate()
    print("CUDA provider live without LD_LIBRARY_PATH or torch:", runner.session.get_providers(),
          "placement:", runner.placement)
except Exception as exc:
    print("CUDA provider NOT live from preload alone:", type(exc).__name__, exc)
print("preload_dlls said:", runner.preload_log[:600] or "nothing")
EOF
    nv=$("$PY" -c 'from rnnedge.runtime.backends.ortdist import nvidia_lib_dirs as d; print(":".join(d()))')
    export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "GPU tests, a skip is a failure (TensorRT is not installed here: its tests are not selected)"
    RNNEDGE_REQUIRE_GPU=1 timeout 150 "$PY" -m pytest -q -p no:cacheprovider -rfEs \
      -m "gpu and not tensorrt" --continue-on-collection-errors \
      --junitxml="$OUT/pytest.xml" tests 2>&1 | tee "$OUT/pytest.log"
    test_rc=${PIPESTATUS[0]}
    summary="exit $test_rc: $(grep -E "passed|failed|error|skipped|no tests ran" "$OUT/pytest.log" | tail -n 1)"
    say "pytest $summary"
    bench 150 -- --phase ort
    bench 60 -u NVIDIA_TF32_OVERRIDE -- --phase ort-tf32
    bench 30 -- --phase report --pytest "$summary"
    [ "$test_rc" -eq 0 ]
    ;;
  *)
    echo "usage: run.sh prepare|1|2|3|4" >&2
    exit 2
    ;;
esac
