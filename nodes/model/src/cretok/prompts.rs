//! The restrictive and adaptive prompts and their CLIP ids (docs/cretok.md, "Training":
//! `P_r = "a {t1} {t2}"`, `P_a = "a photo of a <CreTok> mixture"`).
//!
//! `<CreTok>` stands where the redefined word's token goes: the prompt is tokenized with the
//! word in its place (so the ids are exactly those the word's prompt gets at inference) and the
//! word's row is later replaced by the learned vector. The word must therefore be one CLIP token.
//! Pooled targets use unpadded ids (the EOS state ignores what follows it under the causal mask,
//! docs/cretok.md speed-up 3); sequence targets use SD3's 77 padded ids.

use anyhow::{bail, ensure, Result};

use crate::sd3::tokenizer::{ClipTokenizer, CLIP_MAX_LEN};

/// Where the learned token goes in an adaptive template.
pub const PLACEHOLDER: &str = "<CreTok>";

/// `template` with `{t1}` and `{t2}` filled in.
pub fn fill(template: &str, t1: &str, t2: &str) -> String {
    template.replace("{t1}", t1).replace("{t2}", t2)
}

/// Whether an adaptive template names the pair (then `E(P_a)` differs per pair).
pub fn names_pair(template: &str) -> bool {
    template.contains("{t1}") || template.contains("{t2}")
}

/// Checks the two templates.
pub fn check_templates(restrictive: &str, adaptive: &str) -> Result<()> {
    ensure!(
        restrictive.contains("{t1}") && restrictive.contains("{t2}"),
        "restrictive template '{restrictive}' must name both concepts ({{t1}} and {{t2}})"
    );
    ensure!(
        !restrictive.contains(PLACEHOLDER),
        "restrictive template '{restrictive}' must not contain {PLACEHOLDER}"
    );
    ensure!(
        adaptive.matches(PLACEHOLDER).count() == 1,
        "adaptive template '{adaptive}' must contain {PLACEHOLDER} exactly once"
    );
    Ok(())
}

/// The vocabulary id of a one-token word (`creative` -> `creative</w>`).
pub fn word_id(tokenizer: &ClipTokenizer, word: &str) -> Result<u32> {
    match tokenizer.token_to_id(&format!("{}</w>", word.trim().to_lowercase())) {
        Some(id) => Ok(id),
        None => bail!("'{word}' is not a single CLIP token: pick a one-token word to redefine"),
    }
}

/// A prompt's ids for one encoder and where its pooled state is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptIds {
    pub ids: Vec<u32>,
    /// The first EOS.
    pub eos: usize,
}

/// An adaptive prompt's ids and the row the learned token replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveIds {
    pub prompt: PromptIds,
    pub token_pos: usize,
}

/// Ids of `text`, padded to 77 with the tokenizer's pad id when `padded`.
pub fn prompt_ids(tokenizer: &ClipTokenizer, text: &str, padded: bool) -> Result<PromptIds> {
    let mut ids = tokenizer.encode_unpadded(text)?;
    let eos = ids.len() - 1;
    if padded {
        ids.resize(CLIP_MAX_LEN, tokenizer.pad_id());
    }
    Ok(PromptIds { ids, eos })
}

/// Ids of an adaptive prompt (`filled` still holds [`PLACEHOLDER`]) with `word` in its place.
pub fn adaptive_ids(
    tokenizer: &ClipTokenizer,
    filled: &str,
    word: &str,
    padded: bool,
) -> Result<AdaptiveIds> {
    let id = word_id(tokenizer, word)?;
    let Some((before, _)) = filled.split_once(PLACEHOLDER) else {
        bail!("adaptive prompt '{filled}' lacks {PLACEHOLDER}")
    };
    // [BOS, before…, EOS]: the token sits where that EOS is.
    let token_pos = tokenizer.encode_unpadded(before.trim_end())?.len() - 1;
    let prompt = prompt_ids(tokenizer, &filled.replace(PLACEHOLDER, word), padded)?;
    if token_pos >= prompt.eos || prompt.ids[token_pos] != id {
        bail!(
            "adaptive prompt '{filled}': {PLACEHOLDER} does not tokenize to its own token \
             (put spaces around it, and keep the prompt under 77 tokens)"
        )
    }
    Ok(AdaptiveIds { prompt, token_pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_ids_put_the_word_where_the_placeholder_was() {
        let tok = ClipTokenizer::clip_g().unwrap();
        let a = adaptive_ids(&tok, "a photo of a <CreTok> mixture", "creative", false).unwrap();
        // docs/parity.md, "Tokenizers": "a photo of a creative mixture".
        assert_eq!(
            a.prompt.ids,
            [49406, 320, 1125, 539, 320, 4450, 28286, 49407]
        );
        assert_eq!((a.token_pos, a.prompt.eos), (5, 7));
        let padded = adaptive_ids(&tok, "a photo of a <CreTok> mixture", "creative", true).unwrap();
        assert_eq!(padded.prompt.ids.len(), 77);
        assert_eq!(padded.prompt.ids[8], 0);
        assert!(adaptive_ids(&tok, "a <CreTok>x", "creative", false).is_err());
        assert!(word_id(&tok, "cauliflowerish").is_err());
        assert_eq!(fill("a {t1} {t2}", "bee", "frog"), "a bee frog");
        assert!(check_templates("a {t1}", "<CreTok>").is_err());
        assert!(check_templates("a {t1} {t2}", "a <CreTok> <CreTok>").is_err());
        assert!(check_templates("a {t1} {t2}", "a <CreTok> of {t1}").is_ok());
        assert!(names_pair("a <CreTok> of {t1}"));
    }
}
