//! What every lint rule sees: the analysed model flattened across nested graphs, with the
//! lookups rules need (producer, consumers, initializers, known values, shapes) and the
//! classification of small tensors by where their values come from.

use std::collections::{HashMap, HashSet};

use crate::model::Analysis;
use crate::model::proto::{GraphProto, NodeProto, TensorProto};
use crate::model::shape::{Dim, TensorInfo, Value};
use crate::model::tensor::{DataType, to_f32, to_i64};

use super::target::Target;

/// One node of the model, wherever it lives.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    pub node: &'a NodeProto,
    /// 0 for the main graph, 1 inside an If branch or Loop body, …
    pub depth: usize,
    /// Position in its own graph's node list.
    pub pos: usize,
}

/// Where the values of a tensor come from, from most to least static.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Initializers, Constant nodes and arithmetic on them: known when the engine is built.
    Const,
    /// Derived from tensor shapes (`Shape`, `Size`): known once input shapes are.
    Shape,
    /// Derived from tensor values: known only at run time.
    Data,
}

/// The lint context of one model and one target.
pub struct LintCtx<'a> {
    pub a: &'a Analysis,
    pub target: Target,
    /// Default-domain opset.
    pub opset: i64,
    /// Every node: the main graph's in topological order, each followed by its nested graphs'.
    pub nodes: Vec<NodeRef<'a>>,
    /// Tensor name → index into `nodes` of the node producing it.
    pub producer: HashMap<&'a str, usize>,
    /// Tensor name → indices into `nodes` of the nodes reading it.
    pub consumers: HashMap<&'a str, Vec<usize>>,
    /// Initializers of every graph by name.
    pub initializers: HashMap<&'a str, &'a TensorProto>,
    /// Names read anywhere (node inputs, graph outputs of every graph).
    pub used: HashSet<&'a str>,
    origin: HashMap<&'a str, Origin>,
    unpinned: std::cell::OnceCell<Option<Analysis>>,
}

impl<'a> LintCtx<'a> {
    pub fn new(a: &'a Analysis, target: Target) -> Self {
        let graph = a.graph();
        let mut cx = LintCtx {
            a,
            target,
            opset: a
                .model
                .proto
                .opset("")
                .unwrap_or(crate::model::shape::model_opset(&a.model.proto)),
            nodes: Vec::with_capacity(graph.node.len()),
            producer: HashMap::with_capacity(graph.node.len() * 2),
            consumers: HashMap::with_capacity(graph.node.len() * 2),
            initializers: HashMap::new(),
            used: HashSet::new(),
            origin: HashMap::new(),
            unpinned: std::cell::OnceCell::new(),
        };
        let order: Vec<usize> = if a.index.topo.len() == graph.node.len() {
            a.index.topo.clone()
        } else {
            (0..graph.node.len()).collect()
        };
        cx.add_graph(graph, Some(&order), 0);
        cx.compute_origins();
        cx
    }

    fn add_graph(&mut self, g: &'a GraphProto, order: Option<&[usize]>, depth: usize) {
        for t in &g.initializer {
            self.initializers.insert(t.name(), t);
        }
        for o in &g.output {
            self.used.insert(o.name());
        }
        let default: Vec<usize>;
        let order = match order {
            Some(o) => o,
            None => {
                default = (0..g.node.len()).collect();
                &default
            }
        };
        for &pos in order {
            let Some(node) = g.node.get(pos) else {
                continue;
            };
            let id = self.nodes.len();
            self.nodes.push(NodeRef { node, depth, pos });
            for o in node.output.iter().filter(|o| !o.is_empty()) {
                self.producer.insert(o, id);
            }
            for i in node.input.iter().filter(|i| !i.is_empty()) {
                self.consumers.entry(i).or_default().push(id);
                self.used.insert(i);
            }
            for (_, sub) in node.subgraphs() {
                self.add_graph(sub, None, depth + 1);
            }
        }
    }

    /// Origin of every tensor, in node order (nested graphs follow their owner, and an owner's
    /// outputs take the least static origin of its inputs and of everything its graphs read).
    fn compute_origins(&mut self) {
        for name in self.initializers.keys() {
            self.origin.insert(name, Origin::Const);
        }
        for id in 0..self.nodes.len() {
            let n = self.nodes[id].node;
            let op = n.op_type();
            let o = if !n.op_domain().is_empty() {
                Origin::Data
            } else {
                match op {
                    "Constant" => Origin::Const,
                    "Shape" | "Size" => Origin::Shape,
                    "NonZero" | "RandomNormal" | "RandomUniform" | "RandomNormalLike"
                    | "RandomUniformLike" | "Multinomial" | "Bernoulli" => Origin::Data,
                    _ => {
                        let mut o = n
                            .input
                            .iter()
                            .filter(|i| !i.is_empty())
                            .map(|i| self.origin_of(i))
                            .max()
                            .unwrap_or(Origin::Const);
                        // Values read by nested graphs count too (computed later in node order, so
                        // approximate with the outer names they read).
                        for (_, sub) in n.subgraphs() {
                            for sn in &sub.node {
                                for i in sn.input.iter().filter(|i| !i.is_empty()) {
                                    if let Some(&x) = self.origin.get(i.as_str()) {
                                        o = o.max(x);
                                    }
                                }
                            }
                        }
                        o
                    }
                }
            };
            for out in n.output.iter().filter(|o| !o.is_empty()) {
                self.origin.insert(out, o);
            }
        }
    }

    /// The model analysed without `--input-shape` pins (the analysis itself when none were
    /// given): what the file declares, as opposed to the shapes the user deploys with.
    pub fn unpinned(&self) -> &Analysis {
        if self.a.pins.is_empty() {
            return self.a;
        }
        self.unpinned
            .get_or_init(|| Analysis::new(self.a.model.clone(), &Default::default()).ok())
            .as_ref()
            .unwrap_or(self.a)
    }

    fn origin_of(&self, name: &str) -> Origin {
        // Graph inputs and anything unknown are run-time data.
        self.origin.get(name).copied().unwrap_or(Origin::Data)
    }

    /// Where the values of `name` come from.
    pub fn origin(&self, name: &str) -> Origin {
        if name.is_empty() {
            return Origin::Const;
        }
        self.origin_of(name)
    }

    pub fn info(&self, name: &str) -> Option<&'a TensorInfo> {
        self.a.shapes.get(name)
    }

    pub fn shape(&self, name: &str) -> Option<&'a [Dim]> {
        self.a.shapes.shape(name)
    }

    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(<[Dim]>::len)
    }

    pub fn static_shape(&self, name: &str) -> Option<Vec<i64>> {
        self.a.shapes.static_shape(name)
    }

    pub fn dtype(&self, name: &str) -> Option<DataType> {
        self.a
            .shapes
            .dtype(name)
            .or_else(|| self.initializers.get(name).map(|t| DataType(t.data_type())))
    }

    /// The node producing `name`.
    pub fn producer_of(&self, name: &str) -> Option<&'a NodeProto> {
        self.producer.get(name).map(|&i| self.nodes[i].node)
    }

    /// Nodes reading `name`.
    pub fn consumers_of(&self, name: &str) -> Vec<&'a NodeProto> {
        self.consumers
            .get(name)
            .map(|v| v.iter().map(|&i| self.nodes[i].node).collect())
            .unwrap_or_default()
    }

    pub fn is_initializer(&self, name: &str) -> bool {
        self.initializers.contains_key(name)
    }

    /// True when TensorRT's parser sees `name` as weights: an initializer or the output of a
    /// `Constant` node (onnx-tensorrt imports Constant nodes as weights).
    pub fn is_weights(&self, name: &str) -> bool {
        !name.is_empty()
            && (self.is_initializer(name)
                || self
                    .producer_of(name)
                    .is_some_and(|p| p.op_type() == "Constant"))
    }

    /// The tensor stored for `name`: an initializer or a Constant node's `value`.
    pub fn const_tensor(&self, name: &str) -> Option<&'a TensorProto> {
        if let Some(t) = self.initializers.get(name) {
            return Some(t);
        }
        let p = self.producer_of(name)?;
        (p.op_type() == "Constant")
            .then(|| p.attr_t("value"))
            .flatten()
    }

    /// Integer contents of `name` when pare knows them all (stored constants, or shape
    /// arithmetic evaluated under the current input shapes).
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        if name.is_empty() {
            return None;
        }
        if let Some(v) = self.info(name).and_then(TensorInfo::int_values) {
            return Some(v);
        }
        let t = self.const_tensor(name)?;
        if t.numel() > 1 << 16
            || !DataType(t.data_type()).is_integer() && t.data_type() != DataType::BOOL.0
        {
            return None;
        }
        to_i64(t).ok()
    }

    /// Float contents of `name` when known (stored constants or evaluated values).
    pub fn floats(&self, name: &str) -> Option<Vec<f64>> {
        if name.is_empty() {
            return None;
        }
        if let Some(v) = self
            .info(name)
            .and_then(|i| i.value.as_ref())
            .and_then(Value::as_floats)
        {
            return Some(v);
        }
        let t = self.const_tensor(name)?;
        if t.numel() > 1 << 16 {
            return None;
        }
        to_f32(t)
            .ok()
            .map(|v| v.into_iter().map(f64::from).collect())
    }

    /// Whether pare knows every element of `name` (so `pare fix` can make it a constant).
    pub fn is_known(&self, name: &str) -> bool {
        !name.is_empty()
            && (self.const_tensor(name).is_some()
                || self
                    .info(name)
                    .and_then(|i| i.value.as_ref())
                    .is_some_and(|v| match v {
                        Value::Int(d) => d.iter().all(|x| x.known().is_some()),
                        Value::Float(_) => true,
                    }))
    }

    /// A node's input, or `""` when absent.
    pub fn input<'n>(&self, node: &'n NodeProto, i: usize) -> &'n str {
        node.input.get(i).map(String::as_str).unwrap_or("")
    }

    /// Main-graph input names (initializers excluded).
    pub fn graph_inputs(&self) -> &'a [String] {
        &self.a.index.inputs
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.a.index.outputs.iter().any(|o| o == name)
    }

    /// Short description of how a tensor is made, for messages: `Shape → Gather → Equal`.
    pub fn lineage(&self, name: &str, max: usize) -> String {
        let mut ops = Vec::new();
        let mut cur = name.to_string();
        let mut seen = HashSet::new();
        while ops.len() < max {
            let Some(p) = self.producer_of(&cur) else {
                break;
            };
            if !seen.insert(cur.clone()) {
                break;
            }
            if matches!(p.op_type(), "Shape" | "Size") {
                ops.push(format!("{}({})", p.op_type(), self.input(p, 0)));
                break;
            }
            ops.push(p.op_type().to_string());
            // Follow the first input that is not a stored constant.
            match p
                .input
                .iter()
                .find(|i| !i.is_empty() && !self.is_weights(i))
            {
                Some(i) => cur = i.clone(),
                None => break,
            }
        }
        ops.reverse();
        ops.join(" → ")
    }
}

/// Formats a dim list `1x3x?xW`.
pub fn dims_str(shape: &[Dim]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Declared dtype and shape of a value-info (graph input, output or value_info entry).
pub fn declared_info(vi: &crate::model::proto::ValueInfoProto) -> TensorInfo {
    use crate::model::proto::Dimension;
    let Some(tt) = vi.tensor_type() else {
        return TensorInfo::default();
    };
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
