//! `CreTokEncode`: a prompt with the learned token in place of the word `creative` (or a literal
//! `<CreTok>`) in each CLIP encoder's input embeddings; T5 sees the plain word. `strength` s
//! mixes `(1 - s) e(word) + s v` (docs/cretok.md, "Inference"): 0 is the plain word, 1 the token.

use super::clip_text_encode::text_encoder_estimate;
use crate::cretok::inference::{encode_pieces, token_pieces, Piece};
use crate::cretok::CreTokToken;
use crate::sd3::text_encoders::Sd3TextEncoders;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value,
};

/// Encodes a prompt with a CreTok token.
pub struct CreTokEncode;

impl Node for CreTokEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CreTokEncode", "cretok/conditioning")
            .display_name("CreTok Encode")
            .description(
                "Encodes a prompt whose word 'creative' (or <CreTok>) takes the learned token; \
                 e.g. 'a photo of a <CreTok> mixture of a lettuce and a mantis'.",
            )
            .input(InputSpec::required(
                "clip",
                InputKind::link(data_type::CLIP),
            ))
            .input(InputSpec::required(
                "cretok",
                InputKind::link(data_type::CRETOK),
            ))
            .input(InputSpec::required(
                "text",
                InputKind::text(
                    "a photo of a <CreTok> mixture that resembles a lettuce and a mantis",
                ),
            ))
            .input(
                InputSpec::required("strength", InputKind::float(1.0, -1.0, 3.0, 0.05))
                    .with_tooltip("0: the plain word, 1: the learned token, above 1 extrapolates"),
            )
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let encoders = inputs.handle::<Sd3TextEncoders>("clip")?;
        let token = inputs.handle::<CreTokToken>("cretok")?;
        let text = inputs.string("text")?;
        let strength = inputs.float("strength")?;
        ctx.check_cancel()?;
        let pieces = token_pieces(&encoders, &token, text, strength)
            .map_err(|e| NodeError::invalid_input("cretok", format!("{e:#}")))?;
        if !pieces.iter().any(|p| matches!(p, Piece::Vectors { .. })) {
            return Err(NodeError::invalid_input(
                "text",
                format!(
                    "the prompt contains neither '{}' nor <CreTok>",
                    token.word()
                ),
            ));
        }
        let conditioning = encode_pieces(&encoders, &pieces)
            .map_err(|e| NodeError::invalid_input("cretok", format!("{e:#}")))?;
        Ok(NodeOutput::values(vec![Value::handle(conditioning)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        text_encoder_estimate(inputs)
    }
}
