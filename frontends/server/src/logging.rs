//! Logs on stderr through `tracing-subscriber`: `--log-level` is an
//! `EnvFilter` directive string, `--log-format json` gives one JSON object
//! per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Install the global subscriber. Errors name the bad `--log-level`.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.log_level).map_err(|e| {
        format!(
            "invalid --log-level `{}`: {e}; use error, warn, info, debug, trace or directives such as info,kiln_engine=debug",
            args.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
