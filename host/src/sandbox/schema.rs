//! Checks what a guest's `describe` returned and turns it into the node's
//! [`NodeSchema`] (its `/object_info` entry) and its [`Ports`].

use std::collections::HashSet;

use cretok_node_api::{data_type, InputKind, InputSpec, NodeSchema, OutputSpec};

use super::ports::Ports;
use super::text::{check_text, escape_html, quote};
use super::wit::{GuestPort, GuestSchema, GuestValue, GuestVariadic, PortType};
use super::SandboxLimits;

/// The category every custom node lives under in the editor's menu.
pub const CATEGORY_ROOT: &str = "templates";

/// Longest id, port name, category or display name accepted.
const MAX_NAME: usize = 64;

/// The most inputs a variadic group may declare.
const MAX_VARIADIC: u32 = 64;

impl PortType {
    /// The link and widget type the editor sees.
    pub(crate) fn data_type(self) -> &'static str {
        match self {
            PortType::Str => data_type::STRING,
            PortType::Int => data_type::INT,
            PortType::Float => data_type::FLOAT,
            PortType::Boolean => data_type::BOOLEAN,
            PortType::StrList => data_type::STRING_LIST,
        }
    }
}

/// The `module` (`python_module` in `/object_info`) of a component's node.
pub(crate) fn module_of(component_name: &str) -> String {
    format!("custom_nodes.{component_name}")
}

/// Validates a guest's schema against `limits`; `component_name` is the
/// file's stem. Descriptions and tooltips come out HTML-escaped.
pub(crate) fn node_schema(
    guest: GuestSchema,
    component_name: &str,
    limits: &SandboxLimits,
) -> Result<(NodeSchema, Ports), String> {
    check_ports_count(&guest, limits)?;
    check_name("id", &guest.id, |c| {
        c.is_ascii_alphanumeric() || "_-.".contains(c)
    })?;
    if !guest.id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the id {} does not start with a letter or digit",
            quote(&guest.id)
        ));
    }
    if !guest.category.is_empty() {
        check_name("category", &guest.category, |c| {
            c.is_ascii_alphanumeric() || "_-/ ".contains(c)
        })?;
    }
    check_text("display name", &guest.display_name, MAX_NAME, true)?;
    check_text("description", &guest.description, limits.text_bytes, false)?;
    check_ports("input", &guest.inputs, limits)?;
    check_ports("output", &guest.outputs, limits)?;
    check_variadic(&guest.variadic, &guest.inputs, limits)?;
    let category = match guest.category.trim_matches('/') {
        "" => CATEGORY_ROOT.to_owned(),
        sub => format!("{CATEGORY_ROOT}/{sub}"),
    };
    let mut schema = NodeSchema::new(&guest.id, &category)
        .description(&escape_html(&guest.description))
        .display_name(if guest.display_name.is_empty() {
            &guest.id
        } else {
            &guest.display_name
        });
    schema.module = module_of(component_name);
    // Variadic inputs reach the node as undeclared ones; `Ports` checks them.
    schema.extra_inputs = guest.extra_inputs || !guest.variadic.is_empty();
    for port in &guest.inputs {
        schema = schema.input(input_spec(port));
    }
    for group in &guest.variadic {
        schema = schema.input(variadic_spec(group));
    }
    for port in &guest.outputs {
        let output = OutputSpec::named(&port.name, port.kind.data_type());
        schema = schema.output(if port.is_list { output.list() } else { output });
    }
    let ports = Ports::new(guest.inputs, guest.outputs, guest.extra_inputs);
    Ok((schema, ports.with_variadic(guest.variadic)))
}

/// Refuses a schema with too many ports. Its size in bytes was bounded
/// while it was copied out of the guest (the schema's copy budget).
fn check_ports_count(guest: &GuestSchema, limits: &SandboxLimits) -> Result<(), String> {
    for (side, ports) in [("inputs", &guest.inputs), ("outputs", &guest.outputs)] {
        if ports.len() > limits.ports {
            return Err(format!(
                "it declares {} {side}, more than {}",
                ports.len(),
                limits.ports
            ));
        }
    }
    Ok(())
}

fn check_name(what: &str, name: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the {what} {} is longer than {MAX_NAME} bytes",
            quote(name)
        ));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!("the {what} {} contains {c:?}", quote(name)));
    }
    Ok(())
}

fn check_ports(side: &str, ports: &[GuestPort], limits: &SandboxLimits) -> Result<(), String> {
    let mut seen = HashSet::new();
    for port in ports {
        check_name(&format!("{side} name"), &port.name, |c| {
            c.is_ascii_alphanumeric() || "_-".contains(c)
        })?;
        if !seen.insert(port.name.as_str()) {
            return Err(format!("two {side}s are named '{}'", port.name));
        }
        let tooltip = format!("description of {side} '{}'", port.name);
        check_text(&tooltip, &port.description, limits.text_bytes, false)?;
        if let Some(default) = &port.default {
            check_default(&port.name, default, limits)?;
            if side == "input" && default.port_type() != port.kind {
                return Err(format!(
                    "input '{}' is {} but its default is {}",
                    port.name,
                    port.kind.data_type(),
                    default.port_type().data_type()
                ));
            }
        }
    }
    Ok(())
}

/// A default's strings are text the editor shows in a widget.
fn check_default(input: &str, default: &GuestValue, limits: &SandboxLimits) -> Result<(), String> {
    let what = format!("default of input '{input}'");
    match default {
        GuestValue::Str(s) => check_text(&what, s, limits.text_bytes, false),
        GuestValue::StrList(list) => list
            .iter()
            .try_for_each(|s| check_text(&what, s, limits.text_bytes, false)),
        GuestValue::Int(_) | GuestValue::Float(_) | GuestValue::Boolean(_) => Ok(()),
    }
}

fn check_variadic(
    groups: &[GuestVariadic],
    inputs: &[GuestPort],
    limits: &SandboxLimits,
) -> Result<(), String> {
    let port_name = |c: char| c.is_ascii_alphanumeric() || "_-".contains(c);
    if groups.len() > limits.ports {
        return Err(format!(
            "it declares {} variadic groups, more than {}",
            groups.len(),
            limits.ports
        ));
    }
    for (at, group) in groups.iter().enumerate() {
        check_name("variadic group name", &group.name, port_name)?;
        check_name("variadic prefix", &group.prefix, port_name)?;
        let tooltip = format!("description of variadic group '{}'", group.name);
        check_text(&tooltip, &group.description, limits.text_bytes, false)?;
        let taken = inputs.iter().any(|p| p.name == group.name)
            || groups[..at].iter().any(|g| g.name == group.name);
        if taken {
            return Err(format!("two inputs are named '{}'", group.name));
        }
        if group.max == 0 || group.max > MAX_VARIADIC || group.min > group.max {
            return Err(format!(
                "variadic group '{}' needs 0 <= min <= max, 1 <= max <= {MAX_VARIADIC} (min {}, max {})",
                group.name, group.min, group.max
            ));
        }
    }
    Ok(())
}

/// The editor's growing group of links for a variadic group.
fn variadic_spec(group: &GuestVariadic) -> InputSpec {
    let kind = InputKind::Autogrow {
        prefix: group.prefix.clone(),
        data_type: group.kind.data_type().to_owned(),
        min: group.min,
        max: group.max,
    };
    let spec = InputSpec::optional(&group.name, kind);
    if group.description.is_empty() {
        spec
    } else {
        spec.with_tooltip(&escape_html(&group.description))
    }
}

/// The editor's widget for a port: its type with the default, or a link for
/// lists. An int input named `seed` gets the editor's "control after
/// generate" widget.
fn input_spec(port: &GuestPort) -> InputSpec {
    use super::wit::GuestValue as V;
    let kind = match (port.kind, &port.default) {
        (PortType::Str, default) => InputKind::string(match default {
            Some(V::Str(s)) => s,
            _ => "",
        }),
        (PortType::Int, default) => InputKind::Int {
            default: match default {
                Some(V::Int(i)) => *i,
                _ => 0,
            },
            min: i64::MIN,
            max: i64::MAX,
            step: 1,
            control_after_generate: port.name == "seed",
        },
        (PortType::Float, default) => InputKind::float(
            match default {
                Some(V::Float(x)) => *x,
                _ => 0.0,
            },
            f64::MIN,
            f64::MAX,
            0.01,
        ),
        (PortType::Boolean, default) => InputKind::Bool {
            default: matches!(default, Some(V::Boolean(true))),
        },
        (PortType::StrList, _) => InputKind::link(data_type::STRING_LIST),
    };
    // A list with a default needs no link; every widget always has a value.
    // An optional input without a default is a link that may stay unconnected.
    let spec = if port.default.is_none() && port.optional {
        InputSpec::optional(&port.name, InputKind::link(port.kind.data_type()))
    } else if port.kind == PortType::StrList && port.default.is_some() {
        InputSpec::optional(&port.name, kind)
    } else {
        InputSpec::required(&port.name, kind)
    };
    if port.description.is_empty() {
        spec
    } else {
        spec.with_tooltip(&escape_html(&port.description))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sandbox::wit::GuestValue;

    /// A required, single-valued guest port without a description.
    pub(in crate::sandbox) fn port(
        name: &str,
        kind: PortType,
        default: Option<GuestValue>,
    ) -> GuestPort {
        GuestPort {
            name: name.into(),
            kind,
            description: String::new(),
            default,
            optional: false,
            is_list: false,
        }
    }

    fn schema(id: &str, inputs: Vec<GuestPort>) -> GuestSchema {
        GuestSchema {
            id: id.into(),
            display_name: String::new(),
            category: "prompt".into(),
            description: "d".into(),
            inputs,
            outputs: vec![port("text", PortType::Str, None)],
            extra_inputs: false,
            variadic: Vec::new(),
        }
    }

    #[test]
    fn maps_ports_to_widgets_and_links() {
        let inputs = vec![
            port("seed", PortType::Int, Some(GuestValue::Int(7))),
            port("names", PortType::StrList, None),
        ];
        let (schema, _) =
            node_schema(schema("Pick", inputs), "pick", &SandboxLimits::default()).unwrap();
        assert_eq!(schema.category, "templates/prompt");
        assert_eq!(schema.display_name, "Pick");
        assert_eq!(schema.module, "custom_nodes.pick");
        assert!(!schema.extra_inputs);
        let info = schema.to_object_info();
        assert_eq!(info["input"]["required"]["seed"][0], "INT");
        assert_eq!(info["input"]["required"]["seed"][1]["default"], 7);
        assert_eq!(
            info["input"]["required"]["seed"][1]["control_after_generate"],
            true
        );
        assert_eq!(info["input"]["required"]["names"][0], "STRING_LIST");
        assert_eq!(info["output"][0], "STRING");
    }

    fn check(guest: GuestSchema) -> Result<(NodeSchema, Ports), String> {
        node_schema(guest, "x", &SandboxLimits::default())
    }

    #[test]
    fn refuses_nonsense() {
        let dup = vec![
            port("a", PortType::Str, None),
            port("a", PortType::Int, None),
        ];
        assert_eq!(
            check(schema("X", dup)).unwrap_err(),
            "two inputs are named 'a'"
        );
        assert_eq!(check(schema("", vec![])).unwrap_err(), "the id is empty");
        let typed = vec![port("n", PortType::Int, Some(GuestValue::Str("1".into())))];
        assert_eq!(
            check(schema("X", typed)).unwrap_err(),
            "input 'n' is INT but its default is STRING"
        );
        assert!(check(schema("a b", vec![])).is_err());
        assert_eq!(
            check(schema("..", vec![])).unwrap_err(),
            "the id '..' does not start with a letter or digit"
        );
    }

    #[test]
    fn bounds_sizes_and_escapes_text() {
        let many = (0..65)
            .map(|i| port(&format!("p{i}"), PortType::Str, None))
            .collect();
        assert_eq!(
            check(schema("X", many)).unwrap_err(),
            "it declares 65 inputs, more than 64"
        );
        let mut long = port("a", PortType::Str, None);
        long.description = "d".repeat(1025);
        let err = check(schema("X", vec![long])).unwrap_err();
        assert!(err.ends_with("is 1025 bytes long, more than 1024"), "{err}");
        let mut shown = schema("X", vec![]);
        shown.display_name = "<b>X</b>".into();
        assert_eq!(
            check(shown).unwrap_err(),
            "the display name '<b>X</b>' contains '<'"
        );
        let mut marked = schema("X", vec![port("a", PortType::Str, None)]);
        marked.description = "<script>alert(1)</script>".into();
        marked.inputs[0].description = "<i>tip</i>".into();
        let (schema, _) = check(marked).unwrap();
        let info = schema.to_object_info();
        assert_eq!(info["description"], "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(
            info["input"]["required"]["a"][1]["tooltip"],
            "&lt;i&gt;tip&lt;/i&gt;"
        );
    }

    #[test]
    fn refuses_variadic_groups_that_clash_or_have_no_room() {
        let group = |name: &str, min, max| GuestVariadic {
            name: name.into(),
            prefix: "v".into(),
            kind: PortType::Str,
            description: String::new(),
            min,
            max,
        };
        let with = |groups| GuestSchema {
            variadic: groups,
            ..schema("X", vec![port("a", PortType::Str, None)])
        };
        let (info, _) = node_schema(
            with(vec![group("vars", 1, 4)]),
            "x",
            &SandboxLimits::default(),
        )
        .unwrap();
        assert!(info.extra_inputs);
        assert_eq!(
            info.to_object_info()["input"]["optional"]["vars"][1]["template"]["max"],
            4
        );
        assert_eq!(
            node_schema(with(vec![group("a", 0, 4)]), "x", &SandboxLimits::default()).unwrap_err(),
            "two inputs are named 'a'"
        );
        for (min, max) in [(0, 0), (0, 65), (5, 4)] {
            assert!(node_schema(
                with(vec![group("vars", min, max)]),
                "x",
                &SandboxLimits::default()
            )
            .is_err());
        }
        assert!(node_schema(
            with(vec![group("va.rs", 0, 4)]),
            "x",
            &SandboxLimits::default()
        )
        .is_err());
    }
}
