#!/usr/bin/env bash
# Browser test: the real ComfyUI web frontend against `cretok serve`, in
# headless Chromium (Debian's package) driven by playwright-core. Installs
# nothing itself. Set up once, from the repository root:
#
#   apt-get update && apt-get install -y chromium        # /usr/bin/chromium
#   python3 -m venv .venv && .venv/bin/pip install comfyui-frontend-package==1.58.1
#   npm ci --prefix tests/browser                        # playwright-core, pinned; never downloads browsers
#   cargo build -p cretok                           # target/debug/cretok
#
# Then: bash tests/browser/run.sh            # frontend.test.mjs, editor.test.mjs, custom_nodes.test.mjs newcomer.test.mjs
#       bash tests/browser/run.sh --export-ui-workflows   # rewrite workflows/ui/ (export_ui_workflows.mjs)
#
# Environment (all optional):
#   CRETOK_BIN      the binary (default: $CARGO_TARGET_DIR/debug/cretok, else target/debug/cretok)
#   VENV            the venv holding comfyui-frontend-package (default: .venv)
#   FRONT_END_ROOT  the frontend's static/ folder (default: found through $VENV)
#   CHROMIUM        the browser (default: /usr/bin/chromium)
#   ARTIFACTS_DIR   screenshots (default: tests/artifacts)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

venv="${VENV:-.venv}"
if [[ -z "${FRONT_END_ROOT:-}" ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "run.sh: no venv at $venv: python3 -m venv .venv && .venv/bin/pip install comfyui-frontend-package==1.58.1" >&2
    exit 2
  fi
  FRONT_END_ROOT="$("$venv/bin/python" -c \
    'import comfyui_frontend_package as p, os; print(os.path.join(os.path.dirname(p.__file__), "static"))')"
fi
export FRONT_END_ROOT
if [[ ! -f "$FRONT_END_ROOT/index.html" ]]; then
  echo "run.sh: no frontend at $FRONT_END_ROOT (pip install comfyui-frontend-package into $venv)" >&2
  exit 2
fi
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  echo "run.sh: playwright-core is missing: npm ci --prefix tests/browser" >&2
  exit 2
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "run.sh: no browser at $CHROMIUM: apt-get install -y chromium" >&2
  exit 2
fi

echo "browser test: $("$CHROMIUM" --version 2>/dev/null || echo chromium), frontend $FRONT_END_ROOT"
cd tests/browser
if [[ "${1:-}" == "--export-ui-workflows" ]]; then
  exec node export_ui_workflows.mjs
fi
exec node --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout \
  frontend.test.mjs editor.test.mjs custom_nodes.test.mjs newcomer.test.mjs
