//! Byte-level pre-tokenizers for GGUF `gpt2` vocabularies, chosen by
//! `tokenizer.ggml.pre`: the text is cut with the regex (or the sequence of
//! regexes) the vocabulary's merges were learned on, then spelled in GPT-2's
//! byte alphabet. The names and their grouping follow llama.cpp's
//! `llama_vocab::impl::load`.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use crate::TokenizerError;

/// Llama 3 and its relatives: digits in runs of up to three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: digits one by one.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5: like Qwen2, with combining marks kept inside words.
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken: case-aware words, digits one by one.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o (o200k) and Llama 4: case-aware words with contractions attached.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values with a split regex of their own.
const SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3),
    ("llama-v3", LLAMA3),
    ("llama-bpe", LLAMA3),
    ("falcon3", LLAMA3),
    ("falcon-h1", LLAMA3),
    ("pixtral", LLAMA3),
    ("midm-2.0", LLAMA3),
    ("lfm2", LLAMA3),
    ("jina-v5-nano", LLAMA3),
    ("dbrx", LLAMA3),
    ("smaug-bpe", LLAMA3),
    ("qwen2", QWEN2),
    ("deepseek-r1-qwen", QWEN2),
    ("kormo", QWEN2),
    ("f2llmv2", QWEN2),
    ("megrez", QWEN2),
    ("qwen35", QWEN35),
    ("tekken", TEKKEN),
    ("gpt-4o", GPT4O),
    ("llama4", GPT4O),
    ("kanana2", GPT4O),
    ("talkie", GPT4O),
    ("minimax-m2", GPT4O),
];

/// DeepSeek LLM: line breaks, Latin-like words, ASCII and full-width
/// punctuation, trailing spaces, CJK runs and numbers, each cut in turn.
const DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
];
/// DeepSeek Coder: line breaks, words, punctuation, CJK runs, then each digit.
const DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}",
];
/// Falcon: punctuation runs, GPT-2's split, then runs of three digits.
const FALCON: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"[0-9][0-9][0-9]",
];

/// Values whose text is cut by several regexes in turn, each cutting the
/// pieces the previous one left.
const SPLIT_SEQUENCES: &[(&str, &[&str])] = &[
    ("deepseek-llm", DEEPSEEK_LLM),
    ("deepseek-coder", DEEPSEEK_CODER),
    ("falcon", FALCON),
];

/// Values whose vocabularies were trained with digits split one by one
/// before GPT-2's split (SmolLM, StarCoder, Refact, Command R).
const DIGITS_THEN_GPT2: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
];

/// Values that mean GPT-2's own split.
const GPT2: &[&str] = &[
    "gpt2", "default", "gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4",
];

/// Values whose vocabularies use a word as one token when the vocabulary
/// has it, before any merge (`ignore_merges` in `tokenizer.json`).
const IGNORE_MERGES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "tekken",
];

/// Values whose models start every sequence with BOS unless the file says otherwise.
const ADD_BOS: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "tekken",
];

/// Every `tokenizer.ggml.pre` value Kiln knows; any other falls back to GPT-2's split.
pub fn known_pre_tokenizers() -> Vec<&'static str> {
    GPT2.iter()
        .chain(DIGITS_THEN_GPT2)
        .copied()
        .chain(SPLITS.iter().map(|(name, _)| *name))
        .chain(SPLIT_SEQUENCES.iter().map(|(name, _)| *name))
        .collect()
}

/// Whether a `tokenizer.ggml.pre` value takes whole words from the vocabulary before merging.
pub(crate) fn ignores_merges(pre: Option<&str>) -> bool {
    pre.is_some_and(|name| IGNORE_MERGES.contains(&name))
}

/// Whether a byte-level vocabulary adds BOS when its file does not say.
pub(crate) fn adds_bos_by_default(pre: Option<&str>) -> bool {
    pre.is_some_and(|name| ADD_BOS.contains(&name))
}

/// How a `gpt2` vocabulary's text is cut before byte-level BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreSplit {
    /// GPT-2's regex (the byte-level pre-tokenizer's own).
    Gpt2,
    /// Each digit alone, then GPT-2's regex.
    DigitsThenGpt2,
    /// This regex, then the byte alphabet.
    Regex(&'static str),
    /// These regexes in turn, then the byte alphabet.
    Regexes(&'static [&'static str]),
}

/// The split for a `tokenizer.ggml.pre` value; unknown ones get GPT-2's with a warning.
pub(crate) fn pre_split(pre: Option<&str>) -> PreSplit {
    let Some(name) = pre else {
        return PreSplit::Gpt2;
    };
    if GPT2.contains(&name) {
        return PreSplit::Gpt2;
    }
    if DIGITS_THEN_GPT2.contains(&name) {
        return PreSplit::DigitsThenGpt2;
    }
    if let Some((_, regex)) = SPLITS.iter().find(|(n, _)| *n == name) {
        return PreSplit::Regex(regex);
    }
    if let Some((_, regexes)) = SPLIT_SEQUENCES.iter().find(|(n, _)| *n == name) {
        return PreSplit::Regexes(regexes);
    }
    tracing::warn!(
        pre = name,
        "GGUF pre-tokenizer `{name}` is not known to Kiln; using GPT-2's split, \
         which may tokenize some text differently from the model's own tokenizer"
    );
    PreSplit::Gpt2
}

/// GPT-2's regex split, then the byte alphabet (no prefix space).
fn gpt2_byte_level() -> ByteLevel {
    ByteLevel::new(false, true, true)
}

/// The byte alphabet alone, after a split of our own.
fn byte_alphabet() -> ByteLevel {
    ByteLevel::new(false, true, false)
}

/// The pre-tokenizer for a split.
pub(crate) fn pre_tokenizer(split: PreSplit) -> Result<PreTokenizerWrapper, TokenizerError> {
    Ok(match split {
        PreSplit::Gpt2 => gpt2_byte_level().into(),
        PreSplit::DigitsThenGpt2 => {
            Sequence::new(vec![Digits::new(true).into(), gpt2_byte_level().into()]).into()
        }
        PreSplit::Regex(regex) => {
            Sequence::new(vec![isolate(regex)?.into(), byte_alphabet().into()]).into()
        }
        PreSplit::Regexes(regexes) => {
            let mut steps: Vec<PreTokenizerWrapper> = regexes
                .iter()
                .map(|regex| isolate(regex).map(Into::into))
                .collect::<Result<_, _>>()?;
            steps.push(byte_alphabet().into());
            Sequence::new(steps).into()
        }
    })
}

/// Runs of line breaks cut apart from the text around them (Gemma 4, whose
/// merges run over whole lines otherwise).
pub(crate) fn line_break_runs() -> Result<Split, TokenizerError> {
    isolate(r"[^\n]+|[\n]+")
}

/// A split that keeps both the matches and the text between them as pieces.
fn isolate(regex: &str) -> Result<Split, TokenizerError> {
    Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer regex `{regex}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(pre: &impl PreTokenizer, text: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    /// Every regex splits ~40 strings as the `tokenizers` Python package
    /// (onig engine) does with transformers' table.
    #[test]
    fn split_regexes_match_the_reference_table() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/pre_splits.json")).unwrap();
        let texts: Vec<&str> = fixture["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let mut seen = 0;
        for group in fixture["patterns"].as_array().unwrap() {
            for name in group["names"].as_array().unwrap() {
                let name = name.as_str().unwrap();
                let PreSplit::Regex(regex) = pre_split(Some(name)) else {
                    panic!("`{name}` has no regex");
                };
                let split = Split::new(
                    SplitPattern::Regex(regex.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap();
                for (text, want) in texts.iter().zip(group["splits"].as_array().unwrap()) {
                    let want: Vec<String> = serde_json::from_value(want.clone()).unwrap();
                    assert_eq!(pieces(&split, text), want, "{name} on {text:?}");
                }
                seen += 1;
            }
        }
        assert_eq!(seen, SPLITS.len());
    }

    #[test]
    fn unknown_and_absent_values_use_gpt2() {
        assert_eq!(pre_split(None), PreSplit::Gpt2);
        assert_eq!(pre_split(Some("no-such-pre")), PreSplit::Gpt2);
        assert_eq!(pre_split(Some("smollm")), PreSplit::DigitsThenGpt2);
        assert!(known_pre_tokenizers().contains(&"qwen2"));
    }

    #[test]
    fn names_are_grouped_as_llamacpp_groups_them() {
        assert_eq!(pre_split(Some("gpt-2")), PreSplit::Gpt2);
        assert_eq!(pre_split(Some("command-r")), PreSplit::DigitsThenGpt2);
        assert_eq!(pre_split(Some("falcon")), PreSplit::Regexes(FALCON));
        assert!(known_pre_tokenizers().contains(&"deepseek-llm"));
        assert!(ignores_merges(Some("llama-bpe")) && !ignores_merges(Some("qwen2")));
        assert!(!ignores_merges(None));
        assert!(adds_bos_by_default(Some("llama3")) && !adds_bos_by_default(Some("gpt2")));
    }

    #[test]
    fn regex_sequences_cut_the_pieces_of_the_previous_regex() {
        let pre = pre_tokenizer(PreSplit::Regexes(FALCON)).unwrap();
        assert_eq!(pieces(&pre, "\n =3333"), vec!["ĊĠ", "=", "333", "3"]);
        let pre = pre_tokenizer(pre_split(Some("deepseek-coder"))).unwrap();
        assert_eq!(pieces(&pre, "a1 b\n"), vec!["a", "1", "Ġb", "Ċ"]);
    }

    #[test]
    fn digits_are_cut_one_by_one_before_gpt2() {
        let pre = pre_tokenizer(PreSplit::DigitsThenGpt2).unwrap();
        assert_eq!(pieces(&pre, "x 12"), vec!["x", "Ġ", "1", "2"]);
        let pre = pre_tokenizer(PreSplit::Gpt2).unwrap();
        assert_eq!(pieces(&pre, "x 12"), vec!["x", "Ġ12"]);
    }
}
