//! Shape and type inference done by pare itself.
//!
//! tract refuses exactly the models users come to debug (a data-dependent `If`, an unknown
//! op), so analysis cannot depend on it. This module walks the graph in topological order and
//! derives dtype, shape and — for small integer tensors such as shape arithmetic — the values
//! of every tensor. Symbolic dims stay symbolic; an op it does not know gives "unknown" for its
//! outputs plus a diagnostic, never a failure of the whole analysis.

use std::collections::HashMap;

use super::tensor::DataType;

/// One dimension of a tensor shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A concrete size.
    Known(i64),
    /// A symbolic size (`batch`, `height`, or an expression such as `height/2`).
    Sym(String),
    /// Nothing is known about it.
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A tensor shape; rank 0 is a scalar.
pub type Shape = Vec<Dim>;

/// Formats a shape as `[1, 3, height, width]`, or `?` when the rank is unknown.
pub fn format_shape(shape: Option<&[Dim]>) -> String {
    match shape {
        None => "?".to_string(),
        Some(s) => format!(
            "[{}]",
            s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The known contents of a small tensor (constants, shape arithmetic), row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Integer (and bool) tensors; elements may be symbolic when they come from `Shape`.
    Int(Vec<Dim>),
    /// Floating-point tensors.
    Float(Vec<f64>),
}

/// What inference knows about one tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorInfo {
    pub dtype: Option<DataType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
    /// Contents, when small and computable without running the model.
    pub value: Option<Value>,
}

impl TensorInfo {
    /// Every dim concrete.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }
    pub fn numel(&self) -> Option<i64> {
        self.static_shape().map(|s| s.iter().product())
    }
}

/// A note about a node inference could not fully handle.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShapeDiagnostic {
    pub node: String,
    pub op_type: String,
    pub message: String,
}

/// Result of inference over a model's main graph (nested graphs included under their own
/// tensor names).
#[derive(Clone, Debug, Default)]
pub struct ShapeInfo {
    pub tensors: HashMap<String, TensorInfo>,
    pub diagnostics: Vec<ShapeDiagnostic>,
}

impl ShapeInfo {
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
    pub fn shape(&self, name: &str) -> Option<&[Dim]> {
        self.tensors.get(name)?.shape.as_deref()
    }
    pub fn static_shape(&self, name: &str) -> Option<Vec<i64>> {
        self.tensors.get(name)?.static_shape()
    }
}

/// User-pinned input shapes (`--input-shape NAME:1x3x512x512`).
pub type InputPins = HashMap<String, Vec<i64>>;
