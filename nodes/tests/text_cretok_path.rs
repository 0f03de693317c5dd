//! The path the CreTok token takes: tokenize -> embed -> substitute the "creative" row ->
//! encode, with the gradient reaching the substituted vector through the full conditioning.

use candle_core::{Tensor, Var};
use cretok_nodes::sd3::text_encoders::{substitute_row, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::TinyTextEncoders;

fn encoders() -> Sd3TextEncoders {
    let tiny = TinyTextEncoders {
        t5_len: 4,
        ..TinyTextEncoders::new(9)
    };
    tiny.build().unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn substituted_row_changes_the_conditioning_and_receives_gradients() {
    let enc = encoders();
    let prompt = "a photo of a creative mixture";
    let tokens = enc.tokenize(prompt).unwrap();
    let creative = enc.tokenizer_l().token_to_id("creative</w>").unwrap();
    let pos = tokens.clip_l.iter().position(|&t| t == creative).unwrap();
    assert_eq!(pos, 5);
    let embeds = enc.embed(&tokens).unwrap();
    let clip_l = embeds.clip_l.clone().unwrap();
    let plain = enc.encode(prompt).unwrap();

    // Substituting the word's own embedding is the identity.
    let own = clip_l.narrow(1, pos, 1).unwrap().flatten_all().unwrap();
    let mut same = embeds.clone();
    same.clip_l = Some(substitute_row(&clip_l, pos, &own).unwrap());
    let same = enc.encode_embeds(&same).unwrap();
    assert_eq!(max_abs(&(&same.context - &plain.context).unwrap()), 0.0);

    // A learned vector moves the conditioning, and the gradient reaches it.
    let token = Var::from_tensor(&(own * 1.5).unwrap()).unwrap();
    let mut edited = embeds.clone();
    edited.clip_l = Some(substitute_row(&clip_l, pos, token.as_tensor()).unwrap());
    let cond = enc.encode_embeds(&edited).unwrap();
    assert!(max_abs(&(&cond.pooled - &plain.pooled).unwrap()) > 1e-3);
    let loss = cond.pooled.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad = grads
        .get(token.as_tensor())
        .expect("gradient reaches the token");
    assert_eq!(grad.dims(), &[32]);
    assert!(max_abs(grad) > 1e-6);
    // Rows before the token do not depend on it (causal mask).
    let head = |c: &Tensor| c.narrow(1, 0, pos).unwrap();
    assert_eq!(
        max_abs(&(head(&cond.context) - head(&plain.context)).unwrap()),
        0.0
    );
}
