//! `StyleModifier`: appends a style to a prompt (docs/cretok.md, "Inference": style words need no
//! extra machinery with CreTok, this node makes them a choice).

use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Presets and the words each appends.
pub const STYLES: &[(&str, &str)] = &[
    ("none", ""),
    ("oil painting", "oil painting, visible brush strokes"),
    ("watercolor", "watercolor painting, soft washes of colour"),
    ("pencil sketch", "pencil sketch, graphite on paper"),
    ("3D render", "3D render, studio lighting"),
    ("pixel art", "pixel art, 16-bit"),
    ("anime", "anime illustration"),
    ("ukiyo-e", "ukiyo-e woodblock print"),
    ("claymation", "claymation, plasticine"),
    ("stained glass", "stained glass window"),
    ("low poly", "low poly 3D model"),
    ("photograph", "professional photograph, 50mm"),
];

/// `prompt, <preset words>, <free text>`.
pub struct StyleModifier;

impl Node for StyleModifier {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StyleModifier", "cretok/prompt")
            .display_name("Style Modifier")
            .description("Appends a style preset and/or free style text to a prompt.")
            .input(InputSpec::required("text", InputKind::text("")))
            .input(InputSpec::required(
                "style",
                InputKind::combo(STYLES.iter().map(|(name, _)| *name)),
            ))
            .input(InputSpec::required("custom_style", InputKind::string("")))
            .output(OutputSpec::new(data_type::STRING))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let text = inputs.string("text")?.trim_end();
        let style = inputs.string("style")?;
        let Some((_, words)) = STYLES.iter().find(|(name, _)| *name == style) else {
            return Err(NodeError::invalid_input(
                "style",
                format!("unknown style '{style}'"),
            ));
        };
        let custom = inputs.string("custom_style")?.trim();
        let parts: Vec<&str> = [text, words, custom]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        Ok(NodeOutput::values(vec![Value::String(parts.join(", "))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CancelToken, NullSink, Paths};

    #[test]
    fn appends_preset_and_free_text() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), None);
        let cancel = CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
        let run = |style: &str, custom: &str| {
            let inputs = Inputs::new()
                .with(
                    "text",
                    Value::String("a creative mixture of a bee and a frog".into()),
                )
                .with("style", Value::String(style.into()))
                .with("custom_style", Value::String(custom.into()));
            StyleModifier.run(&inputs, &ctx)
        };
        let Value::String(s) = &run("watercolor", "pastel").unwrap().values[0] else {
            panic!()
        };
        assert_eq!(
            s,
            "a creative mixture of a bee and a frog, watercolor painting, soft washes of colour, pastel"
        );
        let Value::String(s) = &run("none", "").unwrap().values[0] else {
            panic!()
        };
        assert_eq!(s, "a creative mixture of a bee and a frog");
        assert!(matches!(
            run("cubism?", ""),
            Err(NodeError::InvalidInput { .. })
        ));
    }
}
