"""Goldens for `nodes/src/resample.rs`: torch's `F.interpolate` (the call ComfyUI's
`comfy.utils.common_upscale` makes for nearest-exact, bilinear, area and bicubic) on a small
seeded tensor, up and down, written to `goldens/resample.json`.

    bash nodes/parity/setup_venv.sh && .venv-parity/bin/python nodes/parity/resample_goldens.py
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).parent / "goldens" / "resample.json"
MODES = ["nearest-exact", "bilinear", "area", "bicubic"]
SIZES = [(9, 11), (3, 4), (5, 3), (12, 5)]


def main() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.rand((1, 2, 5, 7), generator=generator, dtype=torch.float64)
    cases = []
    for mode in MODES:
        for height, width in SIZES:
            y = F.interpolate(x, size=(height, width), mode=mode)
            cases.append({"mode": mode, "height": height, "width": width,
                          "values": y.flatten().tolist()})
    golden = {"torch": torch.__version__, "shape": list(x.shape),
              "input": x.flatten().tolist(), "cases": cases}
    OUT.write_text(json.dumps(golden) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
