use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// A case change can triple a text's UTF-8 length (`ΐ`, 2 bytes, uppercases to 6).
const CASE_GROWTH: u64 = 3;

/// The operations [`StringTransform`] offers.
const OPERATIONS: [&str; 4] = ["lowercase", "uppercase", "capitalize", "strip"];

/// Changes the case of a prompt or trims it (normalising concept names from a list).
pub struct StringTransform;

impl Node for StringTransform {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringTransform", "utils/string")
            .display_name("Transform Text")
            .description("Lowercases, uppercases, capitalizes or strips the text.")
            .input(InputSpec::required("string", InputKind::text("")))
            .input(InputSpec::required(
                "operation",
                InputKind::combo(OPERATIONS),
            ))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        ctx.check_cancel()?;
        let text = inputs.string("string")?;
        let out = match inputs.string("operation")? {
            "lowercase" => text.to_lowercase(),
            "uppercase" => text.to_uppercase(),
            "capitalize" => capitalize(text),
            "strip" => text.trim().to_owned(),
            other => {
                return Err(NodeError::invalid_input(
                    "operation",
                    format!("'{other}' is not one of {OPERATIONS:?}"),
                ))
            }
        };
        Ok(NodeOutput::values(vec![Value::String(out)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let text = inputs.bytes("string");
        let out = ValueEstimate::bytes(text.saturating_mul(CASE_GROWTH));
        Ok(Estimate::outputs(vec![out]).with_working_bytes(text))
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
