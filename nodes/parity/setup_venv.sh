#!/usr/bin/env bash
# Creates the Python venv of the parity and benchmark tools, `.venv-parity/` in the repository
# root (ignored by git), from nodes/parity/requirements.txt:
#
#     bash nodes/parity/setup_venv.sh        # then: .venv-parity/bin/python nodes/parity/...
#
# Safe to re-run: it installs again only when requirements.txt has changed. CI never runs it
# (the tests read the committed goldens). torch comes from PyPI (several GB with its CUDA
# libraries; it runs on the CPU as well).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-parity"
REQUIREMENTS="$ROOT/nodes/parity/requirements.txt"
STAMP="$VENV/requirements.sha256"

wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
    echo "$VENV is up to date with $REQUIREMENTS"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --requirement "$REQUIREMENTS"
echo "$wanted" > "$STAMP"
echo "ready: $VENV/bin/python"
