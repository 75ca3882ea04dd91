//! Why an operation's slots do not form a valid call.

/// What [`super::Op::decode`] and each view's `decode` refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpDecodeError {
    /// The opcode is not one this version of the ABI defines.
    #[error("operation code {0} is not defined by this ABI version")]
    UnknownOpcode(u32),
    /// A view was asked to decode an operation of another kind.
    #[error("expected a {expected} operation, got {got}")]
    WrongOpcode {
        /// The view's operation.
        expected: &'static str,
        /// The operation it was handed.
        got: &'static str,
    },
    /// A required tensor or weight slot is empty, or a parameter is out of range.
    #[error("{op}: {problem}")]
    Invalid {
        /// The operation's name.
        op: &'static str,
        /// What is wrong, naming the operand.
        problem: String,
    },
}

impl OpDecodeError {
    pub(crate) fn invalid(op: u32, problem: impl Into<String>) -> Self {
        OpDecodeError::Invalid {
            op: super::opcode_name(op),
            problem: problem.into(),
        }
    }
}
