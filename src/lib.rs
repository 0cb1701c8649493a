//! pare: channel-group analysis, structured pruning, INT8 quantization, deployment lint and
//! subgraph extraction for ONNX vision models. The CLI and the TUI are thin faces over the
//! functions in these modules.

pub mod error;
pub mod model;
pub mod rng;

pub use error::{PareError, Result};
