//! List nodes: make a list whose items the executor maps the nodes
//! downstream over (one run per item), and join one back into a value.

use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate, MAX_LIST_ITEMS,
};

/// The most values [`FloatRange`] makes.
const MAX_RANGE_COUNT: i64 = 1000;

/// Splits a text into a list of its non-empty lines.
pub struct TextToList;

impl Node for TextToList {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TextToList", "utils/list")
            .display_name("Text to List")
            .description(
                "One item per non-empty line: the nodes it feeds run once per line \
                 and their outputs become lists.",
            )
            .input(InputSpec::required("text", InputKind::text("")))
            .output(OutputSpec::named("items", data_type::STRING).list())
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        ctx.check_cancel()?;
        let items: Vec<Value> = inputs
            .string("text")?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| Value::String(line.to_owned()))
            .collect();
        if items.is_empty() {
            return Err(NodeError::invalid_input("text", "has no non-empty line"));
        }
        Ok(NodeOutput::values(vec![Value::List(items)]))
    }

    /// At most one line per two bytes of text (a character and its line break).
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let bytes = inputs.bytes("text");
        let lines = bytes.div_ceil(2).clamp(1, MAX_LIST_ITEMS);
        let items = ValueEstimate::list(bytes.div_ceil(lines), lines);
        Ok(Estimate::outputs(vec![items]))
    }
}

/// `count` evenly spaced numbers from `start` to `end` (both included).
pub struct FloatRange;

impl Node for FloatRange {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("FloatRange", "utils/list")
            .display_name("Float Range")
            .description(
                "Evenly spaced numbers from start to end: the nodes it feeds run once per \
                 number (a strength sweep).",
            )
            .input(InputSpec::required(
                "start",
                InputKind::float(0.0, -1e6, 1e6, 0.01),
            ))
            .input(InputSpec::required(
                "end",
                InputKind::float(1.0, -1e6, 1e6, 0.01),
            ))
            .input(InputSpec::required(
                "count",
                InputKind::int(4, 1, MAX_RANGE_COUNT),
            ))
            .output(OutputSpec::named("values", data_type::FLOAT).list())
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let (start, end) = (inputs.float("start")?, inputs.float("end")?);
        let count = inputs.int("count")?;
        if !(1..=MAX_RANGE_COUNT).contains(&count) {
            return Err(NodeError::invalid_input(
                "count",
                format!("{count} is outside 1..={MAX_RANGE_COUNT}"),
            ));
        }
        Ok(NodeOutput::values(vec![Value::List(
            range(start, end, count as usize)
                .into_iter()
                .map(Value::Float)
                .collect(),
        )]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let count = inputs.int("count").unwrap_or(MAX_RANGE_COUNT).max(1) as u64;
        Ok(Estimate::outputs(vec![ValueEstimate::list(8, count)]))
    }
}

fn range(start: f64, end: f64, count: usize) -> Vec<f64> {
    if count == 1 {
        return vec![start];
    }
    let step = (end - start) / (count - 1) as f64;
    (0..count).map(|i| start + step * i as f64).collect()
}

/// Joins a whole list of texts into one (it takes the list, so it runs once).
pub struct JoinTextList;

impl Node for JoinTextList {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("JoinTextList", "utils/list")
            .display_name("Join Text List")
            .description("Joins every item of a text list with the delimiter, in list order.")
            .input(InputSpec::required(
                "texts",
                InputKind::link(data_type::STRING),
            ))
            .input(InputSpec::required("delimiter", InputKind::string("\n")))
            .output(OutputSpec::new(data_type::STRING))
            .input_is_list()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        ctx.check_cancel()?;
        let texts = inputs
            .list("texts")?
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(NodeError::invalid_input(
                    "texts",
                    format!("expected STRING items, got {}", other.kind_name()),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every input of a list node is a list; a widget's is its one value.
        let delimiter = match inputs.list("delimiter")?.first() {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(NodeError::invalid_input("delimiter", "expected a STRING")),
        };
        let text = crate::joined(&texts, delimiter)?;
        Ok(NodeOutput::values(vec![Value::String(text)]))
    }

    /// The joined text: every item plus a delimiter between each.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let items = inputs.get("texts").map_or(1, |e| e.items);
        let delimiters = inputs.bytes("delimiter").saturating_mul(items);
        let bytes = inputs.bytes("texts").saturating_add(delimiters);
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(bytes)]).with_working_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_includes_both_ends() {
        assert_eq!(range(0.0, 1.5, 4), vec![0.0, 0.5, 1.0, 1.5]);
        assert_eq!(range(2.0, 9.0, 1), vec![2.0]);
    }

    #[test]
    fn text_lines_estimate_is_bounded_by_the_text() {
        let inputs = EstimateInputs::new().with(
            "text",
            ValueEstimate::known(&Value::String("a\nb\n".into())),
        );
        let estimate = TextToList.estimate(&inputs).unwrap();
        assert_eq!(estimate.outputs[0].items, 2);
        assert!(estimate.outputs[0].bytes >= 4);
    }
}
