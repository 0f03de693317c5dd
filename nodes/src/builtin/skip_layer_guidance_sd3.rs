//! ComfyUI's `SkipLayerGuidanceSD3` (`comfy_extras/nodes_sd3.py`, the
//! `double_layers` of `comfy_extras/nodes_slg.py` `SkipLayerGuidanceDiT`):
//! a MODEL whose samplers add `(cond − cond_skipping_layers)·scale` after CFG
//! while σ is within the percents' sigmas ([`SkipLayerPatch`]).

use crate::sd3::sampling::{percent_to_sigma, DiffusionModel, SkipLayerPatch};
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

pub struct SkipLayerGuidanceSd3;

impl Node for SkipLayerGuidanceSd3 {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SkipLayerGuidanceSD3", "advanced/guidance")
            .display_name("SkipLayerGuidanceSD3")
            .description(
                "Guides away from the model with some layers skipped, for finer structure \
                 (SD3.5 medium: layers 7, 8, 9).",
            )
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required("layers", InputKind::string("7, 8, 9")))
            .input(InputSpec::required(
                "scale",
                InputKind::float(3.0, 0.0, 10.0, 0.1),
            ))
            .input(InputSpec::required(
                "start_percent",
                InputKind::float(0.01, 0.0, 1.0, 0.001),
            ))
            .input(InputSpec::required(
                "end_percent",
                InputKind::float(0.15, 0.0, 1.0, 0.001),
            ))
            .output(OutputSpec::new(data_type::MODEL))
    }

    fn validate_inputs(&self, inputs: &Inputs) -> Result<(), String> {
        match inputs.string("layers") {
            Ok(text) => parse_layers(text).map(|_| ()),
            Err(_) => Ok(()),
        }
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let model = inputs.handle::<DiffusionModel>("model")?;
        let layers = parse_layers(inputs.string("layers")?)
            .map_err(|e| NodeError::invalid_input("layers", e))?;
        // ComfyUI: no layers, the model as it is.
        if layers.is_empty() {
            return Ok(NodeOutput::values(vec![Value::Handle(model)]));
        }
        let depth = model.mmdit.config().depth;
        if let Some(bad) = layers.iter().find(|&&l| l >= depth) {
            return Err(NodeError::invalid_input(
                "layers",
                format!(
                    "layer {bad} does not exist: the model has {depth} blocks (0 to {})",
                    depth - 1
                ),
            ));
        }
        let percent = |name: &str| -> Result<f64, NodeError> {
            let p = inputs.float(name)?;
            match (0.0..=1.0).contains(&p) {
                true => Ok(percent_to_sigma(model.shift, p)),
                false => Err(NodeError::invalid_input(
                    name,
                    format!("{p} is outside 0..=1"),
                )),
            }
        };
        let patch = SkipLayerPatch {
            layers,
            scale: inputs.float("scale")?,
            sigma_start: percent("start_percent")?,
            sigma_end: percent("end_percent")?,
        };
        let mut patched = (*model).clone();
        patched.skip_layer_patches.push(patch);
        Ok(NodeOutput::values(vec![Value::handle(patched)]))
    }
}

/// ComfyUI's `re.findall(r'\d+', layers)`: every run of digits is a layer
/// (kept once each, in ascending order).
fn parse_layers(text: &str) -> Result<Vec<usize>, String> {
    let mut layers = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| {
            run.parse::<usize>()
                .map_err(|_| format!("layers: '{run}' is not a layer index"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_the_runs_of_digits() {
        assert_eq!(parse_layers("7, 8, 9").unwrap(), [7, 8, 9]);
        assert_eq!(parse_layers("[9 ,7;8] 7").unwrap(), [7, 8, 9]);
        assert!(parse_layers("").unwrap().is_empty());
        assert!(parse_layers("99999999999999999999999").is_err());
    }
}
