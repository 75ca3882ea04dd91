//! Every API family `kiln serve` can mount, registered once each. Adding a
//! dialect is a crate implementing [`kiln_http::Frontend`] plus one entry in
//! [`FRONTENDS`]: `--frontend` accepts its name, `--help` shows its line,
//! the start-up summary lists its routes; no other frontend changes.

use kiln_http::Frontend;

/// One mountable frontend.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// Its `--frontend` value.
    pub name: &'static str,
    /// Its line in `--help`.
    pub help: &'static str,
    /// Its main routes, for the start-up summary.
    pub routes: &'static str,
    /// Frontends it calls through HTTP and so cannot run without.
    pub needs: &'static [&'static str],
    pub make: fn() -> Box<dyn Frontend>,
}

/// The registered frontends, in `--help` order.
pub const FRONTENDS: &[Registration] = &[
    Registration {
        name: "openai",
        help: "OpenAI /v1/* (completions, chat, responses, embeddings, models, tokenize)",
        routes: "/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings, /v1/models, /tokenize",
        needs: &[],
        make: || Box::new(kiln_frontend_openai::OpenAiFrontend),
    },
    Registration {
        name: "tgi",
        help: "Hugging Face TGI (/generate, /generate_stream, /info) and TEI's /embed",
        routes: "/generate, /generate_stream, POST /, /info, /embed",
        needs: &[],
        make: || Box::new(kiln_frontend_tgi::TgiFrontend),
    },
    Registration {
        name: "ollama",
        help: "Ollama (/api/*, model management over the cache included)",
        routes: "/api/generate, /api/chat, /api/embed, /api/tags, /api/show, /api/pull",
        needs: &[],
        make: || Box::new(kiln_frontend_ollama::OllamaFrontend),
    },
    Registration {
        name: "metrics",
        help: "Prometheus /metrics",
        routes: "/metrics",
        needs: &[],
        make: || Box::new(kiln_frontend_metrics::MetricsFrontend),
    },
    Registration {
        name: "ui",
        help: "the browser playground at /ui (chat, completions, live metrics, model card)",
        routes: "/ui, the browser playground",
        needs: &["openai"],
        make: || Box::new(kiln_frontend_ui::UiFrontend),
    },
    Registration {
        name: "jsonl",
        help: "a minimal JSON-lines dialect (POST /jsonl), the example of a frontend crate",
        routes: "/jsonl",
        needs: &[],
        make: || Box::new(kiln_example_frontend_jsonl::JsonlFrontend),
    },
];

/// `--frontend`'s default: every family clients expect (the example dialect
/// is opt-in).
pub const DEFAULT_FRONTENDS: &str = "openai,tgi,ollama,metrics,ui";

pub fn find(name: &str) -> Option<&'static Registration> {
    FRONTENDS.iter().find(|r| r.name == name)
}

/// `--frontend`'s parser: the registered names, each with its help line.
pub fn parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        FRONTENDS
            .iter()
            .map(|r| clap::builder::PossibleValue::new(r.name).help(r.help)),
    )
}

/// Why a list of frontends cannot be mounted.
pub fn check(names: &[&str]) -> Result<(), String> {
    if names.is_empty() {
        let all: Vec<&str> = FRONTENDS.iter().map(|r| r.name).collect();
        return Err(format!(
            "--frontend needs at least one of {}",
            all.join(", ")
        ));
    }
    for name in names {
        let Some(r) = find(name) else {
            return Err(format!("unknown frontend `{name}`"));
        };
        if let Some(missing) = r.needs.iter().find(|n| !names.contains(n)) {
            return Err(format!(
                "the {name} frontend calls the {missing} routes: add {missing} to --frontend{}",
                if *name == "ui" {
                    ", or pass --no-ui"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_default_list_is_registered() {
        for (i, r) in FRONTENDS.iter().enumerate() {
            assert!(
                FRONTENDS[..i].iter().all(|o| o.name != r.name),
                "{} twice",
                r.name
            );
            for need in r.needs {
                assert!(find(need).is_some(), "{} needs unknown {need}", r.name);
            }
        }
        for name in DEFAULT_FRONTENDS.split(',') {
            assert!(find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_frontend_without_what_it_needs_is_refused() {
        assert!(check(&["openai", "ui"]).is_ok());
        let e = check(&["tgi", "ui"]).unwrap_err();
        assert!(e.contains("add openai"), "{e}");
        assert!(check(&[]).unwrap_err().contains("at least one"));
    }

    #[test]
    fn every_registration_builds_its_frontend() {
        for r in FRONTENDS {
            assert_eq!((r.make)().name(), r.name);
        }
    }
}
