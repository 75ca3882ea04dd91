//! The `kiln` binary: parse, set up logging, dispatch (see the `kiln` library).

use clap::Parser;

fn main() {
    let cli = kiln::cli::Cli::parse();
    if let Err(e) = kiln::logging::init(&cli.logging) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    if let Err(e) = kiln::commands::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
