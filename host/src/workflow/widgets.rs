//! Where each widget value sits in a node's `widgets_values`: the editor
//! makes one widget per widget-able input, required inputs first, each in
//! schema order, and puts a "control after generate" widget right after
//! seed-like integers and an upload button right after image choices.

use cretok_node_api::{InputKind, InputSpec, NodeSchema};

/// The values the "control after generate" widget can hold.
pub const CONTROL_VALUES: [&str; 4] = ["fixed", "increment", "decrement", "randomize"];

/// One position of `widgets_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WidgetSlot {
    /// The value of the input of that name.
    Input(String),
    /// The editor-only "control after generate" value of the seed before it.
    ControlAfterGenerate,
    /// The editor-only upload button of the image choice before it.
    ImageUpload,
    /// A widget the editor adds to show something (PreviewAny's text), after
    /// the inputs' widgets; files from older editors lack it.
    Display(&'static str),
}

impl WidgetSlot {
    pub fn name(&self) -> &str {
        match self {
            WidgetSlot::Input(name) => name,
            WidgetSlot::ControlAfterGenerate => "control_after_generate",
            WidgetSlot::ImageUpload => "upload",
            WidgetSlot::Display(name) => name,
        }
    }
}

/// The widget positions of a node type, as the editor lays them out.
pub fn layout(schema: &NodeSchema) -> Vec<WidgetSlot> {
    let required = schema.inputs.iter().filter(|i| i.required);
    let optional = schema.inputs.iter().filter(|i| !i.required);
    let mut slots = slots_of(required.chain(optional));
    slots.extend(
        display_widgets(&schema.name)
            .iter()
            .map(|&name| WidgetSlot::Display(name)),
    );
    slots
}

/// The widgets ComfyUI's frontend adds to show a node's result, saved with
/// the file but never sent in a prompt.
fn display_widgets(class_type: &str) -> &'static [&'static str] {
    match class_type {
        "PreviewAny" => &["preview_markdown", "preview_text", "previewMode"],
        _ => &[],
    }
}

/// How many of [`layout`]'s slots belong to required inputs. They come
/// first: a file saved before optional widgets were added to a node (or by
/// ComfyUI, whose nodes lack our optional extras) holds only these.
pub fn required_slots(schema: &NodeSchema) -> usize {
    slots_of(schema.inputs.iter().filter(|i| i.required)).len()
}

fn slots_of<'a>(inputs: impl Iterator<Item = &'a InputSpec>) -> Vec<WidgetSlot> {
    let mut slots = Vec::new();
    for input in inputs {
        if matches!(input.kind, InputKind::Link(_) | InputKind::Autogrow { .. }) {
            continue;
        }
        slots.push(WidgetSlot::Input(input.name.clone()));
        if has_control_after_generate(input) {
            slots.push(WidgetSlot::ControlAfterGenerate);
        }
        if matches!(
            input.kind,
            InputKind::Combo {
                image_upload: true,
                ..
            }
        ) {
            slots.push(WidgetSlot::ImageUpload);
        }
    }
    slots
}

/// The frontend adds the control to integers marked so in the schema, and to
/// any integer named `seed` or `noise_seed` (ComfyUI's legacy convention).
fn has_control_after_generate(input: &InputSpec) -> bool {
    match input.kind {
        InputKind::Int {
            control_after_generate,
            ..
        } => control_after_generate || matches!(input.name.as_str(), "seed" | "noise_seed"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cretok_node_api::data_type;

    #[test]
    fn required_first_links_skipped_control_after_seeds() {
        let schema = NodeSchema::new("X", "test")
            .input(InputSpec::optional("note", InputKind::string("")))
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required("seed", InputKind::int(0, 0, 10)))
            .input(InputSpec::required("noise", InputKind::seed()))
            .input(InputSpec::required("steps", InputKind::int(4, 1, 100)))
            .input(InputSpec::required(
                "image",
                InputKind::image_upload(vec!["a.png".into()]),
            ));
        let slots = layout(&schema);
        let names: Vec<&str> = slots.iter().map(WidgetSlot::name).collect();
        assert_eq!(
            names,
            [
                "seed",
                "control_after_generate",
                "noise",
                "control_after_generate",
                "steps",
                "image",
                "upload",
                "note"
            ]
        );
        assert_eq!(required_slots(&schema), 7);
    }
}
