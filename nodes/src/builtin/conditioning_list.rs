//! ComfyUI's nodes that build a `CONDITIONING` of several prompts or edit
//! its entries: `ConditioningSetTimestepRange`, `ConditioningCombine`,
//! `ConditioningConcat`, `ConditioningAverage` (ComfyUI `nodes.py`).

use candle_core::{Tensor, D};

use crate::sd3::types::{Conditioning, ConditioningList, TimestepRange};
use crate::Value;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext,
};

/// A `CONDITIONING` input as a list, whether a plain conditioning or a list
/// arrives.
pub(crate) fn conditioning_input(
    inputs: &Inputs,
    name: &str,
) -> Result<ConditioningList, NodeError> {
    if let Ok(list) = inputs.handle::<ConditioningList>(name) {
        return Ok((*list).clone());
    }
    let plain = inputs.handle::<Conditioning>(name).map_err(|_| {
        NodeError::invalid_input(name, "expected a CONDITIONING (from a text encoder)")
    })?;
    Ok(ConditioningList::plain((*plain).clone()))
}

fn conditioning(name: &str) -> InputSpec {
    InputSpec::required(name, InputKind::link(data_type::CONDITIONING))
}

/// A node's `CONDITIONING` output: a plain [`Conditioning`] when the list is
/// one, so a list stays an exception that only list-making nodes produce.
pub(super) fn output(list: ConditioningList) -> NodeOutput {
    match list.into_plain() {
        Ok(plain) => NodeOutput::values(vec![Value::handle(plain)]),
        Err(list) => NodeOutput::values(vec![Value::handle(list)]),
    }
}

/// The first entry of `conditioning_from`: ComfyUI's Concat and Average read
/// only that one.
fn first_entry(inputs: &Inputs) -> Result<Conditioning, NodeError> {
    let from = conditioning_input(inputs, "conditioning_from")?;
    from.entries
        .into_iter()
        .next()
        .map(|entry| entry.cond)
        .ok_or_else(|| NodeError::invalid_input("conditioning_from", "the conditioning is empty"))
}

/// Sets every entry's `start_percent`/`end_percent`: the entries then guide
/// only the steps whose sigma lies in that part of the model's schedule.
pub struct ConditioningSetTimestepRange;

impl Node for ConditioningSetTimestepRange {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningSetTimestepRange", "advanced/conditioning")
            .display_name("ConditioningSetTimestepRange")
            .description("Limits the conditioning to a part of the sampling (0 = start, 1 = end).")
            .input(conditioning("conditioning"))
            .input(InputSpec::required(
                "start",
                InputKind::float(0.0, 0.0, 1.0, 0.001),
            ))
            .input(InputSpec::required(
                "end",
                InputKind::float(1.0, 0.0, 1.0, 0.001),
            ))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let mut list = conditioning_input(inputs, "conditioning")?;
        let range = TimestepRange {
            start: inputs.float("start")?,
            end: inputs.float("end")?,
        };
        for entry in &mut list.entries {
            entry.range = range;
        }
        Ok(output(list))
    }
}

/// Both lists' entries in one list: where several entries are active, the
/// model's outputs for them are averaged.
pub struct ConditioningCombine;

impl Node for ConditioningCombine {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningCombine", "conditioning")
            .display_name("Conditioning (Combine)")
            .input(conditioning("conditioning_1"))
            .input(conditioning("conditioning_2"))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let mut list = conditioning_input(inputs, "conditioning_1")?;
        list.entries
            .extend(conditioning_input(inputs, "conditioning_2")?.entries);
        Ok(output(list))
    }
}

/// Appends `conditioning_from`'s tokens to each entry of `conditioning_to`
/// (the pooled vector and range stay `conditioning_to`'s).
pub struct ConditioningConcat;

impl Node for ConditioningConcat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningConcat", "advanced/conditioning")
            .display_name("Conditioning (Concat)")
            .input(conditioning("conditioning_to"))
            .input(conditioning("conditioning_from"))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let from = first_entry(inputs)?;
        let mut list = conditioning_input(inputs, "conditioning_to")?;
        for entry in &mut list.entries {
            entry.cond.context = concat_tokens(&entry.cond.context, &from.context)
                .map_err(|e| NodeError::invalid_input("conditioning_from", e.to_string()))?;
        }
        Ok(output(list))
    }
}

fn concat_tokens(to: &Tensor, from: &Tensor) -> candle_core::Result<Tensor> {
    let (to_batch, _, to_width) = to.dims3()?;
    let (from_batch, _, from_width) = from.dims3()?;
    if to_batch != from_batch || to_width != from_width {
        candle_core::bail!(
            "cannot append tokens of shape [{from_batch}, _, {from_width}] to \
             [{to_batch}, _, {to_width}] (different models or batch sizes)"
        )
    }
    Tensor::cat(&[to, from], 1)
}

/// Each entry of `conditioning_to` blended with `conditioning_from`:
/// `to·s + from·(1 − s)`, `from`'s tokens cut or zero-padded to `to`'s length;
/// the pooled vectors blend the same way.
pub struct ConditioningAverage;

impl Node for ConditioningAverage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ConditioningAverage", "conditioning")
            .display_name("ConditioningAverage")
            .input(conditioning("conditioning_to"))
            .input(conditioning("conditioning_from"))
            .input(InputSpec::required(
                "conditioning_to_strength",
                InputKind::float(1.0, 0.0, 1.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::CONDITIONING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let from = first_entry(inputs)?;
        let strength = inputs.float("conditioning_to_strength")?;
        let mut list = conditioning_input(inputs, "conditioning_to")?;
        for entry in &mut list.entries {
            entry.cond = blend(&entry.cond, &from, strength)
                .map_err(|e| NodeError::invalid_input("conditioning_from", e.to_string()))?;
        }
        Ok(output(list))
    }
}

fn blend(
    to: &Conditioning,
    from: &Conditioning,
    strength: f64,
) -> candle_core::Result<Conditioning> {
    let (_, to_len, to_width) = to.context.dims3()?;
    let (_, from_len, from_width) = from.context.dims3()?;
    if to_width != from_width || to.pooled.dim(D::Minus1)? != from.pooled.dim(D::Minus1)? {
        candle_core::bail!(
            "cannot average conditionings of widths {to_width} and {from_width} \
             (different models)"
        )
    }
    let from_context = if from_len >= to_len {
        from.context.narrow(1, 0, to_len)?
    } else {
        from.context.pad_with_zeros(1, 0, to_len - from_len)?
    };
    let lerp = |to: &Tensor, from: &Tensor| {
        to.affine(strength, 0.0)?
            .broadcast_add(&from.affine(1.0 - strength, 0.0)?)
    };
    Ok(Conditioning {
        context: lerp(&to.context, &from_context)?,
        pooled: lerp(&to.pooled, &from.pooled)?,
    })
}
