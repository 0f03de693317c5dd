//! Helpers shared by the integration tests (`mod common;` in each test file; each uses a
//! subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use cretok_nodes::Value;

/// The `T` a node output handle holds; panics on any other value.
pub fn handle<T: Send + Sync + 'static>(value: &Value) -> Arc<T> {
    match value {
        Value::Handle(h) => h.clone().downcast::<T>().ok().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A goldens file from `nodes/parity/goldens/` (made by the scripts in `nodes/parity/`).
pub fn goldens(file: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("parity/goldens")
        .join(file);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("goldens {}: {e}", path.display()))
}

/// `max |t|`, in f64 whatever the dtype.
pub fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_scalar::<f64>())
        .unwrap()
}

/// `max |a − b|` of two tensors of the same shape, in f64.
#[track_caller]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// The parity tolerance against the PyTorch references: `max|Δ| ≤ 1e-4 · max(1, max|ref|)`
/// (docs/sd3.md, "Parity and tolerances": f32 summation-order differences stay near 1e-5,
/// convention errors move outputs by 1e-2 or more).
#[track_caller]
pub fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    let scale = max_abs(want);
    let diff = max_abs_diff(got, want);
    let tol = 1e-4 * scale.max(1.0);
    assert!(
        diff <= tol,
        "{what}: max|Δ| = {diff:e} > {tol:e} (max|ref| = {scale})"
    );
}
