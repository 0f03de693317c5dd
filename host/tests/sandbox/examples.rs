//! The example nodes: describe/run round trips and their results.

use cretok_node_api::{Inputs, Node, NodeError, Registry, Value};

use crate::support::{failure, folder, host, load, run};

fn text(value: &Value) -> &str {
    match value {
        Value::String(s) => s,
        other => panic!("expected a string, got {other:?}"),
    }
}

#[test]
fn the_examples_load_as_template_nodes() {
    let dir = folder(&["template", "pairs", "weighted-choice"], &[]);
    let (nodes, errors) = host().load_dir(dir.path(), &Registry::new());
    assert!(errors.is_empty(), "{errors:?}");
    let mut registry = Registry::new();
    for node in nodes {
        registry.register(node);
    }
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, ["ConceptPairs", "Template", "WeightedChoice"]);
    let info = registry.object_info();
    let template = &info["Template"];
    assert_eq!(template["category"], "templates/prompt");
    assert_eq!(template["python_module"], "custom_nodes.template");
    assert_eq!(template["display_name"], "Prompt Template");
    assert_eq!(template["input"]["required"]["template"][0], "STRING");
    assert_eq!(
        template["input"]["optional"]["vars"],
        serde_json::json!(["COMFY_AUTOGROW_V3", {
            "template": {
                "input": {"required": {"var_": ["STRING", {"forceInput": true}]}},
                "prefix": "var_",
                "min": 0,
                "max": 16,
            },
            "tooltip": "A text for the placeholder of its name ({var_0}, …).",
        }])
    );
    assert_eq!(template["output"], serde_json::json!(["STRING"]));
    let pairs = &info["ConceptPairs"];
    assert_eq!(
        pairs["output"],
        serde_json::json!(["STRING", "STRING", "STRING_LIST", "INT", "STRING", "STRING"])
    );
    assert_eq!(
        pairs["output_name"],
        serde_json::json!(["a", "b", "pairs", "count", "every_a", "every_b"])
    );
    assert_eq!(
        pairs["output_is_list"],
        serde_json::json!([false, false, false, false, true, true])
    );
    assert_eq!(
        pairs["input"]["required"]["seed"][1]["control_after_generate"],
        true
    );
    assert_eq!(pairs["input"]["optional"]["exclude"][0], "STRING");
    assert_eq!(pairs["input"]["optional"]["exclude"][1]["forceInput"], true);
}

/// Template's inputs: `template`, then `vars.var_N` as the editor names them.
fn template_inputs(template: &str, vars: &[&str]) -> Inputs {
    vars.iter().enumerate().fold(
        Inputs::new().with("template", Value::String(template.into())),
        |inputs, (n, var)| inputs.with(&format!("vars.var_{n}"), Value::String((*var).into())),
    )
}

#[test]
fn template_fills_placeholders_from_its_variadic_inputs() {
    let node = load(&host(), "template");
    let inputs = template_inputs(
        "a photo of a {var_2} mixture of {var_0} and {var_1}, {{v{var_0}}}",
        &["owl", "teapot", "whimsical"],
    );
    let out = run(&node, &inputs).unwrap();
    assert_eq!(out.values.len(), 1);
    assert_eq!(
        text(&out.values[0]),
        "a photo of a whimsical mixture of owl and teapot, {vowl}"
    );
}

#[test]
fn template_uses_its_default_and_names_a_missing_variable() {
    let node = load(&host(), "template");
    let inputs = Inputs::new()
        .with("vars.var_0", Value::String("owl".into()))
        .with("vars.var_1", Value::String("cat".into()));
    let out = run(&node, &inputs).unwrap();
    assert_eq!(text(&out.values[0]), "a photo of a owl mixed with a cat");

    let inputs = template_inputs("{var_0} and {var_3}", &["owl"]);
    match run(&node, &inputs) {
        Err(NodeError::InvalidInput { input, reason }) => {
            assert_eq!(input, "var_3");
            assert_eq!(reason, "missing (custom node 'Template')");
        }
        other => panic!(
            "expected a missing input, got {:?}",
            other.map(|o| o.values)
        ),
    }
    let inputs = template_inputs("oops {var_0", &["owl"]);
    assert_eq!(
        failure(run(&node, &inputs)),
        "input 'template': unclosed '{' at byte 5 (custom node 'Template')"
    );
}

#[test]
fn the_host_checks_variadic_inputs_before_the_guest_sees_them() {
    let node = load(&host(), "template");
    let with = |name: &str, value: Value| template_inputs("{var_0}", &[]).with(name, value);
    for (name, value, problem) in [
        (
            "a",
            Value::String("x".into()),
            "input 'a': not an input of this node",
        ),
        (
            "vars.var_16",
            Value::String("x".into()),
            "input 'vars.var_16': not an input of this node",
        ),
        (
            "vars.var_01",
            Value::String("x".into()),
            "input 'vars.var_01': not an input of this node",
        ),
        (
            "other.var_0",
            Value::String("x".into()),
            "input 'other.var_0': not an input of this node",
        ),
        (
            "vars.var_0",
            Value::Int(1),
            "input 'vars.var_0': expected STRING, got INT",
        ),
    ] {
        assert_eq!(failure(run(&node, &with(name, value))), problem, "{name}");
    }
    let inputs =
        template_inputs("{var_15}!", &[]).with("vars.var_15", Value::String("last".into()));
    let out = run(&node, &inputs).unwrap();
    assert_eq!(text(&out.values[0]), "last!");
}

#[test]
fn pairs_lists_every_pair_as_list_outputs_and_selects_one_by_seed() {
    let node = load(&host(), "pairs");
    let inputs = |seed: i64| {
        Inputs::new()
            .with(
                "concepts",
                Value::String("owl, teapot\ncactus, owl,".into()),
            )
            .with("seed", Value::Int(seed))
    };
    let out = run(&node, &inputs(4)).unwrap();
    let [a, b, Value::StringList(pairs), Value::Int(count), Value::List(every_a), Value::List(every_b)] =
        &out.values[..]
    else {
        panic!("unexpected outputs {:?}", out.values);
    };
    assert_eq!(pairs, &["owl + teapot", "owl + cactus", "teapot + cactus"]);
    assert_eq!(*count, 3);
    let texts = |items: &[Value]| items.iter().map(|v| text(v).to_owned()).collect::<Vec<_>>();
    assert_eq!(texts(every_a), ["owl", "owl", "teapot"]);
    assert_eq!(texts(every_b), ["teapot", "cactus", "cactus"]);
    assert_eq!((text(a), text(b)), ("owl", "cactus"));
    let out = run(&node, &inputs(-1)).unwrap();
    assert_eq!(
        (text(&out.values[0]), text(&out.values[1])),
        ("teapot", "cactus")
    );

    let one = Inputs::new()
        .with("concepts", Value::String("owl".into()))
        .with("seed", Value::Int(0));
    assert_eq!(
        failure(run(&node, &one)),
        "input 'concepts': needs at least two distinct concepts, got 1 (custom node 'ConceptPairs')"
    );
}

#[test]
fn weighted_choice_is_seeded_and_follows_the_weights() {
    let node = load(&host(), "weighted-choice");
    let pick = |choices: &str, seed: i64| {
        let inputs = Inputs::new()
            .with("choices", Value::String(choices.into()))
            .with("seed", Value::Int(seed));
        let out = run(&node, &inputs).unwrap();
        match &out.values[..] {
            [Value::String(choice), Value::Int(index)] => (choice.clone(), *index),
            other => panic!("unexpected outputs {other:?}"),
        }
    };
    assert_eq!(pick("owl=3 | cat", 11), pick("owl=3 | cat", 11));
    for seed in 0..20 {
        assert_eq!(pick("never=0 | always", seed), ("always".to_owned(), 1));
    }
    let owls = (0..400)
        .filter(|seed| pick("owl=3\ncat=1", *seed).0 == "owl")
        .count();
    assert!((260..340).contains(&owls), "owl picked {owls} times of 400");
    let inputs = Inputs::new()
        .with("choices", Value::String("owl=heavy".into()))
        .with("seed", Value::Int(0));
    assert!(failure(run(&node, &inputs)).contains("the weight is not a number"));
}

#[test]
fn a_node_serves_concurrent_calls() {
    let node = load(&host(), "template");
    std::thread::scope(|scope| {
        for i in 0..4 {
            let node = &node;
            scope.spawn(move || {
                for j in 0..25 {
                    let inputs =
                        template_inputs("{var_0}-{var_1}", &[&i.to_string(), &j.to_string()]);
                    let out = run(node, &inputs).unwrap();
                    assert_eq!(text(&out.values[0]), format!("{i}-{j}"));
                }
            });
        }
    });
    assert_eq!(node.schema().name, "Template");
}

/// ConceptPairs has list outputs: validation runs it ahead when its inputs
/// are known, so the nodes they feed are counted per real pair, not at the
/// executor's list cap.
#[test]
fn a_guest_with_list_outputs_is_estimated_from_a_run_ahead_when_its_inputs_are_known() {
    use cretok_node_api::{EstimateInputs, ValueEstimate};
    let node = load(&host(), "pairs");
    let known = EstimateInputs::new()
        .with(
            "concepts",
            ValueEstimate::known(&Value::String("owl, teapot, cactus, lighthouse".into())),
        )
        .with("seed", ValueEstimate::known(&Value::Int(0)));
    let estimate = node.estimate(&known).unwrap();
    let items: Vec<u64> = estimate.outputs.iter().map(|o| o.items).collect();
    assert_eq!(items, [1, 1, 1, 1, 6, 6], "six pairs of four concepts");
    assert_eq!(
        estimate.outputs[4].bytes,
        "owlowlowlteapotteapotcactus".len() as u64
    );

    let unknown = known.with("concepts", ValueEstimate::bytes(30));
    assert!(
        node.estimate(&unknown).unwrap().outputs.is_empty(),
        "without known inputs validation falls back to the list cap"
    );
}
