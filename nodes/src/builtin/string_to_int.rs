use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Parses an integer from text (a seed typed into a text field, a number from a template).
pub struct StringToInt;

impl Node for StringToInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringToInt", "utils/string")
            .display_name("String to Int")
            .description("Parses a decimal integer; fails on anything else.")
            .input(InputSpec::required("string", InputKind::string("0")))
            .output(OutputSpec::new(data_type::INT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let text = inputs.string("string")?;
        let value = text.trim().parse::<i64>().map_err(|e| {
            NodeError::invalid_input("string", format!("'{text}' is not an integer: {e}"))
        })?;
        Ok(NodeOutput::values(vec![Value::Int(value)]))
    }
}
