//! ComfyUI's `PreviewAny` ("Preview as Text"): shows any value as text in the
//! editor and passes the text on.

use serde_json::json;

use crate::sd3::types::{Image, Latent, Mask, Sigmas};
use crate::{
    data_type, Handle, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema,
    OutputSpec, RunContext, Value,
};

pub struct PreviewAny;

impl Node for PreviewAny {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PreviewAny", "utilities")
            .display_name("Preview as Text")
            .description("Shows the value it is given as text.")
            .input(InputSpec::required("source", InputKind::link("*")))
            .output(OutputSpec::new(data_type::STRING))
            .output_node()
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let text = inputs.get("source").map_or("None".to_owned(), as_text);
        Ok(NodeOutput::values(vec![Value::String(text.clone())]).with_ui(json!({"text": [text]})))
    }
}

/// The text ComfyUI shows: strings as they are, numbers and booleans as
/// Python prints them, lists as indented JSON; tensors by their shape.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float(*f),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Value::StringList(items) => pretty(&json!(items)),
        Value::List(items) => pretty(&json!(items.iter().map(as_text).collect::<Vec<_>>())),
        Value::Handle(handle) => describe(handle),
    }
}

/// `json.dumps(value, indent=4)`.
fn pretty(json: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    match json.serialize(&mut serializer) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn describe(handle: &Handle) -> String {
    let shape = |dims: &[usize]| {
        dims.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×")
    };
    if let Some(image) = handle.downcast_ref::<Image>() {
        format!("IMAGE {}", shape(image.pixels.dims()))
    } else if let Some(mask) = handle.downcast_ref::<Mask>() {
        format!("MASK {}", shape(mask.values.dims()))
    } else if let Some(latent) = handle.downcast_ref::<Latent>() {
        format!("LATENT {}", shape(latent.samples.dims()))
    } else if let Some(sigmas) = handle.downcast_ref::<Sigmas>() {
        let values: Vec<String> = sigmas.0.iter().map(|s| python_float(*s as f64)).collect();
        format!("SIGMAS [{}]", values.join(", "))
    } else {
        "source exists, but could not be serialized.".to_owned()
    }
}

/// Python's `repr(float)`: the shortest digits that read back, positional
/// for exponents -4..16, else `1e-05` / `1e+16`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let fixed = format!("{f}");
        if fixed.contains('.') {
            fixed
        } else {
            fixed + ".0"
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (123456789012345.0, "123456789012345.0"),
        ] {
            assert_eq!(python_float(f), want);
        }
    }

    #[test]
    fn values_show_as_comfyui_shows_them() {
        assert_eq!(as_text(&Value::Bool(true)), "True");
        assert_eq!(as_text(&Value::Int(-3)), "-3");
        assert_eq!(as_text(&Value::String("a — b".into())), "a — b");
        assert_eq!(
            as_text(&Value::StringList(vec!["a".into(), "b".into()])),
            "[\n    \"a\",\n    \"b\"\n]"
        );
        let latent = Latent::new(
            candle_core::Tensor::zeros(
                (1, 16, 8, 8),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        );
        assert_eq!(as_text(&Value::handle(latent)), "LATENT 1×16×8×8");
    }
}
