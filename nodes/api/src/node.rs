use crate::{Estimate, EstimateInputs, Inputs, NodeError, NodeSchema, RunContext, Value};

/// What a node run produced.
#[derive(Debug, Default)]
pub struct NodeOutput {
    /// One value per declared output, in order.
    pub values: Vec<Value>,
    /// What the editor shows for output nodes (`{"images": [...]}`), kept in history.
    pub ui: Option<serde_json::Value>,
}

impl NodeOutput {
    pub fn values(values: Vec<Value>) -> Self {
        NodeOutput { values, ui: None }
    }

    pub fn with_ui(mut self, ui: serde_json::Value) -> Self {
        self.ui = Some(ui);
        self
    }
}

/// A node type: a declared schema and a run function.
pub trait Node: Send + Sync {
    /// The schema; may read the environment (e.g. the model files a combo lists).
    fn schema(&self) -> NodeSchema;

    /// Runs the node on resolved inputs.
    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError>;

    /// Extra cache-key material for nodes whose result depends on more than
    /// their inputs (a file's modification time). `None` for pure nodes.
    fn fingerprint(&self, _literal_inputs: &Inputs) -> Option<String> {
        None
    }

    /// Checks literal inputs beyond the schema's ranges (`custom_validation_failed`).
    fn validate_inputs(&self, _literal_inputs: &Inputs) -> Result<(), String> {
        Ok(())
    }

    /// Estimates the memory of a run from literal inputs and the estimates of
    /// linked outputs, before anything runs; validation refuses prompts whose
    /// estimate exceeds the budget. `Err` refuses the prompt with the reason (an
    /// input too large to process at all). The default passes the inputs' size on.
    fn estimate(&self, _inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::default())
    }
}
