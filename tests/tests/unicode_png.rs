//! Prompts and notes in any script survive SaveImage and come back through
//! `cretok run PNG` and `cretok convert PNG`: text that is not Latin-1 is
//! saved as UTF-8 `iTXt`, as ComfyUI (through PIL) saves it.

use std::path::Path;

use cretok_tests::{cretok_with_data_ok as cretok, repo_root, run_one};
use serde_json::{json, Value};

/// Em dash, curly quotes, CJK, Cyrillic and an emoji (outside the BMP).
const PROMPT: &str = "a lettuce mantis \u{2014} \u{201c}studio\u{201d} \u{732b}\u{306e}\u{7d75} \u{043a}\u{043e}\u{0442} \u{1f98a}";
const NOTE: &str =
    "Note \u{2014} \u{2018}notes\u{2019} keep \u{00e9}, \u{4e2d}\u{6587} and \u{1f3a8}";

/// One editor node: `inputs` are `(name, type, link)`, `outputs` `(type, links)`.
fn node(
    id: u32,
    kind: &str,
    inputs: &[(&str, &str, u32)],
    outputs: &[(&str, &[u32])],
    widgets: Value,
) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(name, ty, link)| json!({"name": name, "type": ty, "link": link}))
        .collect();
    let outputs: Vec<Value> = outputs
        .iter()
        .map(|(ty, links)| json!({"name": ty, "type": ty, "links": links}))
        .collect();
    json!({"id": id, "type": kind, "pos": [0, 0], "size": [200, 100], "flags": {},
           "order": id, "mode": 0, "inputs": inputs, "outputs": outputs,
           "properties": {}, "widgets_values": widgets})
}

/// ComfyUI's SD3 text to image as the editor saves it, with a Unicode prompt and note.
fn ui_workflow() -> Value {
    let nodes = vec![
        node(
            1,
            "CheckpointLoaderSimple",
            &[],
            &[("MODEL", &[1]), ("CLIP", &[2, 3]), ("VAE", &[8])],
            json!(["tiny-sd3.safetensors"]),
        ),
        node(
            2,
            "CLIPTextEncode",
            &[("clip", "CLIP", 2)],
            &[("CONDITIONING", &[4])],
            json!([PROMPT]),
        ),
        node(
            3,
            "CLIPTextEncode",
            &[("clip", "CLIP", 3)],
            &[("CONDITIONING", &[5])],
            json!([""]),
        ),
        node(
            4,
            "EmptySD3LatentImage",
            &[],
            &[("LATENT", &[6])],
            json!([32, 32, 1]),
        ),
        node(
            5,
            "KSampler",
            &[
                ("model", "MODEL", 1),
                ("positive", "CONDITIONING", 4),
                ("negative", "CONDITIONING", 5),
                ("latent_image", "LATENT", 6),
            ],
            &[("LATENT", &[7])],
            json!([7, "fixed", 2, 4.5, "euler", "sgm_uniform", 1.0]),
        ),
        node(
            6,
            "VAEDecode",
            &[("samples", "LATENT", 7), ("vae", "VAE", 8)],
            &[("IMAGE", &[9])],
            json!([]),
        ),
        node(
            7,
            "SaveImage",
            &[("images", "IMAGE", 9)],
            &[],
            json!(["unicode/\u{00e9}t\u{00e9}"]),
        ),
        node(8, "Note", &[], &[], json!([NOTE])),
    ];
    let links = [
        (1, 1, 0, 5, 0, "MODEL"),
        (2, 1, 1, 2, 0, "CLIP"),
        (3, 1, 1, 3, 0, "CLIP"),
        (4, 2, 0, 5, 1, "CONDITIONING"),
        (5, 3, 0, 5, 2, "CONDITIONING"),
        (6, 4, 0, 5, 3, "LATENT"),
        (7, 5, 0, 6, 0, "LATENT"),
        (8, 1, 2, 6, 1, "VAE"),
        (9, 6, 0, 7, 0, "IMAGE"),
    ]
    .map(|(id, from, slot, to, to_slot, ty)| json!([id, from, slot, to, to_slot, ty]));
    json!({"last_node_id": 8, "last_link_id": 9, "nodes": nodes, "links": links,
           "groups": [], "config": {}, "extra": {}, "version": 0.4})
}

struct Png {
    pixels: Vec<u8>,
    /// `(keyword, text)` of the `tEXt` chunks, then of the `iTXt` chunks.
    latin1: Vec<(String, String)>,
    utf8: Vec<(String, String)>,
}

fn read_png(path: &Path) -> Png {
    let bytes = std::fs::read(path).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_ignore_text_chunk(false);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut pixels).unwrap();
    let info = reader.info();
    assert!(info.compressed_latin1_text.is_empty());
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    let utf8 = info
        .utf8_text
        .iter()
        .inspect(|c| assert!(!c.compressed, "PIL writes iTXt uncompressed"))
        .map(|c| (c.keyword.clone(), c.get_text().unwrap()))
        .collect();
    Png {
        pixels,
        latin1,
        utf8,
    }
}

fn json_of(chunks: &[(String, String)], keyword: &str) -> Value {
    let text = &chunks.iter().find(|(k, _)| k == keyword).unwrap().1;
    serde_json::from_str(text).unwrap()
}

#[test]
fn unicode_prompts_and_notes_round_trip_through_saved_pngs() {
    let dir = tempfile::tempdir().unwrap();
    cretok(&["dev", "tiny-checkpoint"], dir.path());
    let ui = ui_workflow();
    let ui_path = dir.path().join("unicode.ui.json");
    std::fs::write(&ui_path, serde_json::to_string_pretty(&ui).unwrap()).unwrap();

    let saved_path = run_one(&ui_path, dir.path());
    assert!(
        saved_path.to_string_lossy().contains("\u{00e9}t\u{00e9}_"),
        "{}",
        saved_path.display()
    );
    let saved = read_png(&saved_path);
    assert!(saved.latin1.is_empty(), "{:?}", saved.latin1);
    let keywords: Vec<&str> = saved.utf8.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keywords, ["prompt", "workflow"]);
    let prompt = json_of(&saved.utf8, "prompt");
    assert_eq!(prompt["2"]["inputs"]["text"], PROMPT);
    assert_eq!(json_of(&saved.utf8, "workflow"), ui, "the note included");

    // `cretok convert` reads the iTXt prompt back.
    let converted: Value = serde_json::from_str(&cretok(
        &["convert", saved_path.to_str().unwrap()],
        dir.path(),
    ))
    .unwrap();
    assert_eq!(converted["2"]["inputs"]["text"], PROMPT);

    // `cretok run` on the PNG reproduces it, and saves the same metadata again.
    let again_path = run_one(&saved_path, dir.path());
    assert_ne!(again_path, saved_path);
    let again = read_png(&again_path);
    assert_eq!(again.pixels, saved.pixels);
    assert_eq!(json_of(&again.utf8, "prompt"), prompt);
    assert_eq!(json_of(&again.utf8, "workflow"), ui);
}

#[test]
fn latin1_metadata_stays_in_text_chunks() {
    let dir = tempfile::tempdir().unwrap();
    cretok(&["dev", "tiny-checkpoint"], dir.path());
    let prompt = "caf\u{00e9} cr\u{00e8}me, \u{00bd} price";
    let saved = run_one(&repo_root().join("workflows/sd3_txt2img.json"), dir.path());
    let plain = read_png(&saved);
    assert!(plain.utf8.is_empty(), "ASCII: tEXt only");
    let out = cretok(
        &[
            "run",
            "workflows/sd3_txt2img.json",
            "--quiet",
            "--set",
            &format!("6.text={prompt}"),
        ],
        dir.path(),
    );
    let path = out.lines().find_map(|l| l.strip_prefix("wrote ")).unwrap();
    let latin1 = read_png(Path::new(path));
    assert!(latin1.utf8.is_empty(), "Latin-1: tEXt only");
    assert_eq!(
        json_of(&latin1.latin1, "prompt")["6"]["inputs"]["text"],
        prompt
    );
}
