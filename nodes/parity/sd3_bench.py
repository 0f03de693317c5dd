"""Side-by-side speed of our SD3 port (candle) and diffusers on the same machine.

Runs `cargo run --release -p cretok-nodes --example sd3_bench` (which prints its shapes and
timings as JSON), builds diffusers models with the same shapes and random weights, times
the same three cases, and repeats both in turn (interleaved, so a shared machine's load
hits both alike). Prints a markdown table of medians and ratios.

    .venv-parity/bin/python nodes/parity/sd3_bench.py --threads 2 --rounds 3 [--cuda]
        [--depth 8 --heads 8 --size 256]

(8 blocks of 8 heads × 64 by default; `--heads 24` gives SD3-medium's full width.)

Cases: one MMDiT forward at batch 2 (a CFG step), one VAE decode (batch 1), and a
generation: STEPS Euler steps with CFG plus the VAE decode.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers import StableDiffusion3Pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = ("mmdit_step", "vae_decode", "generation")


def cargo(args):
    """`cargo`, offline from vendored sources when `--cargo-config` names their config."""
    return ["cargo"] + (["--config", args.cargo_config, "--frozen"] if args.cargo_config else [])


def ours(args):
    threads, cuda = args.threads, args.cuda
    cmd = cargo(args) + ["run", "--quiet", "--release", "-p", "cretok-nodes", "--example",
                         "sd3_bench"]
    if cuda:
        cmd += ["--features", "cuda"]
    cmd += ["--", "--depth", str(args.depth), "--heads", str(args.heads), "--size", str(args.size)]
    if cuda:
        cmd += ["--cuda"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build(config, device):
    m = config["mmdit"]
    transformer = SD3Transformer2DModel(
        sample_size=config["size"] // 8,
        patch_size=m["patch_size"],
        in_channels=m["in_channels"],
        num_layers=m["depth"],
        attention_head_dim=m["head_dim"],
        num_attention_heads=m["num_heads"],
        joint_attention_dim=m["context_embed_size"],
        caption_projection_dim=m["num_heads"] * m["head_dim"],
        pooled_projection_dim=m["adm_in_channels"],
        out_channels=m["out_channels"],
        pos_embed_max_size=m["pos_embed_max_size"],
    )
    v = config["vae"]
    n = len(v["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=v["block_out_channels"],
        layers_per_block=v["layers_per_block"],
        latent_channels=v["latent_channels"],
        norm_num_groups=v["norm_num_groups"],
        scaling_factor=v["scaling_factor"],
        shift_factor=v["shift_factor"],
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    return transformer.eval().to(device), vae.eval().to(device)


def timed(device, f):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    f()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def theirs(config, transformer, vae, device):
    m, size, tokens = config["mmdit"], config["size"], config["tokens"]
    latent = size // 8
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    x = randn(2, m["in_channels"], latent, latent)
    t = torch.tensor([1000.0, 750.0], device=device)
    y, ctx = randn(2, m["adm_in_channels"]), randn(2, tokens, m["context_embed_size"])

    def step():
        transformer(hidden_states=x, timestep=t, pooled_projections=y,
                    encoder_hidden_states=ctx, return_dict=False)

    timed(device, step)  # warm-up, as ours does
    seconds = {"mmdit_step": timed(device, step)}
    z = randn(1, vae.config.latent_channels, latent, latent)
    seconds["vae_decode"] = timed(
        device, lambda: vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        height=size, width=size, num_inference_steps=config["steps"],
        guidance_scale=config["cfg"], latents=randn(1, m["in_channels"], latent, latent),
        prompt_embeds=randn(1, tokens, m["context_embed_size"]),
        pooled_prompt_embeds=randn(1, m["adm_in_channels"]),
        negative_prompt_embeds=randn(1, tokens, m["context_embed_size"]),
        negative_pooled_prompt_embeds=randn(1, m["adm_in_channels"]),
        output_type="pt",
    )
    seconds["generation"] = timed(device, lambda: pipe(**kwargs))
    return seconds


def load():
    return os.getloadavg()[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--depth", type=int, default=8, help="MMDiT joint blocks")
    p.add_argument("--heads", type=int, default=8, help="MMDiT heads of 64 (24: SD3-medium)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--json", help="also write the raw timings here")
    p.add_argument("--cargo-config", help="a cargo config file (vendored sources, gpu_check.sh)")
    args = p.parse_args()
    device = "cuda" if args.cuda else "cpu"
    torch.set_num_threads(args.threads)
    subprocess.run(cargo(args) + ["build", "--release", "-p", "cretok-nodes", "--example", "sd3_bench"]
                   + (["--features", "cuda"] if args.cuda else []), cwd=ROOT, check=True)

    runs = {"ours": [], "diffusers": []}
    loads = [load()]
    first = ours(args)
    config = first["config"]
    transformer, vae = build(config, device)
    with torch.no_grad():
        for i in range(args.rounds):
            if i > 0:
                runs["ours"].append(ours(args)["seconds"])
            else:
                runs["ours"].append(first["seconds"])
            loads.append(load())
            runs["diffusers"].append(theirs(config, transformer, vae, device))
            loads.append(load())
            print(f"round {i + 1}: ours {runs['ours'][-1]} diffusers {runs['diffusers'][-1]}",
                  flush=True)

    med = {k: {c: statistics.median(r[c] for r in v) for c in CASES} for k, v in runs.items()}
    label = f"{device}, {args.threads} threads" if device == "cpu" else device
    print(f"\nSD3 bench ({label}; {config['size']}x{config['size']}, MMDiT depth "
          f"{config['mmdit']['depth']} x {config['mmdit']['num_heads']} heads, "
          f"{config['tokens']} context tokens, real-width VAE, generation = "
          f"{config['steps']} steps CFG {config['cfg']} + decode; median of {args.rounds}; "
          f"1-min load average {min(loads):.1f} to {max(loads):.1f})\n")
    print("| case | ours (s) | diffusers (s) | ours / diffusers |")
    print("|---|---|---|---|")
    for c in CASES:
        o, d = med["ours"][c], med["diffusers"][c]
        print(f"| {c} | {o:.3f} | {d:.3f} | {o / d:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "runs": runs, "loads": loads, "medians": med}, f, indent=1)


if __name__ == "__main__":
    main()
