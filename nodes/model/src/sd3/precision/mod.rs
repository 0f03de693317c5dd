//! Weights kept in the precision they are stored in (f16, bf16, float8), multiplied in f32.
//!
//! On the CPU, linear weights stay in their file's format in memory; the kernels widen them
//! exactly to f32 while they pack them ([`format`]), so the arithmetic is f32 throughout and a
//! product equals the f32 product of the stored values up to summation order. What stays in
//! which format, and the tolerances against f32 files: docs/sd3.md, "Weight precision".

pub mod format;
pub mod gemm;
pub mod int8;
pub mod product;
pub mod rows;
pub mod streamed;

use candle_core::{DType, Device, Shape};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::Init;

/// The hint with which [`crate::sd3::linear`] asks for a linear weight as stored, without
/// its scale (it reads `scale_weight` itself). It is candle-nn's linear-weight hint (Kaiming
/// normal, fan-in, gain √2) with the gain spelled out, so that a loader can tell the two
/// requests apart while a `VarMap` initialises exactly as for `candle_nn::linear`.
pub const STORED_LINEAR_WEIGHT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::ExplicitGain(std::f64::consts::SQRT_2),
};

/// The hint with which a model asks for a lookup table (token embeddings, position tables) in
/// the precision it is stored in: the model reads a few rows per call and widens them, so the
/// table need not be widened whole at load (T5-XXL's is 32128 × 4096). The values a `VarMap`
/// draws for it are transformers' embedding init (normal, σ = `initializer_range` 0.02), which
/// tells the request apart from candle-nn's `embedding` (standard normal).
pub const STORED_TABLE: Init = Init::Randn {
    mean: 0.,
    stdev: 0.02,
};

/// The hint with which the VAE asks for a 3×3 convolution kernel as stored (f16 or bf16;
/// f32 otherwise): its Winograd transform widens it when the layer first runs. The same
/// value as [`STORED_LINEAR_WEIGHT`], which is candle-nn's convolution-weight hint too, so a
/// `VarMap` initialises exactly as for `candle_nn::conv2d`; the rank tells the requests apart.
pub const STORED_CONV_KERNEL: Init = STORED_LINEAR_WEIGHT;

/// Whether a request is for a convolution kernel that may stay in its stored format
/// ([`STORED_CONV_KERNEL`], 4-d, in f32 on the CPU).
pub fn stored_conv_kernel(init: &Init, shape: &Shape, dtype: DType, device: &Device) -> bool {
    shape.rank() == 4 && dtype == DType::F32 && device.is_cpu() && is_stored_hint(init)
}

/// Whether `init` is [`STORED_LINEAR_WEIGHT`] (= [`STORED_CONV_KERNEL`]).
fn is_stored_hint(init: &Init) -> bool {
    matches!(init, Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanIn,
        non_linearity: NonLinearity::ExplicitGain(g),
    } if *g == std::f64::consts::SQRT_2)
}

/// Whether a request is for a table that may stay in its stored format ([`STORED_TABLE`] in
/// f32 on the CPU).
pub fn stored_table(init: &Init, dtype: DType, device: &Device) -> bool {
    matches!(init, Init::Randn { mean, stdev } if *mean == 0. && *stdev == 0.02)
        && dtype == DType::F32
        && device.is_cpu()
}

/// A token-embedding table `[vocab, dim]` asked for as [`STORED_TABLE`]; its lookups come in
/// the table's dtype.
pub fn stored_embedding(
    vocab: usize,
    dim: usize,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<candle_nn::Embedding> {
    let table = vb.get_with_hints((vocab, dim), "weight", STORED_TABLE)?;
    Ok(candle_nn::Embedding::new(table, dim))
}

/// The precision a loader keeps linear weights in (a loader option, ComfyUI's `weight_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// As the file stores them (f16, bf16, float8, f32).
    #[default]
    Stored,
    /// Quantised at load to int8 blocks with f32 scales ([`int8`]), where the layer computes
    /// through [`crate::sd3::linear`].
    Int8,
}

impl WeightDtype {
    /// The option's names, as the loader nodes offer them.
    pub const NAMES: [&'static str; 2] = ["default", "int8"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::Stored),
            "int8" => Some(Self::Int8),
            _ => None,
        }
    }
}

/// How a loader answers a request for a linear weight in f32 on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearWeight {
    /// [`STORED_LINEAR_WEIGHT`]: the stored format as it is; the scale of a scaled float8
    /// weight is left to the caller.
    Stored,
    /// candle-nn's own linear constructors (`linear`, `linear_no_bias`, `linear_b`): the stored
    /// format where it holds the values by itself; a scaled float8 weight comes scaled, in f16.
    Scaled,
}

/// Whether a request (`init` hint, `shape`, `dtype`, `device`) is for a linear weight that may
/// stay in its stored format: a 2-d weight asked for in f32 on the CPU with one of the two
/// linear-weight hints. Everything else (norms, biases, embeddings, convolutions, other
/// devices and dtypes) is loaded in the dtype asked for.
pub fn linear_weight(
    init: &Init,
    shape: &Shape,
    dtype: DType,
    device: &Device,
) -> Option<LinearWeight> {
    if shape.rank() != 2 || dtype != DType::F32 || !device.is_cpu() {
        return None;
    }
    if is_stored_hint(init) {
        return Some(LinearWeight::Stored);
    }
    let candle_linear = matches!(
        init,
        Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanIn,
            non_linearity: NonLinearity::ReLU,
        }
    );
    candle_linear.then_some(LinearWeight::Scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linear_weight_requests_keep_the_stored_format() {
        let cpu = Device::Cpu;
        let square = Shape::from((4, 4));
        let candle_linear = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        assert_eq!(
            linear_weight(&STORED_LINEAR_WEIGHT, &square, DType::F32, &cpu),
            Some(LinearWeight::Stored)
        );
        assert_eq!(
            linear_weight(&candle_linear, &square, DType::F32, &cpu),
            Some(LinearWeight::Scaled)
        );
        // Convolutions (4-d), other compute dtypes, embeddings and norms load as asked.
        let conv = Shape::from((4, 4, 3, 3));
        assert_eq!(linear_weight(&candle_linear, &conv, DType::F32, &cpu), None);
        assert_eq!(
            linear_weight(&candle_linear, &square, DType::BF16, &cpu),
            None
        );
        let embedding = Init::Randn {
            mean: 0.,
            stdev: 1.,
        };
        assert_eq!(linear_weight(&embedding, &square, DType::F32, &cpu), None);
        assert_eq!(
            linear_weight(&Init::Const(1.), &square, DType::F32, &cpu),
            None
        );
        // Both hints initialise a `VarMap` alike.
        let gain = |init: Init| match init {
            Init::Kaiming { non_linearity, .. } => non_linearity.gain(),
            _ => f64::NAN,
        };
        assert_eq!(gain(STORED_LINEAR_WEIGHT), gain(candle_linear));
    }
}
