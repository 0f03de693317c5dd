//! Checkpoints whose weights stay in their stored precision (docs/sd3.md, "Weight precision"):
//! the tiny checkpoint rewritten as ComfyUI writes f16, bf16 and scaled-float8 files, run
//! against the f32 file it came from, and the bytes a loaded linear weight keeps.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::Module;
use common::max_abs_diff;
use cretok_nodes::sd3::checkpoint::{Naming, Sd3Checkpoint, TensorFiles, Weights};
use cretok_nodes::sd3::linear::{linear, Linear};
use cretok_nodes::sd3::mmdit::MMDiT;
use cretok_nodes::sd3::precision::{int8, WeightDtype};
use cretok_nodes::sd3::rng::SplitMix64;
use cretok_nodes::sd3::tiny::{write_single_file, TinyOptions, TinyVariant};
use cretok_nodes::sd3::tokenizer::T5Tokenizer;

/// Largest |Δ| relative to the largest |value| of the f32 file's outputs, per stored format
/// (the bounds docs/sd3.md states; measured: see there).
const F16_TOLERANCE: f64 = 2e-3;
const BF16_TOLERANCE: f64 = 2e-2;
const FP8_SCALED_TOLERANCE: f64 = 1.5e-1;
const E5M2_TOLERANCE: f64 = 3e-1;
/// A file holding f16 values against the f32 file holding the same values: f32 rounding only.
const SAME_VALUES_TOLERANCE: f64 = 1e-5;
/// The MMDiT's velocity and T5's context with `weight_dtype` int8 against the same file
/// loaded as stored.
const INT8_TOLERANCE: f64 = 3e-2;

/// How the test rewrites the tiny f32 checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    F32,
    F16,
    Bf16,
    /// f16 values in an f32 file: the f32 path on exactly the f16 file's values.
    F16ValuesInF32,
    /// ComfyUI's `scaled_fp8`: linear weights in float8 e4m3fn with a per-tensor
    /// `scale_weight`, everything else in f16.
    Fp8Scaled,
}

/// Names of 2-d weights that are lookup tables, not linear layers (ComfyUI quantises linears
/// only).
fn is_table(name: &str) -> bool {
    ["embedding", "shared.weight", "relative_attention_bias"]
        .iter()
        .any(|p| name.contains(p))
}

fn rewrite(tensors: &HashMap<String, Tensor>, stored: Stored) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let is_linear = t.rank() == 2 && name.ends_with(".weight") && !is_table(name);
        let t = match stored {
            Stored::F32 => t.clone(),
            Stored::F16 => t.to_dtype(DType::F16).unwrap(),
            Stored::Bf16 => t.to_dtype(DType::BF16).unwrap(),
            Stored::F16ValuesInF32 => t
                .to_dtype(DType::F16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
            Stored::Fp8Scaled if is_linear => {
                // ComfyUI: scale = max |w| / 448 (e4m3fn's largest value), w / scale in float8.
                let amax = t
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let scale = amax / 448.0;
                let layer = name.strip_suffix(".weight").unwrap();
                let scale_t = Tensor::new(scale, &Device::Cpu).unwrap();
                out.insert(format!("{layer}.scale_weight"), scale_t);
                (t / f64::from(scale))
                    .unwrap()
                    .to_dtype(DType::F8E4M3)
                    .unwrap()
            }
            Stored::Fp8Scaled => t.to_dtype(DType::F16).unwrap(),
        };
        out.insert(name.clone(), t);
    }
    if stored == Stored::Fp8Scaled {
        // The marker ComfyUI's model detection reads the float8 format from.
        let marker = Tensor::zeros(0, DType::F8E4M3, &Device::Cpu).unwrap();
        out.insert("model.diffusion_model.scaled_fp8".into(), marker);
    }
    out
}

/// The nearest float8 e5m2 (the upper byte of an f16, rounded half to even).
fn e5m2_bits(v: f32) -> u8 {
    let h = half::f16::from_f32(v).to_bits();
    ((h + 0x7f + ((h >> 8) & 1)) >> 8) as u8
}

/// The tiny checkpoint with its linear weights in float8 e5m2 (unscaled), the rest in f16,
/// written with the `safetensors` crate (candle has no e5m2 dtype to write it).
fn tiny_e5m2_file(dir: &Path) -> PathBuf {
    let f32_file = tiny_file(dir, Stored::F32);
    let tensors = candle_core::safetensors::load(&f32_file, &Device::Cpu).unwrap();
    let mut encoded = Vec::new();
    for (name, t) in &tensors {
        let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let is_linear = t.rank() == 2 && name.ends_with(".weight") && !is_table(name);
        let (dtype, bytes): (_, Vec<u8>) = if is_linear {
            let bytes = values.iter().map(|&v| e5m2_bits(v)).collect();
            (safetensors::Dtype::F8_E5M2, bytes)
        } else {
            let halves: Vec<u16> = values
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            (
                safetensors::Dtype::F16,
                halves.iter().flat_map(|h| h.to_le_bytes()).collect(),
            )
        };
        encoded.push((name.clone(), dtype, t.dims().to_vec(), bytes));
    }
    let views = encoded.iter().map(|(name, dtype, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
        (name.clone(), view)
    });
    let path = dir.join("tiny_e5m2.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// The tiny checkpoint (MMDiT, VAE, CLIP-L, CLIP-G, T5) as `stored`, in `dir`.
fn tiny_file(dir: &Path, stored: Stored) -> PathBuf {
    let f32_file = dir.join("tiny_f32.safetensors");
    if !f32_file.exists() {
        let opts = TinyOptions {
            variant: TinyVariant::Sd3Medium,
            seed: 11,
            clips: true,
            t5: true,
            positions: None,
        };
        write_single_file(&f32_file, &opts).unwrap();
    }
    if stored == Stored::F32 {
        return f32_file;
    }
    let path = dir.join(format!("tiny_{stored:?}.safetensors"));
    let tensors = candle_core::safetensors::load(&f32_file, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&rewrite(&tensors, stored), &path).unwrap();
    path
}

fn seeded(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(SplitMix64::new(seed).normals(n), shape, &Device::Cpu).unwrap()
}

/// What the checkpoint computes: the MMDiT's velocity (batch 2, 64 image + 77 text tokens:
/// the many-row kernels) and the text conditioning (CLIP-L, CLIP-G, T5).
fn outputs(file: &Path) -> Vec<(&'static str, Tensor)> {
    outputs_as(file, WeightDtype::Stored)
}

/// [`outputs`], the linear weights of the MMDiT and the text encoders loaded as `weight_dtype`.
fn outputs_as(file: &Path, weight_dtype: WeightDtype) -> Vec<(&'static str, Tensor)> {
    let ckpt = Sd3Checkpoint::open(file, &[]).unwrap();
    let dev = Device::Cpu;
    let mmdit = ckpt.load_mmdit_as(DType::F32, &dev, weight_dtype).unwrap();
    let cfg = &ckpt.mmdit_config;
    let x = seeded(1, &[2, cfg.in_channels, 16, 16]);
    let t = Tensor::new(&[500f32, 750.0], &dev).unwrap();
    let y = seeded(2, &[2, cfg.adm_in_channels]);
    let context = seeded(3, &[2, 77, cfg.context_embed_size]);
    let velocity = mmdit.forward(&x, &t, &y, &context, &[]).unwrap();
    let encoders = ckpt
        .load_text_encoders(DType::F32, &dev, T5Tokenizer::shipped, weight_dtype)
        .unwrap();
    assert!(encoders.has_t5());
    let text = encoders
        .encode("a lettuce mantis on a stored weight")
        .unwrap();
    vec![
        ("velocity", velocity),
        ("context", text.context),
        ("pooled", text.pooled),
    ]
}

/// `max |a − b| / max |b|` for each output.
fn relative_errors(
    a: &[(&'static str, Tensor)],
    b: &[(&'static str, Tensor)],
) -> Vec<(&'static str, f64)> {
    a.iter()
        .zip(b)
        .map(|((name, a), (_, b))| (*name, max_abs_diff(a, b) / common::max_abs(b)))
        .collect()
}

#[test]
fn stored_precisions_run_within_their_tolerance_of_the_f32_file() {
    let dir = tempfile::tempdir().unwrap();
    let reference = outputs(&tiny_file(dir.path(), Stored::F32));
    for (stored, tolerance) in [
        (Stored::F16, F16_TOLERANCE),
        (Stored::Bf16, BF16_TOLERANCE),
        (Stored::Fp8Scaled, FP8_SCALED_TOLERANCE),
    ] {
        let ours = outputs(&tiny_file(dir.path(), stored));
        for (name, err) in relative_errors(&ours, &reference) {
            eprintln!("{stored:?} {name}: relative error {err:.2e}");
            assert!(
                err < tolerance,
                "{stored:?} {name}: {err:.2e} ≥ {tolerance:.0e}"
            );
            assert!(err > 0.0, "{stored:?} {name}: no rounding at all?");
        }
    }
}

/// `weight_dtype` int8 quantises the linear weights of the MMDiT, T5 and the CLIPs (blocks of
/// 32 with a scale) from an f32 and an f16 file: the velocity, the text context (CLIP and T5
/// rows) and the pooled CLIP vector stay within [`INT8_TOLERANCE`] of the same file loaded as
/// stored.
#[test]
fn int8_weights_run_within_their_tolerance_of_the_stored_file() {
    let dir = tempfile::tempdir().unwrap();
    for stored in [Stored::F32, Stored::F16] {
        let file = tiny_file(dir.path(), stored);
        let reference = outputs(&file);
        let ours = outputs_as(&file, WeightDtype::Int8);
        for (name, err) in relative_errors(&ours, &reference) {
            eprintln!("int8 from {stored:?} {name}: relative error {err:.2e}");
            assert!(err < INT8_TOLERANCE, "{stored:?} {name}: {err:.2e}");
            assert!(err > 0.0, "{stored:?} {name}: int8 changed nothing?");
        }
    }
}

/// float8 e5m2, which candle 0.11.1 cannot represent, loads as the f16 holding its values.
#[test]
fn an_e5m2_file_loads_and_runs_within_its_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let reference = outputs(&tiny_file(dir.path(), Stored::F32));
    let ours = outputs(&tiny_e5m2_file(dir.path()));
    for (name, err) in relative_errors(&ours, &reference) {
        eprintln!("e5m2 {name}: relative error {err:.2e}");
        assert!(
            err < E5M2_TOLERANCE,
            "e5m2 {name}: {err:.2e} ≥ {E5M2_TOLERANCE:.0e}"
        );
    }
}

/// The stored-format kernels compute the f32 product of the stored values: an f16 file and an
/// f32 file holding the same values agree to f32 rounding.
#[test]
fn an_f16_file_computes_what_f32_computes_with_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = outputs(&tiny_file(dir.path(), Stored::F16));
    let same_values = outputs(&tiny_file(dir.path(), Stored::F16ValuesInF32));
    for (name, err) in relative_errors(&f16, &same_values) {
        eprintln!("F16 against its values in f32, {name}: relative error {err:.2e}");
        assert!(err < SAME_VALUES_TOLERANCE, "{name}: {err:.2e}");
    }
}

/// A loaded linear weight keeps its file's bytes per weight: 2 for f16, 1 for scaled float8
/// (candle-nn's own linear constructors get the f16 weight as stored, a scaled float8 one in
/// f16), 4 for f32.
#[test]
fn linear_weights_keep_their_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let layer = "joint_blocks.0.x_block.attn.qkv";
    for (stored, bytes, candle_bytes) in [
        (Stored::F32, 4, 4),
        (Stored::F16, 2, 2),
        (Stored::Fp8Scaled, 1, 2),
    ] {
        let path = tiny_file(dir.path(), stored);
        let files = std::sync::Arc::new(TensorFiles::open(std::slice::from_ref(&path)).unwrap());
        let w = Weights::new(files, "model.diffusion_model.", Naming::Original, &path);
        let vb = w.var_builder(DType::F32, &Device::Cpu).pp(layer);
        let (hidden, qkv) = (64, 192);
        let ours = linear(hidden, qkv, vb.clone()).unwrap();
        assert_eq!(ours.weight_bytes(), bytes * hidden * qkv, "{stored:?}");
        assert_eq!(ours.dtype(), DType::F32, "{stored:?} computes in f32");
        let candle = Linear::new(candle_nn::linear(hidden, qkv, vb).unwrap()).unwrap();
        assert_eq!(
            candle.weight_bytes(),
            candle_bytes * hidden * qkv,
            "{stored:?}"
        );
        let x = seeded(4, &[3, 5, hidden]);
        let (a, b) = (ours.forward(&x).unwrap(), candle.forward(&x).unwrap());
        let err = max_abs_diff(&a, &b) / common::max_abs(&b);
        assert!(
            err < 2e-3,
            "{stored:?}: both constructors compute alike: {err:.2e}"
        );
    }
}

/// A loader that counts the bytes of every tensor it hands out, by dtype.
struct Counting {
    inner: Weights,
    bytes: std::sync::Arc<std::sync::Mutex<HashMap<DType, usize>>>,
}

impl candle_nn::var_builder::SimpleBackend for Counting {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, init, dtype, dev)?;
        let bytes = t.elem_count() * t.dtype().size_in_bytes();
        *self.bytes.lock().unwrap().entry(t.dtype()).or_default() += bytes;
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// The whole MMDiT built from an f16 file holds its linear weights and its position table in
/// f16 (2 bytes each, as many as the file has) and only norms, biases and the patch embedding
/// in f32.
#[test]
fn an_mmdit_from_an_f16_file_holds_two_bytes_per_linear_weight() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_file(dir.path(), Stored::F16);
    let prefix = "model.diffusion_model.";
    let file = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let linear_weights: usize = file
        .iter()
        .filter(|(n, t)| n.starts_with(prefix) && t.rank() == 2 && n.ends_with(".weight"))
        .map(|(_, t)| t.elem_count())
        .sum();
    let table = position_table_len(&file, prefix);
    let files = std::sync::Arc::new(TensorFiles::open(std::slice::from_ref(&path)).unwrap());
    let counting = Counting {
        inner: Weights::new(files, prefix, Naming::Original, &path),
        bytes: Default::default(),
    };
    let bytes = counting.bytes.clone();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(counting), DType::F32, Device::Cpu);
    let cfg = Sd3Checkpoint::open(&path, &[]).unwrap().mmdit_config;
    MMDiT::new(&cfg, vb).unwrap();
    let bytes = bytes.lock().unwrap().clone();
    assert_eq!(
        bytes.get(&DType::F16),
        Some(&(2 * (linear_weights + table))),
        "{bytes:?}"
    );
    let f32_elems = bytes[&DType::F32] / 4;
    assert!(
        f32_elems < linear_weights / 2,
        "f32: {f32_elems} values (norms, biases, the patch embedding) against {linear_weights} linear weights"
    );
}

/// Values in the MMDiT's position table (`pos_embed`).
fn position_table_len(file: &HashMap<String, Tensor>, prefix: &str) -> usize {
    file[&format!("{prefix}pos_embed")].elem_count()
}

/// With `weight_dtype` int8 the whole MMDiT holds one byte per linear weight plus one f32 scale
/// per block of 32 inputs (`int8::row_bytes`), for every linear weight of the file, and nothing
/// in f16 but the position table; a loaded layer reports the same through
/// `Linear::weight_bytes`.
#[test]
fn an_int8_mmdit_holds_a_byte_and_a_scale_per_linear_weight() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_file(dir.path(), Stored::F16);
    let prefix = "model.diffusion_model.";
    let file = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let packed_bytes: usize = file
        .iter()
        .filter(|(n, t)| n.starts_with(prefix) && t.rank() == 2 && n.ends_with(".weight"))
        .map(|(_, t)| t.dim(0).unwrap() * int8::row_bytes(t.dim(1).unwrap()))
        .sum();
    let files = std::sync::Arc::new(TensorFiles::open(std::slice::from_ref(&path)).unwrap());
    let int8_weights =
        Weights::new(files, prefix, Naming::Original, &path).with_linear_dtype(WeightDtype::Int8);
    let (hidden, qkv) = (64, 192);
    let vb = int8_weights.var_builder(DType::F32, &Device::Cpu);
    let layer = linear(hidden, qkv, vb.pp("joint_blocks.0.x_block.attn.qkv")).unwrap();
    assert_eq!(layer.weight_bytes(), qkv * (hidden + 4 * hidden / 32));
    let counting = Counting {
        inner: int8_weights,
        bytes: Default::default(),
    };
    let bytes = counting.bytes.clone();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(counting), DType::F32, Device::Cpu);
    let cfg = Sd3Checkpoint::open(&path, &[]).unwrap().mmdit_config;
    MMDiT::new(&cfg, vb).unwrap();
    let bytes = bytes.lock().unwrap().clone();
    assert_eq!(bytes.get(&DType::U8), Some(&packed_bytes), "{bytes:?}");
    let table = position_table_len(&file, prefix);
    assert_eq!(bytes.get(&DType::F16), Some(&(2 * table)), "{bytes:?}");
}
