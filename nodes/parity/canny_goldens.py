"""Goldens for `nodes/src/canny.rs`: kornia's `canny` (what ComfyUI's `Canny` node calls, then
repeats to three channels) on a small synthetic RGB image (a rectangle, a disc, a ramp and
seeded 8-bit noise) for several threshold pairs, written to `goldens/canny.json`.

    bash nodes/parity/setup_venv.sh && .venv-parity/bin/python nodes/parity/canny_goldens.py
"""

import json
from pathlib import Path

import kornia
import torch
from kornia.filters import canny

OUT = Path(__file__).parent / "goldens" / "canny.json"
HEIGHT, WIDTH = 24, 32
THRESHOLDS = [(0.4, 0.8), (0.1, 0.2), (0.05, 0.6), (0.9, 0.95), (0.3, 0.3)]


def image() -> torch.Tensor:
    """`[1, H, W, 3]` in 0..1, quantised to 8 bits as loaded images are."""
    y, x = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    r = ((x >= 4) & (x < 14) & (y >= 3) & (y < 12)).double()
    g = (((x - 22) ** 2 + (y - 14) ** 2) < 36).double() * 0.8
    b = x.double() / (WIDTH - 1) * 0.5
    rgb = torch.stack([r, g, b], -1)
    generator = torch.Generator().manual_seed(11)
    rgb = rgb + 0.04 * torch.rand(rgb.shape, generator=generator, dtype=torch.float64)
    return (rgb.clamp(0, 1) * 255).round().div(255).float()[None]


def main() -> None:
    pixels = image()
    cases = []
    for low, high in THRESHOLDS:
        # As ComfyUI's Canny.detect_edge: channels first, the edge map repeated to RGB.
        edges = canny(pixels.movedim(-1, 1), low, high)[1]
        rows = ["".join("1" if v else "0" for v in row) for row in (edges[0, 0] == 1).tolist()]
        cases.append({"low": low, "high": high, "edges": rows})
    golden = {"kornia": kornia.__version__, "torch": torch.__version__,
              "height": HEIGHT, "width": WIDTH, "rgb": pixels.flatten().tolist(), "cases": cases}
    OUT.write_text(json.dumps(golden) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
