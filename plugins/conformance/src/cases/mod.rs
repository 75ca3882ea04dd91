//! The cases, one module per family of operations.

pub(crate) mod attention;
pub(crate) mod data_movement;
pub(crate) mod family;
pub(crate) mod linear;
pub(crate) mod moe;
pub(crate) mod norms;
pub(crate) mod rope;
pub(crate) mod sample;
