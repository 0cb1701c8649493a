//! Shape and type inference done by pare itself.
//!
//! tract refuses exactly the models users come to debug (a data-dependent `If`, an unknown
//! op), so analysis cannot depend on it. This module walks the graph in topological order and
//! derives dtype, shape and — for small integer tensors such as shape arithmetic — the values
//! of every tensor. Symbolic dims stay symbolic; an op it does not know gives "unknown" for its
//! outputs plus a diagnostic, never a failure of the whole analysis.
//!
//! Layout: `infer.rs` walks the graph and dispatches to one rule per op, grouped by family —
//! `broadcast.rs` (elementwise, comparisons, Where/Clip/Cast), `conv.rs` (Conv, ConvTranspose,
//! pools), `tensor_ops.rs` (Reshape, Slice, Gather, Concat, Shape, Range, …), `reduce.rs`,
//! `linalg.rs` (Gemm, MatMul, Einsum), `nn.rs` (normalisations, Resize, quantisation,
//! detection ops) and `control.rs` (If, Loop, Scan). `eval.rs` computes the contents of small
//! tensors, `sym.rs` does arithmetic on symbolic dims, `ctx.rs` is what a rule sees, and
//! `tract.rs` asks tract for its shapes so tests can check pare against it.

use std::collections::HashMap;

use super::graph::GraphIndex;
use super::proto::{GraphProto, ModelProto};
use super::tensor::DataType;

mod broadcast;
mod control;
mod conv;
mod ctx;
pub mod eval;
mod infer;
mod linalg;
mod nn;
mod reduce;
mod seq;
pub mod sym;
mod tensor_ops;
mod tract;

pub use control::merge_infos;
pub use ctx::OpCtx;
pub use infer::{Rule, declared_info};

/// Every shape rule, for the op table (`crate::ops`) to point at.
pub(crate) mod rules {
    pub use super::broadcast::{
        binary, cast, clip, compare, dropout, is_special, mean, not, prelu, unary, where_,
    };
    pub use super::conv::{conv, conv_transpose, global_pool, pool};
    pub use super::infer::constant;
    pub use super::linalg::{einsum, gemm, matmul};
    pub use super::nn::{
        batch_norm, dequantize, dynamic_quantize, grid_sample, layer_norm, like, nms, quantize,
        random, resize, roi, unary_axis,
    };
    pub use super::reduce::{arg, reduce, topk};
    pub use super::seq::{
        concat_from_sequence, optional, optional_get, optional_has, sequence_at,
        sequence_construct, sequence_empty, sequence_erase, sequence_insert, sequence_length,
        split_to_sequence, string_normalizer,
    };
    pub use super::tensor_ops::{
        compress, concat, constant_of_shape, depth_space, expand, flatten, gather, gather_elements,
        gather_nd, nonzero, one_hot, pad, range, reshape, shape, size, slice, split, squeeze, tile,
        transpose, unsqueeze,
    };
}
pub use eval::MAX_VALUE_ELEMS;
pub use tract::tract_shapes;

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
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The shape as JSON for reports: dims as numbers, symbol names or `"?"`; `null` when the rank
/// is unknown (an empty list would claim a scalar).
pub fn shape_json(shape: Option<&[Dim]>) -> serde_json::Value {
    match shape {
        None => serde_json::Value::Null,
        Some(s) => s
            .iter()
            .map(|d| match d {
                Dim::Known(v) => serde_json::Value::from(*v),
                Dim::Sym(s) => serde_json::Value::from(s.clone()),
                Dim::Unknown => serde_json::Value::from("?"),
            })
            .collect(),
    }
}

/// One value as text: a tensor's shape (`[1, 3, ?]`, `?` for unknown rank), or a non-tensor's
/// type with what is known of its elements (`sequence<float32 [2, 3, 4]>`, `map`). The one
/// rendering every report uses, so that no value of unknown rank or kind reads as a scalar.
pub fn format_info(info: Option<&TensorInfo>) -> String {
    let Some(info) = info else {
        return "?".to_string();
    };
    let elem = |e: &TensorInfo| {
        let dt = e.dtype.map_or("?", DataType::name);
        format!("{dt} {}", format_info(Some(e)))
    };
    match &info.kind {
        ValueKind::Tensor => format_shape(info.shape.as_deref()),
        ValueKind::Sequence(s) => format!("sequence<{}>", elem(&s.elem)),
        ValueKind::Optional(e) => format!("optional<{}>", elem(e)),
        ValueKind::Map => "map".to_string(),
    }
}

/// What kind of ONNX value a name holds. Most are tensors, but sequences, optionals and maps
/// flow along the same edges; reports say so instead of showing a tensor of unknown (or,
/// worse, scalar) shape, and the sequence ops need their elements to infer anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ValueKind {
    /// A tensor: [`TensorInfo::dtype`] and [`TensorInfo::shape`] describe it.
    #[default]
    Tensor,
    /// A sequence of tensors; the outer info's dtype and shape stay unknown.
    Sequence(Box<SeqInfo>),
    /// An optional: what is known of its value when present.
    Optional(Box<TensorInfo>),
    /// A map (`ai.onnx.ml`), whose contents inference does not follow.
    Map,
}

impl ValueKind {
    /// The name reports use for the kind (`tensor`, `sequence`, `optional`, `map`).
    pub fn name(&self) -> &'static str {
        match self {
            ValueKind::Tensor => "tensor",
            ValueKind::Sequence(_) => "sequence",
            ValueKind::Optional(_) => "optional",
            ValueKind::Map => "map",
        }
    }
}

/// What inference knows about a sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqInfo {
    /// What every element has in common.
    pub elem: TensorInfo,
    /// The elements one by one, when the ops that built the sequence fix them (so that
    /// `SequenceAt`, `SequenceLength` and `ConcatFromSequence` give exact results).
    pub items: Option<Vec<TensorInfo>>,
}

impl SeqInfo {
    /// A sequence of exactly `items`; `dtype` is the element type when there are none.
    pub fn of_items(dtype: Option<DataType>, items: Vec<TensorInfo>) -> Self {
        let elem = match items.split_first() {
            Some((first, rest)) => rest.iter().fold(first.clone(), |a, b| merge_infos(&a, b)),
            None => TensorInfo::new(dtype, None),
        };
        Self {
            elem,
            items: Some(items),
        }
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
    /// Tensor, or the sequence/optional/map it is instead.
    pub kind: ValueKind,
}

impl TensorInfo {
    pub fn new(dtype: Option<DataType>, shape: Option<Shape>) -> Self {
        Self {
            dtype,
            shape,
            value: None,
            kind: ValueKind::Tensor,
        }
    }
    /// A value of a non-tensor kind (its own dtype and shape unknown).
    pub fn of_kind(kind: ValueKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }
    /// The sequence this value is, if it is one.
    pub fn seq(&self) -> Option<&SeqInfo> {
        match &self.kind {
            ValueKind::Sequence(s) => Some(s),
            _ => None,
        }
    }
    /// Sets the known contents (callers keep values small, see [`MAX_VALUE_ELEMS`]).
    pub fn with_value(mut self, v: Value) -> Self {
        self.value = Some(v);
        self
    }
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
    /// Known integer contents, all concrete.
    pub fn int_values(&self) -> Option<Vec<i64>> {
        self.value.as_ref()?.as_ints()
    }
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
    /// What kind of problem (not serialized: the message says it).
    #[serde(skip)]
    pub kind: DiagKind,
}

/// Kinds of [`ShapeDiagnostic`]: most only mean "unknown from here on"; some make the node
/// invalid ONNX that engines must not be handed (see [`invalid_axes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiagKind {
    /// Inference could not tell (no rule, unknown contents, …).
    #[default]
    Incomplete,
    /// An `axis`/`axes` attribute outside the range the input's rank allows. tract's
    /// inference rules turn some of these into endless loops (LayerNormalization with
    /// `axis=-1` on a rank-0 input wraps to `usize::MAX` and iterates up to it).
    AxisOutOfRange,
}

/// The first node whose axis attribute is out of range for its input's inferred rank, with
/// `pins` as the input shapes, in the main graph or a nested one; `None` also when the graph
/// cannot be indexed (the engines report that themselves). Engines are handed no model this
/// finds something in: tract can spin forever on such a node instead of failing.
pub fn invalid_axes(model: &ModelProto, pins: &InputPins) -> Option<ShapeDiagnostic> {
    let index = GraphIndex::build(model.graph()?).ok()?;
    infer_shapes(model, &index, pins)
        .diagnostics
        .into_iter()
        .find(|d| d.kind == DiagKind::AxisOutOfRange)
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

/// Rank of a tensor, when inference knows it.
pub fn rank_of(info: &ShapeInfo, name: &str) -> Option<usize> {
    info.get(name)?.rank()
}

impl ShapeInfo {
    pub fn rank(&self, name: &str) -> Option<usize> {
        rank_of(self, name)
    }
    pub fn dtype(&self, name: &str) -> Option<DataType> {
        self.tensors.get(name)?.dtype
    }
    /// Number of tensors whose shape is fully concrete.
    pub fn static_count(&self) -> usize {
        self.tensors
            .values()
            .filter(|t| t.static_shape().is_some())
            .count()
    }
}

/// Default-domain opset of a model (`""`/`ai.onnx`); the latest this module knows when the
/// model declares none.
pub fn model_opset(model: &ModelProto) -> i64 {
    model.opset("").unwrap_or(21)
}

/// Infers dtype, shape and small values of every tensor of a model's main graph and of its
/// nested graphs (If branches, Loop/Scan bodies). Never fails: what cannot be inferred is
/// left unknown, with a [`ShapeDiagnostic`] saying why. `pins` replace the declared shapes of
/// the named graph inputs.
pub fn infer_shapes(model: &ModelProto, index: &GraphIndex, pins: &InputPins) -> ShapeInfo {
    let mut inf = infer::Infer::new(model_opset(model));
    if let Some(g) = model.graph() {
        inf.run_graph(g, index, Some(pins));
    }
    let diagnostics = inf.diagnostics_dedup();
    ShapeInfo {
        tensors: inf.tensors,
        diagnostics,
    }
}

/// Infers one graph — typically a nested one — whose outer-scope reads resolve in `outer`.
/// The result holds `outer`'s tensors plus this graph's; its diagnostics are only the new
/// ones. Graph inputs (a Loop body's iteration count, carried values) come from their
/// declarations unless `outer` already has info under their names.
pub fn infer_graph(
    graph: &GraphProto,
    index: &GraphIndex,
    outer: &ShapeInfo,
    opset: i64,
) -> ShapeInfo {
    let mut inf = infer::Infer::new(opset);
    inf.tensors = outer.tensors.clone();
    inf.run_graph(graph, index, None);
    let diagnostics = inf.diagnostics_dedup();
    ShapeInfo {
        tensors: inf.tensors,
        diagnostics,
    }
}

/// Names of ops that have a shape rule (default domain), for reports and tests.
pub fn has_rule(op_type: &str) -> bool {
    crate::ops::lookup(op_type).is_some_and(|d| !matches!(d.shape, crate::ops::ShapeKind::None))
}
