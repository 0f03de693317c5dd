//! Prompt validation: every ComfyUI error type, with the exact JSON body.

use std::sync::Arc;

use cretok::native_registry;
use cretok_host::validation::validate;
use cretok_nodes::{Paths, Registry};
use serde_json::{json, Value};

fn registry() -> Registry {
    native_registry(&Arc::new(Paths::new("/nonexistent", None)))
}

fn fail(prompt: Value) -> Value {
    validate(&prompt, &registry(), None)
        .expect_err("the prompt must not validate")
        .to_json()
}

/// The single error of node `id`.
fn node_error(body: &Value, id: &str) -> Value {
    let errors = body["node_errors"][id]["errors"]
        .as_array()
        .expect("node errors");
    assert_eq!(errors.len(), 1, "{body:#}");
    errors[0].clone()
}

fn save(text: Value) -> Value {
    json!({"class_type": "SaveText", "inputs": {"text": text, "filename_prefix": "t"}})
}

#[test]
fn missing_class_type() {
    let body = fail(json!({"1": {"inputs": {}}, "2": save(json!("x"))}));
    assert_eq!(
        body["error"],
        json!({"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.",
               "details": "Node ID '#1'", "extra_info": {}})
    );
}

#[test]
fn unknown_class_type() {
    let body = fail(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}));
    assert_eq!(body["error"]["type"], "invalid_prompt");
    assert_eq!(
        body["error"]["message"],
        "Cannot execute because node NoSuchNode does not exist."
    );
    assert_eq!(body["node_errors"]["1"]["class_type"], "NoSuchNode");
}

#[test]
fn no_outputs() {
    let body = fail(json!({"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}}}));
    assert_eq!(
        body,
        json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
               "node_errors": {}})
    );
}

#[test]
fn required_input_missing() {
    let body = fail(json!({"5": {"class_type": "SaveText", "inputs": {"text": "x"}}}));
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(body["error"]["message"], "Prompt outputs failed validation");
    assert_eq!(
        node_error(&body, "5"),
        json!({"type": "required_input_missing", "message": "Required input is missing", "details": "filename_prefix",
               "extra_info": {"input_name": "filename_prefix"}})
    );
    assert_eq!(body["node_errors"]["5"]["dependent_outputs"], json!(["5"]));
    assert_eq!(body["node_errors"]["5"]["class_type"], "SaveText");
}

#[test]
fn bad_links() {
    for (link, details) in [
        (json!(["9", 0]), "text: node '9' does not exist"),
        (
            json!(["1", 3]),
            "text: node '1' (PrimitiveString) has 1 outputs, not slot 3",
        ),
        (json!(["1"]), "text: [\"1\"] is not [node_id, slot_index]"),
    ] {
        let body = fail(
            json!({"1": {"class_type": "PrimitiveString", "inputs": {"value": "v"}}, "2": save(link)}),
        );
        let error = node_error(&body, "2");
        assert_eq!(error["type"], "bad_linked_input");
        assert_eq!(error["details"], details);
        assert_eq!(error["extra_info"]["input_name"], "text");
    }
}

#[test]
fn return_type_mismatch() {
    let body = fail(
        json!({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}}, "2": save(json!(["1", 0]))}),
    );
    let error = node_error(&body, "2");
    assert_eq!(error["type"], "return_type_mismatch");
    assert_eq!(
        error["message"],
        "Return type mismatch between linked nodes"
    );
    assert_eq!(
        error["details"],
        "text, received_type(INT) mismatch input_type(STRING)"
    );
    assert_eq!(error["extra_info"]["linked_node"], json!(["1", 0]));
    // The upstream node itself is fine and the error is attributed to the output that needs it.
    assert_eq!(body["node_errors"]["2"]["dependent_outputs"], json!(["2"]));
}

fn delay(ms: Value) -> Value {
    json!({
        "1": {"class_type": "Delay", "inputs": {"text": "t", "milliseconds": ms}},
        "2": save(json!(["1", 0]))
    })
}

#[test]
fn values_out_of_range_or_of_the_wrong_type() {
    let error = node_error(&fail(delay(json!(-5))), "1");
    assert_eq!(error["type"], "value_smaller_than_min");
    assert_eq!(error["message"], "Value -5 smaller than min of 0");
    assert_eq!(error["details"], "milliseconds");
    assert_eq!(error["extra_info"]["received_value"], -5);
    assert_eq!(
        error["extra_info"]["input_config"],
        json!(["INT", {"default": 1000, "min": 0, "max": 3_600_000, "step": 1}])
    );

    let error = node_error(&fail(delay(json!(3_600_001))), "1");
    assert_eq!(error["type"], "value_bigger_than_max");
    assert_eq!(error["message"], "Value 3600001 bigger than max of 3600000");

    let error = node_error(&fail(delay(json!("soon"))), "1");
    assert_eq!(error["type"], "invalid_input_type");
    assert_eq!(
        error["message"],
        "Failed to convert an input value to a INT value"
    );

    // As in ComfyUI, numbers given as strings are converted.
    assert!(validate(&delay(json!("25")), &registry(), None).is_ok());
}

#[test]
fn value_not_in_list() {
    let body = fail(json!({
        "1": {"class_type": "StringTransform", "inputs": {"string": "A", "operation": "shout"}},
        "2": save(json!(["1", 0]))
    }));
    let error = node_error(&body, "1");
    assert_eq!(error["type"], "value_not_in_list");
    assert_eq!(error["message"], "Value not in list");
    assert_eq!(
        error["details"],
        "operation: 'shout' not in ['lowercase', 'uppercase', 'capitalize', 'strip']"
    );
    assert_eq!(error["extra_info"]["received_value"], "shout");
    assert_eq!(
        error["extra_info"]["input_config"][0],
        json!(["lowercase", "uppercase", "capitalize", "strip"])
    );
}

#[test]
fn cycle() {
    let body = fail(json!({
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": ["2", 0], "string_b": "b", "delimiter": " "}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": "b", "delimiter": " "}},
        "3": save(json!(["2", 0]))
    }));
    assert_eq!(body["error"]["type"], "invalid_prompt");
    assert_eq!(body["error"]["message"], "Dependency cycle detected");
    assert_eq!(node_error(&body, "1")["type"], "dependency_cycle");
    assert_eq!(node_error(&body, "2")["type"], "dependency_cycle");
}

#[test]
fn all_errors_are_reported_at_once() {
    let body = fail(json!({
        "1": {"class_type": "Delay", "inputs": {"text": "t", "milliseconds": -1}},
        "2": save(json!(["1", 0])),
        "3": {"class_type": "SaveText", "inputs": {"text": 5}},
        "4": {"class_type": "StringTransform", "inputs": {"string": "x", "operation": "nope"}},
        "5": save(json!(["4", 0]))
    }));
    let failing: Vec<&String> = body["node_errors"].as_object().unwrap().keys().collect();
    assert_eq!(failing, ["1", "3", "4"]);
}

#[test]
fn valid_outputs_run_when_others_fail() {
    let prompt = json!({"1": save(json!("fine")), "2": {"class_type": "SaveText", "inputs": {"text": "no prefix"}}});
    let valid = validate(&prompt, &registry(), None).expect("one good output is enough");
    assert_eq!(valid.outputs, ["1"]);
    assert_eq!(
        valid.node_errors["2"].errors[0].kind,
        "required_input_missing"
    );
}

#[test]
fn only_needed_nodes_are_kept() {
    let prompt = json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "used"}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "unused"}},
        "3": save(json!(["1", 0]))
    });
    let valid = validate(&prompt, &registry(), None).unwrap();
    assert_eq!(valid.nodes.keys().collect::<Vec<_>>(), ["1", "3"]);
}

#[test]
fn partial_execution_targets_run_only_their_outputs_and_ignore_errors_elsewhere() {
    let prompt = json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "wanted"}},
        "2": save(json!(["1", 0])),
        "3": {"class_type": "SaveText", "inputs": {"text": "no prefix"}},
        "4": save(json!("other"))
    });
    let targets = ["2".to_owned(), "1".to_owned(), "99".to_owned()];
    let valid = validate(&prompt, &registry(), Some(&targets)).expect("the target is valid");
    assert_eq!(
        valid.outputs,
        ["2"],
        "a non-output id and an unknown id are ignored"
    );
    assert!(valid.node_errors.is_empty(), "{:?}", valid.node_errors);
    assert_eq!(valid.nodes.keys().collect::<Vec<_>>(), ["1", "2"]);

    let body = validate(&prompt, &registry(), Some(&["3".to_owned()]))
        .expect_err("the only target is invalid")
        .to_json();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let body = validate(&prompt, &registry(), Some(&["1".to_owned()]))
        .expect_err("no output among the targets")
        .to_json();
    assert_eq!(body["error"]["type"], "prompt_no_outputs");
    // Unknown node types anywhere still refuse the prompt, as ComfyUI does.
    let mut unknown = prompt.clone();
    unknown["5"] = json!({"class_type": "NoSuchNode", "inputs": {}});
    let body = validate(&unknown, &registry(), Some(&["2".to_owned()]))
        .expect_err("an unknown class refuses the prompt")
        .to_json();
    assert_eq!(body["error"]["type"], "invalid_prompt");
}
