"""Golden outputs of the tiny SD3 text encoders, from transformers and diffusers.

1. Runs the Rust generator (`cargo run -p cretok-nodes --example write_tiny_text_encoders`),
   which writes the seeded tiny CLIP-L / CLIP-G / T5 weights (transformers keys).
2. Loads them into CLIPTextModelWithProjection / T5EncoderModel (configs: docs/parity.md, "Tiny fixtures"),
   f32, one thread, eval, no_grad.
3. Runs diffusers' StableDiffusion3Pipeline.encode_prompt (with and without T5) and the
   encoders directly, and writes goldens/text_encoders.safetensors (small).

Run from the repository root: .venv-parity/bin/python nodes/parity/gen_text_encoder_goldens.py
"""

import os
import subprocess
import tempfile
from types import SimpleNamespace

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from build_clip_tokenizer import load_clip_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GOLDENS = os.path.join(HERE, "goldens")
# Keep in step with nodes/tests/text_parity.rs.
PROMPTS = ["a photo of a creative mixture", "hello world! a lettuce mantis"]
T5_LEN = 16
T5_LEN_ABSENT = 8
JOINT_DIM = 128


def clip_config(hidden, act):
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
                          hidden_act=act, projection_dim=hidden, layer_norm_eps=1e-5,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def t5_config():
    return T5Config(vocab_size=32128, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                    layer_norm_epsilon=1e-6, tie_word_embeddings=False)


def load(model, path):
    state = load_file(path)
    if isinstance(model, T5EncoderModel):
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("position_ids" in k for k in missing), missing
    return model.eval()


def main():
    torch.set_num_threads(1)
    weights = tempfile.mkdtemp()
    subprocess.run(["cargo", "run", "-q", "-p", "cretok-nodes", "--example",
                    "write_tiny_text_encoders", "--", weights], check=True, cwd=ROOT)
    clip_l = load(CLIPTextModelWithProjection(clip_config(32, "quick_gelu")),
                  os.path.join(weights, "clip_l.safetensors"))
    clip_g = load(CLIPTextModelWithProjection(clip_config(64, "gelu")),
                  os.path.join(weights, "clip_g.safetensors"))
    t5 = load(T5EncoderModel(t5_config()), os.path.join(weights, "t5.safetensors"))
    tok_l = load_clip_tokenizer("<|endoftext|>")
    tok_g = load_clip_tokenizer("!")
    t5_tok = T5Tokenizer(tokenizer_file=os.path.join(GOLDENS, "t5_synthetic", "tokenizer.json"))

    pipe = StableDiffusion3Pipeline(
        transformer=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
        text_encoder=clip_l, tokenizer=tok_l, text_encoder_2=clip_g, tokenizer_2=tok_g,
        text_encoder_3=t5, tokenizer_3=t5_tok)
    out = {}
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            for name, enc, tok in [("clip_l", clip_l, tok_l), ("clip_g", clip_g, tok_g)]:
                ids = tok(prompt, padding="max_length", max_length=77, truncation=True,
                          return_tensors="pt").input_ids
                o = enc(ids, output_hidden_states=True)
                out[f"{i}.{name}.penultimate"] = o.hidden_states[-2][0]
                out[f"{i}.{name}.last_hidden"] = o.last_hidden_state[0]
                out[f"{i}.{name}.pooled"] = o.text_embeds[0]
            ids = t5_tok(prompt, padding="max_length", max_length=T5_LEN, truncation=True,
                         return_tensors="pt").input_ids
            out[f"{i}.t5.last_hidden"] = t5(ids).last_hidden_state[0]
            context, _, pooled, _ = pipe.encode_prompt(
                prompt, None, None, device="cpu", do_classifier_free_guidance=False,
                max_sequence_length=T5_LEN)
            out[f"{i}.context"] = context[0]
            out[f"{i}.pooled"] = pooled[0]
        pipe.text_encoder_3 = None
        pipe.transformer = SimpleNamespace(config=SimpleNamespace(joint_attention_dim=JOINT_DIM))
        context, _, pooled, _ = pipe.encode_prompt(
            PROMPTS[0], None, None, device="cpu", do_classifier_free_guidance=False,
            max_sequence_length=T5_LEN_ABSENT)
        out["0.no_t5.context"] = context[0]
        out["0.no_t5.pooled"] = pooled[0]
    out = {k: v.contiguous().float() for k, v in out.items()}
    path = os.path.join(GOLDENS, "text_encoders.safetensors")
    save_file(out, path)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
