//! One module per subcommand; [`run`] dispatches.

pub mod backend;
pub mod generate;
pub mod plan;
pub mod pull;
pub mod serve;

use std::path::PathBuf;

use kiln_hub::{Hub, HubConfig, HubError, ModelSpec, ProgressMode, ResolvedModel};

use crate::cli::{Cli, Command, ModelArgs};

/// Errors of the `kiln` command, each with a message for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Finding or fetching the model failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Flags that cannot work together.
    #[error("{0}")]
    Usage(String),
    /// `kiln plan` failed.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// `kiln serve` failed.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    /// `kiln generate` failed.
    #[error(transparent)]
    Generate(#[from] generate::GenerateError),
    /// `kiln bench` failed.
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    /// `kiln backend check` could not check, or found failures.
    #[error(transparent)]
    Backend(#[from] backend::BackendCheckError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::execute(&args),
        Command::Pull(args) => pull::pull(&args),
        Command::List(args) => pull::list(&args),
        Command::Plan(args) => plan::execute(&args),
        Command::Generate(args) => generate::execute(&args),
        Command::Bench(crate::cli::BenchCommand::Serve(args)) => crate::bench::execute(&args),
        Command::Backend(crate::cli::BackendCommand::Check(args)) => backend::check(&args),
    }
}

/// A hub configured from the environment.
pub fn hub_from_env(progress: ProgressMode) -> Result<Hub, CliError> {
    Ok(Hub::new(HubConfig::from_env(progress)?))
}

/// Parse the model argument.
pub fn parse_model(args: &ModelArgs) -> Result<ModelSpec, CliError> {
    Ok(ModelSpec::parse(args.model())?)
}

/// Log what a resolution did.
pub fn log_resolved(spec: &ModelSpec, model: &ResolvedModel) {
    if model.downloaded_bytes > 0 {
        tracing::info!(
            model = %spec,
            path = %model.path.display(),
            "downloaded {}",
            kiln_hub::human_bytes(model.downloaded_bytes)
        );
    } else {
        tracing::debug!(model = %spec, path = %model.path.display(), "model found locally");
    }
}
