//! The Python module `kiln`: vLLM's offline API (`LLM`, `SamplingParams`,
//! `RequestOutput`) over Kiln's engine, and the `kiln` console command.
//!
//! Every Python-facing name and default follows vLLM's, so that code written
//! for `vllm.LLM` runs with `import kiln` in its place. The engine runs with
//! the GIL released; waits wake every [`batch::TICK`] to let Ctrl-C through.

mod batch;
mod embeddings;
mod engine_args;
mod errors;
mod llm;
mod outputs;
mod prompts;
mod sampling;
mod tokenizer;

use clap::Parser;
use pyo3::prelude::*;

/// Run the `kiln` command line with `sys.argv` (the `kiln` console script
/// installed by the wheel). Returns the process exit status.
#[pyfunction]
fn main(py: Python<'_>) -> PyResult<i32> {
    let argv: Vec<String> = py.import("sys")?.getattr("argv")?.extract()?;
    // Name the program `kiln` in help and errors, whatever the script's path.
    let args = std::iter::once("kiln".to_string()).chain(argv.into_iter().skip(1));
    let mut cli = match kiln::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(e.exit_code());
        }
    };
    if let Some(dir) = module_dir(py) {
        match &mut cli.command {
            kiln::cli::Command::Serve(a) => a.engine.backend_path.push(dir),
            kiln::cli::Command::Generate(a) => a.engine.backend_path.push(dir),
            _ => {}
        }
    }
    if let Err(e) = kiln::logging::init(&cli.logging) {
        eprintln!("error: {e}");
        return Ok(2);
    }
    Ok(py.detach(|| match kiln::commands::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }))
}

/// The folder holding this extension module, where a wheel keeps backend
/// plugins (`libkiln_backend_cuda.so`); the CPU backend is linked in.
pub fn module_dir(py: Python<'_>) -> Option<std::path::PathBuf> {
    let file: String = py
        .import("kiln")
        .ok()?
        .getattr("__file__")
        .ok()?
        .extract()
        .ok()?;
    std::path::Path::new(&file)
        .parent()
        .map(std::path::Path::to_path_buf)
}

#[pymodule]
#[pyo3(name = "kiln")]
fn kiln_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<llm::Llm>()?;
    m.add_class::<sampling::SamplingParams>()?;
    m.add_class::<sampling::StructuredOutputsParams>()?;
    m.add_class::<outputs::RequestOutput>()?;
    m.add_class::<outputs::CompletionOutput>()?;
    m.add_class::<outputs::Logprob>()?;
    m.add_class::<batch::RequestStreamIter>()?;
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<embeddings::PoolingParams>()?;
    m.add_class::<embeddings::EmbeddingOutput>()?;
    m.add_class::<embeddings::EmbeddingRequestOutput>()?;
    m.add("EngineError", m.py().get_type::<errors::EngineError>())?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    Ok(())
}
