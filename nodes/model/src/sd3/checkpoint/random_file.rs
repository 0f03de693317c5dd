//! Random-weight safetensors files of any size, written by streaming: the header first, then
//! each tensor's bytes in chunks, so a 16 GB checkpoint never sits in memory. The file appears
//! under its name only when complete (temporary file + rename).
//!
//! Format: safetensors (an 8-byte little-endian header length, a JSON header padded with
//! spaces to 8 bytes, then the tensors back to back in header order). Values are half-precision
//! numbers with a random sign and mantissa and a magnitude in [2⁻⁸, 2⁻⁶): finite, small enough
//! that a forward pass through the real depth stays finite, never denormal.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::layouts::TensorTable;
use crate::sd3::rng::{fnv1a, SplitMix64};

/// The stored precision of the generated weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfDType {
    F16,
    BF16,
}

impl HalfDType {
    /// The safetensors dtype name.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::BF16 => "BF16",
        }
    }

    /// A value with the sign and mantissa bits of `r` and exponent −8 or −7.
    fn value_bits(self, r: u16) -> u16 {
        let (mantissa_bits, bias) = match self {
            Self::F16 => (10, 15),
            Self::BF16 => (7, 127),
        };
        let mantissa = r & ((1 << mantissa_bits) - 1);
        let exponent = bias - 8 + ((r >> mantissa_bits) & 1);
        (r & 0x8000) | (exponent << mantissa_bits) | mantissa
    }
}

const BYTES_PER_VALUE: u64 = 2;
/// Values generated and written at a time (2 MiB).
const CHUNK_VALUES: usize = 1 << 20;

/// Bytes of tensor data `table` takes.
pub fn data_len(table: &TensorTable) -> u64 {
    table
        .values()
        .map(|shape| shape.iter().product::<usize>() as u64 * BYTES_PER_VALUE)
        .sum()
}

/// The safetensors header (length prefix included) of `table` stored in `dtype`.
pub fn header(table: &TensorTable, dtype: HalfDType, metadata: &[(&str, String)]) -> Vec<u8> {
    let mut entries = Map::new();
    let metadata: Map<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    entries.insert("__metadata__".into(), Value::Object(metadata));
    let mut offset = 0u64;
    for (name, shape) in table {
        let end = offset + shape.iter().product::<usize>() as u64 * BYTES_PER_VALUE;
        entries.insert(
            name.clone(),
            json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut text = Value::Object(entries).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out
}

/// Writes `table` with random values to `path`, calling `progress` with the bytes written so
/// far after each chunk.
pub fn write_random(
    path: &Path,
    table: &TensorTable,
    dtype: HalfDType,
    seed: u64,
    metadata: &[(&str, String)],
    mut progress: impl FnMut(u64),
) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder", path.display());
    }
    // A mistyped folder must not become a new one holding gigabytes.
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        bail!("{}: its folder does not exist", path.display());
    }
    cretok_support::files::atomic_write_with(path, |file| {
        let mut out = BufWriter::with_capacity(8 << 20, file);
        let header = header(table, dtype, metadata);
        out.write_all(&header)?;
        let mut written = header.len() as u64;
        let mut chunk = Vec::with_capacity(CHUNK_VALUES * BYTES_PER_VALUE as usize);
        for (name, shape) in table {
            let mut rng = SplitMix64::new(seed ^ fnv1a(name));
            let mut left: usize = shape.iter().product();
            while left > 0 {
                let n = left.min(CHUNK_VALUES);
                fill_chunk(&mut chunk, n, dtype, &mut rng);
                out.write_all(&chunk)?;
                written += chunk.len() as u64;
                left -= n;
                progress(written);
            }
        }
        out.flush()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// `n` random values, little-endian, into `chunk`.
fn fill_chunk(chunk: &mut Vec<u8>, n: usize, dtype: HalfDType, rng: &mut SplitMix64) {
    chunk.clear();
    while chunk.len() < n * 2 {
        let draw = rng.next_u64().to_le_bytes();
        for pair in draw.chunks_exact(2) {
            if chunk.len() == n * 2 {
                break;
            }
            let value = dtype.value_bits(u16::from_le_bytes([pair[0], pair[1]]));
            chunk.extend_from_slice(&value.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_finite_and_small_in_both_dtypes() {
        for r in [
            0u16, 1, 0x3ff, 0x400, 0x7fff, 0x8000, 0xffff, 0x1234, 0xabcd,
        ] {
            let f16 = half::f16::from_bits(HalfDType::F16.value_bits(r)).to_f32();
            let bf16 = half::bf16::from_bits(HalfDType::BF16.value_bits(r)).to_f32();
            for v in [f16, bf16] {
                assert!(
                    v.is_normal() && (1.0 / 256.0..1.0 / 64.0).contains(&v.abs()),
                    "{r:#x}: {v}"
                );
            }
        }
    }

    #[test]
    fn header_is_aligned_and_offsets_are_contiguous() {
        let table: TensorTable = [("a".to_string(), vec![3, 5]), ("b".to_string(), vec![7])]
            .into_iter()
            .collect();
        let bytes = header(&table, HalfDType::BF16, &[("seed", "1".into())]);
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 8);
        assert_eq!(len % 8, 0);
        let json: Value = serde_json::from_slice(&bytes[8..]).unwrap();
        assert_eq!(json["a"]["data_offsets"], json!([0, 30]));
        assert_eq!(json["b"]["data_offsets"], json!([30, 44]));
        assert_eq!(json["b"]["dtype"], "BF16");
        assert_eq!(data_len(&table), 44);
    }
}
