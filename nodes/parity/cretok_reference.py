"""The paper's plain CreTok loop in PyTorch + transformers, as the parity golden for our trainer.

Feng et al., "Redefining <Creative> in Dictionary" (CVPR 2025, arXiv 2410.24160); docs/cretok.md.
Deliberately naive, as the paper describes it: for every sampled pair, in both orders and for
each CLIP encoder, encode the restrictive prompt "a {t1} {t2}" and the adaptive prompt
"a photo of a <CreTok> mixture", both padded to 77 tokens (CLIP-L pads with <|endoftext|>,
CLIP-G with "!"), take the pooled output (text_embeds), compute 1 - min(cos, theta), and
back-propagate it scaled by 1 / (2 n encoders) (gradient accumulation over n pairs). The token
replaces the row of "creative" through a hook on the token-embedding lookup. AdamW (0.9, 0.999,
1e-8, wd 0), lr * (1 + cos(pi t / T)) / 2 per step, f32, one thread.

1. `cargo run -p cretok-nodes --example cretok_parity_fixture -- DIR` writes the seeded tiny
   CLIP-L / CLIP-G weights and schedule.json (the run's settings and the pair indices our
   sampler draws each step, so both loops see the same pairs).
2. This loop runs and writes goldens/cretok_reference.safetensors (token vectors, initial
   vectors, per-step losses, the schedule), read by nodes/tests/cretok_parity.rs.

Run from the repository root: .venv-parity/bin/python nodes/parity/cretok_reference.py
"""

import json
import math
import os
import subprocess
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from build_clip_tokenizer import load_clip_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(HERE, "goldens", "cretok_reference.safetensors")


def clip(hidden, act, path):
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
                         hidden_act=act, projection_dim=hidden, layer_norm_eps=1e-5,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = CLIPTextModelWithProjection(cfg)
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class Encoder:
    """One CLIP encoder with a learnable row for the word."""

    def __init__(self, model, tokenizer, word):
        self.model, self.tokenizer = model, tokenizer
        self.word_id = tokenizer.convert_tokens_to_ids(word + "</w>")
        table = model.text_model.embeddings.token_embedding
        self.token = torch.nn.Parameter(table.weight[self.word_id].detach().clone())
        self.init = self.token.detach().clone()
        self.replace_at = None
        table.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        if self.replace_at is None:
            return output
        out = output.clone()
        out[0, self.replace_at] = self.token
        return out

    def pooled(self, text, with_token):
        ids = self.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        self.replace_at = None
        if with_token:
            self.replace_at = ids[0].tolist().index(self.word_id)
        out = self.model(input_ids=ids).text_embeds
        self.replace_at = None
        return out[0]


def main():
    torch.set_num_threads(1)
    fixture = tempfile.mkdtemp()
    subprocess.run(["cargo", "run", "-q", "-p", "cretok-nodes", "--example",
                    "cretok_parity_fixture", "--", fixture], check=True, cwd=ROOT)
    run = json.load(open(os.path.join(fixture, "schedule.json")))
    word, theta, n, steps = run["word"], run["theta"], run["pairs_per_step"], run["steps"]
    encoders = [
        Encoder(clip(32, "quick_gelu", os.path.join(fixture, "clip_l.safetensors")),
                load_clip_tokenizer("<|endoftext|>"), word),
        Encoder(clip(64, "gelu", os.path.join(fixture, "clip_g.safetensors")),
                load_clip_tokenizer("!"), word),
    ]
    opt = torch.optim.AdamW([e.token for e in encoders], lr=run["lr"], betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)
    adaptive = run["adaptive_template"].replace("<CreTok>", word)
    losses = []
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = run["lr"] * 0.5 * (1.0 + math.cos(math.pi * t / steps))
        opt.zero_grad()
        total = 0.0
        for i in run["schedule"][t]:
            pair = run["train"][i]
            for t1, t2 in ((pair[0], pair[1]), (pair[1], pair[0])):
                restrictive = run["restrictive_template"].replace("{t1}", t1).replace("{t2}", t2)
                for enc in encoders:
                    r = enc.pooled(restrictive, with_token=False)
                    a = enc.pooled(adaptive, with_token=True)
                    cos = F.cosine_similarity(a, r, dim=0)
                    loss = (1.0 - torch.clamp(cos, max=theta)) / (2 * n * len(encoders))
                    loss.backward()
                    total += loss.item()
        opt.step()
        losses.append(total)
        print(f"step {t + 1}/{steps} loss {total:.6f}")
    save_file({
        "clip_l": encoders[0].token.detach().reshape(1, -1).contiguous(),
        "clip_g": encoders[1].token.detach().reshape(1, -1).contiguous(),
        "init_clip_l": encoders[0].init.reshape(1, -1).contiguous(),
        "init_clip_g": encoders[1].init.reshape(1, -1).contiguous(),
        "losses": torch.tensor(losses, dtype=torch.float64),
        "schedule": torch.tensor(run["schedule"], dtype=torch.int64),
    }, OUT, metadata={"settings": json.dumps({k: v for k, v in run.items()
                                              if k not in ("schedule", "train")})})
    print("wrote", OUT)


if __name__ == "__main__":
    main()
