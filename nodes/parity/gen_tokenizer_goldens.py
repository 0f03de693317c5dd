"""Golden token ids for the SD3 tokenizers, as diffusers' StableDiffusion3Pipeline makes them.

Writes
- goldens/clip_tokenizer_ids.json: >= 200 prompts with the CLIP-L (pad 49407) and CLIP-G
  (pad "!" = id 0) ids of `tokenizer(prompt, padding="max_length", max_length=77,
  truncation=True)`, stored up to the first EOS; the script asserts that the rest is padding.
- goldens/t5_synthetic/tokenizer.json + goldens/t5_tokenizer_ids.json: a synthetic T5 tokenizer
  (Unigram over a small vocabulary, see docs/parity.md, "Tokenizers"; no real T5 SentencePiece
  model exists offline) and its ids at max_length 16 and 256.
- goldens/t5_xxl_tokenizer_ids.json: the same corpus plus T5-specific prompts (>= 200) with the
  ids of transformers' `T5TokenizerFast` (google/t5-v1_1-xxl, as SD3's `tokenizer_3/`) built from
  the shipped nodes/model/assets/t5_tokenizer/tokenizer.json.gz (see build_t5_tokenizer.py; the hub is
  not reachable offline), at max_length 77 and 256, stored up to the EOS.

Run: .venv-parity/bin/python nodes/parity/gen_tokenizer_goldens.py
"""

import gzip
import json
import os
import random
import tempfile

from transformers import T5Tokenizer, T5TokenizerFast

from build_clip_tokenizer import load_clip_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDENS = os.path.join(HERE, "goldens")
SHIPPED_T5 = os.path.join(HERE, "..", "model", "assets", "t5_tokenizer", "tokenizer.json.gz")

HAND_WRITTEN = [
    "",
    " ",
    "a photo of a creative mixture",
    "a lettuce mantis",
    "hello world!",
    "Hello, World!!!",
    "a photo of a <CreTok> mixture",
    "a <CreTok> mixture that resembles a lettuce and a mantis",
    "<cretok> <CRETOK> < CreTok >",
    "a photo of a <|startoftext|> cat <|endoftext|> dog",
    "an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
    "A   lot\tof\nwhitespace\r\n here",
    "don't, can't, we're, they've, I'm, we'll, he'd, it's",
    "DON'T SHOUT: IT'S LOUD",
    "café naïve résumé jalapeño façade",
    "Ünïcödé ÅÄÖ ßtraße",
    "東京タワー の 夜景",
    "一只可爱的猫",
    "고양이 사진",
    "кошка на крыше",
    "γάτα στη στέγη",
    "قطة على السطح",
    "🐱 cat emoji 🎨✨",
    "a cat 😺😺😺 and a dog 🐶",
    "numbers 123 4567 3.14159 1,000,000",
    "2024-01-01T12:00:00Z",
    "email@example.com http://example.com/path?q=1&r=2",
    "(masterpiece:1.2), [best quality], {ultra detailed}",
    "weird ~`@#$%^&*()_+-=[]{}|;':\",./<>? punctuation",
    "!!!",
    "!",
    "a!b!c",
    "end with exclamation!",
    "...ellipsis... and -- dashes — en–dash",
    "quotes “smart” ‘single’ «guillemets»",
    "tab\tseparated\tvalues",
    "ALLCAPS PROMPT OF A RED FOX",
    "MiXeD CaSe PrOmPt",
    "a" * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 300,
]

WORDS = (
    "a an the photo painting sketch render of with and in on under over creative mixture lettuce "
    "mantis cauliflower sheep giraffe peacock bee frog butterfly chicken fox teapot cactus owl "
    "octopus robot castle forest river mountain sunset neon cyberpunk watercolor oil pastel "
    "portrait landscape detailed intricate cinematic lighting golden hour bokeh 35mm, . ! ? ; : "
    "'s don't 3d 4k 8k hdr"
).split()


def corpus():
    rng = random.Random(20250601)
    prompts = list(HAND_WRITTEN)
    for n in range(180):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 90])
        words = [rng.choice(WORDS) for _ in range(length)]
        if n % 7 == 0:
            words.insert(rng.randrange(len(words) + 1), "<CreTok>")
        if n % 11 == 0:
            words = [w.upper() for w in words]
        sep = " " if n % 5 else "  "
        prompts.append(sep.join(words))
    return prompts


def strip_padding(ids, eos, pad):
    """The ids before the padding (the padding id may equal EOS, as for CLIP-L)."""
    end = len(ids)
    while end > 0 and ids[end - 1] == pad:
        end -= 1
    if pad == eos:
        end += 1
    assert ids[end - 1] == eos, ids
    return ids[:end]


def clip_goldens():
    tok_l = load_clip_tokenizer("<|endoftext|>")
    tok_g = load_clip_tokenizer("!")
    entries = []
    for prompt in corpus():
        enc = {}
        for name, tok, pad in [("l", tok_l, 49407), ("g", tok_g, 0)]:
            ids = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
            assert len(ids) == 77
            enc[name] = strip_padding(ids, 49407, pad)
        entries.append({"prompt": prompt, **enc})
    assert len(entries) >= 200
    with open(os.path.join(GOLDENS, "clip_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"max_length": 77, "pad_l": 49407, "pad_g": 0, "prompts": entries}, f,
                  ensure_ascii=False, indent=0)


def t5_goldens():
    pieces = ["<pad>", "</s>", "<unk>"]
    pieces += ["\u2581" + w for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    pieces += ["\u2581", "ing", "ed", "er", "s"]
    vocab = [(p, 0.0 if i < 3 else -float(i) / 10) for i, p in enumerate(dict.fromkeys(pieces))]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    d = os.path.join(GOLDENS, "t5_synthetic")
    os.makedirs(d, exist_ok=True)
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(backend.to_str())
    prompts = corpus()[:60]
    entries = []
    for prompt in prompts:
        row = {"prompt": prompt}
        for n in (16, 256):
            ids = tok(prompt, padding="max_length", max_length=n, truncation=True).input_ids
            assert len(ids) == n
            row[str(n)] = strip_padding(ids, 1, 0)
        entries.append(row)
    with open(os.path.join(GOLDENS, "t5_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"pad": 0, "eos": 1, "prompts": entries}, f, ensure_ascii=False, indent=0)


T5_SPECIFIC = [
    "<extra_id_0> fills <extra_id_99> the gaps",
    "</s> <pad> <unk> as text",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and ①②③ circled",
    "combining e\u0301 vs precomposed é",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    "   leading and trailing   ",
    "\n\n\t",
    "ﬁ ligature ﬀ",
    "Zürich, São Paulo, Kraków, Reykjavík",
    "a, b; c: d! e? f. g- h_ i/ j\\ k| l",
    "\"double\" 'single' `back`",
    "🇯🇵 flag 👩‍👩‍👧 family",
    "x" * 2000,
    " ".join(["word"] * 400),
]


def t5_xxl_goldens():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tokenizer.json")
        with open(path, "wb") as f:
            f.write(gzip.open(SHIPPED_T5).read())
        tok = T5TokenizerFast(tokenizer_file=path, extra_ids=100)
    entries = []
    for prompt in corpus() + T5_SPECIFIC:
        row = {"prompt": prompt}
        for n in (77, 256):
            ids = tok(prompt, padding="max_length", max_length=n, truncation=True).input_ids
            assert len(ids) == n
            row[str(n)] = strip_padding(ids, 1, 0)
        entries.append(row)
    assert len(entries) >= 200
    with open(os.path.join(GOLDENS, "t5_xxl_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"pad": 0, "eos": 1, "prompts": entries}, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    os.makedirs(GOLDENS, exist_ok=True)
    clip_goldens()
    t5_goldens()
    t5_xxl_goldens()
