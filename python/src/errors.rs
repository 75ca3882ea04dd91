//! Engine errors as Python exceptions, with the engine's one-line messages:
//! a bad request is a `ValueError` (as in vLLM), anything else `EngineError`.

use pyo3::PyErr;
use pyo3::exceptions::{PyRuntimeError, PyValueError};

pyo3::create_exception!(
    kiln,
    EngineError,
    PyRuntimeError,
    "The engine failed to start or to serve a request."
);

pub fn to_py(error: kiln_protocol::EngineError) -> PyErr {
    use kiln_protocol::EngineError as E;
    match error {
        E::InvalidRequest { .. } | E::ContextLengthExceeded { .. } => {
            PyValueError::new_err(error.to_string())
        }
        other => EngineError::new_err(other.to_string()),
    }
}
