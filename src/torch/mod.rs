//! PyTorch interop. Reading checkpoints and importing their weights into ONNX models is pure
//! Rust (always built); the libtorch executor and fine-tuning need the `torch` feature.

pub mod checkpoint;
#[cfg(feature = "torch")]
pub mod exec;
#[cfg(feature = "torch")]
pub mod finetune;
pub mod import;
pub mod pickle;

pub use import::{ImportReport, ImportRequest, import_weights};
