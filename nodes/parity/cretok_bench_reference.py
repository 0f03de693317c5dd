"""Step time of the paper's plain CreTok loop at the real SD3 CLIP sizes (random weights).

The loop of cretok_reference.py (per pair, both orders, both encoders, restrictive and adaptive
prompts padded to 77, one backward per pair-order) on CLIPTextModelWithProjection with the
CLIP-L/14 (768 x 12, quick_gelu) and OpenCLIP bigG/14 (1280 x 32, gelu) text configs, f32, CPU,
all threads. A full step (n = 16 pairs x 2 orders) takes minutes here, so this times PAIR_ORDERS
pair-orders and scales to 2n (each pair-order costs the same: same prompt lengths, padded to 77).

.venv-parity/bin/python nodes/parity/cretok_bench_reference.py [PAIR_ORDERS]
"""

import sys
import time

import torch
import torch.nn.functional as F
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from build_clip_tokenizer import load_clip_tokenizer

N = 16
THETA = 0.5


def model(hidden, layers, heads, act):
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         max_position_embeddings=77, hidden_act=act, projection_dim=hidden,
                         layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407)
    m = CLIPTextModelWithProjection(cfg).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def main():
    pair_orders = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    t0 = time.time()
    encoders = []
    for (hidden, layers, heads, act), pad in (((768, 12, 12, "quick_gelu"), "<|endoftext|>"),
                                              ((1280, 32, 20, "gelu"), "!")):
        m, tok = model(hidden, layers, heads, act), load_clip_tokenizer(pad)
        word = tok.convert_tokens_to_ids("creative</w>")
        token = torch.nn.Parameter(m.text_model.embeddings.token_embedding.weight[word].clone())
        encoders.append((m, tok, word, token))
    print(f"random CLIP-L + bigG ready in {time.time() - t0:.1f}s", file=sys.stderr)

    def pooled(m, tok, text, word=None, token=None):
        ids = tok(text, padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        embeds = m.text_model.embeddings.token_embedding(ids)
        if token is not None:
            pos = ids[0].tolist().index(word)
            embeds = torch.cat([embeds[:, :pos], token.view(1, 1, -1), embeds[:, pos + 1:]], 1)
        # The token-embedding hook of cretok_reference.py, inlined: run the model from embeds.
        hook = m.text_model.embeddings.token_embedding.register_forward_hook(
            lambda *_: embeds)
        out = m(input_ids=ids).text_embeds[0]
        hook.remove()
        return out

    def pair_order():
        for m, tok, word, token in encoders:
            r = pooled(m, tok, "a cauliflower sheep")
            a = pooled(m, tok, "a photo of a creative mixture", word, token)
            loss = (1 - torch.clamp(F.cosine_similarity(a, r, dim=0), max=THETA)) / (4 * N)
            loss.backward()

    pair_order()  # warm-up
    t = time.time()
    for _ in range(pair_orders):
        pair_order()
    per_pair_order = (time.time() - t) / pair_orders
    step = per_pair_order * 2 * N
    print(f"| paper's plain loop (PyTorch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"timed {pair_orders} pair-orders x {2 * N}) | {step:.1f} | {1 / step:.4f} | "
          f"{step * 10000 / 3600:.0f} h |")


if __name__ == "__main__":
    main()
