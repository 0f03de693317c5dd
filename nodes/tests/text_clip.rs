//! The CLIP text encoder: gradients w.r.t. input embeddings against finite differences, the
//! prefix key/value reuse and padding independence (docs/cretok.md speed-ups 3 and 4).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use common::max_abs_diff;
use cretok_nodes::sd3::clip::{ClipConfig, ClipTextModel, InputGrads};
use cretok_nodes::sd3::rng::SplitMix64;
use cretok_nodes::sd3::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights};
use cretok_nodes::sd3::tokenizer::{ClipTokenizer, CLIP_EOS};

fn load(cfg: &ClipConfig, weights: Vec<(String, Tensor)>, dtype: DType) -> ClipTextModel {
    let map: HashMap<String, Tensor> = weights.into_iter().collect();
    ClipTextModel::new(cfg, VarBuilder::from_tensors(map, dtype, &Device::Cpu)).unwrap()
}

fn random(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.standard()).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// d<pooled, r>/d embeds by backprop vs central differences, in f64.
fn check_gradient(cfg: &ClipConfig, weights: Vec<(String, Tensor)>) {
    let model = load(cfg, weights, DType::F64);
    let (seq, d) = (6, cfg.hidden_size);
    let embeds = random(&[1, seq, d], 11, DType::F64);
    let r = random(&[1, cfg.projection_dim], 12, DType::F64);
    let eos = [seq - 1];
    let objective = |x: &Tensor| -> Tensor {
        let out = model.forward(x, &eos).unwrap();
        // Pooled and penultimate states both reach the trainer (docs/cretok.md `pooled`/`sequence`).
        let pooled = (out.pooled * &r).unwrap().sum_all().unwrap();
        let seq_term = out.penultimate.sqr().unwrap().mean_all().unwrap();
        (pooled + seq_term).unwrap()
    };
    let var = Var::from_tensor(&embeds).unwrap();
    let grads = objective(var.as_tensor()).backward().unwrap();
    let grad = grads
        .get(var.as_tensor())
        .expect("a gradient reaches the input");
    let grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base = embeds.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    for idx in (0..seq * d).step_by(7) {
        let shifted = |delta: f64| {
            let mut v = base.clone();
            v[idx] += delta;
            let x = Tensor::from_vec(v, (1, seq, d), &Device::Cpu).unwrap();
            objective(&x).to_scalar::<f64>().unwrap()
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        // Central differences in f64 carry O(h^2) ~ 1e-10 truncation and ~1e-11 rounding error.
        assert!(
            (numeric - grad[idx]).abs() <= 1e-7 * (1.0 + numeric.abs()),
            "element {idx}: backprop {} vs finite difference {numeric}",
            grad[idx]
        );
        checked += usize::from(grad[idx].abs() > 1e-6);
    }
    assert!(checked > 10, "gradients must not vanish");
}

#[test]
fn clip_l_gradient_matches_finite_differences() {
    check_gradient(&ClipConfig::tiny_l(), tiny_clip_l_weights(1).unwrap());
}

#[test]
fn clip_g_gradient_matches_finite_differences() {
    check_gradient(&ClipConfig::tiny_g(), tiny_clip_g_weights(2).unwrap());
}

#[test]
fn differentiable_and_fused_paths_agree() {
    let cfg = ClipConfig::tiny_g();
    let model = load(&cfg, tiny_clip_g_weights(3).unwrap(), DType::F32);
    let embeds = random(&[2, 9, cfg.hidden_size], 5, DType::F32);
    let fused = model.forward(&embeds, &[8, 4]).unwrap();
    let var = Var::from_tensor(&embeds).unwrap();
    let composed = model.forward(var.as_tensor(), &[8, 4]).unwrap();
    assert!(max_abs_diff(&fused.pooled, &composed.pooled) < 1e-5);
    assert!(max_abs_diff(&fused.penultimate, &composed.penultimate) < 1e-5);
}

/// The input gradient of the hand-written ops (CPU) equals candle's composed ops (the CUDA
/// path), with f32 weights and with f16-stored weights (streamed by the half-weight kernels).
#[test]
fn custom_and_composed_input_gradients_agree() {
    let cfg = ClipConfig::tiny_g();
    for stored in [DType::F32, DType::F16] {
        let weights = tiny_clip_g_weights(7)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(stored).unwrap()))
            .collect();
        let custom = load(&cfg, weights, DType::F32);
        let composed = custom.clone().with_input_grads(InputGrads::Composed);
        let embeds = random(&[1, 6, cfg.hidden_size], 31, DType::F32);
        let r = random(&[1, cfg.projection_dim], 32, DType::F32);
        let gradient = |model: &ClipTextModel| {
            let var = Var::from_tensor(&embeds).unwrap();
            let out = model.forward(var.as_tensor(), &[5]).unwrap();
            let loss = ((out.pooled * &r).unwrap().sum_all().unwrap()
                + out.penultimate.sqr().unwrap().mean_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            grads.get(var.as_tensor()).unwrap().clone()
        };
        let (a, b) = (gradient(&custom), gradient(&composed));
        let scale = max_abs_diff(&b, &b.zeros_like().unwrap());
        assert!(scale > 1e-3, "gradients must not vanish");
        assert!(max_abs_diff(&a, &b) < 1e-5 * scale, "{stored:?}");
    }
}

#[test]
fn prefix_reuse_equals_the_full_sequence() {
    let cfg = ClipConfig::tiny_l();
    let model = load(&cfg, tiny_clip_l_weights(4).unwrap(), DType::F32);
    let tok = ClipTokenizer::clip_l().unwrap();
    let ids = tok
        .encode_unpadded("a photo of a creative mixture")
        .unwrap();
    let n = ids.len();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let embeds = model.embed(&ids).unwrap();
    let full = model.forward(&embeds, &[n - 1]).unwrap();
    let p = 5; // <BOS> a photo of a
    let prefix = model.prefix(&embeds.narrow(1, 0, p).unwrap()).unwrap();
    assert_eq!(prefix.len(), p);
    // A batch of two suffixes shares the batch-1 prefix.
    let suffix = embeds.narrow(1, p, n - p).unwrap();
    let suffix = Tensor::cat(&[&suffix, &suffix], 0).unwrap();
    let after = model
        .forward_after(&prefix, &suffix, &[n - 1 - p, n - 1 - p])
        .unwrap();
    let tail = |t: &Tensor| t.narrow(1, p, n - p).unwrap();
    assert!(max_abs_diff(&after.pooled.narrow(0, 1, 1).unwrap(), &full.pooled) < 1e-5);
    let after_pen = after.penultimate.narrow(0, 0, 1).unwrap();
    assert!(max_abs_diff(&after_pen, &tail(&full.penultimate)) < 1e-5);
    let after_last = after.last_hidden.narrow(0, 1, 1).unwrap();
    assert!(max_abs_diff(&after_last, &tail(&full.last_hidden)) < 1e-5);
    let head = |t: &Tensor| t.narrow(1, 0, p).unwrap();
    assert!(max_abs_diff(prefix.penultimate(), &head(&full.penultimate)) < 1e-5);
    assert!(max_abs_diff(prefix.last_hidden(), &head(&full.last_hidden)) < 1e-5);
}

#[test]
fn eos_state_does_not_depend_on_padding() {
    let cfg = ClipConfig::tiny_g();
    let model = load(&cfg, tiny_clip_g_weights(5).unwrap(), DType::F32);
    let tok = ClipTokenizer::clip_g().unwrap();
    let prompt = "a lettuce mantis";
    let to_tensor = |ids: Vec<u32>| {
        Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let short = tok.encode_unpadded(prompt).unwrap();
    let n = short.len();
    let padded = model
        .forward_ids(&to_tensor(tok.encode(prompt).unwrap()), CLIP_EOS)
        .unwrap();
    let unpadded = model.forward_ids(&to_tensor(short), CLIP_EOS).unwrap();
    assert_eq!(padded.penultimate.dims(), &[1, 77, cfg.hidden_size]);
    assert_eq!(padded.pooled.dims(), &[1, cfg.projection_dim]);
    assert!(max_abs_diff(&padded.pooled, &unpadded.pooled) < 1e-5);
    let head = padded.penultimate.narrow(1, 0, n).unwrap();
    assert!(max_abs_diff(&head, &unpadded.penultimate) < 1e-5);
}

#[test]
fn prefix_path_carries_the_same_gradient() {
    let cfg = ClipConfig::tiny_g();
    let model = load(&cfg, tiny_clip_g_weights(6).unwrap(), DType::F64);
    let (seq, p, d) = (7, 3, cfg.hidden_size);
    let embeds = random(&[1, seq, d], 21, DType::F64);
    let r = random(&[1, cfg.projection_dim], 22, DType::F64);
    let suffix = Var::from_tensor(&embeds.narrow(1, p, seq - p).unwrap()).unwrap();
    let grad_of = |out: cretok_nodes::sd3::clip::ClipOutput| {
        let loss = (out.pooled * &r).unwrap().sum_all().unwrap();
        loss.backward()
            .unwrap()
            .get(suffix.as_tensor())
            .unwrap()
            .clone()
    };
    let full_input =
        Tensor::cat(&[&embeds.narrow(1, 0, p).unwrap(), suffix.as_tensor()], 1).unwrap();
    let full = grad_of(model.forward(&full_input, &[seq - 1]).unwrap());
    let prefix = model.prefix(&embeds.narrow(1, 0, p).unwrap()).unwrap();
    let reused = grad_of(
        model
            .forward_after(&prefix, suffix.as_tensor(), &[seq - 1 - p])
            .unwrap(),
    );
    assert!(max_abs_diff(&full, &reused) < 1e-12);
    assert!(max_abs_diff(&full, &full.zeros_like().unwrap()) > 1e-6);
}
