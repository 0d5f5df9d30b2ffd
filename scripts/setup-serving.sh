#!/usr/bin/env bash
# Create .venv-serving: the interpreter that `rnnedge serve` and tests/serving/test_server.py
# need. nvidia-pytriton's Triton binary runs its Python-backend stub with a libpython of its
# own; it must be the same CPython build as the venv's interpreter, or model loading fails
# (pyenv's 3.11.7: "RLock._recursion_count"; pyenv 3.12: no libpython3.12.so). Debian's own
# /usr/bin/python3.11 with its shared libpython is the arrangement that serves. No torch here:
# the rnnedge runtime needs numpy + onnxruntime alone (onnx is for `rnnedge triton` and the
# test that loads its repository in Triton).
#
# Idempotent: re-running does nothing once the stamp is newer than this script and
# pyproject.toml. Override the location with VENV_SERVING=path.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV_SERVING:-.venv-serving}"
PY=/usr/bin/python3.11
STAMP="$VENV/.rnnedge-serving-installed"
PKGS=(python3.11 python3.11-venv libpython3.11)

if [[ -f "$STAMP" && "$STAMP" -nt scripts/setup-serving.sh && "$STAMP" -nt pyproject.toml ]]; then
    exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c \
    'import sys; sys.exit(0 if sys.base_prefix == "/usr" else 1)'; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e . 'numpy>=1.24' 'onnxruntime>=1.20' 'onnx>=1.21' \
    'nvidia-pytriton>=0.7' 'tritonclient[all]>=2.50' 'pytest>=8'
touch "$STAMP"
