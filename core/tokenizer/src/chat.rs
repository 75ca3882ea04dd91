//! Chat templates: Jinja sources from `tokenizer_config.json`,
//! `chat_template.jinja`, GGUF metadata or the command line, rendered with
//! minijinja the way Hugging Face's `apply_chat_template` renders them:
//! `trim_blocks` and `lstrip_blocks`, `raise_exception`, a `tojson` filter
//! that writes Python's JSON (with `indent`, `ensure_ascii`, `separators`,
//! `sort_keys`), `strftime_now`, Python string/dict/list methods, loop
//! controls, `namespace()`, and `{% generation %}` blocks.

use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use crate::pyjson::{JsonStyle, python_json};

/// Template errors, carrying the template's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not compile.
    #[error("the chat template is invalid: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: the conversation is
    /// not one this model's template accepts.
    #[error("{0}")]
    Raised(String),
    /// Rendering failed for another reason (a type error, a missing value...).
    #[error("the chat template failed: {0}")]
    Render(String),
    /// A template file could not be read.
    #[error("cannot read chat template {path}: {reason}")]
    File {
        /// The path given.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// What a template sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatContext {
    /// Messages: JSON objects with `role`, `content` and anything else the
    /// template reads (`tool_calls`, `reasoning_content`, `name`...).
    pub messages: Vec<serde_json::Value>,
    /// Append the opening of the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool definitions (`tools`; `none` to the template when absent).
    pub tools: Option<serde_json::Value>,
    /// Extra variables (`enable_thinking`, `date_string`, `documents`...).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The BOS token string (`bos_token`; empty when absent).
    pub bos_token: Option<String>,
    /// The EOS token string (`eos_token`; empty when absent).
    pub eos_token: Option<String>,
}

/// A compiled chat template. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct ChatTemplate {
    source: Arc<str>,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .finish()
    }
}

impl PartialEq for ChatTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// The error `raise_exception` attaches, so that rendering can tell it apart.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedByTemplate(String);

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

fn kwarg<T: serde::de::DeserializeOwned>(kwargs: &Kwargs, name: &str) -> Result<Option<T>, Error> {
    let Some(v) = kwargs.get::<Option<Value>>(name)? else {
        return Ok(None);
    };
    if v.is_none() {
        return Ok(None);
    }
    serde_json::from_value(serde_json::to_value(&v).map_err(bad_json)?)
        .map(Some)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: bad `{name}`: {e}"),
            )
        })
}

fn bad_json(e: serde_json::Error) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: the value is not JSON: {e}"),
    )
}

/// Python's `json.dumps` options from the filter's keyword arguments.
fn json_style(kwargs: &Kwargs) -> Result<JsonStyle, Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Indent {
        Spaces(usize),
        Text(String),
    }
    let mut style = match kwarg::<Indent>(kwargs, "indent")? {
        Some(Indent::Spaces(n)) => JsonStyle::indented(" ".repeat(n)),
        Some(Indent::Text(s)) => JsonStyle::indented(s),
        None => JsonStyle::default(),
    };
    if let Some((item, key)) = kwarg::<(String, String)>(kwargs, "separators")? {
        style.item_separator = item;
        style.key_separator = key;
    }
    style.ensure_ascii = kwarg::<bool>(kwargs, "ensure_ascii")?.unwrap_or(false);
    style.sort_keys = kwarg::<bool>(kwargs, "sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    Ok(style)
}

fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let style = json_style(&kwargs)?;
    let json = serde_json::to_value(&value).map_err(bad_json)?;
    Ok(Value::from_safe_string(python_json(&json, &style)))
}

fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: `{format}` is not a valid date format"),
        )
    })?;
    Ok(out)
}

/// Python's `is iterable`: `none` is not (minijinja iterates it as empty),
/// so `tools is iterable and tools | length > 0` holds without tools.
fn is_iterable(value: Value) -> bool {
    !value.is_none() && value.try_iter().is_ok()
}

/// `{% generation %}` / `{% endgeneration %}` mark the assistant's text for
/// training masks and render their body unchanged; minijinja has no such
/// tag, so they become an always-true `if` (whitespace control kept).
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let trimmed = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+'])
            .trim();
        let replacement = match trimmed {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(word) => {
                let at = inner.find(trimmed).unwrap_or(0);
                out.push_str("{%");
                out.push_str(&inner[..at]);
                out.push_str(word);
                out.push_str(&inner[at + trimmed.len()..]);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn environment() -> Result<Environment<'static>, ChatTemplateError> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_test("iterable", is_iterable);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
    env.set_syntax(syntax);
    Ok(env)
}

/// Reasoning given under an older name also appears as `reasoning_content`
/// and `thinking`, the names templates read (as transformers does).
fn alias_reasoning(message: &serde_json::Value) -> serde_json::Value {
    const FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];
    let Some(map) = message.as_object() else {
        return message.clone();
    };
    let Some(reasoning) = FIELDS
        .iter()
        .find_map(|k| map.get(*k).filter(|v| !v.is_null()))
    else {
        return message.clone();
    };
    let mut out = serde_json::Map::new();
    out.insert("thinking".into(), reasoning.clone());
    for (k, v) in map {
        out.insert(k.clone(), v.clone());
    }
    out.insert("reasoning_content".into(), reasoning.clone());
    serde_json::Value::Object(out)
}

/// The variables a template renders with.
fn variables(ctx: &ChatContext) -> serde_json::Map<String, serde_json::Value> {
    let mut vars = serde_json::Map::new();
    vars.insert(
        "bos_token".into(),
        ctx.bos_token.clone().unwrap_or_default().into(),
    );
    vars.insert(
        "eos_token".into(),
        ctx.eos_token.clone().unwrap_or_default().into(),
    );
    vars.insert("documents".into(), serde_json::Value::Null);
    for (k, v) in &ctx.extra {
        vars.insert(k.clone(), v.clone());
    }
    vars.insert(
        "messages".into(),
        ctx.messages.iter().map(alias_reasoning).collect(),
    );
    vars.insert(
        "tools".into(),
        ctx.tools.clone().unwrap_or(serde_json::Value::Null),
    );
    vars.insert(
        "add_generation_prompt".into(),
        ctx.add_generation_prompt.into(),
    );
    vars
}

fn render_error(e: &Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<RaisedByTemplate>() {
            return ChatTemplateError::Raised(raised.0.clone());
        }
        source = err.source();
    }
    ChatTemplateError::Render(e.to_string())
}

impl ChatTemplate {
    /// Compile a template source.
    pub fn new(source: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = environment()?;
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        Ok(ChatTemplate {
            source: Arc::from(source),
            env: Arc::new(env),
        })
    }

    /// A template given on the command line: the contents of the file `spec`
    /// names, or `spec` itself when it is inline Jinja (contains `{{` or `{%`).
    pub fn from_str_or_file(spec: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let inline = spec.contains("{%") || spec.contains("{{");
        if inline {
            return ChatTemplate::new(spec);
        }
        let path = Path::new(spec);
        if !path.is_file() {
            return Err(ChatTemplateError::File {
                path: spec.to_string(),
                reason: "no such file, and it is not an inline Jinja template (no `{{` or `{%`)"
                    .into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ChatTemplateError::File {
            path: spec.to_string(),
            reason: e.to_string(),
        })?;
        ChatTemplate::new(&text)
    }

    /// The template source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render a conversation.
    pub fn render(&self, ctx: &ChatContext) -> Result<String, ChatTemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        template
            .render(Value::from(minijinja::value::Serde(variables(ctx))))
            .map_err(|e| render_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, ctx: &ChatContext) -> Result<String, ChatTemplateError> {
        ChatTemplate::new(src)?.render(ctx)
    }

    #[test]
    fn generation_tags_keep_their_body_and_whitespace_control() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation -%} b {% endgeneration %}{% if x %}"),
            "a{%- if true -%} b {% endif %}{% if x %}"
        );
        assert_eq!(rewrite_generation_tags("{% unclosed"), "{% unclosed");
    }

    #[test]
    fn raise_exception_is_a_typed_error_with_the_message() {
        let e = render(
            "{% if messages|length == 0 %}{{ raise_exception('No messages!') }}{% endif %}",
            &ChatContext::default(),
        )
        .unwrap_err();
        assert_eq!(e, ChatTemplateError::Raised("No messages!".into()));
        // Raised from inside a macro too.
        let e = render(
            "{% macro check() %}{{ raise_exception('deep') }}{% endmacro %}{{ check() }}",
            &ChatContext::default(),
        )
        .unwrap_err();
        assert_eq!(e, ChatTemplateError::Raised("deep".into()));
    }

    #[test]
    fn other_render_failures_say_what_failed() {
        let e = render("{{ 1 + 'a' }}", &ChatContext::default()).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)), "{e:?}");
        let e = render("{{ 'x' | tojson(indent=[1]) }}", &ChatContext::default()).unwrap_err();
        assert!(e.to_string().contains("indent"), "{e}");
        let e = render("{{ 'x' | tojson(colour=1) }}", &ChatContext::default()).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)), "{e:?}");
    }

    #[test]
    fn strftime_now_formats_the_local_time() {
        let before = chrono::Local::now().format("%Y-%m-%d").to_string();
        let out = render("{{ strftime_now('%Y-%m-%d') }}", &ChatContext::default()).unwrap();
        let after = chrono::Local::now().format("%Y-%m-%d").to_string();
        assert!(out == before || out == after, "{out}");
        assert!(render("{{ strftime_now('%Q') }}", &ChatContext::default()).is_err());
    }

    #[test]
    fn none_is_not_iterable() {
        let out = render(
            "{{ tools is iterable }}|{{ [] is iterable }}|{{ 'ab' is iterable }}|{{ 3 is iterable }}|{{ nothing is iterable }}",
            &ChatContext::default(),
        )
        .unwrap();
        assert_eq!(out, "False|True|True|False|True");
    }

    #[test]
    fn absent_tools_and_tokens_are_none_and_empty() {
        let out = render(
            "{{ tools is none }}|{{ documents is none }}|[{{ bos_token }}]|{{ extra_flag }}",
            &ChatContext {
                extra: json!({"extra_flag": 7}).as_object().unwrap().clone(),
                ..Default::default()
            },
        )
        .unwrap();
        // Booleans print as Python prints them.
        assert_eq!(out, "True|True|[]|7");
    }

    #[test]
    fn syntax_errors_and_missing_files() {
        assert!(matches!(
            ChatTemplate::new("{% for %}"),
            Err(ChatTemplateError::Syntax(_))
        ));
        assert!(matches!(
            ChatTemplate::from_str_or_file("/no/such/template.jinja"),
            Err(ChatTemplateError::File { .. })
        ));
        assert_eq!(
            ChatTemplate::from_str_or_file("{{ 'x' }}")
                .unwrap()
                .render(&ChatContext::default())
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn templates_load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jinja");
        std::fs::write(&path, "{{ messages[0].content }}\n").unwrap();
        let t = ChatTemplate::from_str_or_file(path.to_str().unwrap()).unwrap();
        let out = t
            .render(&ChatContext {
                messages: vec![json!({"role": "user", "content": "hi"})],
                ..Default::default()
            })
            .unwrap();
        // Like Jinja, a single trailing newline of the source is dropped.
        assert_eq!(out, "hi");
    }

    #[test]
    fn templates_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<ChatTemplate>();
    }
}
