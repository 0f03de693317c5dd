//! Checks what a guest's `describe` returned and turns it into the node's
//! [`NodeSchema`] (its `/object_info` entry) and its [`Ports`].

use std::collections::HashSet;

use cretok_nodes::{data_type, InputKind, InputSpec, NodeSchema, OutputSpec};

use super::ports::Ports;
use super::wit::{GuestPort, GuestSchema, GuestVariadic, PortType};

/// The category every custom node lives under in the editor's menu.
pub const CATEGORY_ROOT: &str = "templates";

/// Longest id, port name or category accepted.
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

/// Validates a guest's schema; `component_name` is the file's stem.
pub(crate) fn node_schema(
    guest: GuestSchema,
    component_name: &str,
) -> Result<(NodeSchema, Ports), String> {
    check_name("id", &guest.id, |c| {
        c.is_ascii_alphanumeric() || "_-.".contains(c)
    })?;
    if !guest.category.is_empty() {
        check_name("category", &guest.category, |c| {
            c.is_ascii_alphanumeric() || "_-/ ".contains(c)
        })?;
    }
    check_ports("input", &guest.inputs)?;
    check_ports("output", &guest.outputs)?;
    check_variadic(&guest.variadic, &guest.inputs)?;
    let category = match guest.category.trim_matches('/') {
        "" => CATEGORY_ROOT.to_owned(),
        sub => format!("{CATEGORY_ROOT}/{sub}"),
    };
    let mut schema = NodeSchema::new(&guest.id, &category)
        .description(&guest.description)
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
        schema = schema.output(OutputSpec::named(&port.name, port.kind.data_type()));
    }
    let ports = Ports::new(guest.inputs, guest.outputs, guest.extra_inputs);
    Ok((schema, ports.with_variadic(guest.variadic)))
}

fn check_name(what: &str, name: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the {what} '{name}' is longer than {MAX_NAME} bytes"
        ));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!("the {what} '{name}' contains {c:?}"));
    }
    Ok(())
}

fn check_ports(side: &str, ports: &[GuestPort]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for port in ports {
        check_name(&format!("{side} name"), &port.name, |c| {
            c.is_ascii_alphanumeric() || "_-".contains(c)
        })?;
        if !seen.insert(port.name.as_str()) {
            return Err(format!("two {side}s are named '{}'", port.name));
        }
        if let Some(default) = &port.default {
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

fn check_variadic(groups: &[GuestVariadic], inputs: &[GuestPort]) -> Result<(), String> {
    let port_name = |c: char| c.is_ascii_alphanumeric() || "_-".contains(c);
    for (at, group) in groups.iter().enumerate() {
        check_name("variadic group name", &group.name, port_name)?;
        check_name("variadic prefix", &group.prefix, port_name)?;
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
        spec.with_tooltip(&group.description)
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
        spec.with_tooltip(&port.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::wit::GuestValue;

    fn port(name: &str, kind: PortType, default: Option<GuestValue>) -> GuestPort {
        GuestPort {
            name: name.into(),
            kind,
            description: String::new(),
            default,
            optional: false,
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
        let (schema, _) = node_schema(schema("Pick", inputs), "pick").unwrap();
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

    #[test]
    fn refuses_nonsense() {
        let dup = vec![
            port("a", PortType::Str, None),
            port("a", PortType::Int, None),
        ];
        assert_eq!(
            node_schema(schema("X", dup), "x").unwrap_err(),
            "two inputs are named 'a'"
        );
        assert_eq!(
            node_schema(schema("", vec![]), "x").unwrap_err(),
            "the id is empty"
        );
        let typed = vec![port("n", PortType::Int, Some(GuestValue::Str("1".into())))];
        assert_eq!(
            node_schema(schema("X", typed), "x").unwrap_err(),
            "input 'n' is INT but its default is STRING"
        );
        assert!(node_schema(schema("a b", vec![]), "x").is_err());
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
        let (info, _) = node_schema(with(vec![group("vars", 1, 4)]), "x").unwrap();
        assert!(info.extra_inputs);
        assert_eq!(
            info.to_object_info()["input"]["optional"]["vars"][1]["template"]["max"],
            4
        );
        assert_eq!(
            node_schema(with(vec![group("a", 0, 4)]), "x").unwrap_err(),
            "two inputs are named 'a'"
        );
        for (min, max) in [(0, 0), (0, 65), (5, 4)] {
            assert!(node_schema(with(vec![group("vars", min, max)]), "x").is_err());
        }
        assert!(node_schema(with(vec![group("va.rs", 0, 4)]), "x").is_err());
    }
}
