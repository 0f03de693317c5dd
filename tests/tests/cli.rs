//! `cretok run` and `cretok nodes` as a user runs them.

use std::path::Path;
use std::process::Command;

use cretok_tests::{
    assert_succeeded, cretok_bin, cretok_with_data as cretok, repo_root, written_paths,
};
use serde_json::Value;

/// `cretok run workflows/hello_text.json --set SET`.
fn run_hello_text_setting(set: &str, data_dir: &Path) -> std::process::Output {
    let args = ["run", "workflows/hello_text.json", "--set", set];
    cretok(&args, data_dir)
}

/// The one file a successful `cretok run` printed as `wrote PATH`.
fn the_written_file(out: &std::process::Output) -> String {
    assert_succeeded(out, &["run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.trim().strip_prefix("wrote ");
    path.expect("prints the output path").to_owned()
}

/// Fails the test unless `out` exited with `code` and its stderr holds every one of `needles`.
fn assert_fails_with(out: &std::process::Output, code: i32, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(code));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(needles.iter().all(|n| stderr.contains(n)), "{stderr}");
}

#[test]
fn run_writes_outputs_and_prints_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_hello_text_setting("2.string_b=a bee and a frog", dir.path());
    let path = the_written_file(&out);
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "a creative mixture that resembles a bee and a frog"
    );
}

/// `--target` runs one output node of two and what it needs; a target that
/// is not an output node of the workflow is refused by name.
#[test]
fn run_targets_only_the_output_nodes_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = dir.path().join("two_outputs.json");
    let save = |text: &str, prefix: &str| serde_json::json!({"class_type": "SaveText", "inputs": {"text": text, "filename_prefix": prefix}});
    let prompt = serde_json::json!({"1": save("first", "one"), "2": save("second", "two")});
    std::fs::write(&workflow, prompt.to_string()).unwrap();
    let workflow = workflow.to_str().unwrap();
    let out = cretok(&["run", workflow, "--target", "2", "--quiet"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let written = written_paths(&stdout);
    assert_eq!(written.len(), 1, "{stdout}");
    assert_eq!(std::fs::read_to_string(written[0]).unwrap(), "second");

    for (file, target, error) in [
        (workflow, "9", "--target 9: the workflow has no node 9"),
        (
            "workflows/hello_text.json",
            "2",
            "--target 2: node 2 (StringConcatenate) is not an output node",
        ),
    ] {
        let out = cretok(&["run", file, "--target", target], dir.path());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{stderr}");
    }
}

#[test]
fn run_fails_with_the_validation_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_hello_text_setting("2.string_a=[\"9\", 0]", dir.path());
    assert_fails_with(&out, 2, &["bad_linked_input", "node '9' does not exist"]);
}

#[test]
fn run_fails_with_the_node_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_hello_text_setting("3.filename_prefix=/etc/x", dir.path());
    assert_fails_with(&out, 1, &["node 3 (SaveText)", "filename_prefix"]);
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
    // The loader `cretok train` runs: a checkpoint's CLIP alone.
    let clip_only = &info["CheckpointCLIPLoader"];
    assert_eq!(clip_only["category"], "loaders");
    assert_eq!(clip_only["output"], serde_json::json!(["CLIP"]));
    assert_eq!(clip_only["input"]["optional"]["load_t5"][0], "BOOLEAN");
}

/// `cretok ARGS --data-dir DIR` under `umask MASK` (a shell sets it, then runs the binary).
fn cretok_under_umask(mask: &str, args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
        .arg(cretok_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(repo_root())
        .output()
        .expect("sh runs")
}

#[cfg(unix)]
#[test]
fn written_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    for (mask, mode) in [("022", 0o644), ("077", 0o600)] {
        let dir = tempfile::tempdir().unwrap();
        let out = cretok_under_umask(mask, &["run", "workflows/hello_text.json"], dir.path());
        let path = the_written_file(&out);
        let written = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(written, mode, "umask {mask}: {path}");

        let args = ["dev", "tiny-checkpoint"];
        assert_succeeded(&cretok_under_umask(mask, &args, dir.path()), &args);
        let ckpt = dir.path().join("models/checkpoints/tiny-sd3.safetensors");
        let written = std::fs::metadata(&ckpt).unwrap().permissions().mode() & 0o777;
        assert_eq!(written, mode, "umask {mask}: {}", ckpt.display());
    }
}

#[test]
fn run_prints_node_messages_once_as_plain_lines_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["dev", "tiny-checkpoint"];
    assert_succeeded(&cretok(&args, dir.path()), &args);
    // `output()` pipes stdout and stderr: neither is a terminal.
    let out = cretok(
        &["run", "workflows/cretok_train_and_blend.json"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let training: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("[2] step "))
        .collect();
    assert!(
        training.iter().any(|l| l.contains(": loss ")),
        "no training loss lines:\n{stderr}"
    );
    assert!(
        training.iter().any(|l| l.contains("held-out loss")),
        "no held-out loss lines:\n{stderr}"
    );
    for line in &training {
        let times = lines.iter().filter(|l| l == &line).count();
        assert_eq!(times, 1, "printed {times} times: {line}\n{stderr}");
    }
    let saved = "[2] saved models/embeddings/cretok.safetensors";
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(saved)).count(),
        1,
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[1] ") && l.contains("layout") && l.contains("text encoders")),
        "no loader summary:\n{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[1] ") && l.contains("t5xxl missing (T5 rows are zeros")),
        "the loader summary does not say that T5 is missing, and what follows:\n{stderr}"
    );
}

#[test]
fn every_option_is_described_and_the_data_dir_default_named() {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        "serve",
        "run",
        "convert",
        "nodes",
        "train",
        "dev tiny-checkpoint",
        "worker",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = cretok(&args, dir.path());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {help}");
        let options: Vec<&str> = help
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .collect();
        assert!(!options.is_empty(), "{command}: {help}");
        let mut lines = help.lines().map(str::trim).peekable();
        while let Some(line) = lines.next() {
            let is_option = line.starts_with("--") || line.get(2..4) == Some(", ");
            if !line.starts_with('-') || !is_option {
                continue;
            }
            // Short help: the text after the flag; long help: the next line.
            let described = line.split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                || lines
                    .peek()
                    .is_some_and(|next| !next.is_empty() && !next.starts_with('-'));
            assert!(described, "{command}: `{line}` is not described:\n{help}");
        }
        assert!(
            help.contains("~/.local/share/cretok"),
            "{command} --help does not say where data lives:\n{help}"
        );
    }
}

#[test]
fn checkpoint_random_refuses_unknown_variants_and_bad_paths_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], reason: &str| {
        let out = Command::new(cretok_bin())
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("cretok runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(reason), "{stderr}");
    };
    refused(
        &["checkpoint", "random", "--variant", "sd4", "--out", "x"],
        "sd3-medium-t5",
    );
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    for (out, reason) in [
        ("folder", "is a folder"),
        ("missing/x.safetensors", "its folder does not exist"),
    ] {
        let args = [
            "checkpoint",
            "random",
            "--variant",
            "sd3.5-medium",
            "--out",
            out,
            "--quiet",
        ];
        refused(&args, reason);
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the folder is there");
}
