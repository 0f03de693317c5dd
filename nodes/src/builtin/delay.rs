use std::time::{Duration, Instant};

use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext,
};

/// How often the wait reports progress and checks for cancellation.
const TICK: Duration = Duration::from_millis(20);

/// Passes a value on after a wait, reporting progress and honouring cancel
/// (pacing a pipeline; exercising interruption).
pub struct Delay;

impl Node for Delay {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Delay", "utils")
            .description("Waits, then passes the text on. Reports progress; can be interrupted.")
            .input(InputSpec::required("text", InputKind::string("")))
            .input(InputSpec::required(
                "milliseconds",
                InputKind::int(1000, 0, 3_600_000),
            ))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let total = Duration::from_millis(inputs.int("milliseconds")?.max(0) as u64);
        let start = Instant::now();
        let max = total.as_millis() as u64;
        ctx.progress(0, max)?;
        while start.elapsed() < total {
            std::thread::sleep(TICK.min(total.saturating_sub(start.elapsed())));
            ctx.progress((start.elapsed().as_millis() as u64).min(max), max)?;
        }
        Ok(NodeOutput::values(vec![inputs
            .get("text")
            .cloned()
            .ok_or_else(|| {
                NodeError::invalid_input("text", "missing")
            })?]))
    }
}
