//! Typed errors for weight construction and kernel arguments.

/// Why a weight matrix or a kernel call was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A block format was given a row length that is not a whole number of blocks.
    #[error(
        "{format} weights need a row length (in_features) that is a multiple of {block}, got {cols}; \
         re-export the checkpoint with a float format for this tensor"
    )]
    PartialBlock {
        /// Format name.
        format: &'static str,
        /// Weights per block.
        block: usize,
        /// Row length given.
        cols: usize,
    },
    /// The byte buffer does not match the declared shape.
    #[error(
        "{format} weight [{rows}, {cols}] needs {expected} bytes but {got} were given; \
         the tensor's shape or type in the checkpoint does not match its data"
    )]
    ByteLength {
        /// Format name.
        format: &'static str,
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The shape is too large to address.
    #[error("weight shape [{rows}, {cols}] is too large for this machine")]
    TooLarge {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
    },
    /// `from_f32` was asked for a format it has no quantizer for.
    #[error(
        "Kiln cannot quantize f32 weights to {format}; load {format} weights from a checkpoint"
    )]
    NoEncoder {
        /// Format name.
        format: &'static str,
    },
    /// The parts of an integer-group weight disagree with its shape.
    #[error("{format} weight: {what}")]
    IntParts {
        /// Format name.
        format: &'static str,
        /// What is wrong.
        what: String,
    },
    /// The codes or scales of an FP8 weight are unusable.
    #[error("F8_E4M3 weight: {what}")]
    Fp8Parts {
        /// What is wrong.
        what: String,
    },
    /// A mixture-of-experts layer's shapes disagree or do not fit the packing.
    #[error("mixture of experts: {what}")]
    Moe {
        /// What is wrong.
        what: String,
    },
}
