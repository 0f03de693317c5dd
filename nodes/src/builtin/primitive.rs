use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext,
};

/// The value types a primitive node can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimitiveKind {
    String,
    StringMultiline,
    Int,
    Float,
    Boolean,
}

impl PrimitiveKind {
    pub const ALL: [PrimitiveKind; 5] = [
        PrimitiveKind::String,
        PrimitiveKind::StringMultiline,
        PrimitiveKind::Int,
        PrimitiveKind::Float,
        PrimitiveKind::Boolean,
    ];

    fn class_name(self) -> &'static str {
        match self {
            PrimitiveKind::String => "PrimitiveString",
            PrimitiveKind::StringMultiline => "PrimitiveStringMultiline",
            PrimitiveKind::Int => "PrimitiveInt",
            PrimitiveKind::Float => "PrimitiveFloat",
            PrimitiveKind::Boolean => "PrimitiveBoolean",
        }
    }

    fn widget(self) -> InputKind {
        match self {
            PrimitiveKind::String => InputKind::string(""),
            PrimitiveKind::StringMultiline => InputKind::text(""),
            // As ComfyUI's: the editor adds "control after generate" to it.
            PrimitiveKind::Int => InputKind::Int {
                default: 0,
                min: i64::MIN,
                max: i64::MAX,
                step: 1,
                control_after_generate: true,
            },
            PrimitiveKind::Float => InputKind::float(0.0, f64::MIN, f64::MAX, 0.01),
            PrimitiveKind::Boolean => InputKind::Bool { default: false },
        }
    }

    fn output_type(self) -> &'static str {
        match self {
            PrimitiveKind::String | PrimitiveKind::StringMultiline => data_type::STRING,
            PrimitiveKind::Int => data_type::INT,
            PrimitiveKind::Float => data_type::FLOAT,
            PrimitiveKind::Boolean => data_type::BOOLEAN,
        }
    }
}

/// A constant (ComfyUI's `Primitive*` nodes): one widget, passed on as an output,
/// so one value can feed several inputs.
pub struct Primitive(pub PrimitiveKind);

impl Node for Primitive {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(self.0.class_name(), "utils/primitive")
            .description("A constant value that can feed several inputs.")
            .input(InputSpec::required("value", self.0.widget()))
            .output(OutputSpec::new(self.0.output_type()))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let value = inputs
            .get("value")
            .cloned()
            .ok_or_else(|| NodeError::invalid_input("value", "missing"))?;
        Ok(NodeOutput::values(vec![value]))
    }

    /// The constant is known before running: nodes it feeds can estimate from it.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let value = inputs.get("value").cloned().unwrap_or_default();
        Ok(Estimate::outputs(vec![value]))
    }
}
