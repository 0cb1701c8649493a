//! pare: channel-group analysis, structured pruning, INT8 quantization, deployment lint and
//! subgraph extraction for ONNX vision models. The CLI and the TUI are thin faces over the
//! functions in these modules.

pub mod analysis;
pub mod convert;
pub mod data;
pub mod demo;
pub mod diff;
pub mod error;
pub mod extract;
pub mod fidelity;
pub mod jobs;
pub mod lint;
pub mod model;
pub mod ops;
pub mod prune;
pub mod quant;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod tags;
pub mod torch;
pub mod tui;

pub use error::{PareError, Result};
