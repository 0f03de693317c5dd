"""ComfyUI's samplers on SD3's flow model (CONST model sampling, ModelSamplingDiscreteFlow
with shift 3), run from ComfyUI's own code on a closed-form toy denoiser for 6 steps.

The sampler functions are read out of a ComfyUI checkout given with --comfyui (never
committed here) and run with torch alone, without importing the rest of ComfyUI:
`comfy/k_diffusion/sampling.py` (the `sample_*` functions and their helpers),
`comfy/model_sampling.py` (CONST, ModelSamplingDiscreteFlow), `comfy/samplers.py`
(simple_scheduler) and `comfy/extra_samplers/uni_pc.py` (sample_unipc and what it runs).
What `comfy/samplers.py` does around a sampler is done here the same way:

- `KSampler.calculate_sigmas`: the `simple` schedule, with one step more and the
  penultimate sigma dropped for dpm_2, dpm_2_ancestral, uni_pc and uni_pc_bh2;
- `sampler_object`: ddim is euler (its inpaint option only matters with a mask), uni_pc
  and uni_pc_bh2 are `sample_unipc` and `sample_unipc_bh2`;
- `KSAMPLER.sample`: `noise_scaling(sigmas[0], noise, latent)` before the sampler,
  `inverse_noise_scaling(sigmas[-1], samples)` after it on the same sigmas tensor (which
  sample_unipc edits in place: its last sigma becomes 0.001), `extra_args = {"seed": seed}`;
- `comfy/sample.py` `prepare_noise`: `torch.randn(shape, generator=torch.manual_seed(seed))`.

The toy model is `CONST.calculate_denoised(sigma, v, x)` with the velocity
`v = x - 0.8 * tanh(x) + 0.3 * sigma`; the Rust test implements the same.

Noise drawn during sampling: ancestral samplers and lcm use ComfyUI's own
`default_noise_sampler` (a CPU generator seeded with seed + 1). the SDE samplers
(dpmpp_sde, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde and their _gpu twins) draw from a
torchsde Brownian tree in ComfyUI, which cannot be reproduced; here they are given
`default_noise_sampler(x, seed)` instead, the noise our port uses.

Writes goldens/comfy_samplers.json. Run from the repository root:
`python nodes/parity/comfy_sampler_goldens.py --comfyui ../ComfyUI`.
"""

import argparse
import ast
import json
import math
import os
import types
from functools import partial

import numpy
import torch

SHIFT = 3.0
STEPS = 6
SEED = 42
SHAPE = (1, 4, 4, 4)
OUT = "nodes/parity/goldens/comfy_samplers.json"
SAMPLERS = [
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
    "lcm",
]
# `sampler_object`: the samplers that are not `sample_<name>`.
FUNCTIONS = {"ddim": "sample_euler", "uni_pc": "sample_unipc", "uni_pc_bh2": "sample_unipc_bh2"}
DISCARD_PENULTIMATE_SIGMA = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
BROWNIAN_TREE = {name for name in SAMPLERS if "_sde" in name}
K_DIFFUSION = [
    "to_d",
    "get_ancestral_step",
    "default_noise_sampler",
    "sigma_to_half_log_snr",
    "half_log_snr_to_sigma",
    "offset_first_sigma_for_snr",
    "linear_multistep_coeff",
] + [
    f"sample_{name}"
    for name in [
        "euler",
        "euler_ancestral",
        "euler_ancestral_RF",
        "heun",
        "dpm_2",
        "dpm_2_ancestral",
        "dpm_2_ancestral_RF",
        "lms",
        "dpmpp_2s_ancestral",
        "dpmpp_2s_ancestral_RF",
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "lcm",
    ]
]
WANTED = {
    "comfy/model_sampling.py": ["reshape_sigma", "time_snr_shift", "CONST", "ModelSamplingDiscreteFlow"],
    "comfy/samplers.py": ["simple_scheduler"],
    "comfy/k_diffusion/sampling.py": K_DIFFUSION,
    "comfy/extra_samplers/uni_pc.py": [
        "model_wrapper",
        "UniPC",
        "expand_dims",
        "SigmaConvert",
        "predict_eps_sigma",
        "sample_unipc",
        "sample_unipc_bh2",
    ],
}


def load(checkout):
    """The wanted top-level definitions, executed in one namespace."""
    from scipy import integrate

    comfy = types.SimpleNamespace(model_sampling=types.SimpleNamespace())
    namespace = {
        "torch": torch,
        "math": math,
        "partial": partial,
        "integrate": integrate,
        "comfy": comfy,
        "trange": lambda n, disable=None: range(n),
        "utils": types.SimpleNamespace(append_dims=lambda x, ndim: x[(...,) + (None,) * (ndim - x.ndim)]),
    }
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
    comfy.model_sampling.CONST = namespace["CONST"]
    return namespace


def toy_velocity(x, sigma):
    s = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
    return x - 0.8 * torch.tanh(x) + 0.3 * s


def toy_model(ms):
    """`model(x, sigma, **extra_args)` with the attributes the sampler functions look up."""

    def model(x, sigma, **kwargs):
        return ms.calculate_denoised(sigma, toy_velocity(x, sigma), x)

    patcher = types.SimpleNamespace(get_model_object=lambda name: ms)
    model.inner_model = types.SimpleNamespace(
        inner_model=types.SimpleNamespace(model_sampling=ms), model_patcher=patcher
    )
    return model


def run(ns, ms, name):
    steps = STEPS + 1 if name in DISCARD_PENULTIMATE_SIGMA else STEPS
    sigmas = ns["simple_scheduler"](ms, steps)
    if name in DISCARD_PENULTIMATE_SIGMA:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    used_sigmas = sigmas.tolist()
    function = ns[FUNCTIONS.get(name, "sample_" + name)]
    noise = torch.randn(SHAPE, generator=torch.manual_seed(SEED))
    latent = torch.zeros(SHAPE)
    x = ms.noise_scaling(sigmas[0], noise, latent)
    extra_args = {"seed": SEED}
    options = {}
    if name in BROWNIAN_TREE:
        options["noise_sampler"] = ns["default_noise_sampler"](x, seed=SEED)
    denoised = []
    callback = lambda d: denoised.append(d["denoised"].flatten().tolist())
    samples = function(toy_model(ms), x, sigmas, extra_args=extra_args, callback=callback, disable=True, **options)
    samples = ms.inverse_noise_scaling(sigmas[-1], samples)
    return {"sigmas": used_sigmas, "denoised": denoised, "samples": samples.flatten().tolist()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfyui", required=True, help="a ComfyUI checkout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ns = load(args.comfyui)

    class ModelSampling(ns["ModelSamplingDiscreteFlow"], ns["CONST"]):
        pass

    ms = ModelSampling()
    ms.set_parameters(shift=SHIFT)
    goldens = {name: run(ns, ms, name) for name in SAMPLERS}
    with open(OUT, "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "numpy": numpy.__version__,
                "shift": SHIFT,
                "seed": SEED,
                "shape": SHAPE,
                "samplers": goldens,
            },
            f,
        )
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
