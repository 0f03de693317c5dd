#!/usr/bin/env bash
# CUDA check of the SD3 port, for an NVIDIA machine with nvcc and no crate registry.
# Nothing in CI runs this. See docs/sd3.md, "CUDA".
#
# 1. Where the registry is reachable, vendor every crate of Cargo.lock (cuda's
#    cudarc included: the lock file resolves all features) into target/vendor,
#    with the source replacement cargo prints saved next to it:
#
#        nodes/parity/gpu_check.sh vendor
#
# 2. Carry the working tree plus target/vendor (about 300 MB with the
#    vendored sources of tokenizers and candle) to the GPU machine, and run:
#
#        nodes/parity/gpu_check.sh [OUT_DIR]
#
#    It builds with `--features cuda` offline (`--config target/vendor/config.toml`,
#    the `.cargo/config.toml` source replacement `cargo vendor` prints; nothing is
#    written to the repository), runs the SD3 tests (the node tests load
#    checkpoints on CUDA, bf16, whenever a GPU is visible; the parity tests
#    compare against the goldens; tests/cretok_cuda.rs trains the tiny CLIPs on CUDA
#    and on the CPU and compares the tokens),
#    the bench on CUDA and 1,000 CreTok training steps at the real CLIP sizes on
#    CUDA (cretok_bench.md: s/step and projected 10,000 steps), and writes
#    OUT_DIR (default gpu-check-<date> under target/) with the logs and bench.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENDOR="$ROOT/target/vendor"
cd "$ROOT"

if [[ "${1:-}" == "vendor" ]]; then
    mkdir -p "$VENDOR"
    cargo vendor --locked "$VENDOR/crates" > "$VENDOR/config.toml"
    echo "vendored into $VENDOR; carry it with the tree"
    exit 0
fi

OUT="${1:-$ROOT/target/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
if [[ ! -f "$VENDOR/config.toml" ]]; then
    echo "no $VENDOR/config.toml: run '$0 vendor' where the registry is reachable" >&2
    exit 2
fi
command -v nvcc > /dev/null || { echo "nvcc not found: the cuda feature compiles kernels" >&2; exit 2; }

# candle's kernels are compiled for this compute capability (needed when the
# build cannot query the GPU).
if [[ -z "${CUDA_COMPUTE_CAP:-}" ]] && command -v nvidia-smi > /dev/null; then
    CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)"
    export CUDA_COMPUTE_CAP
fi
{
    date -u
    nvidia-smi || true
    nvcc --version
    echo "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-unset}"
    git -C "$ROOT" rev-parse HEAD 2> /dev/null || true
} > "$OUT/machine.txt" 2>&1

CARGO=(cargo --config "$VENDOR/config.toml" --frozen)
# The `directory` in the saved config is absolute: point it at this machine's copy.
sed -i "s|^directory = .*|directory = \"$VENDOR/crates\"|" "$VENDOR/config.toml"

status=0
run() {
    local name="$1"
    shift
    echo "== $name: $*"
    if "$@" > "$OUT/$name.log" 2>&1; then
        echo "   ok"
    else
        echo "   FAILED (see $OUT/$name.log)"
        status=1
    fi
}

run check "${CARGO[@]}" check -p cretok-nodes --features cuda --all-targets
run build "${CARGO[@]}" build --release -p cretok-nodes --features cuda --tests --examples
run tests "${CARGO[@]}" test --release -p cretok-nodes --features cuda
if run bench env RAYON_NUM_THREADS="$(nproc)" "${CARGO[@]}" run --release -p cretok-nodes \
    --features cuda --example sd3_bench -- --cuda; then
    tail -1 "$OUT/bench.log" > "$OUT/bench.json"
fi
# 1,000 CreTok steps (n = 16, both CLIPs, pooled) at real CLIP-L/bigG sizes on the GPU.
if run cretok_bench "${CARGO[@]}" run --release -p cretok-nodes --features cuda \
    --example cretok_bench -- 1000 --cuda; then
    grep '^|' "$OUT/cretok_bench.log" > "$OUT/cretok_bench.md"
fi
# diffusers on the same GPU, where a Python with torch (CUDA) and diffusers exists.
if [[ -n "${PYTHON:-}" ]]; then
    run bench_side_by_side "$PYTHON" nodes/parity/sd3_bench.py --cuda --rounds 3 \
        --cargo-config "$VENDOR/config.toml" --json "$OUT/bench_side_by_side.json"
fi
echo "results in $OUT"
exit "$status"
