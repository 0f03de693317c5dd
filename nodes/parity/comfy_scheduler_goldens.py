"""ComfyUI's schedulers on SD3's flow model (ModelSamplingDiscreteFlow, shift
3), run from ComfyUI's own code for 3 step counts each.

The scheduler functions are read out of a ComfyUI checkout given with
--comfyui (never committed here) and run with torch alone, without importing
the rest of ComfyUI: `comfy/model_sampling.py` (time_snr_shift,
ModelSamplingDiscreteFlow), `comfy/k_diffusion/sampling.py` (append_zero,
get_sigmas_karras, get_sigmas_exponential) and `comfy/samplers.py` (the
scheduler functions, `beta_scheduler` with scipy's `beta.ppf`, called as its `calculate_sigmas` does).

Writes goldens/comfy_schedulers.json. Run from the repository root:
`python nodes/parity/comfy_scheduler_goldens.py --comfyui ../ComfyUI`.
"""

import argparse
import ast
import json
import math
import os
from functools import partial

import numpy
import scipy.stats
import torch

SHIFT = 3.0
STEPS = [3, 6, 20]
OUT = "nodes/parity/goldens/comfy_schedulers.json"
WANTED = {
    "comfy/model_sampling.py": ["time_snr_shift", "ModelSamplingDiscreteFlow"],
    "comfy/k_diffusion/sampling.py": ["append_zero", "get_sigmas_karras", "get_sigmas_exponential"],
    "comfy/samplers.py": [
        "simple_scheduler",
        "ddim_scheduler",
        "normal_scheduler",
        "beta_scheduler",
        "linear_quadratic_schedule",
        "kl_optimal_scheduler",
    ],
}


def load(checkout):
    """The wanted top-level definitions, executed in one namespace."""
    namespace = {"torch": torch, "math": math, "numpy": numpy, "scipy": scipy}
    for rel, names in WANTED.items():
        with open(os.path.join(checkout, rel)) as f:
            source = f.read()
        tree = ast.parse(source)
        found = {
            node.name: ast.get_source_segment(source, node)
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names
        }
        missing = set(names) - set(found)
        assert not missing, f"{rel}: no {sorted(missing)}"
        for name in names:
            exec(found[name], namespace)
    return namespace


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfyui", required=True, help="a ComfyUI checkout")
    args = parser.parse_args()
    ns = load(args.comfyui)
    ms = ns["ModelSamplingDiscreteFlow"]()
    ms.set_parameters(shift=SHIFT)
    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    with_ms = {
        "simple": ns["simple_scheduler"],
        "sgm_uniform": partial(ns["normal_scheduler"], sgm=True),
        "ddim_uniform": ns["ddim_scheduler"],
        "normal": ns["normal_scheduler"],
        "beta": ns["beta_scheduler"],
        "linear_quadratic": ns["linear_quadratic_schedule"],
    }
    with_range = {
        "karras": ns["get_sigmas_karras"],
        "exponential": ns["get_sigmas_exponential"],
        "kl_optimal": ns["kl_optimal_scheduler"],
    }
    schedules = {}
    for name, f in with_ms.items():
        schedules[name] = {str(n): f(ms, n).float().tolist() for n in STEPS}
    for name, f in with_range.items():
        schedules[name] = {
            str(n): f(n=n, sigma_min=lo, sigma_max=hi).float().tolist() for n in STEPS
        }
    with open(OUT, "w") as f:
        versions = {"torch": torch.__version__, "scipy": scipy.__version__}
        json.dump({**versions, "shift": SHIFT, "sigmas": schedules}, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
