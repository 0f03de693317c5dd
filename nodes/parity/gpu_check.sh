#!/usr/bin/env bash
# CUDA check of the SD3 port, for an NVIDIA machine with nvcc and no crate registry.
# Nothing in CI runs this. See docs/sd3.md, "CUDA".
#
# 1. Where the registry is reachable, pack the compressed .crate file of every
#    crate in Cargo.lock (cuda's cudarc included: the lock file resolves all
#    features), about 42 MiB, small enough for the device tool's 64 MiB carry:
#
#        nodes/parity/gpu_check.sh pack          # target/gpu-crates/
#
# 2. Carry the working tree plus target/gpu-crates to the GPU machine, and run:
#
#        nodes/parity/gpu_check.sh [OUT_DIR]
#
#    It unpacks the crates as a vendored source (target/gpu-vendor/, with the
#    cargo config that points crates.io at it; nothing is written to the
#    repository), builds with `--features cuda` offline, runs the SD3 tests (the
#    node tests load checkpoints on CUDA, bf16, whenever a GPU is visible; the
#    parity tests compare against the goldens; tests/cretok_cuda.rs trains the
#    tiny CLIPs on CUDA and on the CPU and compares the tokens),
#    the bench on CUDA and 1,000 CreTok training steps at the real CLIP sizes on
#    CUDA (cretok_bench.md: s/step and projected 10,000 steps), and writes
#    OUT_DIR (default gpu-check-<date> under target/) with the logs and bench.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PACK="$ROOT/target/gpu-crates"
VENDOR="$ROOT/target/gpu-vendor"
cd "$ROOT"

# name-version of every crates.io package in Cargo.lock.
locked_crates() {
    awk '/^name = / {name = $3} /^version = / {version = $3}
         /^source = "registry/ {gsub(/"/, "", name); gsub(/"/, "", version); print name "-" version}' Cargo.lock
}

if [[ "${1:-}" == "pack" ]]; then
    rm -rf "$PACK"
    mkdir -p "$PACK"
    cargo fetch --locked
    cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
    locked_crates | while read -r crate; do
        file="$(find "$cache" -name "$crate.crate" -print -quit)"
        [[ -n "$file" ]] || { echo "$crate.crate is not in $cache" >&2; exit 2; }
        cp "$file" "$PACK/"
    done
    echo "packed $(find "$PACK" -name '*.crate' | wc -l) crates ($(du -sh "$PACK" | cut -f1)) into $PACK; carry it with the tree"
    exit 0
fi

# The packed crates as a cargo `directory` source, and the config that uses it.
unpack() {
    rm -rf "$VENDOR"
    mkdir -p "$VENDOR/crates"
    local file
    for file in "$PACK"/*.crate; do
        tar -xzf "$file" -C "$VENDOR/crates"
        printf '{"files":{},"package":"%s"}' "$(sha256sum "$file" | cut -d' ' -f1)" \
            > "$VENDOR/crates/$(basename "$file" .crate)/.cargo-checksum.json"
    done
    printf '[source.crates-io]\nreplace-with = "packed"\n\n[source.packed]\ndirectory = "%s"\n' \
        "$VENDOR/crates" > "$VENDOR/config.toml"
}

if [[ "${1:-}" == "unpack" ]]; then
    unpack
    echo "cargo --config $VENDOR/config.toml --frozen ... builds from $VENDOR/crates"
    exit 0
fi

OUT="${1:-$ROOT/target/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
if [[ ! -d "$PACK" ]]; then
    echo "no $PACK: run '$0 pack' where the registry is reachable, and carry it" >&2
    exit 2
fi
command -v nvcc > /dev/null || { echo "nvcc not found: the cuda feature compiles kernels" >&2; exit 2; }
# cudarc 0.19.10 (candle's CUDA binding) knows toolkits up to 13.4 and its build script panics on
# newer ones; the 13.4 API is what the code uses, so a newer nvcc builds against it.
nvcc_release="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r nvcc_major nvcc_minor <<< "$nvcc_release"
if [[ -z "${CUDARC_CUDA_VERSION:-}" ]] && (( nvcc_major * 100 + nvcc_minor > 1304 )); then
    export CUDARC_CUDA_VERSION=13040
fi

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
    echo "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-unset} CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-from nvcc}"
    git -C "$ROOT" rev-parse HEAD 2> /dev/null || true
} > "$OUT/machine.txt" 2>&1

unpack
CARGO=(cargo --config "$VENDOR/config.toml" --frozen)

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
