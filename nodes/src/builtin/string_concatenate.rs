use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Joins two strings with a delimiter (ComfyUI's `StringConcatenate`).
pub struct StringConcatenate;

impl Node for StringConcatenate {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringConcatenate", "utils/string")
            .display_name("Concatenate")
            .description("Joins two strings with a delimiter.")
            .input(InputSpec::required("string_a", InputKind::text("")))
            .input(InputSpec::required("string_b", InputKind::text("")))
            .input(InputSpec::required("delimiter", InputKind::string(" ")))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let joined = [inputs.string("string_a")?, inputs.string("string_b")?]
            .join(inputs.string("delimiter")?);
        Ok(NodeOutput::values(vec![Value::String(joined)]))
    }
}
