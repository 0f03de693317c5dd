//! Putting learned vectors into a prompt (docs/cretok.md, "Inference"): the word `creative` (or a
//! literal `<CreTok>`) becomes the token's vector in each CLIP encoder's input embeddings, mixed
//! with the word's own embedding by `strength`: `(1 - s) e(word) + s v`. T5 sees the plain word.
//! The same machinery serves `embedding:NAME` (textual-inversion files) in prompts.
//!
//! Each CLIP sequence is assembled piece by piece (`[BOS] text… vectors… text… [EOS]`, then
//! SD3's padding); CLIP's pre-tokenizer splits at spaces, so text pieces tokenize as they would
//! inside the whole prompt, and strength 0 reproduces the plain prompt exactly.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::encoder::EncoderId;
use super::prompts::{word_id, PLACEHOLDER};
use super::token_file::CreTokToken;
use crate::sd3::text_encoders::{substitute_row, Sd3TextEncoders};
use crate::sd3::tokenizer::{ClipTokenizer, CLIP_BOS, CLIP_EOS, CLIP_MAX_LEN};
use crate::sd3::types::Conditioning;

/// A part of a prompt.
#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    /// Rows `[k, hidden]` per CLIP encoder that replace `k` tokens; encoders without rows, and
    /// T5, see `fallback` as text.
    Vectors {
        rows: BTreeMap<EncoderId, Tensor>,
        fallback: String,
    },
}

/// Splits `prompt` at each whole-word `word` (ASCII case-insensitive) and each `<CreTok>`;
/// `Ok(None)` marks where the token goes.
pub fn split_at_word<'p>(prompt: &'p str, word: &str) -> Vec<Option<&'p str>> {
    let lower = prompt.to_ascii_lowercase();
    let (word, placeholder) = (word.to_ascii_lowercase(), PLACEHOLDER.to_ascii_lowercase());
    let is_word_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < lower.len() {
        let rest = &lower[i..];
        let hit = if rest.starts_with(&placeholder) {
            Some(placeholder.len())
        } else if rest.starts_with(&word)
            && !is_word_char(lower[..i].chars().next_back())
            && !is_word_char(rest[word.len()..].chars().next())
        {
            Some(word.len())
        } else {
            None
        };
        match hit {
            Some(len) => {
                parts.push(Some(&prompt[start..i]));
                parts.push(None);
                i += len;
                start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    parts.push(Some(&prompt[start..]));
    parts
}

/// The pieces of `prompt` with `token` in place of its word (strength `strength`).
pub fn token_pieces(
    encoders: &Sd3TextEncoders,
    token: &CreTokToken,
    prompt: &str,
    strength: f64,
) -> Result<Vec<Piece>> {
    let word = token.word();
    let mut rows = BTreeMap::new();
    for (&id, v) in &token.vectors {
        let (model, tokenizer) = clip(encoders, id)?;
        let e = model
            .token_embedding()
            .get(word_id(tokenizer, word)? as usize)?
            .to_dtype(DType::F32)?
            .to_device(v.device())?;
        let v = v.narrow(0, 0, 1)?.squeeze(0)?;
        let mixed = ((e * (1.0 - strength))? + (v * strength)?)?;
        rows.insert(id, mixed.unsqueeze(0)?);
    }
    Ok(split_at_word(prompt, word)
        .into_iter()
        .map(|part| match part {
            Some(text) => Piece::Text(text.to_owned()),
            None => Piece::Vectors {
                rows: rows.clone(),
                fallback: word.to_owned(),
            },
        })
        .collect())
}

/// The CLIP `id` and its tokenizer; an error when the CLIP is not loaded.
fn clip(
    encoders: &Sd3TextEncoders,
    id: EncoderId,
) -> Result<(&crate::sd3::clip::ClipTextModel, &ClipTokenizer)> {
    let found = match id {
        EncoderId::ClipL => encoders.clip_l().map(|m| (m, encoders.tokenizer_l())),
        EncoderId::ClipG => encoders.clip_g().map(|m| (m, encoders.tokenizer_g())),
    };
    found.context("CreTok needs CLIP-L and CLIP-G")
}

/// Text tokens without BOS/EOS.
fn text_ids(tokenizer: &ClipTokenizer, text: &str) -> Result<Vec<u32>> {
    let ids = tokenizer.encode_unpadded(text)?;
    Ok(ids[1..ids.len() - 1].to_vec())
}

/// Encodes pieces with SD3's three text encoders.
pub fn encode_pieces(encoders: &Sd3TextEncoders, pieces: &[Piece]) -> Result<Conditioning> {
    let t5_text: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Vectors { fallback, .. } => fallback.as_str(),
        })
        .collect();
    let mut tokens = encoders.tokenize(&t5_text)?;
    let mut subs: BTreeMap<EncoderId, Vec<(usize, Tensor)>> = BTreeMap::new();
    for id in EncoderId::ALL {
        let (model, tokenizer) = clip(encoders, id)?;
        let mut ids = vec![CLIP_BOS];
        let list = subs.entry(id).or_default();
        for piece in pieces {
            match piece {
                Piece::Text(t) => ids.extend(text_ids(tokenizer, t)?),
                Piece::Vectors { rows, fallback } => match rows.get(&id) {
                    Some(r) => {
                        let hidden = model.token_embedding().dim(1)?;
                        if r.dim(1)? != hidden {
                            bail!(
                                "{} vectors are {} wide, the loaded {} is {hidden} wide",
                                id.key(),
                                r.dim(1)?,
                                id.key()
                            )
                        }
                        for k in 0..r.dim(0)? {
                            let row = r.get(k)?.to_dtype(model.dtype())?;
                            list.push((
                                ids.len(),
                                row.to_device(model.token_embedding().device())?,
                            ));
                            // Any non-EOS id: the row is replaced.
                            ids.push(CLIP_BOS);
                        }
                    }
                    None => ids.extend(text_ids(tokenizer, fallback)?),
                },
            }
        }
        ids.truncate(CLIP_MAX_LEN - 1);
        ids.push(CLIP_EOS);
        list.retain(|(pos, _)| *pos < CLIP_MAX_LEN - 1);
        ids.resize(CLIP_MAX_LEN, tokenizer.pad_id());
        match id {
            EncoderId::ClipL => tokens.clip_l = ids,
            EncoderId::ClipG => tokens.clip_g = ids,
        }
    }
    let mut embeds = encoders.embed(&tokens)?;
    for (id, list) in subs {
        let target = match id {
            EncoderId::ClipL => &mut embeds.clip_l,
            EncoderId::ClipG => &mut embeds.clip_g,
        }
        .as_mut()
        .with_context(|| format!("no {} embeddings", id.key()))?;
        for (pos, row) in list {
            *target = substitute_row(target, pos, &row)?;
        }
    }
    encoders.encode_embeds(&embeds)
}

/// `embedding:NAME` references in a prompt: `(text before, name)` pairs and the trailing text.
/// A name runs until whitespace or one of `,()[]{}:;`.
pub fn split_embeddings(prompt: &str) -> (Vec<(&str, &str)>, &str) {
    const TAG: &str = "embedding:";
    let mut found = Vec::new();
    let mut rest = prompt;
    while let Some(at) = rest.find(TAG) {
        let after = &rest[at + TAG.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || ",()[]{}:;".contains(c))
            .unwrap_or(after.len());
        if end == 0 {
            break;
        }
        found.push((&rest[..at], &after[..end]));
        rest = &after[end..];
    }
    (found, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_whole_words_and_placeholders() {
        let parts = split_at_word(
            "A Creative mix, <CreTok> and procreative creative.",
            "creative",
        );
        assert_eq!(
            parts,
            [
                Some("A "),
                None,
                Some(" mix, "),
                None,
                Some(" and procreative "),
                None,
                Some(".")
            ]
        );
        assert_eq!(split_at_word("plain", "creative"), [Some("plain")]);
    }

    #[test]
    fn finds_embedding_references() {
        let (refs, tail) =
            split_embeddings("a embedding:cretok_00001_ mixture, embedding:x.safetensors");
        assert_eq!(
            refs,
            [("a ", "cretok_00001_"), (" mixture, ", "x.safetensors")]
        );
        assert_eq!(tail, "");
        let (refs, tail) = split_embeddings("no refs embedding: here");
        assert!(refs.is_empty());
        assert_eq!(tail, "no refs embedding: here");
    }
}
