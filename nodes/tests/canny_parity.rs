//! The `Canny` node against kornia's `canny`, which ComfyUI's `Canny` calls
//! (`parity/goldens/canny.json`, written by `parity/canny_goldens.py`): the
//! same edge map, pixel for pixel, for several threshold pairs.

use candle_core::{Device, Tensor};
use cretok_nodes::builtin::Canny;
use cretok_nodes::sd3::types::Image;
use cretok_nodes::{CancelToken, Inputs, Node, NodeError, NullSink, Paths, RunContext, Value};
use serde_json::Value as Json;

fn golden() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/parity/goldens/canny.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn run_canny(pixels: Tensor, low: f64, high: f64) -> Result<Tensor, NodeError> {
    let paths = Paths::new(std::env::temp_dir(), None);
    let cancel = CancelToken::new();
    let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
    let inputs = Inputs::new()
        .with("image", Value::handle(Image { pixels }))
        .with("low_threshold", Value::Float(low))
        .with("high_threshold", Value::Float(high));
    let out = Canny.run(&inputs, &ctx)?;
    let Value::Handle(image) = &out.values[0] else {
        panic!("Canny returned no image")
    };
    Ok(image.clone().downcast::<Image>().unwrap().pixels.clone())
}

#[test]
fn edges_equal_kornia_for_every_threshold_pair() {
    let golden = golden();
    let (h, w) = (
        golden["height"].as_u64().unwrap() as usize,
        golden["width"].as_u64().unwrap() as usize,
    );
    let rgb: Vec<f32> = serde_json::from_value(golden["rgb"].clone()).unwrap();
    let pixels = Tensor::from_vec(rgb, (1, h, w, 3), &Device::Cpu).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let (low, high) = (
            case["low"].as_f64().unwrap(),
            case["high"].as_f64().unwrap(),
        );
        let out = run_canny(pixels.clone(), low, high).unwrap();
        assert_eq!(out.dims(), [1, h, w, 3]);
        let values: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<String> = values
            .chunks_exact(3 * w)
            .map(|row| {
                row.chunks_exact(3)
                    .map(|p| {
                        assert!(p[0] == p[1] && p[1] == p[2], "grey output");
                        if p[0] == 1.0 {
                            '1'
                        } else {
                            '0'
                        }
                    })
                    .collect()
            })
            .collect();
        let want: Vec<String> = serde_json::from_value(case["edges"].clone()).unwrap();
        assert!(
            want.iter().any(|row| row.contains('1')),
            "a case with edges"
        );
        assert_eq!(got, want, "thresholds {low}, {high}");
    }
}

#[test]
fn bad_thresholds_and_tiny_images_are_refused() {
    let pixels = Tensor::zeros((1, 8, 8, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = run_canny(pixels, 0.6, 0.5).unwrap_err();
    assert!(err.to_string().contains("low_threshold"), "{err}");
    let tiny = Tensor::zeros((1, 2, 8, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = run_canny(tiny, 0.1, 0.2).unwrap_err();
    assert!(err.to_string().contains("at least 3 pixels"), "{err}");
}
