//! Parity: our optimised CreTok trainer (unpadded, prefix K/V, one adaptive pass per step,
//! cached restrictive embeddings, hand-written input gradients, host AdamW) against the paper's
//! plain loop in PyTorch + transformers (`nodes/parity/cretok_reference.py`: per pair, both
//! orders, padded to 77, gradient accumulation over n, `torch.optim.AdamW`) on the tiny random
//! CLIP-L and CLIP-G, 60 steps, same init and the same pairs (the golden stores the schedule).
//!
//! Tolerance: max |Δ| < 5e-6 (measured 3e-7 CLIP-L, 5e-7 CLIP-G) on token vectors of magnitude ~1 that move by ~0.3, cosine > 1 -
//! 1e-9. The two loops add the same terms in different orders (one batched cosine vs 2n
//! accumulated backward passes, fused vs composed LayerNorm), which costs ~1e-7 per gradient;
//! Adam's normalised update turns relative gradient differences into update differences of the
//! same relative size, so 60 steps of lr <= 0.01 stay near 1e-6. A real bug (a missing order, a
//! wrong θ clip, a padding-dependent EOS, a wrong schedule) moves the vectors by > 1e-2.

#[path = "common/cretok_parity_settings.rs"]
mod parity_settings;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cretok_nodes::cretok::encoder_refs;
use cretok_nodes::cretok::sampler::PairSampler;
use cretok_nodes::cretok::{EncoderId, PairSet, Trainer};
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights, TINY_SEED};
use parity_settings::parity_config;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/parity/goldens/cretok_reference.safetensors"
);

fn tiny() -> Sd3TextEncoders {
    let vb = |w: Vec<(String, Tensor)>| {
        let map: HashMap<_, _> = w.into_iter().collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    };
    let vbs = EncoderVarBuilders {
        clip_l: Some(vb(tiny_clip_l_weights(TINY_SEED).unwrap())),
        clip_g: Some(vb(tiny_clip_g_weights(TINY_SEED).unwrap())),
        t5: None,
    };
    Sd3TextEncoders::new(&Sd3TextConfig::tiny(), None, vbs).unwrap()
}

fn row(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn optimised_trainer_ends_at_the_reference_loops_token() {
    let golden = candle_core::safetensors::load(GOLDEN, &Device::Cpu).unwrap();
    let cfg = parity_config();
    let pairs = PairSet::cangjie().unwrap();

    // Same pairs: the reference used the schedule our sampler draws.
    let schedule = golden["schedule"].to_vec2::<i64>().unwrap();
    let mut sampler = PairSampler::new(cfg.seed);
    for step in &schedule {
        let ours: Vec<i64> = sampler
            .sample(cfg.pairs_per_step, pairs.train.len())
            .into_iter()
            .map(|i| i as i64)
            .collect();
        assert_eq!(&ours, step);
    }

    let enc = tiny();
    let refs = encoder_refs(&enc);
    let mut trainer = Trainer::new(&refs, pairs, cfg.clone(), None).unwrap();
    for id in EncoderId::ALL {
        let init = row(&golden[&format!("init_{}", id.key())]);
        assert_eq!(trainer.token(id).unwrap(), init.as_slice(), "same init");
    }
    let losses = golden["losses"].to_vec1::<f64>().unwrap();
    for (t, want) in losses.iter().enumerate() {
        let (loss, _) = trainer.train_step().unwrap();
        assert!(
            (loss - want).abs() < 1e-5,
            "step {t}: loss {loss} vs {want}"
        );
    }
    for id in EncoderId::ALL {
        let ours = trainer.token(id).unwrap();
        let theirs = row(&golden[id.key()]);
        let init = row(&golden[&format!("init_{}", id.key())]);
        let moved = init
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(moved > 0.1, "{id:?}: the reference token moved by {moved}");
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let dot: f64 = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(ours) * norm(&theirs));
        println!("{id:?}: max |diff| {diff:e}, cosine {cos}, moved {moved}");
        assert!(diff < 5e-6, "{id:?}: max |diff| {diff}");
        assert!(cos > 1.0 - 1e-9, "{id:?}: cosine {cos}");
    }
}
