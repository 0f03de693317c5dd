"""Re-extract nodes/model/assets/t5_tokenizer/tokenizer.json.gz from its pinned registry package.

The T5 v1.1 tokenizer (SentencePiece Unigram, 32,100 pieces + 100 `<extra_id_*>`; the
`tokenizer.json` of SD3's `tokenizer_3/`) ships inside the stable-diffusion.cpp sources that
PyPI's `stable-diffusion-cpp-python` 0.4.7 vendors, as the byte array `t5_tokenizer_json_str`
in `vendor/stable-diffusion.cpp/src/tokenizers/vocab/clip_t5.hpp`. This script downloads that
sdist with pip, checks its sha256, extracts the array, checks the JSON's sha256 and writes it
gzip-compressed (deterministic: no name, mtime 0) next to its licence note.
Licences: nodes/model/assets/t5_tokenizer/LICENSE.md.

Run: .venv-parity/bin/python nodes/parity/build_t5_tokenizer.py   (needs pip and PyPI only)
"""

import gzip
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "stable-diffusion-cpp-python==0.4.7"
SDIST = "stable_diffusion_cpp_python-0.4.7.tar.gz"
SDIST_SHA256 = "998d1957260dd5ae4e18a8acc0c14b0a8757aaa9f96515197b6d5bbf46df9282"
MEMBER = "stable_diffusion_cpp_python-0.4.7/vendor/stable-diffusion.cpp/src/tokenizers/vocab/clip_t5.hpp"
ARRAY = "t5_tokenizer_json_str"
JSON_SHA256 = "fe2ebbbbde2985be723e0ce18217853e4020c5e9d35bd07be2c27ab9d3ead57a"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "model", "assets", "t5_tokenizer", "tokenizer.json.gz")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def download(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary", "stable-diffusion-cpp-python", PACKAGE, "-d", dest],
        check=True,
    )
    path = os.path.join(dest, SDIST)
    with open(path, "rb") as f:
        got = sha256(f.read())
    if got != SDIST_SHA256:
        sys.exit(f"{SDIST}: sha256 {got}, expected {SDIST_SHA256}")
    return path


def extract_array(sdist):
    with tarfile.open(sdist) as tar:
        source = tar.extractfile(MEMBER).read().decode("ascii")
    match = re.search(ARRAY + r"\[\]\s*=\s*\{([^}]*)\}", source)
    if match is None:
        sys.exit(f"{MEMBER}: no {ARRAY}")
    return bytes(int(b, 16) for b in match.group(1).replace("\n", "").split(",") if b.strip())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        data = extract_array(download(tmp))
    if sha256(data) != JSON_SHA256:
        sys.exit(f"{ARRAY}: sha256 {sha256(data)}, expected {JSON_SHA256}")
    with open(OUT, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f, mtime=0) as gz:
            gz.write(data)
    print(OUT, os.path.getsize(OUT), "bytes, tokenizer.json sha256", JSON_SHA256)


if __name__ == "__main__":
    main()
