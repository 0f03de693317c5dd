//! `CLIPTextEncode`: a prompt through SD3's text encoders into a `CONDITIONING`
//! (ComfyUI's node of that name: inputs `text`, `clip`). `embedding:NAME` in the text loads
//! NAME from the models `embeddings/` folder (`clip_l` / `clip_g` vectors, ComfyUI's SD3
//! convention) into the CLIP input embeddings; T5 sees a CreTok file's word, or nothing.

use std::path::Path;

use crate::builtin::EMBEDDINGS;
use crate::cretok::inference::{encode_pieces, split_embeddings, Piece};
use crate::cretok::CreTokToken;
use crate::fsutil::confined_join;
use crate::sd3::text_encoders::Sd3TextEncoders;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// The longest prompt text a text encoder accepts. The encoders see only the first 77 CLIP
/// and 256 T5 tokens, but the tokenizers read all of it: a 30 MB text took over a minute.
pub(crate) const MAX_TEXT_BYTES: u64 = 64 * 1024;

/// A conditioning: SD3's `[1, 77 + 256, 4096]` context and `[1, 2048]` pooled vector.
const CONDITIONING_BYTES: u64 = 4 * ((77 + 256) * 4096 + 2048);

/// The estimate of a text encoder given input `text`: refuses texts over [`MAX_TEXT_BYTES`].
pub(crate) fn text_encoder_estimate(inputs: &EstimateInputs) -> Result<Estimate, String> {
    text_inputs_estimate(inputs, &["text"])
}

/// The estimate of a text encoder given the text inputs `names`: refuses any text over
/// [`MAX_TEXT_BYTES`].
pub(crate) fn text_inputs_estimate(
    inputs: &EstimateInputs,
    names: &[&str],
) -> Result<Estimate, String> {
    let mut text = 0;
    for name in names {
        let bytes = inputs.bytes(name);
        if bytes > MAX_TEXT_BYTES {
            return Err(format!(
                "{name}: {bytes} bytes, more than the {MAX_TEXT_BYTES} a text encoder accepts \
                 (it only sees the first few hundred tokens)"
            ));
        }
        text += bytes;
    }
    // The tokenizers' pieces and offsets (generously 64 bytes a byte of text), then
    // the encoders' activations over the truncated tokens.
    let working = text * 64 + 8 * CONDITIONING_BYTES;
    Ok(
        Estimate::outputs(vec![ValueEstimate::bytes(CONDITIONING_BYTES)])
            .with_working_bytes(working),
    )
}

/// Encodes a prompt with the `CLIP` link's [`Sd3TextEncoders`]; outputs a
/// [`crate::sd3::types::Conditioning`] handle.
pub struct ClipTextEncode;

impl Node for ClipTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode", "conditioning")
            .display_name("CLIP Text Encode (Prompt)")
            .description("Encodes a prompt with SD3's CLIP-L, CLIP-G and (when loaded) T5.")
            .input(InputSpec::required("text", InputKind::text("")))
            .input(InputSpec::required(
                "clip",
                InputKind::link(data_type::CLIP),
            ))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let text = inputs.string("text")?;
        let encoders = inputs.handle::<Sd3TextEncoders>("clip")?;
        ctx.check_cancel()?;
        let (refs, tail) = split_embeddings(text);
        let conditioning = if refs.is_empty() {
            encoders.encode(text)?
        } else {
            let folder = ctx.paths.model_folder(EMBEDDINGS);
            let mut pieces = Vec::new();
            for (before, name) in refs {
                let token = load_embedding(&folder, name).map_err(|e| {
                    NodeError::invalid_input("text", format!("embedding:{name}: {e:#}"))
                })?;
                let fallback = token.metadata.get("word").cloned().unwrap_or_default();
                pieces.push(Piece::Text(before.to_owned()));
                pieces.push(Piece::Vectors {
                    rows: token.vectors,
                    fallback,
                });
            }
            pieces.push(Piece::Text(tail.to_owned()));
            encode_pieces(&encoders, &pieces)
                .map_err(|e| NodeError::invalid_input("text", format!("{e:#}")))?
        };
        Ok(NodeOutput::values(vec![Value::handle(conditioning)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        text_encoder_estimate(inputs)
    }
}

/// `NAME`, `NAME.safetensors` or `NAME.sft` in the embeddings folder.
fn load_embedding(folder: &Path, name: &str) -> anyhow::Result<CreTokToken> {
    for candidate in [
        name.to_owned(),
        format!("{name}.safetensors"),
        format!("{name}.sft"),
    ] {
        let path = confined_join(folder, &candidate)?;
        if path.is_file() {
            return CreTokToken::load(&path);
        }
    }
    anyhow::bail!("not found in {}", folder.display())
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::sd3::text_tiny::TinyTextEncoders;
    use crate::sd3::types::Conditioning;
    use crate::{CancelToken, NullSink, Paths};

    fn tiny_encoders() -> Sd3TextEncoders {
        let tiny = TinyTextEncoders {
            t5_len: 8,
            ..TinyTextEncoders::new(3)
        };
        tiny.build().unwrap()
    }

    #[test]
    fn encodes_the_text_with_the_linked_encoders() {
        let encoders = tiny_encoders();
        let expected = encoders.encode("a lettuce mantis").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), None);
        let cancel = CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
        let inputs = Inputs::new()
            .with("text", Value::String("a lettuce mantis".into()))
            .with("clip", Value::handle(encoders));
        let out = ClipTextEncode.run(&inputs, &ctx).unwrap();
        let Value::Handle(h) = &out.values[0] else {
            panic!("expected a handle")
        };
        let cond = h.clone().downcast::<Conditioning>().unwrap();
        assert_eq!(cond.context.dims(), &[1, 77 + 8, 128]);
        let diff = (&cond.pooled - &expected.pooled)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);

        let wrong = Inputs::new()
            .with("text", Value::String("x".into()))
            .with("clip", Value::Int(1));
        assert!(matches!(
            ClipTextEncode.run(&wrong, &ctx),
            Err(NodeError::InvalidInput { .. })
        ));
    }
}
