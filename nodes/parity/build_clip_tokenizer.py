"""Rebuild nodes/model/assets/clip_tokenizer/tokenizer.json from open_clip's MIT-licensed BPE merges.

Recipe: docs/parity.md, "Tokenizers" (vocab order: 256 byte characters, the same + "</w>", one entry per
merge, then <|startoftext|>=49406 and <|endoftext|>=49407; merges = lines[1:48895]).
The tokenizer is built with transformers' CLIPTokenizer and saved as a `tokenizers` JSON with
padding and truncation switched off: the Rust side pads and truncates explicitly, because each
SD3 CLIP pads with its own id (CLIP-L 49407, CLIP-G 0).

Run: .venv-parity/bin/python nodes/parity/build_clip_tokenizer.py
"""

import gzip
import json
import os
import tempfile

import open_clip
from transformers import CLIPTokenizer
from open_clip.tokenizer import bytes_to_unicode

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "model", "assets", "clip_tokenizer", "tokenizer.json")


def write_hf_files(d, pad_token):
    """Writes vocab.json, merges.txt and tokenizer_config.json for CLIPTokenizer.from_pretrained."""
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(merges) == 48894
    json.dump({t: i for i, t in enumerate(vocab)}, open(os.path.join(d, "vocab.json"), "w"))
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    json.dump(
        {
            "model_max_length": 77,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": pad_token,
        },
        open(os.path.join(d, "tokenizer_config.json"), "w"),
    )


def load_clip_tokenizer(pad_token):
    """The SD3 pipeline's CLIP tokenizer: pad "<|endoftext|>" for CLIP-L, "!" for CLIP-G."""
    d = tempfile.mkdtemp()
    write_hf_files(d, pad_token)
    return CLIPTokenizer.from_pretrained(d)


def main():
    tok = load_clip_tokenizer("<|endoftext|>")
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    data = json.loads(backend.to_str())
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
