//! The CreTok training loop (docs/cretok.md; Feng et al., arXiv 2410.24160, section 3.2): per step,
//! sample n pairs, average `1 - min(cos(E(P_r), E(P_a)), θ)` over the pairs in both orders,
//! per CLIP encoder, average the encoders, and take one AdamW step on the token vectors under a
//! cosine schedule. Every weight stays frozen: the only gradient is w.r.t. the token's row.
//!
//! State (token, AdamW moments, step, sampler state) lives in plain host vectors, so
//! checkpoints restore it exactly and a resumed run continues bit-for-bit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor, Var};

use super::cache::{fingerprint, restrictive, Restrictive};
use super::config::TrainConfig;
use super::dataset::PairSet;
use super::encoder::{Adaptive, EncoderId, EncoderRef};
use super::loss::clipped_cosine_loss;
use super::optim::{adamw_step, cosine_lr, AdamWConfig, AdamWState};
use super::prompts::word_id;
use super::report::{Control, EvalReport, Reporter, StartReport, StepReport};
use super::sampler::PairSampler;
use super::token_file::CreTokToken;

/// Rows per batched forward when evaluating the per-pair path.
const EVAL_CHUNK: usize = 64;

struct EncoderState<'a> {
    enc: EncoderRef<'a>,
    adaptive: Adaptive<'a>,
    restrictive: Restrictive,
    fingerprint: String,
    token: Vec<f32>,
    optim: AdamWState,
}

impl EncoderState<'_> {
    /// The token as a model-dtype tensor `[hidden]` on the model's device.
    fn token_tensor(&self) -> Result<Tensor> {
        let t = Tensor::from_slice(&self.token, self.token.len(), self.enc.device())?;
        Ok(t.to_dtype(self.enc.dtype())?)
    }
}

/// How a run checkpoints and evaluates.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where checkpoints go (atomically replaced); none without a path.
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every this many steps (0: only at the end or when stopped).
    pub checkpoint_every: u64,
    /// Evaluate train and held-out losses at the start and every this many steps (0: only at
    /// the end).
    pub eval_every: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// All steps done; the final full-set losses.
    Finished(EvalReport),
    /// A reporter asked to stop after this many steps (checkpoint written when configured).
    Stopped { step: u64 },
}

/// A CreTok training run over one or two CLIP encoders.
pub struct Trainer<'a> {
    config: TrainConfig,
    pairs: PairSet,
    encoders: Vec<EncoderState<'a>>,
    sampler: PairSampler,
    step: u64,
    adamw: AdamWConfig,
}

/// Which adaptive path to use (the per-pair path is the general one; tests and benchmarks
/// compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChoice {
    /// The shared fast path unless the adaptive template names the pair.
    Auto,
    /// The batched per-pair path, whatever the template.
    PerPair,
}

impl<'a> Trainer<'a> {
    /// Prepares a fresh run: the tokens start at the word's embedding; restrictive embeddings
    /// come from `cache_dir` when cached there (and are written there otherwise).
    pub fn new(
        available: &[EncoderRef<'a>],
        pairs: PairSet,
        config: TrainConfig,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        Self::with_path(available, pairs, config, cache_dir, PathChoice::Auto)
    }

    pub fn with_path(
        available: &[EncoderRef<'a>],
        pairs: PairSet,
        config: TrainConfig,
        cache_dir: Option<&Path>,
        path: PathChoice,
    ) -> Result<Self> {
        config.validate()?;
        ensure!(
            config.pairs_per_step <= pairs.train.len(),
            "{} pairs per step but only {} training pairs",
            config.pairs_per_step,
            pairs.train.len()
        );
        let mut encoders = Vec::new();
        for id in config.encoders.ids() {
            let Some(&enc) = available.iter().find(|e| e.id == id) else {
                bail!(
                    "CreTok trains on {}, which this CLIP does not hold",
                    id.key()
                )
            };
            let word = word_id(enc.tokenizer, &config.word).context(id.key())?;
            let (template, target) = (&config.adaptive_template, config.target);
            let adaptive = match path {
                PathChoice::Auto => Adaptive::new(enc, template, &config.word, target),
                PathChoice::PerPair => Ok(Adaptive::per_pair(enc, template, &config.word, target)),
            }
            .context(id.key())?;
            let fp = fingerprint(&enc)?;
            let restrictive = restrictive(
                &enc,
                &fp,
                &pairs,
                &config.restrictive_template,
                target,
                cache_dir,
            )
            .with_context(|| format!("{} restrictive embeddings", id.key()))?;
            let token = enc.row(word)?;
            encoders.push(EncoderState {
                enc,
                adaptive,
                restrictive,
                fingerprint: fp,
                optim: AdamWState::zeros(token.len()),
                token,
            });
        }
        Ok(Self {
            sampler: PairSampler::new(config.seed),
            config,
            pairs,
            encoders,
            step: 0,
            adamw: AdamWConfig::default(),
        })
    }

    /// Continues a run from a checkpoint written by [`Trainer::checkpoint`]: the same
    /// configuration, dataset and base model are required.
    pub fn resume(
        available: &[EncoderRef<'a>],
        pairs: PairSet,
        checkpoint: &CreTokToken,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        let meta = &checkpoint.metadata;
        let config = TrainConfig::from_metadata(meta).context("checkpoint configuration")?;
        let mut trainer = Self::new(available, pairs, config, cache_dir)?;
        let get = |k: &str| {
            meta.get(k)
                .with_context(|| format!("checkpoint lacks '{k}'"))
        };
        if get("dataset_sha256")? != &trainer.pairs.sha256 {
            bail!("the checkpoint was trained on another pairs file (dataset SHA-256 differs)")
        }
        if get("base_model_fingerprint")? != &trainer.fingerprint() {
            bail!("the checkpoint was trained on other CLIP weights (fingerprint differs)")
        }
        trainer.step = get("resume_step")?.parse().context("resume_step")?;
        trainer.sampler =
            PairSampler::from_state(get("resume_rng")?.parse().context("resume_rng")?);
        for state in &mut trainer.encoders {
            let key = state.enc.id.key();
            let len = state.token.len();
            let vec = |t: Option<&Tensor>, what: &str| -> Result<Vec<f32>> {
                let t = t.with_context(|| format!("checkpoint lacks {what}"))?;
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                ensure!(
                    v.len() == len,
                    "{what} has {} values, expected {len}",
                    v.len()
                );
                Ok(v)
            };
            state.token = vec(checkpoint.vector(state.enc.id), key)?;
            state.optim.m = vec(checkpoint.extra.get(&format!("optim.{key}.m")), "optim m")?;
            state.optim.v = vec(checkpoint.extra.get(&format!("optim.{key}.v")), "optim v")?;
        }
        Ok(trainer)
    }

    /// Sets a new total for a resumed run. The cosine schedule is recomputed over the new total
    /// (the rule for extension: step `s` of `N` uses `cosine_lr(lr, s, N)`, so the rate at the
    /// resume step becomes what an N-step run would have used there).
    pub fn set_steps(&mut self, steps: u64) -> Result<()> {
        ensure!(
            steps > self.step,
            "the checkpoint is at step {}: --steps must be larger to continue (got {steps})",
            self.step
        );
        self.config.steps = steps;
        Ok(())
    }

    /// The rate the next step will use.
    pub fn next_lr(&self) -> f64 {
        cosine_lr(self.config.lr, self.step, self.config.steps)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The token vector of an encoder, `[hidden]`.
    pub fn token(&self, id: EncoderId) -> Option<&[f32]> {
        self.encoders
            .iter()
            .find(|e| e.enc.id == id)
            .map(|e| e.token.as_slice())
    }

    /// The trained encoders' fingerprints, joined (`clip_l:…;clip_g:…`).
    pub fn fingerprint(&self) -> String {
        self.encoders
            .iter()
            .map(|e| format!("{}:{}", e.enc.id.key(), e.fingerprint))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Step 0: the share of training pair-orders already at or above θ, per encoder.
    pub fn start_report(&self) -> Result<StartReport> {
        let shares = self
            .encoders
            .iter()
            .map(|state| {
                let cos = self.cosines(state, false)?;
                let above = cos.iter().filter(|&&c| f64::from(c) >= self.config.theta);
                Ok((state.enc.id, above.count() as f64 / cos.len() as f64))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StartReport {
            theta: self.config.theta,
            shares,
        })
    }

    /// One optimisation step; returns the sampled loss (mean over encoders) and the rate used.
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let picked = self
            .sampler
            .sample(self.config.pairs_per_step, self.pairs.train.len());
        let ordered: Vec<(&str, &str)> = picked
            .iter()
            .flat_map(|&i| {
                [
                    self.pairs.train[i].ordered(0),
                    self.pairs.train[i].ordered(1),
                ]
            })
            .collect();
        let rows: Vec<u32> = picked
            .iter()
            .flat_map(|&i| [2 * i as u32, 2 * i as u32 + 1])
            .collect();
        let lr = cosine_lr(self.config.lr, self.step, self.config.steps);
        let share = 1.0 / self.encoders.len() as f64;
        let t = self.step + 1;
        let mut total = 0.0;
        for state in &mut self.encoders {
            let dev = state.enc.device().clone();
            let index = Tensor::new(rows.as_slice(), &dev)?;
            let r = state.restrictive.train.index_select(&index, 0)?;
            let token = Var::from_tensor(&state.token_tensor()?)?;
            let a = state.adaptive.embed(token.as_tensor(), &ordered)?;
            let (loss, _) = clipped_cosine_loss(&a.to_dtype(DType::F32)?, &r, self.config.theta)?;
            let grads = (&loss * share)?.backward()?;
            let grad = match grads.get(token.as_tensor()) {
                Some(g) => g.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0.0; state.token.len()],
            };
            adamw_step(
                &self.adamw,
                &mut state.optim,
                &mut state.token,
                &grad,
                t,
                lr,
            );
            total += share * f64::from(loss.to_scalar::<f32>()?);
        }
        self.step = t;
        Ok((total, lr))
    }

    /// Cosines of every pair-order of the training (or held-out) set with the current tokens.
    fn cosines(&self, state: &EncoderState, held_out: bool) -> Result<Vec<f32>> {
        let (pairs, r) = if held_out {
            match &state.restrictive.test {
                Some(r) => (&self.pairs.test, r),
                None => return Ok(Vec::new()),
            }
        } else {
            (&self.pairs.train, &state.restrictive.train)
        };
        let ordered: Vec<(&str, &str)> = pairs
            .iter()
            .flat_map(|p| [p.ordered(0), p.ordered(1)])
            .collect();
        let token = state.token_tensor()?;
        let mut cos = Vec::with_capacity(ordered.len());
        let mut start = 0;
        while start < ordered.len() {
            let n = (ordered.len() - start).min(EVAL_CHUNK);
            let a = state.adaptive.embed(&token, &ordered[start..start + n])?;
            let rows = r.narrow(0, start, n)?;
            let (_, c) = clipped_cosine_loss(&a.to_dtype(DType::F32)?, &rows, 1.0)?;
            cos.extend(c);
            start += n;
        }
        Ok(cos)
    }

    /// The loss over every pair (both orders) of the training and held-out sets, no sampling.
    pub fn evaluate(&self) -> Result<EvalReport> {
        let theta = self.config.theta as f32;
        let mean_loss = |cos: &[f32]| {
            let sum: f64 = cos.iter().map(|&c| f64::from(1.0 - c.min(theta))).sum();
            sum / cos.len() as f64
        };
        let share = 1.0 / self.encoders.len() as f64;
        let (mut train, mut test, mut above) = (0.0, 0.0, 0.0);
        for state in &self.encoders {
            let cos = self.cosines(state, false)?;
            train += share * mean_loss(&cos);
            let at_theta = cos
                .iter()
                .filter(|&&c| f64::from(c) >= self.config.theta)
                .count();
            above += share * at_theta as f64 / cos.len() as f64;
            if !self.pairs.test.is_empty() {
                test += share * mean_loss(&self.cosines(state, true)?);
            }
        }
        Ok(EvalReport {
            step: self.step,
            train_loss: train,
            test_loss: (!self.pairs.test.is_empty()).then_some(test),
            share_above: above,
        })
    }

    /// The current tokens as a token file, with the run's metadata and, when given, losses.
    pub fn token_file(&self, losses: Option<&EvalReport>) -> Result<CreTokToken> {
        let mut token = CreTokToken {
            metadata: self.config.to_metadata(),
            ..Default::default()
        };
        token
            .metadata
            .insert("dataset_sha256".into(), self.pairs.sha256.clone());
        token
            .metadata
            .insert("base_model_fingerprint".into(), self.fingerprint());
        token
            .metadata
            .insert("trained_steps".into(), self.step.to_string());
        if let Some(l) = losses {
            token
                .metadata
                .insert("train_loss".into(), l.train_loss.to_string());
            if let Some(t) = l.test_loss {
                token.metadata.insert("test_loss".into(), t.to_string());
            }
        }
        for state in &self.encoders {
            let n = state.token.len();
            let dev = &candle_core::Device::Cpu;
            token
                .vectors
                .insert(state.enc.id, Tensor::from_slice(&state.token, (1, n), dev)?);
        }
        Ok(token)
    }

    /// A resumable checkpoint: the token file plus optimiser state, step and sampler state.
    pub fn checkpoint(&self) -> Result<CreTokToken> {
        let mut token = self.token_file(None)?;
        let dev = &candle_core::Device::Cpu;
        for state in &self.encoders {
            let key = state.enc.id.key();
            let n = state.token.len();
            token.extra.insert(
                format!("optim.{key}.m"),
                Tensor::from_slice(&state.optim.m, n, dev)?,
            );
            token.extra.insert(
                format!("optim.{key}.v"),
                Tensor::from_slice(&state.optim.v, n, dev)?,
            );
        }
        token
            .metadata
            .insert("resume_step".into(), self.step.to_string());
        token
            .metadata
            .insert("resume_rng".into(), self.sampler.state().to_string());
        Ok(token)
    }

    /// Runs the remaining steps, reporting, evaluating and checkpointing as `opts` says.
    pub fn run(&mut self, opts: &RunOptions, reporter: &mut dyn Reporter) -> Result<RunEnd> {
        if self.step == 0 {
            reporter.start(&self.start_report()?);
            if opts.eval_every > 0 {
                reporter.eval(&self.evaluate()?);
            }
        }
        let save = |trainer: &Self, reporter: &mut dyn Reporter| -> Result<()> {
            if let Some(path) = &opts.checkpoint {
                trainer.checkpoint()?.save(path)?;
                reporter.checkpoint(path, trainer.step);
            }
            Ok(())
        };
        let (began, first) = (Instant::now(), self.step);
        while self.step < self.config.steps {
            let (loss, lr) = self.train_step()?;
            let elapsed = began.elapsed().as_secs_f64().max(1e-9);
            let report = StepReport {
                step: self.step,
                steps: self.config.steps,
                loss,
                lr,
                steps_per_s: (self.step - first) as f64 / elapsed,
            };
            let control = reporter.step(&report);
            let due = |every: u64| every > 0 && self.step.is_multiple_of(every);
            if due(opts.eval_every) && self.step < self.config.steps {
                reporter.eval(&self.evaluate()?);
            }
            if control == Control::Stop {
                save(self, reporter)?;
                return Ok(RunEnd::Stopped { step: self.step });
            }
            if due(opts.checkpoint_every) {
                save(self, reporter)?;
            }
        }
        let last = self.evaluate()?;
        reporter.eval(&last);
        save(self, reporter)?;
        Ok(RunEnd::Finished(last))
    }
}
