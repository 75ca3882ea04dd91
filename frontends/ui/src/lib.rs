//! # kiln-frontend-ui
//!
//! The playground at `/ui`: a chat view (streaming, stop, system prompt,
//! sampling controls, JSON schema and tools), a raw completion view, a live
//! panel plotted from `/metrics`, and the model card from `/v1/server_info`.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary with
//! `include_str!`: nothing is fetched from a CDN or anywhere else at run
//! time, so it works on an air-gapped host. It talks to the server only
//! through the public OpenAI routes and `/metrics`, so it needs the `openai`
//! and `metrics` frontends beside it.
//!
//! The page itself is public (it holds no data); with `--api-key`, it asks
//! for the key once, keeps it in the tab's session storage, and sends it as
//! a bearer token on every API call.
//!
//! Depends on `kiln-http` and `kiln-engine-api` only.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use kiln_engine_api::EngineHandle;
use kiln_http::{Frontend, HttpConfig};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Paths served without an API key: the page and its assets.
pub const PUBLIC_PATHS: &[&str] = &["/ui", "/ui/", "/ui/app.js", "/ui/style.css"];

/// The playground frontend.
#[derive(Debug, Clone, Copy, Default)]
pub struct UiFrontend;

impl Frontend for UiFrontend {
    fn name(&self) -> &'static str {
        "ui"
    }

    fn public_paths(&self) -> &'static [&'static str] {
        PUBLIC_PATHS
    }

    fn routes(&self, _handle: EngineHandle, _config: &HttpConfig) -> Router {
        Router::new()
            .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
            .route(
                "/ui/",
                get(|| asset(INDEX_HTML, "text/html; charset=utf-8")),
            )
            .route(
                "/ui/app.js",
                get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
            )
            .route(
                "/ui/style.css",
                get(|| asset(STYLE_CSS, "text/css; charset=utf-8")),
            )
    }
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary; revalidate rather than cache forever.
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(
                !text.contains("http://"),
                "an absolute http URL in an asset"
            );
            assert!(
                !text.contains("https://"),
                "an absolute https URL in an asset"
            );
            assert!(!text.contains("//cdn"), "a CDN reference in an asset");
        }
        assert!(INDEX_HTML.contains("src=\"app.js\""));
        assert!(INDEX_HTML.contains("href=\"style.css\""));
    }

    #[test]
    fn every_routed_asset_is_public() {
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/style.css"] {
            assert!(PUBLIC_PATHS.contains(&path), "{path}");
        }
    }
}
