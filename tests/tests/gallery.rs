//! Every workflow in `workflows/` runs headless on the tiny checkpoint, with
//! the example custom nodes installed, and writes valid outputs.

use std::path::Path;
use std::process::Command;

use cretok_tests::{cretok_bin, example_components, repo_root};

fn cretok(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(cretok_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .arg("--models")
        .arg(dir.join("models"))
        .current_dir(repo_root())
        .output()
        .expect("cretok runs")
}

fn check_output(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    if path.extension().is_some_and(|e| e == "png") {
        let info = png::Decoder::new(std::io::Cursor::new(&bytes))
            .read_info()
            .expect("a valid PNG");
        assert!(info.info().width > 0 && info.info().height > 0);
    }
}

#[test]
fn every_workflow_runs_headless() {
    let dir = tempfile::tempdir().unwrap();
    let custom = dir.path().join("custom_nodes");
    std::fs::create_dir_all(&custom).unwrap();
    let components = example_components(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &["template", "pairs", "weighted-choice"],
    );
    for entry in std::fs::read_dir(&components).unwrap().flatten() {
        std::fs::copy(entry.path(), custom.join(entry.file_name())).unwrap();
    }
    let out = cretok(&["dev", "tiny-checkpoint"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cretok(
        &[
            "train",
            "--checkpoint",
            "tiny-sd3.safetensors",
            "--steps",
            "5",
            "--pairs-per-step",
            "2",
            "--quiet",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut workflows: Vec<_> = std::fs::read_dir(repo_root().join("workflows"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    workflows.sort();
    assert!(workflows.len() >= 4, "{workflows:?}");
    for workflow in workflows {
        let name = workflow.to_str().unwrap();
        let out = cretok(
            &[
                "run",
                name,
                "--quiet",
                "--custom-nodes",
                custom.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let written: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("wrote "))
            .collect();
        assert!(!written.is_empty(), "{name} wrote nothing: {stdout}");
        for path in written {
            check_output(Path::new(path));
        }
    }
}
