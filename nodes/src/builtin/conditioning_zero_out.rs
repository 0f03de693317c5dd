use crate::sd3::types::Conditioning;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext,
};

use super::conditioning_list::conditioning_input;

/// Zeros the context and the pooled vector of every entry (ComfyUI
/// `ConditioningZeroOut`, a common SD3 negative).
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
        let mut list = conditioning_input(inputs, "conditioning")?;
        for entry in &mut list.entries {
            entry.cond = Conditioning {
                context: entry
                    .cond
                    .context
                    .zeros_like()
                    .map_err(anyhow::Error::from)?,
                pooled: entry
                    .cond
                    .pooled
                    .zeros_like()
                    .map_err(anyhow::Error::from)?,
            };
        }
        Ok(super::conditioning_list::output(list))
    }
}
