//! The tiny text encoders against transformers / diffusers (goldens written by
//! `nodes/parity/gen_text_encoder_goldens.py` from the same seeded weights).
//!
//! Tolerance: both sides compute in f32 with different summation orders (candle's gemm vs
//! torch's MKL-free CPU kernels, fused vs composed LayerNorm), which moves O(1) activations by
//! ~1e-6 per layer (measured: max |diff| <= 5e-6 on values up to 7); 1e-4 relative to
//! max(1, |golden|) leaves a wide margin while a wrong convention (activation, eps, mask, EOS
//! row, padding id) changes outputs by > 1e-2.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cretok_nodes::sd3::clip::ClipTextModel;
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::{
    tiny_clip_g_weights, tiny_clip_l_weights, tiny_t5_weights, TINY_SEED,
};
use cretok_nodes::sd3::tokenizer::{ClipTokenizer, T5Tokenizer, CLIP_EOS};

// Keep in step with PROMPTS, T5_LEN and T5_LEN_ABSENT in gen_text_encoder_goldens.py.
const PROMPTS: [&str; 2] = [
    "a photo of a creative mixture",
    "hello world! a lettuce mantis",
];
const T5_LEN: usize = 16;
const T5_LEN_ABSENT: usize = 8;

fn parity_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("parity/goldens")
}

/// The parity check on a batch-1 output against its unbatched golden.
#[track_caller]
fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    common::assert_close(&got.squeeze(0).unwrap(), want, name);
}

/// The tiny weights under single-file prefixes, as the checkpoint generator writes them.
fn single_file_vb(with_t5: bool) -> VarBuilder<'static> {
    let mut map = HashMap::new();
    let mut parts = vec![
        ("clip_l", tiny_clip_l_weights(TINY_SEED).unwrap()),
        ("clip_g", tiny_clip_g_weights(TINY_SEED).unwrap()),
    ];
    if with_t5 {
        parts.push(("t5xxl", tiny_t5_weights(TINY_SEED).unwrap()));
    }
    for (name, weights) in parts {
        for (key, t) in weights {
            map.insert(format!("text_encoders.{name}.transformer.{key}"), t);
        }
    }
    VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
}

fn t5_tokenizer(dir: &Path) -> T5Tokenizer {
    T5Tokenizer::from_file(&dir.join("t5_synthetic/tokenizer.json")).unwrap()
}

#[test]
fn clip_outputs_match_transformers() {
    let goldens = common::goldens("text_encoders.safetensors");
    let vb = single_file_vb(false);
    let cfg = Sd3TextConfig::tiny();
    let encoders = [
        ("clip_l", &cfg.clip_l, ClipTokenizer::clip_l().unwrap()),
        ("clip_g", &cfg.clip_g, ClipTokenizer::clip_g().unwrap()),
    ];
    for (name, clip_cfg, tok) in encoders {
        let model =
            ClipTextModel::new(clip_cfg, vb.pp(format!("text_encoders.{name}.transformer")))
                .unwrap();
        assert!(model.has_projection());
        for (i, prompt) in PROMPTS.iter().enumerate() {
            let ids = Tensor::new(tok.encode(prompt).unwrap().as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let out = model.forward_ids(&ids, CLIP_EOS).unwrap();
            for (field, t) in [
                ("penultimate", &out.penultimate),
                ("last_hidden", &out.last_hidden),
                ("pooled", &out.pooled),
            ] {
                let key = format!("{i}.{name}.{field}");
                assert_close(&key, t, &goldens[&key]);
            }
        }
    }
}

#[test]
fn conditioning_matches_diffusers_encode_prompt() {
    let goldens = common::goldens("text_encoders.safetensors");
    let dir = parity_dir();
    let cfg = Sd3TextConfig {
        t5_len: T5_LEN,
        ..Sd3TextConfig::tiny()
    };
    let vb = single_file_vb(true);
    let vbs = EncoderVarBuilders::single_file(&vb);
    assert!(vbs.t5.is_some());
    let encoders = Sd3TextEncoders::new(&cfg, Some(t5_tokenizer(&dir)), vbs).unwrap();
    assert!(encoders.has_t5());
    for (i, prompt) in PROMPTS.iter().enumerate() {
        let cond = encoders.encode(prompt).unwrap();
        assert_eq!(cond.context.dims(), &[1, 77 + T5_LEN, 128]);
        assert_close(
            &format!("{i}.context"),
            &cond.context,
            &goldens[&format!("{i}.context")],
        );
        assert_close(
            &format!("{i}.pooled"),
            &cond.pooled,
            &goldens[&format!("{i}.pooled")],
        );
        let t5_rows = cond.context.narrow(1, 77, T5_LEN).unwrap();
        let key = format!("{i}.t5.last_hidden");
        assert_close(&key, &t5_rows, &goldens[&key]);
    }
}

#[test]
fn conditioning_without_t5_matches_diffusers() {
    let goldens = common::goldens("text_encoders.safetensors");
    let cfg = Sd3TextConfig {
        t5_len: T5_LEN_ABSENT,
        ..Sd3TextConfig::tiny()
    };
    let vb = single_file_vb(false);
    let vbs = EncoderVarBuilders::single_file(&vb);
    assert!(vbs.t5.is_none());
    let encoders = Sd3TextEncoders::new(&cfg, None, vbs).unwrap();
    assert!(!encoders.has_t5());
    let cond = encoders.encode(PROMPTS[0]).unwrap();
    assert_close("no_t5.context", &cond.context, &goldens["0.no_t5.context"]);
    assert_close("no_t5.pooled", &cond.pooled, &goldens["0.no_t5.pooled"]);
}
