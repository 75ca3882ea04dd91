//! Loading a tokenizer from a Hugging Face model directory:
//! `tokenizer.json` (required), `tokenizer_config.json`,
//! `chat_template.jinja`, `additional_chat_templates/*.jinja`,
//! `generation_config.json` and `config.json` (all optional).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::chat::ChatTemplate;
use crate::{NamedToken, Shared, TokenizerError, bos_eos_processor};

/// `transformers` writes `int(1e30)` for "no limit".
const NO_LIMIT: u64 = 1 << 62;

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_text(path: &Path) -> Result<Option<String>, TokenizerError> {
    if !path.exists() {
        return Ok(None);
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| file_error(path, e))
}

/// A JSON object file; `{}` when absent.
fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    let Some(text) = read_text(path)? else {
        return Ok(Value::Object(Default::default()));
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| file_error(path, format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(file_error(path, "expected a JSON object"));
    }
    Ok(value)
}

/// A token given as a string or as an AddedToken object (`{"content": ...}`).
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Token strings listed as a list or as the values of an object.
fn token_strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|t| token_string(Some(t))).collect(),
        Some(Value::Object(map)) => map.values().filter_map(|t| token_string(Some(t))).collect(),
        _ => Vec::new(),
    }
}

/// Ids given as one integer or a list.
fn ids(v: Option<&Value>) -> Vec<u32> {
    let one = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(x) => one(x).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The files of a model directory, parsed.
struct DirFiles {
    tokenizer: HfTokenizer,
    config: Value,
    generation: Value,
    model: Value,
    jinja: Option<String>,
    extra_templates: Vec<(String, String)>,
}

impl DirFiles {
    fn read(dir: &Path) -> Result<DirFiles, TokenizerError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(file_error(
                &path,
                "missing; Kiln needs the fast-tokenizer file tokenizer.json \
                 (save the tokenizer with transformers to produce it)",
            ));
        }
        let mut tokenizer = HfTokenizer::from_file(&path).map_err(|e| file_error(&path, e))?;
        // Files saved for batched training pad and cut every input (BERT's
        // to 128 tokens); the engine sees each input whole and decides
        // about length itself.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| file_error(&path, e))?;
        Ok(DirFiles {
            tokenizer,
            config: read_json(&dir.join("tokenizer_config.json"))?,
            generation: read_json(&dir.join("generation_config.json"))?,
            model: read_json(&dir.join("config.json"))?,
            jinja: read_text(&dir.join("chat_template.jinja"))?,
            extra_templates: read_extra_templates(&dir.join("additional_chat_templates"))?,
        })
    }
}

/// `additional_chat_templates/<name>.jinja`, sorted by name.
fn read_extra_templates(dir: &Path) -> Result<Vec<(String, String)>, TokenizerError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| file_error(dir, e))? {
        let path = entry.map_err(|e| file_error(dir, e))?.path();
        let is_jinja = path.extension().is_some_and(|e| e == "jinja");
        if let (true, Some(name)) = (is_jinja, path.file_stem().and_then(|s| s.to_str())) {
            let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
            out.push((name.to_string(), text));
        }
    }
    out.sort();
    Ok(out)
}

/// Chat template sources: the default one and the named ones, with where each came from.
struct TemplateSources {
    default: Option<(String, String)>,
    named: Vec<(String, String, String)>,
}

fn template_sources(files: &DirFiles, dir: &Path) -> TemplateSources {
    let config_origin = dir.join("tokenizer_config.json").display().to_string();
    let mut named: Vec<(String, String, String)> = Vec::new();
    let mut default = None;
    match files.config.get("chat_template") {
        Some(Value::String(s)) => default = Some((s.clone(), config_origin.clone())),
        Some(Value::Array(list)) => {
            for t in list {
                if let (Some(name), Some(src)) = (
                    t.get("name").and_then(Value::as_str),
                    t.get("template").and_then(Value::as_str),
                ) {
                    let origin = format!("{config_origin} (chat_template `{name}`)");
                    named.push((name.to_string(), src.to_string(), origin));
                }
            }
            default = named
                .iter()
                .find(|(n, _, _)| n == "default")
                .or(named.first())
                .map(|(_, src, origin)| (src.clone(), origin.clone()));
        }
        _ => {}
    }
    for (name, src) in &files.extra_templates {
        let origin = dir
            .join("additional_chat_templates")
            .join(format!("{name}.jinja"))
            .display()
            .to_string();
        named.push((name.clone(), src.clone(), origin));
    }
    if let Some(src) = &files.jinja {
        let origin = dir.join("chat_template.jinja").display().to_string();
        default = Some((src.clone(), origin));
    }
    TemplateSources { default, named }
}

fn compile(src: &str, origin: &str) -> Result<ChatTemplate, TokenizerError> {
    ChatTemplate::new(src).map_err(|error| TokenizerError::Template {
        origin: origin.to_string(),
        error,
    })
}

/// A named token: from its string in `tokenizer_config.json`, else from an
/// id in `config.json` or `generation_config.json`.
fn named_token(
    tokenizer: &HfTokenizer,
    text: Option<String>,
    fallback_ids: &[u32],
    what: &str,
) -> Option<NamedToken> {
    if let Some(text) = text {
        match tokenizer.token_to_id(&text) {
            Some(id) => return Some(NamedToken { id, text }),
            None => tracing::warn!("{what} `{text}` is not in the vocabulary; ignoring it"),
        }
    }
    let id = *fallback_ids.first()?;
    let text = tokenizer.id_to_token(id)?;
    Some(NamedToken { id, text })
}

/// Make sure the named special tokens are never split, and collect the special ids.
fn special_ids(
    tokenizer: &mut HfTokenizer,
    named: &[NamedToken],
) -> Result<HashSet<u32>, TokenizerError> {
    let added = tokenizer.get_added_tokens_decoder();
    let mut special: HashSet<u32> = added
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(&id, _)| id)
        .collect();
    let missing: Vec<AddedToken> = named
        .iter()
        .filter(|t| !added.contains_key(&t.id))
        .map(|t| AddedToken::from(t.text.clone(), true).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(missing)
        .map_err(|e| TokenizerError::Invalid(format!("special tokens: {e}")))?;
    special.extend(named.iter().map(|t| t.id));
    Ok(special)
}

/// The tokens the configuration names.
struct NamedTokens {
    bos: Option<NamedToken>,
    eos: Option<NamedToken>,
    unk: Option<NamedToken>,
    pad: Option<NamedToken>,
    /// `additional_special_tokens` / `extra_special_tokens`.
    extra: Vec<NamedToken>,
}

impl NamedTokens {
    fn resolve(files: &DirFiles) -> NamedTokens {
        let (config, tok) = (&files.config, &files.tokenizer);
        let fallback = |key: &str| {
            let mut v = ids(files.model.get(key));
            v.extend(ids(files.generation.get(key)));
            v
        };
        let token = |key: &str, fallback_ids: &[u32]| {
            named_token(tok, token_string(config.get(key)), fallback_ids, key)
        };
        NamedTokens {
            bos: token("bos_token", &fallback("bos_token_id")),
            eos: token("eos_token", &fallback("eos_token_id")),
            unk: token("unk_token", &[]),
            pad: token("pad_token", &fallback("pad_token_id")),
            extra: ["additional_special_tokens", "extra_special_tokens"]
                .iter()
                .flat_map(|k| token_strings(config.get(*k)))
                .filter_map(|text| named_token(tok, Some(text), &[], "special token"))
                .collect(),
        }
    }

    fn all(&self) -> Vec<NamedToken> {
        [&self.bos, &self.eos, &self.unk, &self.pad]
            .into_iter()
            .flatten()
            .chain(&self.extra)
            .cloned()
            .collect()
    }
}

/// The tokenizer's EOS, then `generation_config.json`'s, then `config.json`'s.
fn eos_ids(files: &DirFiles, eos: Option<&NamedToken>) -> Vec<u32> {
    let mut out: Vec<u32> = eos.iter().map(|t| t.id).collect();
    for id in ids(files.generation.get("eos_token_id"))
        .into_iter()
        .chain(ids(files.model.get("eos_token_id")))
    {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Explicit `add_bos_token` / `add_eos_token` replace tokenizer.json's
/// post-processor, as in transformers; without them it is kept.
fn apply_bos_eos_flags(
    tokenizer: &mut HfTokenizer,
    config: &Value,
    tokens: &NamedTokens,
) -> Result<(), TokenizerError> {
    let flag = |key: &str| config.get(key).and_then(Value::as_bool);
    let (add_bos, add_eos) = (flag("add_bos_token"), flag("add_eos_token"));
    if add_bos.is_none() && add_eos.is_none() {
        return Ok(());
    }
    let pick = |token: &Option<NamedToken>, add: Option<bool>| {
        token
            .clone()
            .filter(|_| add == Some(true))
            .map(|t| (t.id, t.text))
    };
    tokenizer.with_post_processor(Some(bos_eos_processor(
        pick(&tokens.bos, add_bos),
        pick(&tokens.eos, add_eos),
    )?));
    Ok(())
}

/// The default and named chat templates, compiled.
fn compile_templates(
    files: &DirFiles,
    dir: &Path,
) -> Result<(Option<ChatTemplate>, BTreeMap<String, ChatTemplate>), TokenizerError> {
    let sources = template_sources(files, dir);
    let default = sources
        .default
        .as_ref()
        .map(|(src, origin)| compile(src, origin))
        .transpose()?;
    let mut named = BTreeMap::new();
    for (name, src, origin) in &sources.named {
        named.insert(name.clone(), compile(src, origin)?);
    }
    Ok((default, named))
}

/// Load `dir`.
pub(crate) fn load(dir: &Path) -> Result<Shared, TokenizerError> {
    let mut files = DirFiles::read(dir)?;
    let tokens = NamedTokens::resolve(&files);
    let eos_ids = eos_ids(&files, tokens.eos.as_ref());
    let model_max_length = files
        .config
        .get("model_max_length")
        .and_then(Value::as_u64)
        .filter(|&n| n < NO_LIMIT)
        .map(|n| n as usize);
    let (chat_template, named_templates) = compile_templates(&files, dir)?;
    let special = special_ids(&mut files.tokenizer, &tokens.all())?;
    apply_bos_eos_flags(&mut files.tokenizer, &files.config, &tokens)?;
    let vocab_size = files.tokenizer.get_vocab_size(true);
    Ok(Shared {
        inner: files.tokenizer,
        special,
        vocab_size,
        bos: tokens.bos,
        eos: tokens.eos,
        unk: tokens.unk,
        pad: tokens.pad,
        eos_ids,
        model_max_length,
        chat_template,
        named_templates,
    })
}
