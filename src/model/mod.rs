//! The ONNX model core: schema, load/save, graph index, shape inference and statistics.

pub mod builder;
pub mod graph;
pub mod io;
pub mod proto;
pub mod shape;
pub mod tensor;

pub use graph::GraphIndex;
pub use io::{Model, SaveOptions, load_model, save_model};
pub use tensor::DataType;
