//! `Template`: fills `{var_N}` placeholders in a template string from the
//! node's variadic `vars` inputs ("a photo of a {var_2} mixture of {var_0}
//! and {var_1}").
//!
//! The variables are a variadic group (`cretok:node@0.2.0`): the editor
//! shows `var_0` and adds `var_1`, `var_2`, … as the user connects them.
//! `{{` and `}}` stand for literal braces. A placeholder with no input of
//! that name fails with `missing-input`, naming it.

wit_bindgen::generate!({ path: "../../since_v0.2.0", world: "prompt-node" });

use cretok::node::host::{log, LogLevel};
use cretok::node::types::{
    InputProblem, NamedValue, NodeError, NodeSchema, Port, Value, ValueType, Variadic,
};
use exports::cretok::node::node::Guest;

struct Template;

const TEMPLATE: &str = "template";

impl Guest for Template {
    fn describe() -> NodeSchema {
        NodeSchema {
            id: "Template".into(),
            display_name: "Prompt Template".into(),
            category: "prompt".into(),
            description: "Fills {var_0}, {var_1}, … placeholders from the vars inputs, which grow as you connect them; {{ and }} are literal braces.".into(),
            inputs: vec![Port {
                name: TEMPLATE.into(),
                kind: ValueType::Str,
                description: "The text with {name} placeholders.".into(),
                default: Some(Value::Str("a photo of a {var_0} mixed with a {var_1}".into())),
                optional: false,
            }],
            outputs: vec![Port {
                name: "text".into(),
                kind: ValueType::Str,
                description: "The filled-in text.".into(),
                default: None,
                optional: false,
            }],
            variadic: vec![Variadic {
                name: "vars".into(),
                prefix: "var_".into(),
                kind: ValueType::Str,
                description: "A text for the placeholder of its name ({var_0}, …).".into(),
                min: 0,
                max: 16,
            }],
        }
    }

    fn run(inputs: Vec<NamedValue>) -> Result<Vec<NamedValue>, NodeError> {
        std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &info.to_string())));
        let template = match inputs.iter().find(|i| i.name == TEMPLATE).map(|i| &i.value) {
            Some(Value::Str(s)) => s.as_str(),
            Some(_) => {
                return Err(NodeError::WrongType(InputProblem {
                    input: TEMPLATE.into(),
                    reason: "expected a string".into(),
                }))
            }
            None => return Err(NodeError::MissingInput(TEMPLATE.into())),
        };
        let text = fill(template, &inputs)?;
        Ok(vec![NamedValue {
            name: "text".into(),
            value: Value::Str(text),
        }])
    }
}

/// Replaces each `{name}` with the input `name`, rendered as text.
fn fill(template: &str, inputs: &[NamedValue]) -> Result<String, NodeError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = after;
        } else if tail.starts_with('}') {
            return Err(bad_template(format!(
                "unmatched '}}' at byte {}",
                template.len() - tail.len()
            )));
        } else {
            let close = tail.find('}').ok_or_else(|| {
                bad_template(format!(
                    "unclosed '{{' at byte {}",
                    template.len() - tail.len()
                ))
            })?;
            let name = tail[1..close].trim();
            let value = inputs
                .iter()
                .find(|i| i.name == name && i.name != TEMPLATE)
                .ok_or_else(|| NodeError::MissingInput(name.into()))?;
            render(&value.value, &mut out);
            rest = &tail[close + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn render(value: &Value, out: &mut String) {
    match value {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(x) => out.push_str(&x.to_string()),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::StrList(items) => out.push_str(&items.join(", ")),
    }
}

fn bad_template(reason: String) -> NodeError {
    NodeError::InvalidInput(InputProblem {
        input: TEMPLATE.into(),
        reason,
    })
}

export!(Template);
