//! Restrictive embeddings `E(P_r)`: computed once per encoder, without gradient, and cached on
//! disk (docs/cretok.md speed-up 2: they never depend on the token).
//!
//! Cache key: SHA-256 of the encoder's fingerprint, the dataset's SHA-256, the restrictive
//! template and the target. The fingerprint hashes the token-embedding table and the outputs of
//! a fixed probe prompt, so it changes with any weight that affects an embedding. Rows are
//! `2 i + order` for pair `i` (order 0: `(t1, t2)`, 1: swapped); stored raw, normalised here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use super::config::Target;
use super::dataset::{hex_sha256, Pair, PairSet};
use super::encoder::EncoderRef;
use super::loss::unit_rows;
use super::prompts::{fill, prompt_ids};
use cretok_support::files::atomic_write;

const PROBE: &str = "a photo of a creative mixture";

/// Unit-length restrictive embeddings of one encoder, on its device.
#[derive(Debug, Clone)]
pub struct Restrictive {
    /// `[2 * train pairs, D]`.
    pub train: Tensor,
    /// `[2 * test pairs, D]`; `None` without test pairs.
    pub test: Option<Tensor>,
}

/// A hex digest identifying an encoder's weights (as far as embeddings can tell).
pub fn fingerprint(enc: &EncoderRef) -> Result<String> {
    let mut h = Sha256::new();
    h.update(enc.id.key().as_bytes());
    let table = enc.model.token_embedding().to_dtype(DType::F32)?;
    h.update(format!("{:?}", table.dims()).as_bytes());
    for row in table.to_vec2::<f32>()? {
        for x in row {
            h.update(x.to_le_bytes());
        }
    }
    let out = enc
        .model
        .forward_ids(
            &Tensor::new(enc.tokenizer.encode(PROBE)?.as_slice(), enc.device())?.unsqueeze(0)?,
            crate::sd3::tokenizer::CLIP_EOS,
        )
        .context("fingerprint probe")?;
    for t in [&out.pooled, &out.penultimate] {
        for x in t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
            h.update(x.to_le_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Restrictive embeddings of `pairs` for `enc`, from `cache_dir` when cached there.
pub fn restrictive(
    enc: &EncoderRef,
    fingerprint: &str,
    pairs: &PairSet,
    template: &str,
    target: Target,
    cache_dir: Option<&Path>,
) -> Result<Restrictive> {
    let key = hex_sha256(
        format!(
            "cretok-restrictive/1\n{fingerprint}\n{}\n{template}\n{}",
            pairs.sha256,
            target.name()
        )
        .as_bytes(),
    );
    let file = cache_dir.map(|d| d.join(format!("restrictive-{key}.safetensors")));
    let cached = match &file {
        Some(f) if f.is_file() => Some(
            candle_core::safetensors::load(f, enc.device())
                .with_context(|| format!("reading cache {}", f.display()))?,
        ),
        _ => None,
    };
    let raw = match cached {
        Some(map) => map,
        None => {
            let mut map = HashMap::new();
            map.insert(
                "train".to_owned(),
                encode(enc, &pairs.train, template, target)?,
            );
            if !pairs.test.is_empty() {
                map.insert(
                    "test".to_owned(),
                    encode(enc, &pairs.test, template, target)?,
                );
            }
            if let Some(f) = &file {
                let bytes = safetensors::serialize(map.iter(), None)?;
                atomic_write(f, &bytes)?;
            }
            map
        }
    };
    let unit = |name: &str| -> Result<Option<Tensor>> {
        raw.get(name)
            .map(|t| Ok(unit_rows(&t.to_dtype(DType::F32)?)?))
            .transpose()
    };
    Ok(Restrictive {
        train: unit("train")?.context("restrictive cache lacks 'train'")?,
        test: unit("test")?,
    })
}

fn encode(enc: &EncoderRef, pairs: &[Pair], template: &str, target: Target) -> Result<Tensor> {
    let prompts = pairs
        .iter()
        .flat_map(|p| [p.ordered(0), p.ordered(1)])
        .map(|(a, b)| {
            prompt_ids(
                enc.tokenizer,
                &fill(template, a, b),
                target == Target::Sequence,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    enc.encode_fixed(&prompts, target)
}
