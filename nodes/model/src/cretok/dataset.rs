//! Concept pairs: the CangJie-style training set and the held-out test set (docs/cretok.md, "Training";
//! Feng et al., arXiv 2410.24160, section 4). Format `cretok-pairs/1`, documented in
//! `docs/cretok.md`:
//!
//! ```json
//! {"format": "cretok-pairs/1", "concepts": ["lettuce", "mantis", ...],
//!  "train": [["cauliflower", "sheep"], ...], "test": [["lettuce", "mantis"], ...]}
//! ```
//!
//! Pairs are unordered (the trainer uses both orders); `concepts` is optional and, when given,
//! every pair word must be one of them. The dataset's identity is the SHA-256 of the file bytes.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The shipped pairs file (60 concepts, 200 training pairs, 30 held-out pairs).
pub const CANGJIE_PAIRS_JSON: &str = include_str!("../../assets/cretok/cangjie_pairs.json");

/// The only format this reader accepts.
pub const PAIRS_FORMAT: &str = "cretok-pairs/1";

/// Two concepts to blend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub first: String,
    pub second: String,
}

impl Pair {
    /// The pair in order `order` (0: as written, 1: swapped).
    pub fn ordered(&self, order: usize) -> (&str, &str) {
        if order == 0 {
            (&self.first, &self.second)
        } else {
            (&self.second, &self.first)
        }
    }
}

/// A validated pairs file.
#[derive(Debug, Clone)]
pub struct PairSet {
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
    /// The file's free-text description.
    pub description: Option<String>,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    concepts: Option<Vec<String>>,
    train: Vec<Vec<String>>,
    #[serde(default)]
    test: Vec<Vec<String>>,
}

impl PairSet {
    /// The shipped CangJie-style set.
    pub fn cangjie() -> Result<Self> {
        Self::parse(CANGJIE_PAIRS_JSON.as_bytes()).context("shipped cangjie_pairs.json")
    }

    /// Reads and validates a user's pairs file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading pairs file {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("pairs file {}", path.display()))
    }

    /// Parses and validates `cretok-pairs/1` JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: RawFile = serde_json::from_slice(bytes).context("not a cretok-pairs/1 JSON")?;
        if raw.format != PAIRS_FORMAT {
            bail!("format is '{}', expected '{PAIRS_FORMAT}'", raw.format)
        }
        let concepts: Option<HashSet<String>> = match raw.concepts {
            Some(list) => {
                let mut set = HashSet::new();
                for c in list {
                    let c = check_word(&c).context("in 'concepts'")?;
                    if !set.insert(c.clone()) {
                        bail!("concept '{c}' is listed twice")
                    }
                }
                Some(set)
            }
            None => None,
        };
        let mut seen = HashSet::new();
        let mut read = |section: &str, rows: Vec<Vec<String>>| -> Result<Vec<Pair>> {
            let mut pairs = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                let at = || format!("{section}[{i}]");
                let [a, b] = <[String; 2]>::try_from(row).map_err(|r| {
                    anyhow::anyhow!("{}: a pair has 2 words, got {}", at(), r.len())
                })?;
                let (a, b) = (check_word(&a), check_word(&b));
                let (a, b) = (a.with_context(at)?, b.with_context(at)?);
                if a == b {
                    bail!("{}: both words are '{a}'", at())
                }
                if let Some(set) = &concepts {
                    for w in [&a, &b] {
                        if !set.contains(w) {
                            bail!("{}: '{w}' is not in 'concepts'", at())
                        }
                    }
                }
                let key = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                if !seen.insert(key) {
                    bail!("{}: pair ({a}, {b}) appears twice (in either order, in train or test: test pairs must be held out)", at())
                }
                pairs.push(Pair {
                    first: a,
                    second: b,
                });
            }
            Ok(pairs)
        };
        let train = read("train", raw.train)?;
        let test = read("test", raw.test)?;
        if train.is_empty() {
            bail!("'train' has no pairs")
        }
        Ok(Self {
            train,
            test,
            description: raw.description,
            sha256: hex_sha256(bytes),
        })
    }
}

/// A concept word: trimmed, non-empty, no template braces or placeholders.
fn check_word(word: &str) -> Result<String> {
    let w = word.trim();
    if w.is_empty() {
        bail!("empty concept word")
    }
    if w.contains(['{', '}', '<', '>']) {
        bail!("concept '{w}' contains a template character ({{ }} < >)")
    }
    Ok(w.to_owned())
}

/// Lower-case hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(pairs: &[Pair], a: &str, b: &str) -> bool {
        pairs
            .iter()
            .any(|p| (p.first == a && p.second == b) || (p.first == b && p.second == a))
    }

    #[test]
    fn shipped_set_matches_the_paper_setup() {
        let set = PairSet::cangjie().unwrap();
        assert_eq!(set.train.len(), 200);
        assert!(set.test.len() >= 27);
        assert!(has(&set.test, "lettuce", "mantis"));
        for (a, b) in [
            ("cauliflower", "sheep"),
            ("giraffe", "peacock"),
            ("bee", "frog"),
            ("butterfly", "chicken"),
        ] {
            assert!(has(&set.train, a, b), "{a}+{b}");
        }
        let concepts: HashSet<&str> = set
            .train
            .iter()
            .chain(&set.test)
            .flat_map(|p| [p.first.as_str(), p.second.as_str()])
            .collect();
        assert!((55..=65).contains(&concepts.len()), "{}", concepts.len());
        assert_eq!(set.sha256.len(), 64);
    }

    #[test]
    fn invalid_files_name_the_problem() {
        let err = |json: &str| format!("{:#}", PairSet::parse(json.as_bytes()).unwrap_err());
        assert!(err(r#"{"format":"x","train":[["a","b"]]}"#).contains("expected 'cretok-pairs/1'"));
        assert!(err(r#"{"format":"cretok-pairs/1","train":[]}"#).contains("no pairs"));
        assert!(err(r#"{"format":"cretok-pairs/1","train":[["a"]]}"#).contains("train[0]"));
        assert!(err(r#"{"format":"cretok-pairs/1","train":[["a","a"]]}"#).contains("both words"));
        let leak = r#"{"format":"cretok-pairs/1","train":[["a","b"]],"test":[["b","a"]]}"#;
        assert!(err(leak).contains("test[0]"));
        let unknown = r#"{"format":"cretok-pairs/1","concepts":["a","b"],"train":[["a","c"]]}"#;
        assert!(err(unknown).contains("'c' is not in 'concepts'"));
        assert!(err("{").contains("not a cretok-pairs/1 JSON"));
        let ok = PairSet::parse(br#"{"format":"cretok-pairs/1","train":[[" a ","b"]]}"#).unwrap();
        assert_eq!(ok.train[0].ordered(1), ("b", "a"));
        assert!(ok.test.is_empty());
    }
}
