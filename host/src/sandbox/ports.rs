//! A custom node's declared ports, and the checks on both sides of a call:
//! inputs are checked and converted before the guest sees them, outputs are
//! checked against the schema before the executor sees them.

use cretok_node_api::{Inputs, NodeError, Value, MAX_LIST_ITEMS};

use super::text::quote;
use super::wit::{GuestPort, GuestValue, GuestVariadic, NamedValues, PortType};

/// The ports a node declared.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    inputs: Vec<GuestPort>,
    outputs: Vec<GuestPort>,
    extra_inputs: bool,
    variadic: Vec<GuestVariadic>,
}

impl Ports {
    pub(crate) fn new(inputs: Vec<GuestPort>, outputs: Vec<GuestPort>, extra_inputs: bool) -> Self {
        Ports {
            inputs,
            outputs,
            extra_inputs,
            variadic: Vec::new(),
        }
    }

    /// The same ports with the variadic input groups `variadic`.
    pub(crate) fn with_variadic(self, variadic: Vec<GuestVariadic>) -> Self {
        Ports { variadic, ..self }
    }

    /// The guest's inputs: every declared input (its default when absent,
    /// left out when optional), type-checked, then, for nodes with extra
    /// inputs, every other input in name order, or, for nodes with variadic
    /// groups, each group's inputs in ordinal order. Inputs a node did not
    /// declare are dropped otherwise.
    pub(crate) fn guest_inputs(&self, inputs: &Inputs) -> Result<NamedValues, NodeError> {
        let mut guest = Vec::with_capacity(self.inputs.len());
        for port in &self.inputs {
            let value = match (inputs.get(&port.name), &port.default) {
                (Some(value), _) => to_guest(&port.name, value)?,
                (None, Some(default)) => default.clone(),
                (None, None) if port.optional => continue,
                (None, None) => return Err(NodeError::invalid_input(&port.name, "missing")),
            };
            guest.push((port.name.clone(), typed(&port.name, port.kind, value)?));
        }
        let undeclared = inputs
            .iter()
            .filter(|(name, _)| !self.inputs.iter().any(|p| &p.name == *name));
        if self.extra_inputs {
            let mut extra: Vec<_> = undeclared.collect();
            extra.sort_by(|a, b| a.0.cmp(b.0));
            for (name, value) in extra {
                guest.push((name.clone(), to_guest(name, value)?));
            }
        } else if !self.variadic.is_empty() {
            guest.extend(self.variadic_inputs(undeclared)?);
        }
        Ok(guest)
    }

    /// The variadic inputs among `undeclared` (`group.prefixN`), as the guest
    /// names them (`prefixN`), by group and ordinal; any other input, and a
    /// missing required one, is an error.
    fn variadic_inputs<'a>(
        &self,
        undeclared: impl Iterator<Item = (&'a String, &'a Value)>,
    ) -> Result<NamedValues, NodeError> {
        let mut found = Vec::new();
        for (name, value) in undeclared {
            let Some((group, ordinal)) = self.variadic_member(name) else {
                return Err(NodeError::invalid_input(name, "not an input of this node"));
            };
            let spec = &self.variadic[group];
            let guest_name = format!("{}{ordinal}", spec.prefix);
            let value = typed(name, spec.kind, to_guest(name, value)?)?;
            found.push(((group, ordinal), (guest_name, value)));
        }
        found.sort_by_key(|(at, _)| *at);
        for (group, spec) in self.variadic.iter().enumerate() {
            if let Some(missing) = (0..spec.min).find(|n| {
                !found
                    .iter()
                    .any(|((g, ordinal), _)| *g == group && ordinal == n)
            }) {
                let name = format!("{}.{}{missing}", spec.name, spec.prefix);
                return Err(NodeError::invalid_input(&name, "missing"));
            }
        }
        Ok(found.into_iter().map(|(_, named)| named).collect())
    }

    /// The group and ordinal of a prompt input named `group.prefixN`, with
    /// `N` written without leading zeros and below the group's `max`.
    fn variadic_member(&self, name: &str) -> Option<(usize, u32)> {
        let (group, member) = name.split_once('.')?;
        let at = self.variadic.iter().position(|v| v.name == group)?;
        let digits = member.strip_prefix(self.variadic[at].prefix.as_str())?;
        let ordinal: u32 = digits.parse().ok()?;
        (ordinal.to_string() == digits && ordinal < self.variadic[at].max).then_some((at, ordinal))
    }

    /// The executor's values, one per declared output in order, if the guest
    /// returned exactly the declared outputs with their declared types: one
    /// value for a plain output, any number up to [`MAX_LIST_ITEMS`] for a
    /// list output (gathered into a [`Value::List`]). Stops at the first
    /// returned value that does not fit, so it is linear in what the guest
    /// returned (declared outputs are few).
    pub(crate) fn outputs(&self, returned: NamedValues) -> Result<Vec<Value>, String> {
        let mut values: Vec<Vec<Value>> = vec![Vec::new(); self.outputs.len()];
        for (name, value) in returned {
            let Some(at) = self.outputs.iter().position(|p| p.name == name) else {
                return Err(format!("output {} is not declared", quote(&name)));
            };
            let port = &self.outputs[at];
            let items = &mut values[at];
            if !port.is_list && !items.is_empty() {
                return Err(format!("output '{name}' is returned twice"));
            }
            if items.len() as u64 == MAX_LIST_ITEMS {
                return Err(format!(
                    "list output '{name}' has more than {MAX_LIST_ITEMS} items"
                ));
            }
            if value.port_type() != port.kind {
                return Err(format!(
                    "output '{name}' is {}, the schema says {}",
                    value.port_type().data_type(),
                    port.kind.data_type()
                ));
            }
            items.push(from_guest(value));
        }
        values
            .into_iter()
            .zip(&self.outputs)
            .map(|(mut items, port)| match port.is_list {
                true => Ok(Value::List(items)),
                false => items
                    .pop()
                    .ok_or_else(|| format!("output '{}' is missing", port.name)),
            })
            .collect()
    }
}

/// `value` as the port type `kind` (an int widened to a float), or why not.
fn typed(name: &str, kind: PortType, value: GuestValue) -> Result<GuestValue, NodeError> {
    let value = match value {
        GuestValue::Int(i) if kind == PortType::Float => GuestValue::Float(i as f64),
        value => value,
    };
    if value.port_type() != kind {
        return Err(NodeError::invalid_input(
            name,
            format!(
                "expected {}, got {}",
                kind.data_type(),
                value.port_type().data_type()
            ),
        ));
    }
    Ok(value)
}

fn to_guest(name: &str, value: &Value) -> Result<GuestValue, NodeError> {
    Ok(match value {
        Value::String(s) => GuestValue::Str(s.clone()),
        Value::Int(i) => GuestValue::Int(*i),
        Value::Float(x) => GuestValue::Float(*x),
        Value::Bool(b) => GuestValue::Boolean(*b),
        Value::StringList(l) => GuestValue::StrList(l.clone()),
        Value::Handle(_) | Value::List(_) => {
            return Err(NodeError::invalid_input(
                name,
                "custom nodes take only STRING, INT, FLOAT, BOOLEAN and STRING_LIST values",
            ))
        }
    })
}

fn from_guest(value: GuestValue) -> Value {
    match value {
        GuestValue::Str(s) => Value::String(s),
        GuestValue::Int(i) => Value::Int(i),
        GuestValue::Float(x) => Value::Float(x),
        GuestValue::Boolean(b) => Value::Bool(b),
        GuestValue::StrList(l) => Value::StringList(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::schema::tests::port;

    fn ports(extra_inputs: bool) -> Ports {
        Ports::new(
            vec![
                port(
                    "template",
                    PortType::Str,
                    Some(GuestValue::Str("{a}".into())),
                ),
                port("strength", PortType::Float, None),
            ],
            vec![
                port("text", PortType::Str, None),
                port("n", PortType::Int, None),
            ],
            extra_inputs,
        )
    }

    #[test]
    fn fills_defaults_widens_ints_and_orders_extras() {
        let inputs = Inputs::new()
            .with("strength", Value::Int(2))
            .with("b", Value::Bool(true))
            .with("a", Value::String("owl".into()));
        let guest = ports(true).guest_inputs(&inputs).unwrap();
        let names: Vec<&str> = guest.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["template", "strength", "a", "b"]);
        assert_eq!(guest[0].1, GuestValue::Str("{a}".into()));
        assert_eq!(guest[1].1, GuestValue::Float(2.0));
        assert_eq!(ports(false).guest_inputs(&inputs).unwrap().len(), 2);
    }

    #[test]
    fn refuses_missing_and_mistyped_inputs() {
        let err = ports(false).guest_inputs(&Inputs::new()).unwrap_err();
        assert_eq!(err.to_string(), "input 'strength': missing");
        let inputs = Inputs::new().with("strength", Value::String("x".into()));
        let err = ports(false).guest_inputs(&inputs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'strength': expected FLOAT, got STRING"
        );
        let inputs = Inputs::new()
            .with("strength", Value::Float(1.0))
            .with("model", Value::handle(3u8));
        assert!(ports(true).guest_inputs(&inputs).is_err());
    }

    #[test]
    fn optional_inputs_are_left_out_and_variadic_ones_ordered_and_required_up_to_min() {
        let optional = GuestPort {
            optional: true,
            ..port("exclude", PortType::Str, None)
        };
        let group = GuestVariadic {
            name: "vars".into(),
            prefix: "v".into(),
            kind: PortType::Float,
            description: String::new(),
            min: 2,
            max: 12,
        };
        let ports = Ports::new(vec![optional], Vec::new(), false).with_variadic(vec![group]);
        let inputs = Inputs::new()
            .with("vars.v10", Value::Float(3.0))
            .with("vars.v1", Value::Int(2))
            .with("vars.v0", Value::Float(1.0));
        let guest = ports.guest_inputs(&inputs).unwrap();
        assert_eq!(
            guest,
            [
                ("v0".to_owned(), GuestValue::Float(1.0)),
                ("v1".to_owned(), GuestValue::Float(2.0)),
                ("v10".to_owned(), GuestValue::Float(3.0)),
            ]
        );
        let given = inputs.clone().with("exclude", Value::String("x".into()));
        assert_eq!(ports.guest_inputs(&given).unwrap().len(), 4);
        let short = Inputs::new().with("vars.v0", Value::Float(1.0));
        assert_eq!(
            ports.guest_inputs(&short).unwrap_err().to_string(),
            "input 'vars.v1': missing"
        );
        let beyond = inputs.with("vars.v12", Value::Float(1.0));
        assert_eq!(
            ports.guest_inputs(&beyond).unwrap_err().to_string(),
            "input 'vars.v12': not an input of this node"
        );
    }

    #[test]
    fn outputs_must_match_the_schema_exactly() {
        let ok = vec![
            ("n".to_owned(), GuestValue::Int(1)),
            ("text".to_owned(), GuestValue::Str("t".into())),
        ];
        let values = ports(false).outputs(ok.clone()).unwrap();
        assert!(matches!(&values[..], [Value::String(t), Value::Int(1)] if t == "t"));
        let mut extra = ok.clone();
        extra.push(("x".into(), GuestValue::Int(2)));
        assert_eq!(
            ports(false).outputs(extra).unwrap_err(),
            "output 'x' is not declared"
        );
        let mut twice = ok.clone();
        twice.push(("n".into(), GuestValue::Int(2)));
        assert_eq!(
            ports(false).outputs(twice).unwrap_err(),
            "output 'n' is returned twice"
        );
        let wrong = vec![
            ("n".to_owned(), GuestValue::Str("1".into())),
            ("text".to_owned(), GuestValue::Str("t".into())),
        ];
        assert_eq!(
            ports(false).outputs(wrong).unwrap_err(),
            "output 'n' is STRING, the schema says INT"
        );
        assert_eq!(
            ports(false).outputs(vec![]).unwrap_err(),
            "output 'text' is missing"
        );
    }

    #[test]
    fn a_list_output_gathers_its_items_in_order_up_to_the_list_cap() {
        let list = GuestPort {
            is_list: true,
            ..port("pairs", PortType::Str, None)
        };
        let ports = Ports::new(
            Vec::new(),
            vec![list, port("count", PortType::Int, None)],
            false,
        );
        let item = |s: &str| ("pairs".to_owned(), GuestValue::Str(s.into()));
        let returned = vec![item("a"), ("count".into(), GuestValue::Int(2)), item("b")];
        let values = ports.outputs(returned).unwrap();
        let [Value::List(items), Value::Int(2)] = &values[..] else {
            panic!("{values:?}");
        };
        assert!(matches!(&items[..], [Value::String(a), Value::String(b)] if a == "a" && b == "b"));
        let empty = ports
            .outputs(vec![("count".into(), GuestValue::Int(0))])
            .unwrap();
        assert!(matches!(&empty[0], Value::List(items) if items.is_empty()));
        let wrong = vec![item("a"), ("pairs".into(), GuestValue::Int(1))];
        assert_eq!(
            ports.outputs(wrong).unwrap_err(),
            "output 'pairs' is INT, the schema says STRING"
        );
        let flood: NamedValues = (0..=MAX_LIST_ITEMS).map(|_| item("x")).collect();
        assert_eq!(
            ports.outputs(flood).unwrap_err(),
            format!("list output 'pairs' has more than {MAX_LIST_ITEMS} items")
        );
    }
}
