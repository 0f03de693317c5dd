//! Token ids against transformers' tokenizers, as diffusers' SD3 pipeline calls them
//! (goldens from `nodes/parity/gen_tokenizer_goldens.py`).

use std::path::PathBuf;

use cretok_nodes::sd3::tokenizer::{ClipTokenizer, T5Tokenizer, CLIP_MAX_LEN};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("parity/goldens")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn clip_ids_match_transformers_on_the_corpus() {
    let golden = golden("clip_tokenizer_ids.json");
    let l = ClipTokenizer::clip_l().unwrap();
    let g = ClipTokenizer::clip_g().unwrap();
    let prompts = golden["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 200);
    let mut truncated = 0;
    for entry in prompts {
        let prompt = entry["prompt"].as_str().unwrap();
        for (tok, key) in [(&l, "l"), (&g, "g")] {
            let mut expected = ids(&entry[key]);
            assert_eq!(
                tok.encode_unpadded(prompt).unwrap(),
                expected,
                "{key}: {prompt:?}"
            );
            truncated += usize::from(expected.len() == CLIP_MAX_LEN);
            expected.resize(CLIP_MAX_LEN, tok.pad_id());
            assert_eq!(tok.encode(prompt).unwrap(), expected, "{key}: {prompt:?}");
        }
    }
    assert!(truncated > 0, "the corpus must exercise truncation");
}

#[test]
fn clip_g_pads_with_zero_and_maps_exclamation_to_zero() {
    let l = ClipTokenizer::clip_l().unwrap();
    let g = ClipTokenizer::clip_g().unwrap();
    assert_eq!(
        &l.encode("hello world!").unwrap()[..6],
        &[49406, 3306, 1002, 256, 49407, 49407]
    );
    assert_eq!(
        &g.encode("hello world!").unwrap()[..6],
        &[49406, 3306, 1002, 0, 49407, 0]
    );
    assert_eq!(l.token_to_id("creative</w>"), Some(4450));
}

/// Checks the ids of every golden prompt at both lengths (the goldens' ids unpadded);
/// returns how many were truncated.
fn check_t5_ids(tok: &T5Tokenizer, prompts: &[serde_json::Value], lens: [usize; 2]) -> usize {
    let mut truncated = 0;
    for entry in prompts {
        let prompt = entry["prompt"].as_str().unwrap();
        for len in lens {
            let mut expected = ids(&entry[len.to_string().as_str()]);
            truncated += usize::from(expected.len() == len);
            expected.resize(len, 0);
            assert_eq!(
                tok.encode(prompt, len).unwrap(),
                expected,
                "{len}: {prompt:?}"
            );
        }
    }
    truncated
}

#[test]
fn t5_ids_match_transformers_with_a_synthetic_tokenizer() {
    let golden = golden("t5_tokenizer_ids.json");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("parity/goldens/t5_synthetic");
    let tok = T5Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let truncated = check_t5_ids(&tok, golden["prompts"].as_array().unwrap(), [16, 256]);
    assert!(truncated > 0);
}

#[test]
fn shipped_t5_ids_match_transformers_t5_tokenizer_fast() {
    let golden = golden("t5_xxl_tokenizer_ids.json");
    let tok = T5Tokenizer::shipped().unwrap();
    let prompts = golden["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 200);
    let truncated = check_t5_ids(&tok, prompts, [77, 256]);
    assert!(truncated > 0, "the corpus must exercise truncation");
    // Spot checks that do not depend on the goldens: "a photo of a cat" + </s>, then padding.
    assert_eq!(
        tok.encode("a photo of a cat", 10).unwrap(),
        [3, 9, 1202, 13, 3, 9, 1712, 1, 0, 0]
    );
}
