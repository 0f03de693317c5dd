//! Training parameters and their defaults (docs/cretok.md, "Training" and "Our decisions").

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

use super::encoder::EncoderId;
use super::prompts::check_templates;

/// What `E(·)` is (docs/cretok.md, "Our decisions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The pooled vector SD3 receives (bigG projected, CLIP-L unprojected).
    Pooled,
    /// SD3's per-token context: the penultimate layer, 77 padded rows, flattened.
    Sequence,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Pooled => "pooled",
            Target::Sequence => "sequence",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pooled" => Ok(Target::Pooled),
            "sequence" => Ok(Target::Sequence),
            _ => bail!("target '{s}': expected 'pooled' or 'sequence'"),
        }
    }
}

/// Which CLIP encoders get a token vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderSet {
    Both,
    ClipL,
    ClipG,
}

impl EncoderSet {
    pub const NAMES: [&'static str; 3] = ["both", "clip_l", "clip_g"];

    pub fn name(self) -> &'static str {
        match self {
            EncoderSet::Both => "both",
            EncoderSet::ClipL => "clip_l",
            EncoderSet::ClipG => "clip_g",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "both" => Ok(EncoderSet::Both),
            "clip_l" => Ok(EncoderSet::ClipL),
            "clip_g" => Ok(EncoderSet::ClipG),
            _ => bail!("encoders '{s}': expected one of {:?}", Self::NAMES),
        }
    }

    pub fn ids(self) -> Vec<EncoderId> {
        match self {
            EncoderSet::Both => EncoderId::ALL.to_vec(),
            EncoderSet::ClipL => vec![EncoderId::ClipL],
            EncoderSet::ClipG => vec![EncoderId::ClipG],
        }
    }
}

/// Everything that defines a training run's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The word whose meaning is learned (its embedding is the initial token).
    pub word: String,
    /// `P_r`, with `{t1}` and `{t2}`; used in both orders.
    pub restrictive_template: String,
    /// `P_a`, with `<CreTok>` (and optionally `{t1}`/`{t2}`).
    pub adaptive_template: String,
    /// θ of `1 - min(cos, θ)`.
    pub theta: f64,
    /// n: pairs sampled per step.
    pub pairs_per_step: usize,
    pub steps: u64,
    pub lr: f64,
    pub seed: u64,
    pub encoders: EncoderSet,
    pub target: Target,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            word: "creative".into(),
            restrictive_template: "a {t1} {t2}".into(),
            adaptive_template: "a photo of a <CreTok> mixture".into(),
            theta: 0.5,
            pairs_per_step: 16,
            steps: 10_000,
            lr: 0.01,
            seed: 0,
            encoders: EncoderSet::Both,
            target: Target::Pooled,
        }
    }
}

impl TrainConfig {
    /// Checks the values (the word's tokenization is checked when the encoders are known).
    pub fn validate(&self) -> Result<()> {
        check_templates(&self.restrictive_template, &self.adaptive_template)?;
        ensure!(
            !self.word.trim().is_empty(),
            "the word to redefine is empty"
        );
        ensure!(
            self.theta > -1.0 && self.theta <= 1.0,
            "theta {} must be in (-1, 1]",
            self.theta
        );
        ensure!(self.pairs_per_step >= 1, "pairs per step must be >= 1");
        ensure!(self.steps >= 1, "steps must be >= 1");
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "learning rate {} must be > 0",
            self.lr
        );
        Ok(())
    }

    /// The names of the settings (as in the metadata) that differ from `other`'s, apart from
    /// `steps`, which a resumed run may extend.
    pub fn differences(&self, other: &TrainConfig) -> Vec<&'static str> {
        let pairs = [
            ("word", self.word != other.word),
            (
                "restrictive_template",
                self.restrictive_template != other.restrictive_template,
            ),
            (
                "adaptive_template",
                self.adaptive_template != other.adaptive_template,
            ),
            ("theta", self.theta != other.theta),
            (
                "pairs_per_step",
                self.pairs_per_step != other.pairs_per_step,
            ),
            ("lr", self.lr != other.lr),
            ("seed", self.seed != other.seed),
            ("encoders", self.encoders != other.encoders),
            ("target", self.target != other.target),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect()
    }

    /// The `__metadata__` entries of token files and checkpoints.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("method".into(), "CreTok (arXiv 2410.24160)".into());
        m.insert("word".into(), self.word.clone());
        m.insert(
            "restrictive_template".into(),
            self.restrictive_template.clone(),
        );
        m.insert("adaptive_template".into(), self.adaptive_template.clone());
        m.insert("theta".into(), self.theta.to_string());
        m.insert("pairs_per_step".into(), self.pairs_per_step.to_string());
        m.insert("steps".into(), self.steps.to_string());
        m.insert("lr".into(), self.lr.to_string());
        m.insert("seed".into(), self.seed.to_string());
        m.insert("encoders".into(), self.encoders.name().into());
        m.insert("target".into(), self.target.name().into());
        m
    }

    /// Reads back [`TrainConfig::to_metadata`].
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| {
            m.get(k)
                .cloned()
                .with_context(|| format!("metadata lacks '{k}'"))
        };
        let num = |k: &str| -> Result<f64> {
            get(k)?
                .parse()
                .with_context(|| format!("metadata '{k}' is not a number"))
        };
        let int = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .with_context(|| format!("metadata '{k}' is not an integer"))
        };
        Ok(Self {
            word: get("word")?,
            restrictive_template: get("restrictive_template")?,
            adaptive_template: get("adaptive_template")?,
            theta: num("theta")?,
            pairs_per_step: int("pairs_per_step")? as usize,
            steps: int("steps")?,
            lr: num("lr")?,
            seed: int("seed")?,
            encoders: EncoderSet::parse(&get("encoders")?)?,
            target: Target::parse(&get("target")?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_round_trip_through_metadata() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.theta, c.pairs_per_step, c.steps, c.lr),
            (0.5, 16, 10_000, 0.01)
        );
        c.validate().unwrap();
        let back = TrainConfig::from_metadata(&c.to_metadata()).unwrap();
        assert_eq!(back, c);
        let bad = TrainConfig {
            theta: 1.5,
            ..c.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("theta"));
        assert!(EncoderSet::parse("clip_x").is_err());
        let other = TrainConfig {
            theta: 0.9,
            steps: 5,
            target: Target::Sequence,
            ..c.clone()
        };
        assert_eq!(c.differences(&other), ["theta", "target"]);
        assert!(c.differences(&c).is_empty());
        assert_eq!(
            EncoderSet::parse("clip_g").unwrap().ids(),
            [EncoderId::ClipG]
        );
    }
}
