//! Which API family a route belongs to, for errors raised before any
//! frontend handler runs (auth, unknown routes, wrong methods, bad bodies).

use axum::http::Method;

/// An API family's error shapes and body rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI as served by vLLM: `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// Hugging Face TGI: `{"error","error_type"}`.
    Tgi,
    /// Ollama: `{"error"}`.
    Ollama,
}

/// What a dialect demands of a request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentTypeRule {
    /// `application/json` (or `+json`) required; anything else is a 400 (vLLM).
    JsonOr400,
    /// `application/json` required; anything else is a 415 (axum, as TGI).
    JsonOr415,
    /// Any content type is read as JSON (Ollama; `curl -d` sends a form type).
    Any,
}

impl Dialect {
    /// The dialect of a route by its method and path: `/api/*` and `GET /`
    /// are Ollama's; `/generate`, `/generate_stream`, `/info` and `POST /` are
    /// TGI's; everything else (including unknown routes) is OpenAI's.
    pub fn for_request(method: &Method, path: &str) -> Dialect {
        if path == "/api" || path.starts_with("/api/") {
            return Dialect::Ollama;
        }
        match path {
            "/" if method == Method::GET || method == Method::HEAD => Dialect::Ollama,
            "/" | "/generate" | "/generate_stream" | "/info" => Dialect::Tgi,
            _ => Dialect::OpenAi,
        }
    }

    /// Like [`Dialect::for_request`], but only among the `enabled` dialects:
    /// a path whose family is not served answers in the first enabled one's
    /// shape (OpenAI when none is).
    pub fn for_request_among(method: &Method, path: &str, enabled: &[Dialect]) -> Dialect {
        let d = Dialect::for_request(method, path);
        if enabled.is_empty() || enabled.contains(&d) {
            d
        } else {
            enabled[0]
        }
    }

    /// What this dialect demands of the `Content-Type` of a JSON body.
    pub fn content_type_rule(self) -> ContentTypeRule {
        match self {
            Dialect::OpenAi => ContentTypeRule::JsonOr400,
            Dialect::Tgi => ContentTypeRule::JsonOr415,
            Dialect::Ollama => ContentTypeRule::Any,
        }
    }

    /// Lower-case name (`openai`, `tgi`, `ollama`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Tgi => "tgi",
            Dialect::Ollama => "ollama",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_root_path_splits_by_method() {
        assert_eq!(Dialect::for_request(&Method::GET, "/"), Dialect::Ollama);
        assert_eq!(Dialect::for_request(&Method::HEAD, "/"), Dialect::Ollama);
        assert_eq!(Dialect::for_request(&Method::POST, "/"), Dialect::Tgi);
    }

    #[test]
    fn unserved_families_fall_back_to_an_enabled_one() {
        let only_tgi = [Dialect::Tgi];
        assert_eq!(
            Dialect::for_request_among(&Method::POST, "/x", &only_tgi),
            Dialect::Tgi
        );
        assert_eq!(
            Dialect::for_request_among(&Method::POST, "/api/x", &[]),
            Dialect::Ollama
        );
        let both = [Dialect::OpenAi, Dialect::Ollama];
        assert_eq!(
            Dialect::for_request_among(&Method::POST, "/api/x", &both),
            Dialect::Ollama
        );
    }

    #[test]
    fn paths_pick_their_family() {
        let post = Method::POST;
        assert_eq!(Dialect::for_request(&post, "/api/chat"), Dialect::Ollama);
        assert_eq!(
            Dialect::for_request(&post, "/generate_stream"),
            Dialect::Tgi
        );
        assert_eq!(
            Dialect::for_request(&post, "/v1/completions"),
            Dialect::OpenAi
        );
        assert_eq!(Dialect::for_request(&post, "/nope"), Dialect::OpenAi);
        assert_eq!(Dialect::for_request(&post, "/apis"), Dialect::OpenAi);
    }
}
