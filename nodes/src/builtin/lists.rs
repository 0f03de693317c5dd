//! List nodes: make a list whose items the executor maps the nodes
//! downstream over (one run per item), and join one back into a value.

use std::sync::Arc;

use candle_core::Tensor;

use super::image_batch::concat;
use crate::sd3::types::Image;
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
        let count = checked_count(inputs)?;
        Ok(NodeOutput::values(vec![Value::List(
            range(start, end, count)
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

/// `count` integers from `start`, `step` apart.
pub struct IntRange;

impl Node for IntRange {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("IntRange", "utils/list")
            .display_name("Int Range")
            .description(
                "count integers from start, step apart: the nodes it feeds run once per \
                 number (a seed or pair sweep).",
            )
            .input(InputSpec::required(
                "start",
                InputKind::int(0, -(1 << 53), 1 << 53),
            ))
            .input(InputSpec::required(
                "step",
                InputKind::int(1, -(1 << 32), 1 << 32),
            ))
            .input(InputSpec::required(
                "count",
                InputKind::int(4, 1, MAX_RANGE_COUNT),
            ))
            .output(OutputSpec::named("values", data_type::INT).list())
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let (start, step) = (inputs.int("start")?, inputs.int("step")?);
        let count = checked_count(inputs)?;
        let values = (0..count as i64)
            .map(|i| {
                step.checked_mul(i)
                    .and_then(|offset| start.checked_add(offset))
                    .map(Value::Int)
                    .ok_or_else(|| NodeError::invalid_input("step", "the range overflows"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeOutput::values(vec![Value::List(values)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let count = inputs.int("count").unwrap_or(MAX_RANGE_COUNT).max(1) as u64;
        Ok(Estimate::outputs(vec![ValueEstimate::list(8, count)]))
    }
}

/// Input `count`, within 1..=[`MAX_RANGE_COUNT`].
fn checked_count(inputs: &Inputs) -> Result<usize, NodeError> {
    let count = inputs.int("count")?;
    if !(1..=MAX_RANGE_COUNT).contains(&count) {
        return Err(NodeError::invalid_input(
            "count",
            format!("{count} is outside 1..={MAX_RANGE_COUNT}"),
        ));
    }
    Ok(count as usize)
}

fn range(start: f64, end: f64, count: usize) -> Vec<f64> {
    if count == 1 {
        return vec![start];
    }
    let step = (end - start) / (count - 1) as f64;
    (0..count).map(|i| start + step * i as f64).collect()
}

/// Joins a whole list of images into one batch (to show a sweep in one grid).
pub struct ImageListToBatch;

impl Node for ImageListToBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageListToBatch", "utils/list")
            .display_name("Image List to Batch")
            .description(
                "Joins every image of a list into one batch, in list order; all must have \
                 the same size.",
            )
            .input(InputSpec::required(
                "images",
                InputKind::link(data_type::IMAGE),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
            .input_is_list()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        ctx.check_cancel()?;
        let images = inputs
            .list("images")?
            .iter()
            .map(|item| match item {
                Value::Handle(h) => Arc::clone(h)
                    .downcast::<Image>()
                    .map_err(|_| NodeError::invalid_input("images", "expected IMAGE items")),
                other => Err(NodeError::invalid_input(
                    "images",
                    format!("expected IMAGE items, got {}", other.kind_name()),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<&Tensor> = images.iter().map(|i| &i.pixels).collect();
        let pixels = concat(&tensors, "images")?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    /// The batch, plus f32 copies of the images while joining.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let all = inputs.bytes("images");
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(all)]).with_working_bytes(all))
    }
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

    fn int_range(start: i64, step: i64, count: i64) -> Result<NodeOutput, NodeError> {
        let inputs = Inputs::new()
            .with("start", Value::Int(start))
            .with("step", Value::Int(step))
            .with("count", Value::Int(count));
        let paths = crate::Paths::new("/nonexistent", None);
        let cancel = crate::CancelToken::new();
        IntRange.run(
            &inputs,
            &RunContext::new("1", &paths, &cancel, &crate::NullSink),
        )
    }

    #[test]
    fn an_int_range_steps_from_start_and_refuses_overflow() {
        let out = int_range(5, -2, 3).unwrap();
        assert!(matches!(
            &out.values[..],
            [Value::List(items)] if matches!(&items[..], [Value::Int(5), Value::Int(3), Value::Int(1)])
        ));
        assert!(int_range(i64::MAX - 1, 1 << 32, 2).is_err());
        assert!(int_range(0, 1, MAX_RANGE_COUNT + 1).is_err());
    }

    #[test]
    fn an_image_list_becomes_one_batch_in_list_order() {
        use candle_core::{DType, Device};
        let image = |value: f64| {
            let pixels =
                (Tensor::ones((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap() * value).unwrap();
            Value::handle(Image { pixels })
        };
        let inputs = Inputs::new().with("images", Value::List(vec![image(0.25), image(0.75)]));
        let paths = crate::Paths::new("/nonexistent", None);
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let out = ImageListToBatch.run(&inputs, &ctx).unwrap();
        let Value::Handle(batch) = &out.values[0] else {
            panic!("an image")
        };
        let batch = Arc::clone(batch).downcast::<Image>().unwrap();
        assert_eq!(batch.pixels.dims(), [2, 2, 3, 3]);
        let firsts: Vec<f32> = (0..2)
            .map(|i| {
                batch
                    .pixels
                    .get(i)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()[0]
            })
            .collect();
        assert_eq!(firsts, [0.25, 0.75]);
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
