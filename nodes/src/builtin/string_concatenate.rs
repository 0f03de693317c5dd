use crate::{
    data_type, joined, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError,
    NodeOutput, NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
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

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        ctx.check_cancel()?;
        let parts = [inputs.string("string_a")?, inputs.string("string_b")?];
        let text = joined(&parts, inputs.string("delimiter")?)?;
        Ok(NodeOutput::values(vec![Value::String(text)]))
    }

    /// The joined text, plus the run's copies of its inputs.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let total = inputs.total_bytes();
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(total)]).with_working_bytes(total))
    }
}
