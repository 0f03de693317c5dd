use crate::sd3::sampling::DiffusionModel;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Sets the schedule shift a model samples with (ComfyUI `ModelSamplingSD3`).
pub struct ModelSamplingSd3;

impl Node for ModelSamplingSd3 {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ModelSamplingSD3", "advanced/model")
            .display_name("ModelSamplingSD3")
            .description("The sigma-schedule shift used by samplers (SD3 default 3.0).")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required(
                "shift",
                InputKind::float(3.0, 0.0, 100.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::MODEL))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let model = inputs.handle::<DiffusionModel>("model")?;
        let shift = inputs.float("shift")?;
        if shift <= 0.0 {
            return Err(NodeError::invalid_input("shift", "must be positive"));
        }
        let model = DiffusionModel {
            shift,
            shift_from_model_sampling: true,
            ..(*model).clone()
        };
        Ok(NodeOutput::values(vec![Value::handle(model)]))
    }
}
