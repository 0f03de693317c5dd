//! A 2-D convolution whose CPU f32 path is an im2col GEMM done in row bands.
//!
//! candle 0.11's CPU `conv2d` gathers every patch element one at a time into
//! transposed 512-pixel tiles and runs one small parallel GEMM per tile; on
//! SD3's VAE that made a decode ~4× slower than torch. Here each band of
//! output rows copies its input rows (whole row segments, not single
//! elements) into a per-thread column buffer `[c_in·k_h·k_w, band pixels]`
//! that is reused from band to band, and one single-threaded `gemm` call per
//! band writes straight into the output; bands run in parallel. A 1×1
//! convolution reads the input itself as the column matrix. 3×3 stride-1
//! padding-1 convolutions take Winograd's F(2×2, 3×3) instead ([`winograd`]).
//! Other devices and dtypes use candle's `conv2d`.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::winograd::{self, WinogradConv};
use crate::sd3::cpu_storage::f32_values;
use crate::sd3::precision;
use crate::sd3::raw::gemm::{gemm, Mat};
use crate::sd3::raw::shared_out::{SharedOut, Tile};

/// Output pixels per band. gemm's single-thread speed on the VAE's shapes
/// measured flat from 256 to 4096 columns; 512 keeps a band's column buffer
/// (9.4 MB at 512 channels) in L3 and splits even the 32×32 levels into two
/// bands per thread.
const BAND_PIXELS: usize = 512;

/// A convolution with bias, square kernel, symmetric zero padding, no
/// dilation or groups (all the VAE needs). Weights `[c_out, c_in, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    kernel: Kernel,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

/// A layer's weights in the form its forward pass reads.
#[derive(Debug, Clone)]
enum Kernel {
    /// `[c_out, c_in, k, k]` in the layer's dtype: the banded im2col on CPU f32, candle's
    /// `conv2d` elsewhere.
    Direct(Tensor),
    /// A 3×3 stride-1 padding-1 CPU f32 layer: its kernel as loaded (f16, bf16 or f32) and,
    /// from the first forward pass on, its Winograd transform
    /// ([`winograd::transform_kernel`]). Built on first use, the transform costs nothing to
    /// a load and nothing to a layer that never runs (the encoder, for text to image).
    Winograd {
        stored: Tensor,
        transformed: OnceLock<Tensor>,
    },
}

impl Conv2d {
    /// A layer computing in `bias`'s dtype; `weight` may be f16 or bf16 where the layer
    /// takes Winograd's path (see [`Conv2d::load`]), and is otherwise converted.
    pub fn new(weight: Tensor, bias: Tensor, padding: usize, stride: usize) -> Result<Self> {
        let winograd_shaped =
            weight.dims().get(2..) == Some(&[3, 3]) && (padding, stride) == (1, 1);
        // Not for a weight that is a view (a broadcast placeholder when only shapes are laid
        // out): transforming would materialise it.
        let on_cpu_f32 = weight.device().is_cpu()
            && bias.dtype() == DType::F32
            && matches!(weight.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && weight.is_contiguous();
        let kernel = if winograd_shaped && on_cpu_f32 {
            Kernel::Winograd {
                stored: weight,
                transformed: OnceLock::new(),
            }
        } else {
            Kernel::Direct(weight.to_dtype(bias.dtype())?)
        };
        Ok(Self {
            kernel,
            bias,
            padding,
            stride,
        })
    }

    /// Loads `weight` and `bias` under candle-nn's names and, for fresh variables, with
    /// `candle_nn::conv2d`'s initialisation. A 3×3 kernel is asked for as stored
    /// ([`precision::STORED_CONV_KERNEL`]).
    pub fn load(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hint = if kernel == 3 {
            precision::STORED_CONV_KERNEL
        } else {
            candle_nn::init::DEFAULT_KAIMING_NORMAL
        };
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", hint)?;
        let bound = 1. / (c_in as f64).sqrt();
        let bias = vb.get_with_hints(
            c_out,
            "bias",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Self::new(weight, bias, padding, stride)
    }

    pub fn dtype(&self) -> DType {
        self.bias.dtype()
    }

    pub fn device(&self) -> &candle_core::Device {
        self.bias.device()
    }

    /// The Winograd transform of `stored`, made by the first caller.
    fn transformed<'a>(stored: &Tensor, transformed: &'a OnceLock<Tensor>) -> Result<&'a Tensor> {
        if let Some(u) = transformed.get() {
            return Ok(u);
        }
        let u = winograd::transform_kernel(stored)?;
        Ok(transformed.get_or_init(|| u))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = match &self.kernel {
            Kernel::Winograd {
                stored,
                transformed,
            } => {
                let u = Self::transformed(stored, transformed)?;
                // A CPU f32 layer: inputs of another dtype are computed in f32 too.
                let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op3_no_bwd(
                    u,
                    &self.bias.contiguous()?,
                    &WinogradConv,
                )?;
                return y.to_dtype(x.dtype());
            }
            Kernel::Direct(weight) => weight,
        };
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = BandedConv {
                padding: self.padding,
                stride: self.stride,
            };
            return x.contiguous()?.apply_op3_no_bwd(
                &weight.contiguous()?,
                &self.bias.contiguous()?,
                &op,
            );
        }
        let y = x.conv2d(weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

struct BandedConv {
    padding: usize,
    stride: usize,
}

impl CustomOp3 for BandedConv {
    fn name(&self) -> &'static str {
        "banded-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_l: &Layout,
        weight: &CpuStorage,
        weight_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, h, w) = input_l.shape().dims4()?;
        let (c_out, weight_c_in, k_h, k_w) = weight_l.shape().dims4()?;
        if weight_c_in != c_in || bias_l.shape().dims() != [c_out] {
            candle_core::bail!(
                "conv2d: input {:?}, weight {:?} and bias {:?} do not fit together",
                input_l.shape(),
                weight_l.shape(),
                bias_l.shape()
            );
        }
        if h + 2 * self.padding < k_h || w + 2 * self.padding < k_w || self.stride == 0 {
            candle_core::bail!("conv2d: kernel {k_h}×{k_w} does not fit input {h}×{w}");
        }
        let geometry = Geometry {
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride: self.stride,
            padding: self.padding,
        };
        let out = geometry.run(
            batch,
            f32_values(self.name(), input, input_l)?,
            f32_values(self.name(), weight, weight_l)?,
            f32_values(self.name(), bias, bias_l)?,
        );
        let shape = Shape::from((batch, c_out, geometry.out_h(), geometry.out_w()));
        Ok((CpuStorage::F32(out), shape))
    }
}

/// Shapes of one convolution (per image).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k_h: usize,
    k_w: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.k_h) / self.stride + 1
    }

    fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.k_w) / self.stride + 1
    }

    /// Rows of the column matrix: the GEMM's depth.
    fn depth(&self) -> usize {
        self.c_in * self.k_h * self.k_w
    }

    /// A 1×1, stride-1, unpadded convolution reads its input as the column matrix.
    fn is_pointwise(&self) -> bool {
        self.k_h == 1 && self.k_w == 1 && self.stride == 1 && self.padding == 0
    }

    fn run(&self, batch: usize, input: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let (out_h, out_w) = (self.out_h(), self.out_w());
        let rows_per_band = (BAND_PIXELS / out_w).clamp(1, out_h);
        let bands = out_h.div_ceil(rows_per_band);
        let mut out = vec![0f32; batch * self.c_out * out_h * out_w];
        let band_rows = |band: usize| band * rows_per_band..((band + 1) * rows_per_band).min(out_h);
        // The output as `[batch · c_out, out_h · out_w]`: a task's tile is one image's
        // channels × one band's pixels.
        let pixels = (0..bands)
            .map(|band| {
                let rows = band_rows(band);
                rows.start * out_w..rows.end * out_w
            })
            .collect();
        let tiles = SharedOut::image_bands(&mut out, (batch, self.c_out, out_h * out_w), pixels);
        tiles
            .into_par_iter()
            .for_each_init(Vec::new, |columns: &mut Vec<f32>, mut tile| {
                let (image, band) = tile.index();
                let input =
                    &input[image * self.c_in * self.h * self.w..][..self.c_in * self.h * self.w];
                self.band(input, weight, bias, band_rows(band), columns, &mut tile);
            });
        out
    }

    /// Output rows `rows` of one image, all channels (the tile `out`).
    fn band(
        &self,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        rows: std::ops::Range<usize>,
        columns: &mut Vec<f32>,
        out: &mut Tile<'_>,
    ) {
        let pixels = rows.len() * self.out_w();
        let (lhs, lhs_stride) = if self.is_pointwise() {
            (&input[rows.start * self.w..], self.h * self.w)
        } else {
            if columns.len() < self.depth() * pixels {
                columns.resize(self.depth() * pixels, 0.0);
            }
            self.gather(input, rows, &mut columns[..self.depth() * pixels]);
            (&columns[..], pixels)
        };
        band_gemm(out, self.depth(), (lhs, lhs_stride), weight);
        add_bias(out, bias);
    }

    /// im2col of output rows `rows`: row `(ci·k_h + ky)·k_w + kx` of `columns`
    /// holds `input[ci, oy·s + ky − p, ox·s + kx − p]` (0 outside) for every
    /// output pixel `(oy, ox)` of the band, pixel-major.
    fn gather(&self, input: &[f32], rows: std::ops::Range<usize>, columns: &mut [f32]) {
        let (out_w, pixels) = (self.out_w(), rows.len() * self.out_w());
        let taps = input.chunks_exact(self.h * self.w).flat_map(|plane| {
            (0..self.k_h).flat_map(move |ky| (0..self.k_w).map(move |kx| (plane, ky, kx)))
        });
        for ((plane, ky, kx), column_row) in taps.zip(columns.chunks_exact_mut(pixels)) {
            let (lo, hi) = self.valid_columns(kx);
            for (oy, segment) in rows.clone().zip(column_row.chunks_exact_mut(out_w)) {
                let iy = (oy * self.stride + ky).checked_sub(self.padding);
                match iy.filter(|&iy| iy < self.h) {
                    Some(iy) => self.copy_row(&plane[iy * self.w..][..self.w], kx, lo, hi, segment),
                    None => segment.fill(0.0),
                }
            }
        }
    }

    /// Output columns `lo..hi` read inside the input for kernel column `kx`.
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        let lo = p.saturating_sub(kx).div_ceil(s).min(self.out_w());
        let hi = match (self.w + p).checked_sub(kx + 1) {
            Some(last) => (last / s + 1).min(self.out_w()),
            None => 0,
        };
        (lo, hi.max(lo))
    }

    fn copy_row(&self, src: &[f32], kx: usize, lo: usize, hi: usize, segment: &mut [f32]) {
        segment[..lo].fill(0.0);
        segment[hi..].fill(0.0);
        let first = lo * self.stride + kx - self.padding;
        if self.stride == 1 {
            segment[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
        } else {
            for (dst, src) in segment[lo..hi]
                .iter_mut()
                .zip(src[first..].iter().step_by(self.stride))
            {
                *dst = *src;
            }
        }
    }
}

/// `out[c, i] = Σ_k lhs[k·lhs_stride + i] · weight[c·depth + k]` for the tile's
/// channels `c` and pixels `i`.
fn band_gemm(out: &mut Tile<'_>, depth: usize, (lhs, lhs_stride): (&[f32], usize), weight: &[f32]) {
    let (c_out, pixels) = (out.rows().len(), out.cols().len());
    gemm(
        out.mat_mut_t(),
        Mat::new(lhs, 0, (pixels, depth), (1, lhs_stride)),
        Mat::new(weight, 0, (depth, c_out), (1, depth)),
        1.0,
    );
}

fn add_bias(out: &mut Tile<'_>, bias: &[f32]) {
    for (c, b) in bias.iter().enumerate() {
        out.row_mut(c).iter_mut().for_each(|x| *x += b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::sampling::seeded_noise;
    use candle_core::Device;

    /// Our convolution against candle's on seeded inputs. Both sum the same
    /// products in different orders (f32): |Δ| stays near 1e-6 · √depth.
    fn check(
        (batch, c_in, h, w): (usize, usize, usize, usize),
        (c_out, k): (usize, usize),
        padding: usize,
        stride: usize,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_noise(1, &[batch, c_in, h, w], &dev)?;
        let weight = (seeded_noise(2, &[c_out, c_in, k, k], &dev)? * 0.1)?;
        let bias = seeded_noise(3, &[c_out], &dev)?;
        let conv = Conv2d::new(weight.clone(), bias.clone(), padding, stride)?;
        let winograd = matches!(conv.kernel, Kernel::Winograd { .. });
        assert_eq!(winograd, (k, padding, stride) == (3, 1, 1));
        let ours = conv.forward(&x)?;
        let reference = x
            .conv2d(&weight, padding, stride, 1, 1)?
            .broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?;
        assert_eq!(ours.dims(), reference.dims());
        let diff = (ours - reference)?.abs()?.flatten_all()?.max(0)?;
        let diff = diff.to_scalar::<f32>()?;
        assert!(
            diff < 1e-5,
            "max |Δ| {diff} for {c_in}->{c_out} k{k} p{padding} s{stride}"
        );
        Ok(())
    }

    #[test]
    fn matches_candle_3x3_stride_1() -> Result<()> {
        check((2, 5, 7, 9), (6, 3), 1, 1)?;
        check((1, 16, 33, 20), (32, 3), 1, 1)?;
        check((1, 3, 40, 31), (8, 3), 1, 1)?;
        // More kernel pairs than one task of the kernel transform takes.
        check((1, 70, 6, 5), (65, 3), 1, 1)
    }

    #[test]
    fn a_half_precision_3x3_kernel_computes_in_f32_as_its_widened_values() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_noise(1, &[1, 6, 9, 7], &dev)?;
        let bias = seeded_noise(3, &[5], &dev)?;
        for dtype in [DType::F16, DType::BF16] {
            let weight = (seeded_noise(2, &[5, 6, 3, 3], &dev)? * 0.1)?.to_dtype(dtype)?;
            let conv = Conv2d::new(weight.clone(), bias.clone(), 1, 1)?;
            assert!(matches!(conv.kernel, Kernel::Winograd { .. }));
            assert_eq!(conv.dtype(), DType::F32);
            let widened = Conv2d::new(weight.to_dtype(DType::F32)?, bias.clone(), 1, 1)?;
            let (ours, reference) = (conv.forward(&x)?, widened.forward(&x)?);
            assert_eq!(ours.dtype(), DType::F32);
            let diff = (ours - reference)?.abs()?.flatten_all()?.max(0)?;
            assert_eq!(diff.to_scalar::<f32>()?, 0.0, "{dtype:?}");
        }
        Ok(())
    }

    #[test]
    fn matches_candle_strided_and_unpadded() -> Result<()> {
        check((2, 4, 9, 9), (5, 3), 0, 2)?;
        check((1, 8, 17, 12), (8, 3), 0, 2)?;
        check((1, 3, 10, 11), (4, 3), 1, 2)?;
        check((1, 4, 6, 8), (3, 3), 0, 1)
    }

    #[test]
    fn matches_candle_1x1_and_other_kernels() -> Result<()> {
        check((2, 12, 5, 7), (9, 1), 0, 1)?;
        check((1, 6, 8, 8), (4, 1), 1, 1)?;
        check((1, 4, 11, 13), (5, 5), 2, 1)?;
        check((1, 2, 4, 4), (3, 2), 0, 2)
    }

    #[test]
    fn bands_cover_tall_images() -> Result<()> {
        // More output pixels than one band, with a short last band: the
        // banded im2col path (padding 0) and the Winograd one (padding 1).
        check((1, 3, 2 * BAND_PIXELS / 8 + 3, 8), (4, 3), 0, 1)?;
        check((1, 3, 2 * BAND_PIXELS / 8 + 3, 8), (4, 3), 1, 1)
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_noise(1, &[1, 8, 40, 24], &dev)?;
        for (k, padding) in [(3, 1), (3, 0)] {
            let weight = seeded_noise(2, &[16, 8, k, k], &dev)?;
            let conv = Conv2d::new(weight, seeded_noise(3, &[16], &dev)?, padding, 1)?;
            let run = |threads| -> Result<Vec<f32>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                pool.install(|| conv.forward(&x)?.flatten_all()?.to_vec1::<f32>())
            };
            let one = run(1)?;
            assert!(one
                .iter()
                .zip(run(3)?)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_channels() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap();
        let conv = Conv2d::new(
            Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap(),
            Tensor::zeros(2, DType::F32, &dev).unwrap(),
            1,
            1,
        )
        .unwrap();
        let err = conv.forward(&x).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }
}
