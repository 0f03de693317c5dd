//! The CreTok nodes on the tiny encoders: CreTokEncode (strength dial, 3+ concepts, errors),
//! `embedding:NAME` in CLIPTextEncode, CreTokLoad, CreTokTrain (progress, text, output file).

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use cretok_nodes::builtin::{ClipTextEncode, CreTokEncode, CreTokLoad, CreTokTrain};
use cretok_nodes::cretok::{CreTokToken, EncoderId};
use cretok_nodes::sd3::text_encoders::Sd3TextEncoders;
use cretok_nodes::sd3::text_tiny::TinyTextEncoders;
use cretok_nodes::sd3::types::Conditioning;
use cretok_nodes::{
    CancelToken, EventSink, Inputs, Node, NodeError, NullSink, Paths, PreviewFormat, RunContext,
    Value,
};

fn encoders() -> Arc<Sd3TextEncoders> {
    let tiny = TinyTextEncoders {
        t5_len: 8,
        ..TinyTextEncoders::new(4)
    };
    Arc::new(tiny.build().unwrap())
}

fn token() -> CreTokToken {
    let mut t = CreTokToken::default();
    let v = |n: usize, s: f32| {
        let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37 + s).sin()).collect();
        Tensor::from_vec(data, (1, n), &Device::Cpu).unwrap()
    };
    t.vectors.insert(EncoderId::ClipL, v(32, 0.1));
    t.vectors.insert(EncoderId::ClipG, v(64, 0.2));
    t.metadata.insert("word".into(), "creative".into());
    t
}

fn cond(out: &[Value]) -> Arc<Conditioning> {
    let Value::Handle(h) = &out[0] else {
        panic!("expected a handle")
    };
    h.clone().downcast::<Conditioning>().unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn encode(
    enc: &Arc<Sd3TextEncoders>,
    ctx: &RunContext,
    text: &str,
    strength: f64,
) -> Result<Arc<Conditioning>, NodeError> {
    let inputs = Inputs::new()
        .with("clip", Value::Handle(enc.clone()))
        .with("cretok", Value::handle(token()))
        .with("text", Value::String(text.into()))
        .with("strength", Value::Float(strength));
    Ok(cond(&CreTokEncode.run(&inputs, ctx)?.values))
}

#[test]
fn strength_dial_embedding_syntax_and_errors() {
    let enc = encoders();
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path(), None);
    let cancel = CancelToken::new();
    let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
    let plain = enc
        .encode("a photo of a creative mixture of a fox, a teapot and a cactus")
        .unwrap();

    // Strength 0 is exactly the plain word, for the word and for <CreTok>.
    for text in [
        "a photo of a creative mixture of a fox, a teapot and a cactus",
        "a photo of a <CreTok> mixture of a fox, a teapot and a cactus",
    ] {
        let c = encode(&enc, &ctx, text, 0.0).unwrap();
        assert_eq!(bits(&c.context), bits(&plain.context));
        assert_eq!(bits(&c.pooled), bits(&plain.pooled));
    }
    let full = encode(
        &enc,
        &ctx,
        "a photo of a <CreTok> mixture of a fox, a teapot and a cactus",
        1.0,
    )
    .unwrap();
    assert_ne!(bits(&full.pooled), bits(&plain.pooled));
    let half = encode(
        &enc,
        &ctx,
        "a photo of a <CreTok> mixture of a fox, a teapot and a cactus",
        0.5,
    )
    .unwrap();
    assert_ne!(bits(&half.pooled), bits(&full.pooled));

    // embedding:NAME loads the file and equals the token at strength 1.
    let folder = paths.model_folder("embeddings");
    token().save(&folder.join("mytok.safetensors")).unwrap();
    let inputs = Inputs::new().with("clip", Value::Handle(enc.clone())).with(
        "text",
        Value::String(
            "a photo of a embedding:mytok mixture of a fox, a teapot and a cactus".into(),
        ),
    );
    let via_embedding = cond(&ClipTextEncode.run(&inputs, &ctx).unwrap().values);
    assert_eq!(bits(&via_embedding.context), bits(&full.context));
    assert_eq!(bits(&via_embedding.pooled), bits(&full.pooled));

    // CreTokLoad lists and loads the same file.
    let load = CreTokLoad {
        paths: Arc::new(paths.clone()),
    };
    let info = load.schema().to_object_info();
    assert_eq!(
        info["input"]["required"]["token_name"][0][0],
        "mytok.safetensors"
    );
    let out = load
        .run(
            &Inputs::new().with("token_name", Value::String("mytok.safetensors".into())),
            &ctx,
        )
        .unwrap();
    let Value::Handle(h) = &out.values[0] else {
        panic!()
    };
    assert!(h.clone().downcast::<CreTokToken>().is_ok());

    // Errors name the input.
    let missing = Inputs::new()
        .with("clip", Value::Handle(enc.clone()))
        .with("text", Value::String("embedding:nope here".into()));
    match ClipTextEncode.run(&missing, &ctx) {
        Err(NodeError::InvalidInput { input, reason }) => {
            assert_eq!(input, "text");
            assert!(reason.contains("embedding:nope"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match encode(&enc, &ctx, "a lettuce and a mantis", 1.0) {
        Err(NodeError::InvalidInput { input, .. }) => assert_eq!(input, "text"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let bad_file = Inputs::new().with("token_name", Value::String("../x".into()));
    assert!(matches!(
        load.run(&bad_file, &ctx),
        Err(NodeError::InvalidInput { .. })
    ));
}

#[derive(Default)]
struct Recorder {
    progress: Mutex<Vec<(u64, u64)>>,
    text: Mutex<Vec<String>>,
}

impl EventSink for Recorder {
    fn progress(&self, _: &str, value: u64, max: u64) {
        self.progress.lock().unwrap().push((value, max));
    }
    fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, text: &str) {
        self.text.lock().unwrap().push(text.to_owned());
    }
}

/// CreTokTrain's inputs: `steps` of 4 shipped pairs each, saved as `filename_prefix`.
fn train_inputs(enc: &Arc<Sd3TextEncoders>, steps: i64, filename_prefix: &str) -> Inputs {
    Inputs::new()
        .with("clip", Value::Handle(enc.clone()))
        .with("pairs_file", Value::String(String::new()))
        .with("word", Value::String("creative".into()))
        .with("theta", Value::Float(0.9))
        .with("pairs_per_step", Value::Int(4))
        .with("steps", Value::Int(steps))
        .with("lr", Value::Float(0.01))
        .with("seed", Value::Int(3))
        .with("encoders", Value::String("both".into()))
        .with("target", Value::String("pooled".into()))
        .with("filename_prefix", Value::String(filename_prefix.into()))
}

#[test]
fn train_node_reports_saves_and_honours_cancel() {
    let enc = encoders();
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path(), None);
    let inputs = train_inputs(&enc, 4, "cretok/test").with("report_every", Value::Int(2));
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let ctx = RunContext::new("7", &paths, &cancel, &sink);
    let out = CreTokTrain.run(&inputs, &ctx).unwrap();
    let Value::Handle(h) = &out.values[0] else {
        panic!()
    };
    let token = h.clone().downcast::<CreTokToken>().unwrap();
    assert_eq!(token.vector(EncoderId::ClipG).unwrap().dims(), &[1, 64]);
    assert_eq!(token.metadata["steps"], "4");
    assert!(token.metadata.contains_key("test_loss"));
    assert_eq!(
        *sink.progress.lock().unwrap(),
        [(1, 4), (2, 4), (3, 4), (4, 4)]
    );
    let text = sink.text.lock().unwrap().join("\n");
    assert!(text.contains("step 0: clip_l"), "{text}");
    assert!(text.contains("step 2/4: loss"), "{text}");
    assert!(text.contains("held-out loss"), "{text}");
    let saved = paths
        .model_folder("embeddings")
        .join("cretok/test.safetensors");
    let back = CreTokToken::load(&saved).unwrap();
    assert_eq!(back.metadata["train_loss"], token.metadata["train_loss"]);

    // A cancelled prompt stops after the step in progress.
    cancel.cancel();
    assert!(matches!(
        CreTokTrain.run(&inputs, &ctx),
        Err(NodeError::Interrupted)
    ));
    let bad = inputs
        .clone()
        .with("pairs_file", Value::String("missing.json".into()));
    match CreTokTrain.run(
        &bad,
        &RunContext::new("7", &paths, &CancelToken::new(), &NullSink),
    ) {
        Err(NodeError::InvalidInput { input, .. }) => assert_eq!(input, "pairs_file"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn train_node_resumes_its_checkpoint_and_refuses_other_settings() {
    let enc = encoders();
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path(), None);
    let inputs = train_inputs(&enc, 3, "tok")
        .with("report_every", Value::Int(0))
        .with("checkpoint_every", Value::Int(0));
    let run = |inputs: &Inputs| {
        let sink = Recorder::default();
        let cancel = CancelToken::new();
        let result = CreTokTrain.run(inputs, &RunContext::new("2", &paths, &cancel, &sink));
        let text = sink.text.lock().unwrap().join("\n");
        (result.map(|_| ()), text)
    };
    let (first, _) = run(&inputs);
    first.unwrap();
    let embeddings = paths.model_folder("embeddings");
    assert!(embeddings.join("tok.ckpt.safetensors").is_file());
    assert!(embeddings.join("tok.loss.png").is_file());

    let resumed = inputs.clone().with("resume", Value::Bool(true));
    let (extended, text) = run(&resumed.clone().with("steps", Value::Int(5)));
    extended.unwrap();
    assert!(
        text.contains("extending the run from 3 to 5 steps"),
        "{text}"
    );
    assert!(text.contains("resuming at step 3 of 5"), "{text}");
    let token = CreTokToken::load(&embeddings.join("tok.safetensors")).unwrap();
    assert_eq!(token.metadata["trained_steps"], "5");

    match run(&resumed.clone().with("steps", Value::Int(5))).0 {
        Err(NodeError::InvalidInput { input, reason }) => {
            assert_eq!(input, "steps");
            assert!(reason.contains("has finished its 5 steps"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match run(&resumed
        .with("steps", Value::Int(9))
        .with("seed", Value::Int(4)))
    .0
    {
        Err(NodeError::InvalidInput { input, reason }) => {
            assert_eq!(input, "seed");
            assert!(reason.contains("seed disagree"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
