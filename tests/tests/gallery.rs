//! Every workflow in `workflows/` runs headless on the tiny checkpoint, with
//! the example custom nodes installed, and writes valid outputs; each file
//! carries its titles and description in `_meta`.

use std::path::Path;

use cretok_tests::{
    assert_succeeded, cretok_with_data, example_components, repo_root, written_paths,
};

/// `cretok ARGS` on the data in `dir` and the models in `dir/models`.
fn cretok(args: &[&str], dir: &Path) -> std::process::Output {
    let models = dir.join("models");
    let models = ["--models", models.to_str().unwrap()];
    cretok_with_data(&[args, &models].concat(), dir)
}

/// Checks a written file; returns the size of a PNG.
fn check_output(path: &Path) -> Option<(u32, u32)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    if path.extension().is_none_or(|e| e != "png") {
        return None;
    }
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .expect("a valid PNG");
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).expect("complete image data");
    assert!(frame.width > 0 && frame.height > 0);
    Some((frame.width, frame.height))
}

/// The size the comparison grids must have: cells of 96x64 with 4 px padding
/// and an 11 px caption strip.
fn grid_size(workflow: &str) -> Option<(u32, u32)> {
    let columns = match workflow {
        "blend_style.json" => 2,
        "pairs_sweep.json" => 3,
        "strength_sweep.json" => 4,
        _ => return None,
    };
    Some((columns * (96 + 4) + 4, 4 + 64 + 11 + 4))
}

/// Every node is titled and one node titles and describes the workflow.
fn check_meta(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let prompt: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = prompt.as_object().expect("API format");
    for (id, node) in nodes {
        let title = node["_meta"]["title"].as_str().unwrap_or_default();
        assert!(
            !title.is_empty(),
            "{}: node {id} has no title",
            path.display()
        );
    }
    assert!(
        nodes.values().any(|n| n["_meta"]["description"]
            .as_str()
            .is_some_and(|d| d.len() > 20)
            && n["_meta"]["workflow_title"]
                .as_str()
                .is_some_and(|t| !t.is_empty())),
        "{} has no workflow_title and description",
        path.display()
    );
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
    for args in [
        &["dev", "tiny-checkpoint"][..],
        &[
            "train",
            "--checkpoint",
            "tiny-sd3.safetensors",
            "--steps",
            "2",
            "--pairs-per-step",
            "2",
            "--quiet",
        ],
    ] {
        assert_succeeded(&cretok(args, dir.path()), args);
    }

    let mut workflows: Vec<_> = std::fs::read_dir(repo_root().join("workflows"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    workflows.sort();
    let names: Vec<String> = workflows
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for gallery in [
        "cretok_train_and_blend.json",
        "blend_pair.json",
        "blend_three.json",
        "blend_style.json",
        "strength_sweep.json",
        "pairs_sweep.json",
        "sd3_txt2img.json",
    ] {
        assert!(names.iter().any(|n| n == gallery), "{gallery} is missing");
    }
    for (workflow, file_name) in workflows.iter().zip(&names) {
        check_meta(workflow);
        let name = workflow.to_str().unwrap();
        let args = [
            "run",
            name,
            "--quiet",
            "--custom-nodes",
            custom.to_str().unwrap(),
        ];
        let out = cretok(&args, dir.path());
        assert_succeeded(&out, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let written = written_paths(&stdout);
        assert!(!written.is_empty(), "{name} wrote nothing: {stdout}");
        let sizes: Vec<_> = written
            .iter()
            .filter_map(|path| check_output(Path::new(path)))
            .collect();
        if let Some(size) = grid_size(file_name) {
            assert_eq!(sizes, [size], "{name}: one captioned grid");
        }
    }
}

/// The README's "try the whole pipeline" commands, taken from the README itself, over an empty
/// data directory; then blend_pair, the workflow `cretok serve` opens in the editor, runs with
/// the token they trained.
#[test]
fn the_readme_pipeline_trains_the_token_blend_pair_loads() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let block = readme
        .split("Try the whole pipeline")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README's pipeline block");
    let commands: Vec<Vec<&str>> = block
        .lines()
        .filter_map(|l| l.strip_prefix("target/release/cretok "))
        .map(|l| l.split('#').next().unwrap().split_whitespace().collect())
        .collect();
    assert_eq!(
        commands.last().map(|c| c.as_slice()),
        Some(&["serve"][..]),
        "{block}"
    );
    let dir = tempfile::tempdir().unwrap();
    for args in &commands[..commands.len() - 1] {
        assert_succeeded(&cretok(args, dir.path()), args);
    }
    let token = dir.path().join("models/embeddings/cretok.safetensors");
    assert!(token.is_file(), "no token where blend_pair loads it");
    let args = ["run", "workflows/blend_pair.json"];
    let out = cretok(&args, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out, &args);
    assert!(stdout.contains("blend_pair_00001_.png"), "{stdout}");
}
