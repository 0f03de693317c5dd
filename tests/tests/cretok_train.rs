//! `cretok train --tiny` end to end: trains in seconds, writes a token file that CreTokEncode
//! and `embedding:NAME` both load and the loss plot next to it, checkpoints, stops cleanly on
//! Ctrl-C and resumes, extends a run with `--resume --steps` and refuses changed settings; it runs
//! as the prompt CheckpointCLIPLoader → CreTokTrain through the executor, the loader building
//! only the CLIP encoders.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cretok_nodes::builtin::{ClipTextEncode, CreTokEncode, CreTokLoad};
use cretok_nodes::cretok::{CreTokToken, EncoderId};
use cretok_nodes::sd3::text_encoders::Sd3TextEncoders;
use cretok_nodes::sd3::text_tiny::{TinyTextEncoders, TINY_SEED};
use cretok_nodes::sd3::types::Conditioning;
use cretok_nodes::{CancelToken, Inputs, Node, NullSink, Paths, RunContext, Value};
use cretok_tests::cretok_bin;

fn train(data: &Path, extra: &[&str]) -> Output {
    Command::new(cretok_bin())
        .args([
            "train",
            "--tiny",
            "--quiet",
            "--pairs-per-step",
            "4",
            "--theta",
            "0.9",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("cretok runs")
}

fn tiny_encoders() -> Arc<Sd3TextEncoders> {
    Arc::new(TinyTextEncoders::new(TINY_SEED).build().unwrap())
}

fn pooled(out: &[Value]) -> Vec<f32> {
    let Value::Handle(h) = &out[0] else {
        panic!("expected a handle")
    };
    let c = h.clone().downcast::<Conditioning>().unwrap();
    c.pooled.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn train_writes_a_token_that_the_nodes_load() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = train(
        dir.path(),
        &[
            "--steps",
            "12",
            "--checkpoint-every",
            "5",
            "--eval-every",
            "6",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "tiny training takes seconds"
    );
    assert!(stderr.contains("step 0: clip_l"), "{stderr}");
    assert!(stderr.contains("held-out loss"), "{stderr}");
    let file = dir.path().join("models/embeddings/cretok.safetensors");
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let token = CreTokToken::load(&file).unwrap();
    assert_eq!(token.vector(EncoderId::ClipL).unwrap().dims(), &[1, 32]);
    assert_eq!(token.vector(EncoderId::ClipG).unwrap().dims(), &[1, 64]);
    for key in [
        "method",
        "word",
        "theta",
        "dataset_sha256",
        "base_model_fingerprint",
        "train_loss",
        "test_loss",
    ] {
        assert!(token.metadata.contains_key(key), "{key}");
    }

    let paths = Paths::new(dir.path(), None);
    let cancel = CancelToken::new();
    let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
    let enc = tiny_encoders();
    let loaded = CreTokLoad {
        paths: Arc::new(paths.clone()),
    }
    .run(
        &Inputs::new().with("token_name", Value::String("cretok.safetensors".into())),
        &ctx,
    )
    .unwrap();
    let encoded = CreTokEncode
        .run(
            &Inputs::new()
                .with("clip", Value::Handle(enc.clone()))
                .with("cretok", loaded.values[0].clone())
                .with(
                    "text",
                    Value::String("a photo of a <CreTok> mixture of a lettuce and a mantis".into()),
                )
                .with("strength", Value::Float(1.0)),
            &ctx,
        )
        .unwrap();
    let via_embedding = ClipTextEncode
        .run(
            &Inputs::new().with("clip", Value::Handle(enc.clone())).with(
                "text",
                Value::String(
                    "a photo of a embedding:cretok mixture of a lettuce and a mantis".into(),
                ),
            ),
            &ctx,
        )
        .unwrap();
    assert_eq!(pooled(&encoded.values), pooled(&via_embedding.values));
    let plain = enc
        .encode("a photo of a creative mixture of a lettuce and a mantis")
        .unwrap();
    assert_ne!(
        pooled(&encoded.values),
        plain
            .pooled
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
}

#[test]
fn ctrl_c_leaves_a_checkpoint_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(cretok_bin())
        .args([
            "train",
            "--tiny",
            "--quiet",
            "--pairs-per-step",
            "4",
            "--steps",
            "200",
            "--checkpoint-every",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = dir.path().join("models/embeddings/cretok.ckpt.safetensors");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ckpt.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let saved = CreTokToken::load(&ckpt).unwrap();
    let step: u64 = saved.metadata["resume_step"].parse().unwrap();
    assert!(step >= 2);
    assert!(saved.extra.contains_key("optim.clip_g.v"));

    // --resume continues from there to the end.
    let out = Command::new(cretok_bin())
        .args(["train", "--tiny", "--quiet", "--resume"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming at step {step}")),
        "{stderr}"
    );
    let token =
        CreTokToken::load(&dir.path().join("models/embeddings/cretok.safetensors")).unwrap();
    assert_eq!(token.metadata["trained_steps"], "200");
}

#[test]
fn resume_extends_to_a_larger_steps_and_refuses_changed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), &["--steps", "6", "--eval-every", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path()
            .join("models/checkpoints/cretok_tiny.safetensors")
            .exists(),
        "the tiny fixture must stay out of the checkpoint loaders' folder"
    );

    let out = train(dir.path(), &["--resume", "--steps", "10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("extending the run from 6 to 10 steps"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the cosine schedule is recomputed"),
        "{stderr}"
    );
    assert!(stderr.contains("resuming at step 6 of 10"), "{stderr}");
    let token =
        CreTokToken::load(&dir.path().join("models/embeddings/cretok.safetensors")).unwrap();
    assert_eq!(token.metadata["trained_steps"], "10");
    assert_eq!(token.metadata["steps"], "10");

    for (input, value) in [("seed", "3"), ("lr", "0.02"), ("word", "odd")] {
        let flag = format!("--{input}");
        let out = train(dir.path(), &["--resume", "--steps", "12", &flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{input} disagree")),
            "{flag}: {stderr}"
        );
    }
    let out = train(dir.path(), &["--resume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("has finished its 10 steps"), "{stderr}");
}

/// Pixels of `color` in 8-bit RGB.
fn count(rgb: &[u8], color: [u8; 3]) -> usize {
    rgb.chunks(3).filter(|p| *p == color).count()
}

#[test]
fn train_draws_the_loss_curves_next_to_the_token() {
    use cretok_nodes::cretok::plot::{
        HELD_OUT_COLOR, PLOT_HEIGHT, PLOT_WIDTH, SHARE_COLOR, TRAIN_COLOR,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), &["--steps", "12", "--eval-every", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plot = dir.path().join("models/embeddings/cretok.loss.png");
    assert!(
        stdout.contains(&format!("wrote {}", plot.display())),
        "{stdout}"
    );
    let bytes = std::fs::read(&plot).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(
        (frame.width as usize, frame.height as usize),
        (PLOT_WIDTH, PLOT_HEIGHT)
    );
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let white = count(&rgb, [255, 255, 255]);
    assert!(white < PLOT_WIDTH * PLOT_HEIGHT * 99 / 100, "blank plot");
    for (name, c) in [
        ("train", TRAIN_COLOR),
        ("held-out", HELD_OUT_COLOR),
        ("share above theta", SHARE_COLOR),
    ] {
        let n = count(&rgb, [c.0, c.1, c.2]);
        assert!(n > 200, "the {name} curve has {n} pixels");
    }
}

/// `cretok train` is a prompt run by the executor: the loader's and the trainer's text come as
/// their nodes' lines, and a setting the node's schema refuses is reported as validation reports
/// any prompt. The loader builds the CLIP encoders alone (no MMDiT, VAE or T5).
#[test]
fn train_runs_the_loader_and_trainer_nodes_through_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), &["--steps", "2", "--eval-every", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("[1] CLIP only, the MMDiT and the VAE are not loaded; text encoders: clip_l"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("blocks, "),
        "the MMDiT's summary: {stderr}"
    );
    assert!(stderr.contains("[2] step 0: clip_l"), "{stderr}");
    assert!(stderr.contains("[2] step 2/2: loss"), "{stderr}");
    let default_token =
        CreTokToken::load(&dir.path().join("models/embeddings/cretok.safetensors")).unwrap();

    // --out and --pairs name any folder: the run's token and input folders are moved there.
    let elsewhere = tempfile::tempdir().unwrap();
    let pairs = elsewhere.path().join("pairs.json");
    std::fs::write(
        &pairs,
        r#"{"format": "cretok-pairs/1",
            "train": [["cauliflower", "sheep"], ["bee", "frog"], ["giraffe", "peacock"],
                      ["butterfly", "chicken"]],
            "test": [["lettuce", "mantis"]]}"#,
    )
    .unwrap();
    let token = elsewhere.path().join("tokens/mine.safetensors");
    let out = train(
        dir.path(),
        &[
            "--steps",
            "2",
            "--out",
            token.to_str().unwrap(),
            "--pairs",
            pairs.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["mine.safetensors", "mine.ckpt.safetensors", "mine.loss.png"] {
        assert!(
            elsewhere.path().join("tokens").join(name).is_file(),
            "{name}"
        );
    }
    let mine = CreTokToken::load(&token).unwrap();
    assert_ne!(
        mine.metadata["dataset_sha256"],
        default_token.metadata["dataset_sha256"]
    );

    let out = train(dir.path(), &["--steps", "0", "--out", "other.safetensors"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node 2 (CreTokTrain)"), "{stderr}");
    assert!(stderr.contains("steps"), "{stderr}");
}
