//! The SD3 tokenizers: CLIP BPE (shared by CLIP-L and CLIP-G) and T5 (Unigram).
//!
//! Reference: diffusers `StableDiffusion3Pipeline._get_clip_prompt_embeds` /
//! `_get_t5_prompt_embeds` (v0.42.1), which call the tokenizers with
//! `padding="max_length", max_length=77 (T5: max_sequence_length), truncation=True`.
//! docs/parity.md, "Tokenizers": CLIP-L pads with `<|endoftext|>` (49407), CLIP-G with `"!"` (id 0),
//! and because `"!"` is CLIP-G's pad *special token*, a `!` in a prompt becomes id 0 there.
//!
//! The CLIP vocabulary and merges ship in `nodes/model/assets/clip_tokenizer/tokenizer.json`, built by
//! `nodes/parity/build_clip_tokenizer.py` from open_clip's MIT-licensed
//! `bpe_simple_vocab_16e6.txt.gz`. T5 v1.1's `tokenizer.json` ships gzip-compressed in
//! `nodes/model/assets/t5_tokenizer/` (Apache-2.0 vocabulary, extracted from a pinned registry package
//! by `nodes/parity/build_t5_tokenizer.py`; its LICENSE.md says which). Padding and truncation
//! happen here, explicitly.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use tokenizers::{AddedToken, Tokenizer};

/// CLIP's context length.
pub const CLIP_MAX_LEN: usize = 77;
/// `<|startoftext|>`.
pub const CLIP_BOS: u32 = 49406;
/// `<|endoftext|>`: CLIP-L's padding too.
pub const CLIP_EOS: u32 = 49407;
/// CLIP-G's padding: the id of `"!"`.
pub const CLIP_G_PAD: u32 = 0;

const CLIP_TOKENIZER_JSON: &[u8] = include_bytes!("../../assets/clip_tokenizer/tokenizer.json");
const T5_TOKENIZER_JSON_GZ: &[u8] = include_bytes!("../../assets/t5_tokenizer/tokenizer.json.gz");
/// Size of the shipped T5 `tokenizer.json`, uncompressed.
const T5_TOKENIZER_JSON_LEN: usize = 2_424_064;

/// A CLIP tokenizer as one of SD3's two CLIP encoders uses it.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    pad_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClipTokenizer {
    /// CLIP-L's tokenizer (diffusers `tokenizer`): pads with `<|endoftext|>`.
    pub fn clip_l() -> Result<Self> {
        Ok(Self {
            inner: shipped_clip()?,
            pad_id: CLIP_EOS,
        })
    }

    /// CLIP-G's tokenizer (diffusers `tokenizer_2`): pads with `"!"`, a special token, so a `!`
    /// in the prompt maps to id 0 instead of `!</w>`.
    pub fn clip_g() -> Result<Self> {
        let mut inner = shipped_clip()?;
        inner
            .add_special_tokens([AddedToken::from("!", true)])
            .map_err(|e| anyhow!("CLIP-G tokenizer: {e}"))?;
        ensure!(
            inner.token_to_id("!") == Some(CLIP_G_PAD),
            "CLIP vocabulary lacks '!' at 0"
        );
        Ok(Self {
            inner,
            pad_id: CLIP_G_PAD,
        })
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a vocabulary entry, e.g. `"creative</w>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// `[BOS, tokens…, EOS]`, truncated to 77 ids keeping the EOS, without padding. With CLIP's
    /// causal mask the states up to the EOS do not depend on the padding (docs/cretok.md speed-up 3).
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("CLIP tokenizer: {e}"))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > CLIP_MAX_LEN {
            ids.truncate(CLIP_MAX_LEN - 1);
            ids.push(CLIP_EOS);
        }
        Ok(ids)
    }

    /// The 77 ids the SD3 pipeline feeds this encoder.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_unpadded(text)?;
        ids.resize(CLIP_MAX_LEN, self.pad_id);
        Ok(ids)
    }
}

fn shipped_clip() -> Result<Tokenizer> {
    Tokenizer::from_bytes(CLIP_TOKENIZER_JSON).map_err(|e| anyhow!("shipped CLIP tokenizer: {e}"))
}

/// A T5 tokenizer: the shipped T5 v1.1 one or a `tokenizer.json` (diffusers `tokenizer_3/`);
/// SD3 pads with id 0 and keeps the `</s>` (id 1) the tokenizer's post-processor appends.
#[derive(Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer").finish_non_exhaustive()
    }
}

/// T5's `<pad>`.
pub const T5_PAD: u32 = 0;
/// T5's `</s>`.
pub const T5_EOS: u32 = 1;

impl T5Tokenizer {
    /// The T5 v1.1 tokenizer SD3 and SD3.5 use (google/t5-v1_1-xxl, SD3's `tokenizer_3/`),
    /// shipped with the binary.
    pub fn shipped() -> Result<Self> {
        let mut json = Vec::with_capacity(T5_TOKENIZER_JSON_LEN);
        flate2::read::GzDecoder::new(T5_TOKENIZER_JSON_GZ)
            .read_to_end(&mut json)
            .context("decompressing the shipped T5 tokenizer")?;
        let inner =
            Tokenizer::from_bytes(&json).map_err(|e| anyhow!("shipped T5 tokenizer: {e}"))?;
        Self::new(inner)
    }

    /// Reads a `tokenizer.json`, ignoring any padding/truncation state saved in it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading T5 tokenizer {}", path.display()))?;
        Self::new(inner)
    }

    fn new(mut inner: Tokenizer) -> Result<Self> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!("T5 tokenizer: {e}"))?;
        Ok(Self { inner })
    }

    /// Ids truncated to `max_len` (keeping the EOS) and padded with 0 to `max_len`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        ensure!(max_len >= 1, "T5 length must be at least 1");
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("T5 tokenizer: {e}"))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > max_len {
            let ends_with_eos = ids.last() == Some(&T5_EOS);
            ids.truncate(max_len);
            if ends_with_eos {
                ids[max_len - 1] = T5_EOS;
            }
        }
        ids.resize(max_len, T5_PAD);
        Ok(ids)
    }
}
