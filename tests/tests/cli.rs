//! `cretok run` and `cretok nodes` as a user runs them.

use std::process::Command;

use cretok_tests::{cretok_bin, repo_root};
use serde_json::Value;

fn cretok(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(cretok_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(repo_root())
        .output()
        .expect("cretok runs")
}

#[test]
fn run_writes_outputs_and_prints_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = cretok(
        &[
            "run",
            "workflows/hello_text.json",
            "--set",
            "2.string_b=a bee and a frog",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .trim()
        .strip_prefix("wrote ")
        .expect("prints the output path");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "a creative mixture that resembles a bee and a frog"
    );
}

#[test]
fn run_fails_with_the_validation_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = cretok(
        &[
            "run",
            "workflows/hello_text.json",
            "--set",
            "2.string_a=[\"9\", 0]",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad_linked_input") && stderr.contains("node '9' does not exist"),
        "{stderr}"
    );
}

#[test]
fn run_fails_with_the_node_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cretok(
        &[
            "run",
            "workflows/hello_text.json",
            "--set",
            "3.filename_prefix=/etc/x",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node 3 (SaveText)") && stderr.contains("filename_prefix"),
        "{stderr}"
    );
}

#[test]
fn nodes_json_is_the_object_info() {
    let dir = tempfile::tempdir().unwrap();
    let out = cretok(&["nodes", "--json"], dir.path());
    assert!(out.status.success());
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let save = &info["SaveText"];
    assert_eq!(save["output_node"], true);
    assert_eq!(save["input"]["required"]["text"][0], "STRING");
    assert_eq!(
        info["Delay"]["input"]["required"]["milliseconds"][1]["max"],
        3_600_000
    );
}
