//! The trainer on CUDA (candle's composed differentiable ops) against the trainer on the CPU
//! (hand-written input gradients): same losses and token after a few steps on the tiny encoders.
//! Needs a GPU and `--features cuda` (`nodes/parity/gpu_check.sh` runs it); elsewhere it says it
//! was skipped. On the CPU alone both gradient paths are compared in `cretok::tests` and
//! `tests/text_clip.rs`.

use candle_core::Device;
use cretok_nodes::cretok::{encoder_refs, EncoderId, PairSet, TrainConfig, Trainer};
use cretok_nodes::sd3::text_encoders::Sd3TextEncoders;
use cretok_nodes::sd3::text_tiny::TinyTextEncoders;

fn encoders(device: &Device) -> Sd3TextEncoders {
    let tiny = TinyTextEncoders {
        device: device.clone(),
        ..TinyTextEncoders::new(5)
    };
    tiny.build().unwrap()
}

/// Per-step losses and the final tokens after `steps` steps.
fn train(device: &Device, steps: u64) -> (Vec<f64>, Vec<Vec<f32>>) {
    let enc = encoders(device);
    let refs = encoder_refs(&enc);
    let pairs = PairSet::parse(
        br#"{"format":"cretok-pairs/1",
        "train":[["bee","frog"],["giraffe","peacock"],["cauliflower","sheep"],["cat","teapot"]]}"#,
    )
    .unwrap();
    let config = TrainConfig {
        pairs_per_step: 3,
        steps,
        lr: 0.05,
        seed: 11,
        theta: 0.95,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&refs, pairs, config, None).unwrap();
    let losses = (0..steps)
        .map(|_| trainer.train_step().unwrap().0)
        .collect();
    let tokens = EncoderId::ALL
        .iter()
        .map(|&id| trainer.token(id).unwrap().to_vec())
        .collect();
    (losses, tokens)
}

#[test]
fn cuda_trains_the_same_token_as_the_cpu() {
    let Ok(cuda) = Device::new_cuda(0) else {
        eprintln!("no CUDA device (or built without --features cuda): skipped");
        return;
    };
    let (cpu_losses, cpu_tokens) = train(&Device::Cpu, 5);
    let (gpu_losses, gpu_tokens) = train(&cuda, 5);
    for (step, (a, b)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {step}: cpu {a} vs cuda {b}");
    }
    for (a, b) in cpu_tokens.iter().zip(&gpu_tokens) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "token differs by {diff}");
    }
}
