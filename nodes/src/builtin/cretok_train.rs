//! `CreTokTrain`: trains the CreTok token on a CLIP link's encoders (docs/cretok.md; Feng et al.,
//! arXiv 2410.24160), reporting progress per step (cancellable) and the loss as text, and saves
//! the token file under `output/<filename_prefix>_NNNNN_.safetensors` (checkpoints next to it).

use std::path::Path;

use crate::builtin::EMBEDDINGS;
use crate::cretok::plot::{PLOT_HEIGHT, PLOT_WIDTH};
use crate::cretok::{
    encoder_refs, Control, EncoderSet, EvalReport, LossHistory, PairSet, Reporter, RunEnd,
    RunOptions, StartReport, StepReport, Target, TrainConfig, Trainer,
};
use crate::fsutil::confined_join;
use crate::sd3::text_encoders::Sd3TextEncoders;
use crate::sd3::types::Image;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    PreviewFormat, RunContext, Value,
};

use super::save_image::save_images;

/// Trains a token; see the module docs.
pub struct CreTokTrain;

struct NodeReporter<'c, 'p> {
    ctx: &'c RunContext<'p>,
    every: u64,
    history: LossHistory,
}

impl Reporter for NodeReporter<'_, '_> {
    fn start(&mut self, report: &StartReport) {
        self.ctx.text(&report.lines().join("\n"));
    }

    fn step(&mut self, r: &StepReport) -> Control {
        if r.step.is_multiple_of(self.every) || r.step == r.steps {
            self.ctx.text(&format!(
                "step {}/{}: loss {:.5}, lr {:.6}, {:.2} steps/s",
                r.step, r.steps, r.loss, r.lr, r.steps_per_s
            ));
        }
        match self.ctx.progress(r.step, r.steps) {
            Ok(()) => Control::Continue,
            Err(_) => Control::Stop,
        }
    }

    /// The losses as a line, and the loss plot so far as the node's preview.
    fn eval(&mut self, report: &EvalReport) {
        self.ctx.text(&report.line());
        self.history.record(report);
        match self.history.png() {
            Ok(png) => self.ctx.preview(PreviewFormat::Png, png),
            Err(e) => self.ctx.text(&format!("warning: no loss plot: {e:#}")),
        }
    }
}

fn invalid(input: &str) -> impl FnOnce(anyhow::Error) -> NodeError + '_ {
    move |e| NodeError::invalid_input(input, format!("{e:#}"))
}

/// The built-in pairs for an empty name, else a file under the input folder.
fn read_pairs(input_dir: &Path, name: &str) -> Result<PairSet, NodeError> {
    if name.trim().is_empty() {
        return PairSet::cangjie().map_err(NodeError::Failed);
    }
    let path = confined_join(input_dir, name.trim()).map_err(invalid("pairs_file"))?;
    PairSet::from_file(&path).map_err(invalid("pairs_file"))
}

/// The last component of a `/`-separated prefix.
fn file_stem(prefix: &str) -> &str {
    prefix.rsplit('/').next().unwrap_or(prefix)
}

impl Node for CreTokTrain {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CreTokTrain", "cretok/train")
            .display_name("CreTok Train")
            .description(
                "Learns the <CreTok> token (one vector per CLIP encoder) from concept pairs, \
                 all model weights frozen (arXiv 2410.24160).",
            )
            .input(InputSpec::required(
                "clip",
                InputKind::link(data_type::CLIP),
            ))
            .input(
                InputSpec::required("pairs_file", InputKind::string("")).with_tooltip(
                    "cretok-pairs/1 JSON under the input folder; empty: built-in CangJie set",
                ),
            )
            .input(InputSpec::required("word", InputKind::string("creative")))
            .input(InputSpec::required(
                "theta",
                InputKind::float(0.5, -0.99, 1.0, 0.01),
            ))
            .input(InputSpec::required(
                "pairs_per_step",
                InputKind::int(16, 1, 4096),
            ))
            .input(InputSpec::required(
                "steps",
                InputKind::int(10_000, 1, 10_000_000),
            ))
            .input(InputSpec::required(
                "lr",
                InputKind::float(0.01, 1e-6, 1.0, 0.0001),
            ))
            .input(InputSpec::required("seed", InputKind::seed()))
            .input(InputSpec::required(
                "encoders",
                InputKind::combo(EncoderSet::NAMES),
            ))
            .input(InputSpec::required(
                "target",
                InputKind::combo(["pooled", "sequence"]),
            ))
            .input(
                InputSpec::required("filename_prefix", InputKind::string("cretok")).with_tooltip(
                    "the token is saved as models/embeddings/<filename_prefix>.safetensors \
                     (replacing an older one), where CreTokLoad lists it",
                ),
            )
            .input(InputSpec::required(
                "report_every",
                InputKind::int(100, 1, 1_000_000),
            ))
            .output(OutputSpec::new(data_type::CRETOK))
            .output(OutputSpec::named("loss_plot", data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let encoders = inputs.handle::<Sd3TextEncoders>("clip")?;
        let pairs = read_pairs(&ctx.paths.input_dir(), inputs.string("pairs_file")?)?;
        let int = |name: &str| -> Result<u64, NodeError> {
            u64::try_from(inputs.int(name)?)
                .map_err(|_| NodeError::invalid_input(name, "must not be negative"))
        };
        let config = TrainConfig {
            word: inputs.string("word")?.trim().to_owned(),
            theta: inputs.float("theta")?,
            pairs_per_step: int("pairs_per_step")? as usize,
            steps: int("steps")?,
            lr: inputs.float("lr")?,
            seed: int("seed")?,
            encoders: EncoderSet::parse(inputs.string("encoders")?).map_err(invalid("encoders"))?,
            target: Target::parse(inputs.string("target")?).map_err(invalid("target"))?,
            ..TrainConfig::default()
        };
        let embeddings = ctx.paths.model_folder(EMBEDDINGS);
        let prefix = inputs.string("filename_prefix")?.trim();
        if file_stem(prefix).is_empty() {
            return Err(NodeError::invalid_input(
                "filename_prefix",
                "needs a file name",
            ));
        }
        let token_path = confined_join(&embeddings, &format!("{prefix}.safetensors"))
            .map_err(invalid("filename_prefix"))?;
        let checkpoint =
            token_path.with_file_name(format!("{}.ckpt.safetensors", file_stem(prefix)));
        let cache = ctx.paths.data_dir.join("cache").join("cretok");
        let refs = encoder_refs(&encoders);
        let mut trainer =
            Trainer::new(&refs, pairs, config, Some(&cache)).map_err(NodeError::Failed)?;
        let every = int("report_every")?.max(1);
        let opts = RunOptions {
            checkpoint: Some(checkpoint),
            checkpoint_every: 500,
            eval_every: every,
        };
        let mut reporter = NodeReporter {
            ctx,
            every,
            history: LossHistory::default(),
        };
        let losses = match trainer.run(&opts, &mut reporter)? {
            RunEnd::Finished(losses) => losses,
            RunEnd::Stopped { .. } => return Err(NodeError::Interrupted),
        };
        let token = trainer.token_file(Some(&losses))?;
        token.save(&token_path)?;
        ctx.text(&format!(
            "saved models/{EMBEDDINGS}/{prefix}.safetensors (CreTokLoad: {prefix}.safetensors)"
        ));
        let plot = plot_image(&reporter.history)?;
        let ui = save_images(&plot, &ctx.paths.temp_dir(), "cretok_loss", "temp", ctx)?;
        Ok(NodeOutput::values(vec![Value::handle(token), Value::handle(plot)]).with_ui(ui))
    }
}

/// The loss plot as an `IMAGE` value.
fn plot_image(history: &LossHistory) -> Result<Image, NodeError> {
    let rgb: Vec<f32> = history
        .render()?
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect();
    let shape = (1, PLOT_HEIGHT, PLOT_WIDTH, 3);
    let pixels = candle_core::Tensor::from_vec(rgb, shape, &candle_core::Device::Cpu)
        .map_err(anyhow::Error::from)?;
    Ok(Image { pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_file_errors_name_the_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        for name in ["bad.json", "../x.json", "missing.json"] {
            match read_pairs(dir.path(), name) {
                Err(NodeError::InvalidInput { input, .. }) => assert_eq!(input, "pairs_file"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(read_pairs(dir.path(), "").unwrap().train.len(), 200);
    }
}
