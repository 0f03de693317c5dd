#!/bin/sh
# CreTok step time at real SD3 CLIP sizes: our trainer vs the paper's plain loop, one machine.
# Run from the repository root. Results go into docs/cretok.md ("Benchmark").
set -e
P=${PYTHON:-.venv-parity/bin/python}  # created by: bash nodes/parity/setup_venv.sh
nproc
cargo run -q --release -p cretok-nodes --example cretok_bench -- "${1:-5}"
"$P" nodes/parity/cretok_bench_reference.py "${2:-2}" | tail -1
