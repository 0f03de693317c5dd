"""Image-side SD3 goldens from diffusers 0.42.1, for the tiny Rust-generated checkpoints.

1. Runs the Rust generator (an ignored test) that writes the tiny SD3 and SD3.5-medium
   checkpoints as single files and diffusers folders into a temporary directory.
2. Loads them with diffusers' single-file loaders (config= the generated folder,
   see docs/parity.md, "Checkpoint keys") and checks the folder layout loads to identical weights.
3. Writes goldens/image_goldens.safetensors (inputs and reference outputs, f32):
   - sigmas_4 / sigmas_28: FlowMatchEulerDiscreteScheduler(shift=3) sigmas;
   - sd3.* / sd35m.*: one transformer forward (batch 2), SD3.5-medium also with skip_layers=[1];
   - vae.*: decode of a latent (z/1.5305 + 0.0609) and encode (posterior mean, (m - 0.0609)*1.5305);
   - gen.*: a 4-step, guidance 5, 64x64 StableDiffusion3Pipeline run from given noise and
     given conditioning tensors (no text encoders), latent and "np" image output;
   - gen_slg.latents: the same run on SD3.5-medium with skip-layer guidance (layer 1).

Run from the repository root:  .venv-parity/bin/python nodes/parity/image_goldens.py
All references use torch.set_num_threads(1), no_grad and f32 (docs/parity.md, "Tolerances").
"""

import os
import subprocess
import tempfile

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers import StableDiffusion3Pipeline
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "goldens", "image_goldens.safetensors")

torch.set_num_threads(1)
torch.manual_seed(0)
rng = np.random.default_rng(2026)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write_fixtures(tmp):
    env = dict(os.environ, CRETOK_TINY_DIR=tmp)
    cmd = ["cargo", "test", "-p", "cretok-nodes", "--test", "image_parity", "write_tiny_fixtures", "--", "--ignored"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def load_transformer(tmp, name):
    single = SD3Transformer2DModel.from_single_file(
        os.path.join(tmp, f"{name}.safetensors"),
        config=os.path.join(tmp, f"{name}_diffusers"),
        subfolder="transformer",
        torch_dtype=torch.float32,
    ).eval()
    folder = SD3Transformer2DModel.from_pretrained(
        os.path.join(tmp, f"{name}_diffusers"), subfolder="transformer"
    ).eval()
    a, b = single.state_dict(), folder.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return single


def load_vae(tmp):
    single = AutoencoderKL.from_single_file(
        os.path.join(tmp, "sd3.safetensors"),
        config=os.path.join(tmp, "sd3_diffusers"),
        subfolder="vae",
        torch_dtype=torch.float32,
    ).eval()
    folder = AutoencoderKL.from_pretrained(os.path.join(tmp, "sd3_diffusers"), subfolder="vae").eval()
    a, b = single.state_dict(), folder.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return single


def t(x):
    return torch.from_numpy(x)


def main():
    g = {}
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    for n in (4, 28):
        sched.set_timesteps(n)
        g[f"sigmas_{n}"] = sched.sigmas.numpy().astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        write_fixtures(tmp)
        x, ts = randn(2, 16, 8, 8), np.array([1000.0, 602.15057], dtype=np.float32)
        y, ctx = randn(2, 96), randn(2, 20, 128)
        g.update({"mmdit.x": x, "mmdit.t": ts, "mmdit.y": y, "mmdit.context": ctx})
        for name in ("sd3", "sd35m"):
            model = load_transformer(tmp, name)
            out = model(hidden_states=t(x), timestep=t(ts), pooled_projections=t(y),
                        encoder_hidden_states=t(ctx), return_dict=False)[0]
            g[f"{name}.out"] = out.numpy()
            if name == "sd35m":
                out = model(hidden_states=t(x), timestep=t(ts), pooled_projections=t(y),
                            encoder_hidden_states=t(ctx), skip_layers=[1], return_dict=False)[0]
                g[f"{name}.out_skip1"] = out.numpy()

        vae = load_vae(tmp)
        z = randn(1, 16, 8, 8)
        g["vae.latent"] = z
        decoded = vae.decode(t(z) / vae.config.scaling_factor + vae.config.shift_factor).sample
        g["vae.decoded"] = decoded.numpy()
        image = np.clip(randn(1, 3, 64, 64, scale=0.5), -1, 1)
        g["vae.image"] = image
        mean = vae.encode(t(image)).latent_dist.mean
        g["vae.encoded"] = ((mean - vae.config.shift_factor) * vae.config.scaling_factor).numpy()

        transformer = load_transformer(tmp, "sd3")
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
            text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
            text_encoder_3=None, tokenizer_3=None,
        )
        noise = randn(1, 16, 8, 8)
        cond = {"prompt_embeds": randn(1, 24, 128), "pooled_prompt_embeds": randn(1, 96),
                "negative_prompt_embeds": randn(1, 24, 128),
                "negative_pooled_prompt_embeds": randn(1, 96)}
        g["gen.noise"] = noise
        g.update({f"gen.{k}": v for k, v in cond.items()})
        kwargs = dict(height=64, width=64, num_inference_steps=4, guidance_scale=5.0,
                      latents=t(noise), **{k: t(v) for k, v in cond.items()})
        g["gen.latents"] = pipe(output_type="latent", **kwargs).images.numpy()
        g["gen.image"] = pipe(output_type="np", **kwargs).images.astype(np.float32)

        # Skip-layer guidance on the SD3.5-medium tiny model: layer 1 skipped on steps
        # i with 0 < i < 4 (start 0, stop 1), scale 2.8.
        pipe.transformer = load_transformer(tmp, "sd35m")
        slg = dict(skip_guidance_layers=[1], skip_layer_guidance_scale=2.8,
                   skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0)
        g["gen_slg.latents"] = pipe(output_type="latent", **kwargs, **slg).images.numpy()

    g = {k: np.ascontiguousarray(v) for k, v in g.items()}
    save_file(g, OUT)
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
