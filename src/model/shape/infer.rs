//! The inference walk: seeds graph inputs, initializers and Constant nodes, then visits nodes
//! in topological order and applies each op's rule.
//!
//! Everything lives in one flat name → info map shared by the main graph and its nested
//! graphs: ONNX names are unique across scopes, so a body reading an outer tensor simply finds
//! it. Rules see only borrowed infos and return fresh ones; nothing is cloned per node except
//! the (small) output infos, which keeps a 10,000-node graph in the millisecond range.

use std::collections::HashMap;

use super::ctx::OpCtx;
use super::sym::SymTable;
use super::tensor_ops::tensor_value;
use super::{DiagKind, Dim, InputPins, SeqInfo, ShapeDiagnostic, TensorInfo, Value, ValueKind};
use crate::model::graph::GraphIndex;
use crate::model::proto::{
    Dimension, GraphProto, NodeProto, TypeProto, TypeValue, ValueInfoProto, attribute_type,
};
use crate::model::tensor::DataType;
use crate::ops::{ControlFlow, ShapeKind};

/// A shape rule: infos of a node's outputs from its inputs and attributes.
pub type Rule = fn(&mut OpCtx) -> Vec<TensorInfo>;

/// `Constant`: from `value` or one of the typed `value_*` attributes.
pub fn constant(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let node = cx.node;
    if let Some(t) = node.attr_t("value") {
        let shape = t.dims.iter().map(|&d| Dim::Known(d)).collect();
        let info = TensorInfo::new(Some(DataType(t.data_type())), Some(shape));
        return vec![super::eval::with_value(info, tensor_value(t))];
    }
    let known = |n: usize| Some(vec![Dim::Known(n as i64)]);
    for a in &node.attribute {
        let info = match a.name() {
            "value_float" => TensorInfo::new(Some(DataType::FLOAT), Some(vec![]))
                .with_value(Value::Float(vec![f64::from(a.f.unwrap_or(0.0))])),
            "value_floats" => TensorInfo::new(Some(DataType::FLOAT), known(a.floats.len()))
                .with_value(Value::Float(
                    a.floats.iter().map(|&f| f64::from(f)).collect(),
                )),
            "value_int" => TensorInfo::new(Some(DataType::INT64), Some(vec![]))
                .with_value(Value::Int(vec![Dim::Known(a.i.unwrap_or(0))])),
            "value_ints" => TensorInfo::new(Some(DataType::INT64), known(a.ints.len()))
                .with_value(Value::Int(a.ints.iter().map(|&i| Dim::Known(i)).collect())),
            "value_string" => TensorInfo::new(Some(DataType::STRING), Some(vec![])),
            "value_strings" => TensorInfo::new(Some(DataType::STRING), known(a.strings.len())),
            "sparse_value" => match &a.sparse_tensor {
                Some(s) => TensorInfo::new(
                    s.values.as_ref().map(|v| DataType(v.data_type())),
                    Some(s.dims.iter().map(|&d| Dim::Known(d)).collect()),
                ),
                None => continue,
            },
            _ => continue,
        };
        let info = if info
            .value
            .as_ref()
            .is_some_and(|v| v.len() > super::eval::MAX_VALUE_ELEMS)
        {
            TensorInfo {
                value: None,
                ..info
            }
        } else {
            info
        };
        return vec![info];
    }
    cx.note("Constant has no value attribute");
    vec![TensorInfo::default()]
}

/// Declared info of a value-info (graph input or output).
pub fn declared_info(vi: &ValueInfoProto) -> TensorInfo {
    vi.r#type.as_ref().map(declared_type).unwrap_or_default()
}

/// Info of a declared type: a tensor's dtype and shape, or the sequence, optional or map it
/// is with what the declaration says of its elements.
fn declared_type(tp: &TypeProto) -> TensorInfo {
    let elem = |t: &Option<Box<TypeProto>>| t.as_deref().map(declared_type).unwrap_or_default();
    match &tp.value {
        Some(TypeValue::TensorType(tt)) | Some(TypeValue::SparseTensorType(tt)) => {
            let dtype = tt.elem_type.filter(|&t| t != 0).map(DataType);
            let shape = tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Dimension::DimValue(v)) if *v >= 0 => Dim::Known(*v),
                        Some(Dimension::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                        _ => Dim::Unknown,
                    })
                    .collect()
            });
            TensorInfo::new(dtype, shape)
        }
        Some(TypeValue::SequenceType(s)) => {
            TensorInfo::of_kind(ValueKind::Sequence(Box::new(SeqInfo {
                elem: elem(&s.elem_type),
                items: None,
            })))
        }
        Some(TypeValue::OptionalType(o)) => {
            TensorInfo::of_kind(ValueKind::Optional(Box::new(elem(&o.elem_type))))
        }
        Some(TypeValue::MapType(_)) => TensorInfo::of_kind(ValueKind::Map),
        None => TensorInfo::default(),
    }
}

/// State of one inference run.
pub struct Infer {
    pub tensors: HashMap<String, TensorInfo>,
    pub diags: Vec<ShapeDiagnostic>,
    pub syms: SymTable,
    /// Default-domain opset of the model.
    pub opset: i64,
}

impl Infer {
    pub fn new(opset: i64) -> Self {
        Self {
            tensors: HashMap::new(),
            diags: Vec::new(),
            syms: SymTable::default(),
            opset,
        }
    }

    pub fn diag(&mut self, node: &NodeProto, message: impl Into<String>) {
        self.diag_of(node, DiagKind::Incomplete, message);
    }

    pub fn diag_of(&mut self, node: &NodeProto, kind: DiagKind, message: impl Into<String>) {
        self.diags.push(ShapeDiagnostic {
            node: node.display_name(),
            op_type: node.op_type().to_string(),
            message: message.into(),
            kind,
        });
    }

    /// Infers a whole graph. Inputs already in the map (a Loop body's, set by the caller) are
    /// kept; the others come from their declarations, replaced by pins where given.
    pub fn run_graph(&mut self, graph: &GraphProto, index: &GraphIndex, pins: Option<&InputPins>) {
        self.seed(graph, index, pins);
        for &id in &index.topo {
            if let Some(node) = graph.node.get(id) {
                self.node(graph, index, id, node);
            }
        }
    }

    fn seed(&mut self, graph: &GraphProto, index: &GraphIndex, pins: Option<&InputPins>) {
        self.tensors
            .reserve(graph.initializer.len() + graph.input.len() + graph.node.len() * 2);
        for t in &graph.initializer {
            let shape = t.dims.iter().map(|&d| Dim::Known(d)).collect();
            let info = TensorInfo::new(Some(DataType(t.data_type())), Some(shape));
            let info = super::eval::with_value(info, tensor_value(t));
            self.tensors.insert(t.name().to_string(), info);
        }
        for s in &graph.sparse_initializer {
            if let Some(v) = &s.values {
                let shape = s.dims.iter().map(|&d| Dim::Known(d)).collect();
                self.tensors.insert(
                    v.name().to_string(),
                    TensorInfo::new(Some(DataType(v.data_type())), Some(shape)),
                );
            }
        }
        for vi in &graph.input {
            let name = vi.name();
            if index.initializers.contains_key(name) || self.tensors.contains_key(name) {
                continue;
            }
            let mut info = declared_info(vi);
            if let Some(p) = pins.and_then(|p| p.get(name)) {
                if let Some(s) = &info.shape
                    && s.len() != p.len()
                {
                    self.diags.push(ShapeDiagnostic {
                        node: name.to_string(),
                        op_type: "input".into(),
                        message: format!(
                            "pinned shape {p:?} has rank {} but the model declares rank {} ({})",
                            p.len(),
                            s.len(),
                            super::format_shape(Some(s))
                        ),
                        kind: DiagKind::Incomplete,
                    });
                }
                info.shape = Some(p.iter().map(|&d| Dim::Known(d)).collect());
            }
            self.tensors.insert(name.to_string(), info);
        }
    }

    fn set_unknown_outputs(&mut self, node: &NodeProto) {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            self.tensors.insert(o.clone(), TensorInfo::default());
        }
    }

    fn node(&mut self, graph: &GraphProto, index: &GraphIndex, id: usize, node: &NodeProto) {
        let op = node.op_type();
        let domain = node.op_domain();
        let custom = domain_rule(domain, op);
        if !domain.is_empty() && custom.is_none() {
            self.set_unknown_outputs(node);
            self.diag(
                node,
                format!("no shape rule for op {domain}.{op}; outputs unknown"),
            );
            return;
        }
        // Ops missing from the table get the documented fallback: outputs unknown.
        let rule = match custom.or_else(|| crate::ops::lookup(op).map(|d| d.shape)) {
            Some(ShapeKind::Rule(r)) => r,
            Some(ShapeKind::Control(ControlFlow::If)) => {
                return super::control::infer_if(self, graph, index, id, node);
            }
            Some(ShapeKind::Control(ControlFlow::Loop)) => {
                return super::control::infer_loop(self, index, id, node);
            }
            Some(ShapeKind::Control(ControlFlow::Scan)) => {
                return super::control::infer_scan(self, index, id, node);
            }
            Some(ShapeKind::None) | None => {
                self.set_unknown_outputs(node);
                self.diag(node, format!("no shape rule for op {op}; outputs unknown"));
                return;
            }
        };
        let ins: Vec<Option<&TensorInfo>> = node
            .input
            .iter()
            .map(|n| {
                if n.is_empty() {
                    None
                } else {
                    self.tensors.get(n)
                }
            })
            .collect();
        let mut cx = OpCtx {
            node,
            op,
            ins,
            opset: self.opset,
            syms: &mut self.syms,
            notes: Vec::new(),
        };
        let outs = rule(&mut cx);
        let notes = std::mem::take(&mut cx.notes);
        drop(cx);
        for (kind, m) in notes {
            self.diag_of(node, kind, m);
        }
        let mut outs = outs.into_iter();
        for o in &node.output {
            let info = outs.next().unwrap_or_default();
            if !o.is_empty() {
                self.tensors.insert(o.clone(), info);
            }
        }
    }
}

/// Shape rules of ops outside the default domain, which the op table (default domain only)
/// does not hold.
fn domain_rule(domain: &str, op: &str) -> Option<ShapeKind> {
    match (domain, op) {
        ("ai.onnx.preview.training", "Gradient") => Some(ShapeKind::Rule(gradient)),
        _ => None,
    }
}

/// `Gradient` (`ai.onnx.preview.training`): output i is the gradient with respect to input i
/// (the i-th of `xs`), so it has that input's dtype and shape.
fn gradient(cx: &mut OpCtx) -> Vec<TensorInfo> {
    (0..cx.node.output.len())
        .map(|i| TensorInfo::new(cx.dtype(i), cx.shape(i).map(<[Dim]>::to_vec)))
        .collect()
}

/// Reads a graph attribute of a node.
pub fn graph_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a GraphProto> {
    let a = node.attr(name)?;
    if a.kind() != attribute_type::GRAPH && a.g.is_none() {
        return None;
    }
    a.g.as_deref()
}

impl Infer {
    /// Diagnostics with exact repeats removed (a rule may note the same thing twice).
    pub fn diagnostics_dedup(&mut self) -> Vec<ShapeDiagnostic> {
        let mut seen = std::collections::HashSet::new();
        std::mem::take(&mut self.diags)
            .into_iter()
            .filter(|d| seen.insert((d.node.clone(), d.message.clone())))
            .collect()
    }
}
