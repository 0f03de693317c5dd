use crate::sd3::types::Conditioning;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Zeros the context and the pooled vector (ComfyUI `ConditioningZeroOut`, a
/// common SD3 negative).
pub struct ConditioningZeroOut;

impl Node for ConditioningZeroOut {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningZeroOut", "advanced/conditioning")
            .display_name("ConditioningZeroOut")
            .input(InputSpec::required(
                "conditioning",
                InputKind::link(data_type::CONDITIONING),
            ))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let cond = inputs.handle::<Conditioning>("conditioning")?;
        let zeroed = Conditioning {
            context: cond.context.zeros_like().map_err(anyhow::Error::from)?,
            pooled: cond.pooled.zeros_like().map_err(anyhow::Error::from)?,
        };
        Ok(NodeOutput::values(vec![Value::handle(zeroed)]))
    }
}
