use serde_json::{json, Map, Value as Json};

/// The link and widget type names, as strings so the ComfyUI editor can draw
/// and check links.
pub mod data_type {
    pub const INT: &str = "INT";
    pub const FLOAT: &str = "FLOAT";
    pub const STRING: &str = "STRING";
    pub const BOOLEAN: &str = "BOOLEAN";
    pub const STRING_LIST: &str = "STRING_LIST";
    pub const MODEL: &str = "MODEL";
    pub const CLIP: &str = "CLIP";
    pub const VAE: &str = "VAE";
    pub const CONDITIONING: &str = "CONDITIONING";
    pub const LATENT: &str = "LATENT";
    pub const IMAGE: &str = "IMAGE";
    pub const MASK: &str = "MASK";
    pub const CRETOK: &str = "CRETOK";
    pub const SAMPLER: &str = "SAMPLER";
    pub const SIGMAS: &str = "SIGMAS";
    pub const NOISE: &str = "NOISE";
    pub const GUIDER: &str = "GUIDER";
}

/// What an input accepts: a widget with its constraints, or a link of a type.
#[derive(Debug, Clone, PartialEq)]
pub enum InputKind {
    Int {
        default: i64,
        min: i64,
        max: i64,
        step: i64,
        /// Seeds: the editor adds a "control after generate" widget after it.
        control_after_generate: bool,
    },
    Float {
        default: f64,
        min: f64,
        max: f64,
        step: f64,
    },
    String {
        default: String,
        multiline: bool,
    },
    Bool {
        default: bool,
    },
    Combo {
        options: Vec<String>,
        default: Option<String>,
        /// The editor adds an upload button and a preview (ComfyUI's `image_upload`).
        image_upload: bool,
    },
    /// A value produced by another node's output of this type.
    Link(String),
    /// A group of links the editor grows as the user connects them
    /// (ComfyUI's autogrow inputs): a prompt names them `NAME.PREFIX0`,
    /// `NAME.PREFIX1`, … for the group's input `NAME`; the first `min` are
    /// required, at most `max` exist.
    Autogrow {
        prefix: String,
        data_type: String,
        min: u32,
        max: u32,
    },
}

impl InputKind {
    pub fn int(default: i64, min: i64, max: i64) -> Self {
        InputKind::Int {
            default,
            min,
            max,
            step: 1,
            control_after_generate: false,
        }
    }

    /// A seed widget: the full 64-bit unsigned range the editor offers, as ComfyUI does.
    pub fn seed() -> Self {
        InputKind::Int {
            default: 0,
            min: 0,
            max: i64::MAX,
            step: 1,
            control_after_generate: true,
        }
    }

    pub fn float(default: f64, min: f64, max: f64, step: f64) -> Self {
        InputKind::Float {
            default,
            min,
            max,
            step,
        }
    }

    pub fn string(default: &str) -> Self {
        InputKind::String {
            default: default.to_owned(),
            multiline: false,
        }
    }

    pub fn text(default: &str) -> Self {
        InputKind::String {
            default: default.to_owned(),
            multiline: true,
        }
    }

    pub fn combo<S: Into<String>>(options: impl IntoIterator<Item = S>) -> Self {
        InputKind::Combo {
            options: options.into_iter().map(Into::into).collect(),
            default: None,
            image_upload: false,
        }
    }

    /// A choice of pictures the editor can add to with its upload button.
    pub fn image_upload(options: Vec<String>) -> Self {
        InputKind::Combo {
            options,
            default: None,
            image_upload: true,
        }
    }

    pub fn link(data_type: &str) -> Self {
        InputKind::Link(data_type.to_owned())
    }

    /// The type name a link into this input must carry.
    pub fn type_name(&self) -> &str {
        match self {
            InputKind::Int { .. } => data_type::INT,
            InputKind::Float { .. } => data_type::FLOAT,
            InputKind::String { .. } => data_type::STRING,
            InputKind::Bool { .. } => data_type::BOOLEAN,
            InputKind::Combo { .. } => "COMBO",
            InputKind::Link(t) => t,
            InputKind::Autogrow { .. } => AUTOGROW,
        }
    }

    /// Whether a link from an output of type `output_type` may feed this input.
    /// Widgets accept links of their own type (a primitive node feeding a widget),
    /// combos accept strings, and `*` matches anything, as in ComfyUI.
    pub fn accepts(&self, output_type: &str) -> bool {
        let want = self.type_name();
        output_type == "*"
            || want == "*"
            || want == output_type
            || (matches!(self, InputKind::Combo { .. }) && output_type == data_type::STRING)
    }

    /// The `/object_info` form: `["INT", {...}]` or `[["a","b"], {...}]`.
    pub fn to_object_info(&self, tooltip: Option<&str>) -> Json {
        let (head, mut opts) = match self {
            InputKind::Int {
                default,
                min,
                max,
                step,
                control_after_generate,
            } => {
                let mut o = json!({"default": default, "min": min, "max": max, "step": step});
                if *control_after_generate {
                    o["control_after_generate"] = json!(true);
                }
                (json!(data_type::INT), o)
            }
            InputKind::Float {
                default,
                min,
                max,
                step,
            } => (
                json!(data_type::FLOAT),
                json!({"default": default, "min": min, "max": max, "step": step, "round": step}),
            ),
            InputKind::String { default, multiline } => (
                json!(data_type::STRING),
                json!({"default": default, "multiline": multiline}),
            ),
            InputKind::Bool { default } => (json!(data_type::BOOLEAN), json!({"default": default})),
            InputKind::Combo {
                options,
                default,
                image_upload,
            } => {
                let mut o = json!({});
                if let Some(d) = default.as_ref().or(options.first()) {
                    o["default"] = json!(d);
                }
                if *image_upload {
                    o["image_upload"] = json!(true);
                }
                (json!(options), o)
            }
            InputKind::Link(t) if WIDGET_TYPES.contains(&t.as_str()) => {
                (json!(t), json!({"forceInput": true}))
            }
            InputKind::Link(t) => (json!(t), json!({})),
            InputKind::Autogrow {
                prefix,
                data_type,
                min,
                max,
            } => {
                let mut item = Map::new();
                item.insert(
                    prefix.clone(),
                    InputKind::link(data_type).to_object_info(None),
                );
                let template = json!({
                    "input": {"required": item},
                    "prefix": prefix,
                    "min": min,
                    "max": max,
                });
                (json!(AUTOGROW), json!({ "template": template }))
            }
        };
        if let Some(t) = tooltip {
            opts["tooltip"] = json!(t);
        }
        json!([head, opts])
    }
}

/// The `/object_info` type of an [`InputKind::Autogrow`] group.
const AUTOGROW: &str = "COMFY_AUTOGROW_V3";

/// Types the editor shows as a widget unless the input forces a socket.
const WIDGET_TYPES: [&str; 4] = [
    data_type::INT,
    data_type::FLOAT,
    data_type::STRING,
    data_type::BOOLEAN,
];

/// One input of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    pub required: bool,
    pub tooltip: Option<String>,
}

impl InputSpec {
    pub fn required(name: &str, kind: InputKind) -> Self {
        InputSpec {
            name: name.to_owned(),
            kind,
            required: true,
            tooltip: None,
        }
    }

    pub fn optional(name: &str, kind: InputKind) -> Self {
        InputSpec {
            required: false,
            ..InputSpec::required(name, kind)
        }
    }

    pub fn with_tooltip(mut self, tooltip: &str) -> Self {
        self.tooltip = Some(tooltip.to_owned());
        self
    }
}

/// One output of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub data_type: String,
    /// A list output (ComfyUI's `OUTPUT_IS_LIST`): each run returns a
    /// [`crate::Value::List`] whose items flow downstream one by one.
    pub is_list: bool,
}

impl OutputSpec {
    pub fn new(data_type: &str) -> Self {
        Self::named(data_type, data_type)
    }

    pub fn named(name: &str, data_type: &str) -> Self {
        OutputSpec {
            name: name.to_owned(),
            data_type: data_type.to_owned(),
            is_list: false,
        }
    }

    /// Makes it a list output.
    pub fn list(mut self) -> Self {
        self.is_list = true;
        self
    }
}

/// Everything the editor and the validator need to know about a node type.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSchema {
    /// The class name used as `class_type` in prompts.
    pub name: String,
    pub display_name: String,
    pub category: String,
    pub description: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Output nodes are the roots the executor runs a prompt for.
    pub output_node: bool,
    /// Accepts inputs beyond the declared ones (template variables of sandboxed nodes).
    pub extra_inputs: bool,
    /// Takes whole lists (ComfyUI's `INPUT_IS_LIST`): runs once with every
    /// input as a [`crate::Value::List`], instead of once per item.
    pub input_is_list: bool,
    /// Which module provided it: `nodes` for native nodes (the editor shows them as core
    /// nodes), `custom_nodes.<name>` for sandboxed components.
    pub module: String,
}

impl NodeSchema {
    pub fn new(name: &str, category: &str) -> Self {
        NodeSchema {
            name: name.to_owned(),
            display_name: name.to_owned(),
            category: category.to_owned(),
            description: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            extra_inputs: false,
            input_is_list: false,
            module: "nodes".to_owned(),
        }
    }

    pub fn display_name(mut self, display_name: &str) -> Self {
        self.display_name = display_name.to_owned();
        self
    }

    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    pub fn input(mut self, input: InputSpec) -> Self {
        self.inputs.push(input);
        self
    }

    pub fn output(mut self, output: OutputSpec) -> Self {
        self.outputs.push(output);
        self
    }

    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }

    /// Makes it a node that takes whole lists.
    pub fn input_is_list(mut self) -> Self {
        self.input_is_list = true;
        self
    }

    pub fn find_input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The node's entry in `/object_info`.
    pub fn to_object_info(&self) -> Json {
        let mut required = Map::new();
        let mut optional = Map::new();
        let mut required_order = Vec::new();
        let mut optional_order = Vec::new();
        for input in &self.inputs {
            let spec = input.kind.to_object_info(input.tooltip.as_deref());
            if input.required {
                required.insert(input.name.clone(), spec);
                required_order.push(input.name.clone());
            } else {
                optional.insert(input.name.clone(), spec);
                optional_order.push(input.name.clone());
            }
        }
        let types: Vec<&str> = self.outputs.iter().map(|o| o.data_type.as_str()).collect();
        let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        json!({
            "input": {"required": required, "optional": optional, "hidden": {}},
            "input_order": {"required": required_order, "optional": optional_order},
            "output": types,
            "output_is_list": self.outputs.iter().map(|o| o.is_list).collect::<Vec<_>>(),
            "is_input_list": self.input_is_list,
            "output_name": names,
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.module,
            "category": self.category,
            "output_node": self.output_node,
        })
    }
}
