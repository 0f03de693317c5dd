"""Real-size SD3 from one checkpoint file: ours against stable-diffusion.cpp, side by side.

Runs, for every size and weight precision asked, our release build
(`cretok-model`'s example `sd3_file_bench`) and stable-diffusion.cpp
(`stable-diffusion-cpp-python` from PyPI, built from source by pip with -march=native) on the
same file, the same prompt, steps, cfg, seed and thread count, one after the other, the order
alternating between rounds, each in its own process. Each process runs in a cgroup with a
memory cap and the largest CPU weight (class `Cgroup`); its peak resident memory is read from
`/proc/<pid>/status` every 0.1 s (anonymous memory and mapped file pages apart). The 1-minute
load average is recorded before and after each run. With `--cold`, the page cache is dropped
before each run (root only), so that every load reads the file from disk; without it, a load
gets whatever of the file the runs before left cached. Prints a markdown table and writes the
raw figures as JSON.

    bash nodes/parity/setup_venv.sh
    cargo build --release -p cretok && cargo build --release -p cretok-model --example sd3_file_bench
    mkdir -p target/bench
    target/release/cretok checkpoint random --variant sd3-medium-t5 --out target/bench/sd3m-t5.safetensors
    .venv-parity/bin/python nodes/parity/sd3_file_bench.py --ckpt target/bench/sd3m-t5.safetensors \\
        --sizes 512 --steps 4 --precisions f16 8bit --rounds 1 --threads 2 --cap-gib 20

Precisions: `f16` is the file as stored (ours `default`, sd.cpp `wtype=f16`); `8bit` is ours
`int8` against sd.cpp's `q8_0`. Our phases come from the example's own clocks; sd.cpp's load
is its constructor, its steps come from its progress callback, its prompt encoding and decode
from the times it logs.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = os.path.join(ROOT, "target", "release", "examples", "sd3_file_bench")
PROMPT = "a photo of a lettuce mantis hybrid, macro, detailed, studio light"
CGROUP_ROOT = "/sys/fs/cgroup"
MAX_CPU_SHARES = 262144
GIB = 1 << 30
OUR_DTYPE = {"f16": "default", "8bit": "int8"}
SDCPP_WTYPE = {"f16": "f16", "8bit": "q8_0"}


def sdcpp_child(args):
    """Runs stable-diffusion.cpp once in this process and prints its phases as JSON."""
    from stable_diffusion_cpp import StableDiffusion

    logged = []
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)  # sd.cpp logs with fprintf(stderr): read its phase timings

    def pump():
        with os.fdopen(read_end, "r", errors="replace") as f:
            for line in f:
                logged.append(line)
                os.write(real_stderr, line.encode())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    start = time.perf_counter()
    sd = StableDiffusion(model_path=args.ckpt, wtype=SDCPP_WTYPE[args.precision],
                         n_threads=args.threads, verbose=True)
    load = time.perf_counter() - start
    marks = []
    sd.generate_image(prompt=PROMPT, negative_prompt="", width=args.size, height=args.size,
                      cfg_scale=args.cfg, sample_method="euler", sample_steps=args.steps, seed=42,
                      progress_callback=lambda step, steps, t: marks.append(
                          (steps, time.perf_counter())))
    os.dup2(real_stderr, 2)
    os.close(write_end)
    reader.join(timeout=5)
    text = "".join(logged)

    def logged_seconds(phase):
        """The seconds sd.cpp logs for the first `phase … completed, taking 123 ms` (or `1.2s`)."""
        found = re.findall(phase + r" completed, taking ([\d.]+) ?(ms|s)\b", text)
        if not found:
            return None
        value, unit = found[0]
        return float(value) / (1000 if unit == "ms" else 1)

    # Once per sampling step (the first step's start is not reported: it is left out, as
    # ours is); other phases report their own totals.
    marks = [t for total, t in marks if total == args.steps]
    steps = [b - a for a, b in zip(marks, marks[1:])]
    print(json.dumps({
        "load_s": load,
        # The first condition graph is the prompt's (the second, the negative's).
        "encode_prompt": logged_seconds("computing condition graph"),
        "steps": steps,
        "decode": logged_seconds("decode_first_stage"),
        "has_t5": "t5" in text.lower(),
    }))


class Cgroup:
    """A cgroup (v1) for one run: a memory cap, so that a runaway cannot take the machine, and
    the largest CPU weight, so that anything else running (a build, another session) takes
    little from the run, whatever its niceness (autogroups make niceness count only within a
    terminal session). Where cgroups are not writable the run goes without, with a warning."""

    def __init__(self, name, cap_gib):
        self.paths = []
        for controller, setting, value in (("memory", "memory.limit_in_bytes", int(cap_gib * GIB)),
                                           ("cpu", "cpu.shares", MAX_CPU_SHARES)):
            path = os.path.join(CGROUP_ROOT, controller, name)
            try:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, setting), "w") as f:
                    f.write(str(value))
                self.paths.append(path)
            except OSError as e:
                print(f"warning: no {controller} cgroup ({e})", file=sys.stderr)

    def wrap(self, cmd):
        joins = " && ".join(f"echo $$ > {os.path.join(p, 'cgroup.procs')}" for p in self.paths)
        return ["sh", "-c", f'{joins or "true"} && exec "$@"', "sh"] + cmd

    def close(self):
        for path in self.paths:
            try:
                os.rmdir(path)
            except OSError:
                pass


def status_kib(pid):
    """VmHWM, RssAnon and RssFile of `pid` in KiB (0 when it is gone)."""
    out = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    """User plus system CPU time of `pid` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def drop_page_cache():
    """Writes back dirty pages and drops the page cache, so the next load reads from disk."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError as e:
        sys.exit(f"--cold needs root to drop the page cache: {e}")


def measured(cmd, env, args, name):
    """Runs `cmd` capped; returns its JSON report, peak memory and the load around it."""
    cap_gib = args.cap_gib
    if args.cold:
        drop_page_cache()
    group = Cgroup(name, cap_gib)
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(group.wrap(cmd), env=env, stdout=subprocess.PIPE, text=True)
    peak = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    start, cpu = time.perf_counter(), 0.0
    while proc.poll() is None:
        now = status_kib(proc.pid)  # the cgroup wrapper `exec`s
        peak = {k: max(peak[k], now[k]) for k in peak}
        cpu = max(cpu, cpu_seconds(proc.pid))
        time.sleep(0.1)
    cores_used = cpu / (time.perf_counter() - start)
    out = proc.stdout.read()
    group.close()
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode} (-9: killed at the {cap_gib} GiB cap)",
                "peak_gib": {k: v / (1 << 20) for k, v in peak.items()}}
    report = json.loads(out.strip().splitlines()[-1])
    report["peak_gib"] = {k: v / (1 << 20) for k, v in peak.items()}
    report["load"] = [load_before, os.getloadavg()[0]]
    report["cores_used"] = cores_used
    return report


def ours(args, size, precision):
    cmd = [args.ours_bin, "--ckpt", args.ckpt, "--size", str(size), "--steps", str(args.steps),
           "--cfg", str(args.cfg), "--weight-dtype", OUR_DTYPE[precision]]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    report = measured(cmd, env, args, f"cretok_bench_ours_{os.getpid()}")
    if "seconds" in report:
        s = report.pop("seconds")
        report.update(load_s=s["load"], encode_prompt=s["encode_prompt"],
                      steps=s["steps"][1:], decode=s["decode"])
    return report


def theirs(args, size, precision):
    cmd = [sys.executable, os.path.abspath(__file__), "--sdcpp-child", "--ckpt", args.ckpt,
           "--size", str(size), "--steps", str(args.steps), "--cfg", str(args.cfg),
           "--precision", precision, "--threads", str(args.threads)]
    return measured(cmd, dict(os.environ), args, f"cretok_bench_sdcpp_{os.getpid()}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[512])
    p.add_argument("--precisions", nargs="+", choices=["f16", "8bit"], default=["f16", "8bit"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cap-gib", type=float, default=20.0)
    p.add_argument("--cold", action="store_true", help="drop the page cache before each run")
    p.add_argument("--peers", nargs="+", choices=["ours", "sdcpp"], default=["ours", "sdcpp"])
    p.add_argument("--json", default="sd3_file_bench.json")
    # Another build of the example (a worktree's, an older commit's) in place of this tree's.
    p.add_argument("--ours-bin", default=OURS)
    # Internal: one stable-diffusion.cpp run in a child process.
    p.add_argument("--sdcpp-child", action="store_true")
    p.add_argument("--size", type=int)
    p.add_argument("--precision")
    args = p.parse_args()
    if args.sdcpp_child:
        return sdcpp_child(args)

    runs = []
    for round_index in range(args.rounds):
        for size in args.sizes:
            for precision in args.precisions:
                peers = args.peers if round_index % 2 == 0 else args.peers[::-1]
                for peer in peers:
                    run = (ours if peer == "ours" else theirs)(args, size, precision)
                    run.update(peer=peer, size=size, precision=precision, round=round_index)
                    print(json.dumps(run), file=sys.stderr)
                    runs.append(run)
                    with open(args.json, "w") as f:
                        json.dump({"args": vars(args), "cpu": cpu_model(), "runs": runs}, f,
                                  indent=1)
    print(table(runs, args))


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def table(runs, args):
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def fmt(value, digits=1):
        return "—" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{cpu_model()}, {args.threads} threads, {args.steps} steps, cfg {args.cfg}, "
        f"{args.rounds} round(s), cap {args.cap_gib} GiB"
        f"{', page cache dropped before each run' if args.cold else ''}",
        "",
        "| size | weights | peer | load s | prompt encode s | s/step | decode s | "
        "peak RSS GiB | of which anon GiB | cores used | 1-min load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        for precision in args.precisions:
            for peer in args.peers:
                mine = [r for r in runs
                        if (r["size"], r["precision"], r["peer"]) == (size, precision, peer)]
                failed = [r["failed"] for r in mine if "failed" in r]
                ok = [r for r in mine if "failed" not in r]
                name = {"ours": "cretok", "sdcpp": "sd.cpp"}[peer]
                weights = {"ours": OUR_DTYPE, "sdcpp": SDCPP_WTYPE}[peer][precision]
                if not ok:
                    peak = max((r["peak_gib"]["VmHWM"] for r in mine), default=0)
                    lines.append(f"| {size}² | {weights} | {name} | {failed[0] if failed else '—'}"
                                 f" | | | | {peak:.1f} | | | |")
                    continue
                step = med([med(r["steps"]) for r in ok])
                loads = [x for r in ok for x in r["load"]]
                lines.append(
                    f"| {size}² | {weights} | {name} | {fmt(med([r['load_s'] for r in ok]))} | "
                    f"{fmt(med([r['encode_prompt'] for r in ok]))} | {fmt(step)} | "
                    f"{fmt(med([r['decode'] for r in ok]))}"
                    f"{' (tiled)' if any(r.get('decode_tiled') for r in ok) else ''} | "
                    f"{max(r['peak_gib']['VmHWM'] for r in ok):.1f} | "
                    f"{max(r['peak_gib']['RssAnon'] for r in ok):.1f} | "
                    f"{fmt(med([r['cores_used'] for r in ok]), 2)} | "
                    f"{min(loads):.1f}–{max(loads):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
