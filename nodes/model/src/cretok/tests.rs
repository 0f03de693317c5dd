//! Cross-module tests of the trainer on the tiny random CLIPs (docs/parity.md, "Tiny fixtures"): the exact
//! speed-ups equal the plain computation, only the token moves, resume is bit-for-bit.

use candle_core::{DType, Device, Tensor};

use super::encoder::{Adaptive, EncoderRef};
use super::loss::{clipped_cosine_loss, unit_rows};
use super::prompts::{adaptive_ids, prompt_ids};
use super::trainer::PathChoice;
use super::*;
use crate::cretok::encoder_refs;
use crate::sd3::text_encoders::{substitute_row, Sd3TextEncoders};
use crate::sd3::text_tiny::TinyTextEncoders;

pub(crate) fn tiny_encoders(seed: u64) -> Sd3TextEncoders {
    tiny_encoders_stored(seed, DType::F32)
}

/// The tiny encoders with their weights rounded to `stored` (as a file in that dtype), loaded
/// in f32.
fn tiny_encoders_stored(seed: u64, stored: DType) -> Sd3TextEncoders {
    TinyTextEncoders {
        t5_len: 8,
        stored,
        ..TinyTextEncoders::new(seed)
    }
    .build()
    .unwrap()
}

fn small_pairs() -> PairSet {
    PairSet::parse(
        br#"{"format":"cretok-pairs/1",
        "train":[["bee","frog"],["giraffe","peacock"],["cauliflower","sheep"],["butterfly","chicken"],["cat","teapot"]],
        "test":[["lettuce","mantis"]]}"#,
    )
    .unwrap()
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        pairs_per_step: 3,
        steps,
        lr: 0.05,
        seed: 11,
        theta: 0.95,
        ..TrainConfig::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pooled_loss_is_the_same_with_and_without_padding() {
    let enc = tiny_encoders(5);
    for e in encoder_refs(&enc) {
        let template = "a photo of a <CreTok> mixture";
        let token = (e.model.token_embedding().get(42).unwrap() * 0.7).unwrap();
        // Fast path: unpadded, prefix K/V reused.
        let fast = Adaptive::shared(e, template, "creative", Target::Pooled).unwrap();
        let a_fast = fast.embed(&token, &[]).unwrap();
        // Plain: 77 padded ids, whole sequence, token row substituted.
        let ids = adaptive_ids(e.tokenizer, template, "creative", true).unwrap();
        let x = Tensor::new(ids.prompt.ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let embeds = substitute_row(&e.model.embed(&x).unwrap(), ids.token_pos, &token).unwrap();
        let a_plain = e.model.forward(&embeds, &[ids.prompt.eos]).unwrap().pooled;
        let texts = ["a bee frog", "a frog bee", "a giraffe peacock"];
        let unpadded: Vec<_> = texts
            .iter()
            .map(|t| prompt_ids(e.tokenizer, t, false).unwrap())
            .collect();
        let padded: Vec<_> = texts
            .iter()
            .map(|t| prompt_ids(e.tokenizer, t, true).unwrap())
            .collect();
        let r_fast = unit_rows(&e.encode_fixed(&unpadded, Target::Pooled).unwrap()).unwrap();
        let r_plain = unit_rows(&e.encode_fixed(&padded, Target::Pooled).unwrap()).unwrap();
        let (l_fast, c_fast) = clipped_cosine_loss(&a_fast, &r_fast, 0.5).unwrap();
        let (l_plain, c_plain) = clipped_cosine_loss(&a_plain, &r_plain, 0.5).unwrap();
        assert!(max_diff(&c_fast, &c_plain) < 1e-5, "{c_fast:?} {c_plain:?}");
        let (l_fast, l_plain) = (
            l_fast.to_scalar::<f32>().unwrap(),
            l_plain.to_scalar::<f32>().unwrap(),
        );
        assert!((l_fast - l_plain).abs() < 1e-6, "{l_fast} {l_plain}");
    }
}

/// The CUDA path (candle's composed ops) trains the same token as the CPU's hand-written input
/// gradients, with f32 weights and with f16-stored weights (kept in f16, see `half_weights`).
#[test]
fn composed_ops_train_the_same_token_as_the_custom_gradients() {
    for stored in [DType::F32, DType::F16] {
        let enc = tiny_encoders_stored(5, stored);
        let custom = encoder_refs(&enc);
        let models: Vec<_> = custom
            .iter()
            .map(|e| {
                e.model
                    .clone()
                    .with_input_grads(crate::sd3::clip::InputGrads::Composed)
            })
            .collect();
        let composed = [
            EncoderRef {
                model: &models[0],
                ..custom[0]
            },
            EncoderRef {
                model: &models[1],
                ..custom[1]
            },
        ];
        let mut a = Trainer::new(&custom, small_pairs(), config(5), None).unwrap();
        let mut b = Trainer::new(&composed, small_pairs(), config(5), None).unwrap();
        let init = a.token(EncoderId::ClipG).unwrap().to_vec();
        for step in 0..5 {
            let (la, lb) = (a.train_step().unwrap().0, b.train_step().unwrap().0);
            assert!(
                (la - lb).abs() < 1e-6,
                "{stored:?} step {step}: {la} vs {lb}"
            );
        }
        for id in EncoderId::ALL {
            let (ta, tb) = (a.token(id).unwrap(), b.token(id).unwrap());
            assert!(max_diff(ta, tb) < 1e-5, "{stored:?} {id:?}");
        }
        let moved = max_diff(&init, a.token(EncoderId::ClipG).unwrap());
        assert!(moved > 1e-2, "{stored:?}: the token moved ({moved})");
    }
}

#[test]
fn both_orders_enter_the_loss() {
    let enc = tiny_encoders(5);
    let refs = encoder_refs(&enc);
    let one = PairSet::parse(br#"{"format":"cretok-pairs/1","train":[["bee","frog"]]}"#).unwrap();
    let cfg = TrainConfig {
        pairs_per_step: 1,
        theta: 1.0,
        encoders: EncoderSet::ClipG,
        ..config(1)
    };
    let trainer = Trainer::new(&refs, one, cfg, None).unwrap();
    let g = refs[1];
    let a = Adaptive::shared(
        g,
        "a photo of a <CreTok> mixture",
        "creative",
        Target::Pooled,
    )
    .unwrap()
    .embed(
        &Tensor::new(trainer.token(EncoderId::ClipG).unwrap(), &Device::Cpu).unwrap(),
        &[],
    )
    .unwrap();
    let loss_of = |text: &str| {
        let r = g
            .encode_fixed(
                &[prompt_ids(g.tokenizer, text, false).unwrap()],
                Target::Pooled,
            )
            .unwrap();
        let (l, _) = clipped_cosine_loss(&a, &unit_rows(&r).unwrap(), 1.0).unwrap();
        f64::from(l.to_scalar::<f32>().unwrap())
    };
    let (ab, ba) = (loss_of("a bee frog"), loss_of("a frog bee"));
    assert!(
        (ab - ba).abs() > 1e-4,
        "orders must differ for this test to mean anything"
    );
    let train = trainer.evaluate().unwrap().train_loss;
    assert!(
        (train - (ab + ba) / 2.0).abs() < 1e-6,
        "{train} vs {ab} {ba}"
    );
}

#[test]
fn only_the_token_changes_and_resume_is_bit_for_bit() {
    let enc = tiny_encoders(5);
    let refs = encoder_refs(&enc);
    let probe = |e: &EncoderRef| {
        let ids = Tensor::new(
            e.tokenizer.encode("a bee frog").unwrap().as_slice(),
            &Device::Cpu,
        )
        .unwrap()
        .unsqueeze(0)
        .unwrap();
        let out = e.model.forward_ids(&ids, 49407).unwrap();
        let table = e
            .model
            .token_embedding()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (
            out.penultimate
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            table,
        )
    };
    let before: Vec<_> = refs.iter().map(probe).collect();
    let dir = tempfile::tempdir().unwrap();

    let mut straight = Trainer::new(&refs, small_pairs(), config(6), Some(dir.path())).unwrap();
    let init = straight.token(EncoderId::ClipL).unwrap().to_vec();
    assert_eq!(
        straight.run(&RunOptions::default(), &mut Silent).unwrap(),
        RunEnd::Finished(straight.evaluate().unwrap())
    );
    assert!(
        max_diff(&init, straight.token(EncoderId::ClipL).unwrap()) > 1e-3,
        "the token moved"
    );
    let after: Vec<_> = refs.iter().map(probe).collect();
    assert!(
        before == after,
        "weights and outputs are bit-identical after training"
    );

    // Stop after 3 steps (checkpoint written), resume from the file, finish.
    struct StopAt(u64);
    impl Reporter for StopAt {
        fn step(&mut self, r: &StepReport) -> Control {
            if r.step == self.0 {
                Control::Stop
            } else {
                Control::Continue
            }
        }
    }
    let ckpt = dir.path().join("run.ckpt.safetensors");
    let opts = RunOptions {
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: 2,
        eval_every: 0,
    };
    let mut first = Trainer::new(&refs, small_pairs(), config(6), Some(dir.path())).unwrap();
    assert_eq!(
        first.run(&opts, &mut StopAt(3)).unwrap(),
        RunEnd::Stopped { step: 3 }
    );
    drop(first);
    let saved = CreTokToken::load(&ckpt).unwrap();
    let mut resumed = Trainer::resume(&refs, small_pairs(), &saved, Some(dir.path())).unwrap();
    assert_eq!(resumed.step(), 3);
    resumed.run(&opts, &mut Silent).unwrap();
    for id in EncoderId::ALL {
        let (a, b) = (straight.token(id).unwrap(), resumed.token(id).unwrap());
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{id:?}"
        );
    }
    let (a, b) = (
        straight.checkpoint().unwrap(),
        resumed.checkpoint().unwrap(),
    );
    assert_eq!(a.metadata, b.metadata, "step, sampler state and settings");
    for (name, t) in &a.extra {
        let bits = |t: &Tensor| {
            t.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(t), bits(&b.extra[name]), "{name}");
    }

    // A checkpoint from other weights is refused.
    let other = tiny_encoders(6);
    let err = Trainer::resume(&encoder_refs(&other), small_pairs(), &saved, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("fingerprint"), "{err:#}");
}

#[test]
fn general_path_matches_the_fast_path() {
    let enc = tiny_encoders(5);
    let refs = encoder_refs(&enc);
    for target in [Target::Pooled, Target::Sequence] {
        let cfg = TrainConfig {
            target,
            ..config(3)
        };
        let mut fast = Trainer::new(&refs, small_pairs(), cfg.clone(), None).unwrap();
        let mut general =
            trainer::Trainer::with_path(&refs, small_pairs(), cfg, None, PathChoice::PerPair)
                .unwrap();
        for _ in 0..3 {
            let (lf, _) = fast.train_step().unwrap();
            let (lg, _) = general.train_step().unwrap();
            assert!((lf - lg).abs() < 1e-5, "{target:?}: {lf} vs {lg}");
        }
        for id in EncoderId::ALL {
            let d = max_diff(fast.token(id).unwrap(), general.token(id).unwrap());
            assert!(d < 1e-4, "{target:?} {id:?}: {d}");
        }
    }
}

#[test]
fn start_report_counts_pairs_above_theta_and_warns() {
    let enc = tiny_encoders(5);
    let refs = encoder_refs(&enc);
    let low = Trainer::new(
        &refs,
        small_pairs(),
        TrainConfig {
            theta: -0.99,
            ..config(1)
        },
        None,
    )
    .unwrap();
    let report = low.start_report().unwrap();
    assert!(report.shares.iter().all(|(_, s)| *s == 1.0));
    assert_eq!(report.saturated().len(), 2);
    assert!(report.lines().iter().any(|l| l.starts_with("WARNING")));
    let high = Trainer::new(
        &refs,
        small_pairs(),
        TrainConfig {
            theta: 1.0,
            ..config(1)
        },
        None,
    )
    .unwrap();
    assert!(high.start_report().unwrap().saturated().is_empty());
}

#[test]
fn restrictive_embeddings_are_cached_on_disk() {
    let enc = tiny_encoders(5);
    let refs = encoder_refs(&enc);
    let dir = tempfile::tempdir().unwrap();
    let a = Trainer::new(&refs, small_pairs(), config(1), Some(dir.path())).unwrap();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "one cache file per encoder");
    let b = Trainer::new(&refs, small_pairs(), config(1), Some(dir.path())).unwrap();
    assert_eq!(a.evaluate().unwrap(), b.evaluate().unwrap());
    let other = Trainer::new(
        &refs,
        small_pairs(),
        TrainConfig {
            restrictive_template: "{t1} and {t2}".into(),
            ..config(1)
        },
        Some(dir.path()),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        4,
        "template is in the key"
    );
    assert_ne!(a.evaluate().unwrap(), other.evaluate().unwrap());
}

#[test]
fn training_needs_the_chosen_clips_in_the_clip() {
    use std::collections::HashMap;

    use candle_nn::VarBuilder;

    use crate::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig};
    use crate::sd3::text_tiny::tiny_clip_g_weights;

    let weights: HashMap<String, Tensor> = tiny_clip_g_weights(5).unwrap().into_iter().collect();
    let vbs = EncoderVarBuilders {
        clip_l: None,
        clip_g: Some(VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu)),
        t5: None,
    };
    let only_g = Sd3TextEncoders::new(&Sd3TextConfig::tiny(), None, vbs).unwrap();
    let refs = encoder_refs(&only_g);
    assert_eq!(
        refs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [EncoderId::ClipG]
    );
    let err = Trainer::new(&refs, small_pairs(), config(1), None)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "CreTok trains on clip_l, which this CLIP does not hold"
    );
    let g_only = TrainConfig {
        encoders: EncoderSet::ClipG,
        ..config(1)
    };
    Trainer::new(&refs, small_pairs(), g_only, None).unwrap();
    let err = only_g.clip_l().err().unwrap();
    assert_eq!(
        err.to_string(),
        "this CLIP has no CLIP-L (it holds only CLIP-G)"
    );
}
