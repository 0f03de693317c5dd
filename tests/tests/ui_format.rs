//! Editor (UI-format) workflows and SaveImage PNGs as `cretok run` and
//! `cretok convert` inputs: conversion as the editor does it, clear errors for
//! files this install cannot run, and bit-identical images whichever form of a
//! graph runs.

use std::path::{Path, PathBuf};

use cretok_tests::{
    cretok_with_data as cretok, cretok_with_data_ok as succeed, repo_root, run_one,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/ui").join(name)
}

/// Every UI-format capture of `workflows/blend_pair.json`: the hand-made one
/// with every editor feature, and the one saved by the real frontend.
fn blend_pair_ui_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/fixtures/ui"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("blend_pair") && name.ends_with(".ui.json")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// Class types and inputs by node id (titles aside).
fn graph_of(prompt: &Value) -> Value {
    let nodes = prompt.as_object().expect("an API prompt");
    nodes
        .iter()
        .map(|(id, n)| {
            let graph = serde_json::json!({"class_type": n["class_type"], "inputs": n["inputs"]});
            (id.clone(), graph)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn convert(path: &Path, dir: &Path) -> Value {
    let out = succeed(&["convert", path.to_str().unwrap()], dir);
    serde_json::from_str(&out).expect("convert writes JSON")
}

/// A data dir with the tiny checkpoint and a (barely) trained token.
fn tiny_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    succeed(&["dev", "tiny-checkpoint"], dir.path());
    succeed(
        &[
            "train",
            "--checkpoint",
            "tiny-sd3.safetensors",
            "--steps",
            "1",
            "--pairs-per-step",
            "1",
            "--quiet",
        ],
        dir.path(),
    );
    dir
}

fn pixels(png_path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(png_path).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    buffer.truncate(frame.buffer_size());
    (frame.width, frame.height, buffer)
}

fn text_chunk(png_path: &Path, keyword: &str) -> Option<String> {
    let bytes = std::fs::read(png_path).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_ignore_text_chunk(false);
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == keyword)
        .map(|c| c.text.clone())
}

#[test]
fn mute_bypass_reroute_primitive_and_seed_control_convert_as_the_editor_does() {
    let dir = tempfile::tempdir().unwrap();
    let api = convert(&fixture("blend_pair.features.ui.json"), dir.path());
    let text = std::fs::read_to_string(repo_root().join("workflows/blend_pair.json")).unwrap();
    let mut expected: Value = serde_json::from_str(&text).unwrap();
    // The editor sends every widget, optional ones included.
    expected["5"]["inputs"]["denoise"] = 1.0.into();
    // Muted (15), bypassed (12, 14), reroute (10), primitives (11, 13) and the note (16) are gone;
    // the primitives' values (prompt, seed 42) replaced the stale widget values.
    assert_eq!(graph_of(&api), graph_of(&expected));
    assert_eq!(api["1"]["_meta"]["title"], "SD3 checkpoint");
    assert_eq!(
        api["6"]["_meta"]["title"], "VAE Decode",
        "untitled: the display name"
    );
}

#[test]
fn unknown_types_and_version_skew_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let out = cretok(
        &["convert", fixture("skew.ui.json").to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial output");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "unknown node type 'FancyUpscaler' (nodes 2, 4)",
        "unknown node type 'LoraLoader' (node 3)",
        "node 5 (Sample): wrong number of widget values: the installed Sample expects 9 widget values [seed, control_after_generate, steps, cfg, shift, width, height, batch_size, denoise], the file has 7",
        "node 6 (CLIPTextEncode): wrong number of widget values: the installed CLIPTextEncode expects 1 widget values [text], the file has 2",
        "node 7 (Sample): 4 where a control_after_generate value belongs",
    ] {
        assert!(err.contains(needle), "missing «{needle}» in:\n{err}");
    }
    assert!(
        !err.contains("OldMutedNode"),
        "muted nodes need not exist:\n{err}"
    );

    // `cretok run` refuses the same file with the same report, before running anything.
    let out = cretok(
        &["run", fixture("skew.ui.json").to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown node type 'LoraLoader'"));
    assert!(!dir.path().join("output").exists());
}

#[test]
fn ui_files_api_file_and_png_round_trip_give_identical_pixels() {
    let dir = tiny_models();
    let api_png = run_one(&repo_root().join("workflows/blend_pair.json"), dir.path());
    let (width, height, api_pixels) = pixels(&api_png);
    assert_eq!((width, height), (96, 64));
    assert!(
        api_pixels.iter().any(|&v| v != api_pixels[0]),
        "not a flat image"
    );

    for ui in blend_pair_ui_files() {
        let ui_png = run_one(&ui, dir.path());
        assert_eq!(pixels(&ui_png), pixels(&api_png), "{}", ui.display());
        // Saved as ComfyUI does: the prompt and the editor workflow it came from.
        let workflow: Value =
            serde_json::from_str(&text_chunk(&ui_png, "workflow").unwrap()).unwrap();
        let original: Value = serde_json::from_str(&std::fs::read_to_string(&ui).unwrap()).unwrap();
        assert_eq!(workflow, original);
    }

    // The PNG itself is a workflow: its embedded prompt reproduces it bit for bit.
    let again = run_one(&api_png, dir.path());
    assert_ne!(again, api_png);
    assert_eq!(pixels(&again), pixels(&api_png));
    assert_eq!(text_chunk(&again, "prompt"), text_chunk(&api_png, "prompt"));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&api_png).unwrap()
    );
}

#[test]
fn a_png_with_only_the_editor_workflow_is_converted() {
    let dir = tiny_models();
    let ui = fixture("blend_pair.features.ui.json");
    let workflow = std::fs::read_to_string(&ui).unwrap();
    let reference = run_one(&ui, dir.path());
    let (width, height, rgb) = pixels(&reference);

    let only_workflow = dir.path().join("workflow_only.png");
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.add_text_chunk("workflow".into(), workflow).unwrap();
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&rgb).unwrap();
    writer.finish().unwrap();
    std::fs::write(&only_workflow, bytes).unwrap();

    let api = convert(&only_workflow, dir.path());
    assert_eq!(graph_of(&api), graph_of(&convert(&ui, dir.path())));
    assert_eq!(
        pixels(&run_one(&only_workflow, dir.path())),
        (width, height, rgb)
    );

    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0, 0, 0]).unwrap();
        writer.finish().unwrap();
        bytes
    })
    .unwrap();
    let out = cretok(&["run", plain.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.png") && err.contains("embeds no prompt"),
        "{err}"
    );
}

#[test]
fn convert_writes_the_api_file_atomically_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("blend_pair.api.json");
    succeed(
        &[
            "convert",
            fixture("blend_pair.features.ui.json").to_str().unwrap(),
            "-o",
            target.to_str().unwrap(),
        ],
        dir.path(),
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(written["5"]["inputs"]["seed"], 42);
    // An API file goes through unchanged.
    let api = convert(&target, dir.path());
    assert_eq!(api, written);
}
