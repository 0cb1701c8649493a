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
    /// The output path is the model being read: writing would destroy the input (whose
    /// tensors may still be mapped from it). Front ends offer another name.
    #[error("refusing to overwrite {}: it is the input model, and pare never modifies its input; choose another output path", .path.display())]
    OutputIsInput { path: PathBuf },
    /// Names the user gave (tensors, nodes, tag patterns) that match nothing in the model,
    /// each with the closest names it has, so a front end can offer them.
    #[error("{what}: {}", join(.names))]
    UnknownNames {
        /// What was looked up, e.g. "tags name no layer of the model".
        what: String,
        names: Vec<UnknownName>,
    },
    /// An engine asked for by name cannot be used in this build or on this machine; front
    /// ends fall back or say how to provide it.
    #[error("{engine} is not available: {reason}")]
    EngineUnavailable { engine: String, reason: String },
    /// Sample data (images, .npy, .pb tensors, random specs) that cannot feed the model.
    #[error("{origin}: {message}")]
    BadSample { origin: String, message: String },
    /// A tags file that cannot be used as it is.
    #[error("{}: {message}", .path.display())]
    BadTags { path: PathBuf, message: String },
    /// A cut that cannot give two valid pieces (at a weight, a model input, a constant, or
    /// leaving one side empty).
    #[error("cannot cut at {at}: {reason}")]
    BadCut { at: String, reason: String },
    /// The user's check command (`pare reduce --check`) cannot be used: it does not run, or it
    /// does not fail on the whole model.
    #[error("{0}")]
    Check(String),
}

/// One name that matches nothing, with the closest names the model has.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownName {
    pub name: String,
    pub closest: Vec<String>,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.name)?;
        if !self.closest.is_empty() {
            let quoted: Vec<String> = self.closest.iter().map(|c| format!("'{c}'")).collect();
            write!(f, " (closest: {})", quoted.join(", "))?;
        }
        Ok(())
    }
}

fn join(names: &[UnknownName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = PareError> = std::result::Result<T, E>;
