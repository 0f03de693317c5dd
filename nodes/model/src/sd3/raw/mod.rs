//! All of this crate's unsafe code, behind small safe primitives that the CPU kernels call:
//!
//! - [`bf16`]: bf16 products with f32 sums (AVX-512 BF16) for int8 weights' many-row products
//!   ([`bf16::panel_product`]);
//! - [`gemm`]: gemm's raw-pointer GEMM as [`gemm::gemm`] over checked strided matrices
//!   ([`gemm::Mat`], [`gemm::MatMut`]);
//! - [`shared_out`]: one output buffer split into disjoint tiles that parallel tasks write
//!   ([`shared_out::SharedOut`], [`shared_out::Tile`]);
//! - [`simd`]: kernels compiled for AVX-512, AVX2+FMA or F16C and picked at run time
//!   ([`simd::dispatch`], [`simd::dispatch_fma`], [`simd::widen_f16x8`]);
//! - [`mmap`]: memory-mapped safetensors files and the release of pages already read.
//!
//! Soundness contract (stated once at the `mod raw` declaration too): every public function
//! and method here is safe to call with any arguments. Each checks, once per call, what makes
//! its unsafe block sound — a matrix's last element inside its slice, tiles that cannot
//! overlap, the CPU features a kernel was compiled for, pages inside a read-only file mapping
//! — and panics (or falls back) otherwise; the kernels' inner loops stay free of per-element
//! checks. The one assumption no check can make is [`mmap::mmap`]'s: a mapped file is not
//! modified while it is mapped.

pub mod bf16;
pub mod gemm;
pub mod mmap;
pub mod shared_out;
pub mod simd;
