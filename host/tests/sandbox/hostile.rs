//! Hostile guests: each attack ends in an error naming the node and the limit
//! it hit, and the next call on the same node works.

use std::time::{Duration, Instant};

use cretok_host::sandbox::{Fault, RunError, SandboxHost, SandboxLimits, SandboxNode};
use cretok_node_api::{Inputs, NodeError, Value};

use crate::support::{component, failure, run, run_with, TextSink};

const DEADLINE: Duration = Duration::from_millis(300);

fn hostile() -> SandboxNode {
    hostile_with(SandboxLimits {
        deadline: DEADLINE,
        ..SandboxLimits::default()
    })
}

fn hostile_with(limits: SandboxLimits) -> SandboxNode {
    let host = SandboxHost::new(limits, None).unwrap();
    host.load_file(&component("hostile-runtime")).unwrap()
}

fn attack(node: &SandboxNode, attack: &str) -> Result<cretok_node_api::NodeOutput, NodeError> {
    run(
        node,
        &Inputs::new().with("attack", Value::String(attack.into())),
    )
}

/// The fault inside a failed run, after checking its message names the node.
fn fault(result: Result<cretok_node_api::NodeOutput, NodeError>) -> Fault {
    match result {
        Err(NodeError::Failed(error)) => {
            let message = format!("{error:#}");
            assert!(
                message.starts_with("custom node 'Hostile' (hostile-runtime.wasm) "),
                "{message}"
            );
            error.downcast::<RunError>().unwrap().fault
        }
        other => panic!("expected a failure, got {:?}", other.map(|o| o.values)),
    }
}

/// The node still answers normally.
fn still_works(node: &SandboxNode) {
    let out = attack(node, "none").unwrap();
    assert!(matches!(&out.values[..], [Value::String(s)] if s == "ok"));
}

#[test]
fn an_endless_loop_hits_the_deadline() {
    let node = hostile();
    let started = Instant::now();
    let result = attack(&node, "spin");
    let took = started.elapsed();
    assert_eq!(fault(result), Fault::Deadline(DEADLINE));
    assert!(
        took >= DEADLINE && took < DEADLINE * 10,
        "stopped after {took:?}"
    );
    still_works(&node);
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let node = hostile();
    let result = attack(&node, "memory");
    let message = failure(attack(&node, "memory"));
    match fault(result) {
        Fault::Memory(exceeded) => {
            assert_eq!(exceeded.limit, 16 << 20);
            assert!(exceeded.requested > exceeded.limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert!(
        message.contains("exceeded the memory limit of 16.0 MiB"),
        "{message}"
    );
    still_works(&node);
}

#[test]
fn deep_recursion_hits_the_stack_cap() {
    let node = hostile();
    let message = failure(attack(&node, "recursion"));
    assert_eq!(fault(attack(&node, "recursion")), Fault::Stack(512 << 10));
    assert!(
        message.ends_with("overflowed its stack limit of 512 KiB (max_wasm_stack)"),
        "{message}"
    );
    still_works(&node);
}

#[test]
fn a_panic_reports_its_message() {
    let node = hostile();
    let sink = TextSink::default();
    let result = run_with(
        &node,
        &Inputs::new().with("attack", Value::String("panic".into())),
        &sink,
    );
    match fault(result) {
        Fault::Panic(message) => {
            assert!(
                message.ends_with("the hostile node panics on purpose"),
                "{message}"
            );
            assert!(
                message.starts_with("hostile/runtime/src/lib.rs:"),
                "{message}"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    let logged = sink.0.lock().unwrap();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("[Hostile] panicked at")),
        "{logged:?}"
    );
    drop(logged);
    still_works(&node);
}

#[test]
fn outputs_that_break_the_schema_are_refused() {
    let node = hostile();
    for (attack_name, problem) in [
        ("wrong-type", "output 'text' is INT, the schema says STRING"),
        ("missing-output", "output 'text' is missing"),
        ("unknown-output", "output 'surprise' is not declared"),
    ] {
        assert_eq!(
            fault(attack(&node, attack_name)),
            Fault::BadOutputs(problem.into()),
            "{attack_name}"
        );
    }
    assert_eq!(
        failure(attack(&node, "wrong-type")),
        "custom node 'Hostile' (hostile-runtime.wasm) returned outputs that break its schema: \
         output 'text' is INT, the schema says STRING"
    );
    still_works(&node);
}

#[test]
fn a_log_flood_is_bounded() {
    let node = hostile();
    let sink = TextSink::default();
    let out = run_with(
        &node,
        &Inputs::new().with("attack", Value::String("log-flood".into())),
        &sink,
    )
    .unwrap();
    assert!(matches!(&out.values[..], [Value::String(s)] if s == "flooded"));
    let logged = sink.0.lock().unwrap();
    assert_eq!(logged.len(), SandboxLimits::default().log_lines);
    assert!(
        logged.iter().all(|l| l.len() < 1100),
        "a line was not truncated"
    );
}

#[test]
fn inputs_are_checked_before_the_guest_runs() {
    let node = hostile();
    let inputs = Inputs::new().with("attack", Value::Int(1));
    assert_eq!(
        failure(run(&node, &inputs)),
        "input 'attack': expected STRING, got INT"
    );
    let inputs = Inputs::new().with("attack", Value::String("nonsense".into()));
    assert_eq!(
        failure(run(&node, &inputs)),
        "input 'attack': unknown attack 'nonsense' (custom node 'Hostile')"
    );
}

#[test]
fn every_attack_in_a_row_leaves_the_node_working() {
    let node = hostile();
    for name in ["spin", "memory", "recursion", "panic", "wrong-type"] {
        assert!(attack(&node, name).is_err(), "{name}");
        still_works(&node);
    }
}

#[test]
fn calls_past_the_pool_size_fail_until_a_slot_frees() {
    let node = hostile_with(SandboxLimits {
        deadline: DEADLINE,
        concurrent_calls: 1,
        ..SandboxLimits::default()
    });
    std::thread::scope(|scope| {
        let spinning = scope.spawn(|| attack(&node, "spin"));
        // Until the spinning call holds the only slot, calls may still succeed.
        let busy = (0..20).find_map(|_| {
            std::thread::sleep(DEADLINE / 20);
            attack(&node, "none").err()
        });
        assert_eq!(
            fault(Err(busy.expect("no call found the pool busy"))),
            Fault::Busy(1)
        );
        assert_eq!(fault(spinning.join().unwrap()), Fault::Deadline(DEADLINE));
    });
    still_works(&node);
}
