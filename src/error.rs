//! Library errors. Every variant names the file, node or tensor at fault, because the user
//! reading it is usually debugging a model they did not write.

use std::path::PathBuf;

/// Everything pare's library can fail with. The binary maps these to exit code 2 (bad input)
/// unless stated otherwise.
#[derive(Debug, thiserror::Error)]
pub enum PareError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: is a directory, expected an .onnx file")]
    IsDirectory { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    NotOnnx { path: PathBuf, message: String },
    #[error("{path}: external data file {file} for tensor '{tensor}' {problem}")]
    ExternalData {
        path: PathBuf,
        tensor: String,
        file: String,
        problem: String,
    },
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("cyclic graph: nodes {} form a cycle", .nodes.join(", "))]
    Cycle { nodes: Vec<String> },
    #[error("{}: {source}", .path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<PareError>,
    },
    #[error("{0}")]
    Usage(String),
    /// An output path that names the input model: pare never modifies its input.
    #[error("output {} is the input model; pare never modifies its input, choose another path", .path.display())]
    OutputIsInput { path: PathBuf },
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = PareError> = std::result::Result<T, E>;
