"""torch's CPU randn as ComfyUI draws initial noise (`comfy/sample.py`
`prepare_noise`: `torch.randn(shape, generator=torch.manual_seed(seed))`), for
3 seeds x 3 shapes: a tensor under 16 elements (the scalar double path), one
with a ragged tail of 16 and a 1x16x128x128 SD3 latent (the vectorised path).

Writes goldens/comfy_noise.json: per case the sha256 of the exact
little-endian f32 bytes, and the first and last values as f32 bit patterns.
Run from the repository root with torch (requirements.txt) on an x86-64 CPU
with AVX2: `python nodes/parity/comfy_noise_goldens.py`.
"""

import hashlib
import json

import torch

SEEDS = [0, 42, 0xFFFF_FFFF_FFFF_FFFF]
SHAPES = [[5], [2, 3, 7], [1, 16, 128, 128]]
EDGE = 8
OUT = "nodes/parity/goldens/comfy_noise.json"


def bits(values):
    return [f"{v & 0xFFFF_FFFF:08x}" for v in values.view(torch.int32).tolist()]


def case(seed, shape):
    noise = torch.randn(shape, dtype=torch.float32, generator=torch.manual_seed(seed))
    flat = noise.flatten().contiguous()
    raw = flat.numpy().astype("<f4").tobytes()
    return {
        "seed": seed,
        "shape": shape,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "first": bits(flat[:EDGE]),
        "last": bits(flat[-EDGE:]),
    }


def main():
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"), (
        "torch's vectorised normal fill needs an AVX2 CPU"
    )
    goldens = {
        "torch": torch.__version__,
        "cases": [case(seed, shape) for seed in SEEDS for shape in SHAPES],
    }
    with open(OUT, "w") as f:
        json.dump(goldens, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
