//! `CLIPTextEncodeSD3`: ComfyUI's node of that name (`comfy_extras/nodes_sd3.py`):
//! CLIP-L, CLIP-G and T5-XXL each encode their own text into one `CONDITIONING`;
//! `empty_padding` says whether an empty text drops its encoder's part (`none`) or
//! encodes the empty prompt (`empty_prompt`); see [`Sd3TextEncoders::encode_each`].

use super::clip_text_encode::text_inputs_estimate;
use crate::sd3::text_encoders::{EmptyText, EncoderTexts, Sd3TextEncoders};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value,
};

const TEXT_INPUTS: [&str; 3] = ["clip_l", "clip_g", "t5xxl"];
const EMPTY_PADDING: [&str; 2] = ["none", "empty_prompt"];

pub struct ClipTextEncodeSd3;

impl Node for ClipTextEncodeSd3 {
    fn schema(&self) -> NodeSchema {
        let mut schema = NodeSchema::new("CLIPTextEncodeSD3", "advanced/conditioning")
            .display_name("CLIPTextEncodeSD3")
            .description("Encodes one text with each of SD3's CLIP-L, CLIP-G and T5-XXL.")
            .input(InputSpec::required(
                "clip",
                InputKind::link(data_type::CLIP),
            ));
        for name in TEXT_INPUTS {
            schema = schema.input(InputSpec::required(name, InputKind::text("")));
        }
        schema
            .input(InputSpec::required(
                "empty_padding",
                InputKind::combo(EMPTY_PADDING),
            ))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let encoders = inputs.handle::<Sd3TextEncoders>("clip")?;
        let texts = EncoderTexts {
            clip_l: inputs.string("clip_l")?,
            clip_g: inputs.string("clip_g")?,
            t5xxl: inputs.string("t5xxl")?,
        };
        let empty = match inputs.string("empty_padding")? {
            "none" => EmptyText::Dropped,
            "empty_prompt" => EmptyText::EmptyPrompt,
            other => {
                return Err(NodeError::invalid_input(
                    "empty_padding",
                    format!("`{other}` is not one of {EMPTY_PADDING:?}"),
                ))
            }
        };
        ctx.check_cancel()?;
        let conditioning = encoders.encode_each(&texts, empty)?;
        Ok(NodeOutput::values(vec![Value::handle(conditioning)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        text_inputs_estimate(inputs, &TEXT_INPUTS)
    }
}
