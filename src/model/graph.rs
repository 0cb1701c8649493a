//! Graph index: who produces and who consumes each tensor, a petgraph DAG over the nodes,
//! topological order and reachability.
//!
//! Building the index is also where malformed graphs are caught (duplicate tensor names,
//! tensors nobody produces, cycles), so everything downstream can assume a sound DAG. Every
//! traversal here is iterative with explicit visited sets: a hand-written dependency walk that
//! recursed forever is one of the seed cases (P13).

use std::collections::VecDeque;

// FxHash: tensor names are short and trusted enough; SipHash dominated indexing time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use petgraph::graph::{DiGraph, NodeIndex};

use super::proto::{GraphProto, NodeProto};
use crate::error::{PareError, Result};

/// A nested graph (If branch, Loop/Scan body) of one node, indexed in its own right.
#[derive(Clone, Debug)]
pub struct NestedGraph {
    /// Index of the owning node in the parent graph.
    pub node: usize,
    /// Attribute holding the graph (`then_branch`, `else_branch`, `body`).
    pub attribute: String,
    pub index: GraphIndex,
}

/// Index over one graph. Node ids are positions in `GraphProto.node`, and the petgraph node
/// with index `i` is node `i`.
#[derive(Clone, Debug, Default)]
pub struct GraphIndex {
    /// Edges run producer → consumer, labelled with the tensor name.
    pub dag: DiGraph<usize, String>,
    /// Tensor name → node producing it.
    pub producer: HashMap<String, usize>,
    /// Tensor name → nodes reading it (explicit inputs, and outer-scope reads of nested graphs).
    pub consumers: HashMap<String, Vec<usize>>,
    /// Graph inputs that are not initializers, in declaration order.
    pub inputs: Vec<String>,
    /// Initializer name → position in `GraphProto.initializer`.
    pub initializers: HashMap<String, usize>,
    pub outputs: Vec<String>,
    /// Nodes in a topological order (stable: ties keep file order).
    pub topo: Vec<usize>,
    /// Names this graph reads from enclosing scopes (empty for the main graph).
    pub outer_refs: Vec<String>,
    /// Per node: outer-scope names its nested graphs read, which make them implicit inputs.
    pub implicit_inputs: HashMap<usize, Vec<String>>,
    pub subgraphs: Vec<NestedGraph>,
}

impl GraphIndex {
    /// Indexes the main graph of a model.
    pub fn build(graph: &GraphProto) -> Result<Self> {
        Self::build_scoped(graph, &HashSet::default(), "")
    }

    /// Indexes `graph`, where `outer` holds every name visible from enclosing scopes.
    fn build_scoped(graph: &GraphProto, outer: &HashSet<String>, scope: &str) -> Result<Self> {
        let mut ix = GraphIndex::default();
        let where_ = if scope.is_empty() {
            String::new()
        } else {
            format!(" (inside {scope})")
        };
        for (i, t) in graph.initializer.iter().enumerate() {
            if ix.initializers.insert(t.name().to_string(), i).is_some() {
                return Err(PareError::InvalidModel(format!(
                    "duplicate initializer name '{}'{where_}",
                    t.name()
                )));
            }
        }
        for s in &graph.sparse_initializer {
            if let Some(v) = &s.values {
                ix.initializers.insert(v.name().to_string(), usize::MAX);
            }
        }
        let mut seen_inputs = HashSet::default();
        for vi in &graph.input {
            let name = vi.name().to_string();
            if !seen_inputs.insert(name.clone()) {
                return Err(PareError::InvalidModel(format!(
                    "graph input '{name}' is declared twice{where_}"
                )));
            }
            if !ix.initializers.contains_key(&name) {
                ix.inputs.push(name);
            }
        }
        let n = graph.node.len();
        for i in 0..n {
            ix.dag.add_node(i);
        }
        // Producers.
        for (i, node) in graph.node.iter().enumerate() {
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                if seen_inputs.contains(out) || ix.initializers.contains_key(out) {
                    return Err(PareError::InvalidModel(format!(
                        "node '{}' ({}) writes tensor '{out}', which is already a graph input or initializer{where_}",
                        node.display_name(),
                        node.op_type()
                    )));
                }
                if let Some(&other) = ix.producer.get(out) {
                    return Err(PareError::InvalidModel(format!(
                        "tensor '{out}' is produced twice: by node '{}' and by node '{}'{where_}",
                        graph.node[other].display_name(),
                        node.display_name()
                    )));
                }
                ix.producer.insert(out.clone(), i);
            }
        }
        let local = |name: &str, ix: &GraphIndex| {
            ix.producer.contains_key(name)
                || ix.initializers.contains_key(name)
                || seen_inputs.contains(name)
        };
        let mut outer_refs: Vec<String> = Vec::new();
        let mut outer_seen = HashSet::default();
        // Scope visible to nested graphs: everything outer plus everything of this graph.
        let needs_nested = graph.node.iter().any(|nd| nd.subgraphs().next().is_some());
        let visible: HashSet<String> = if needs_nested {
            let mut v = outer.clone();
            v.extend(ix.producer.keys().cloned());
            v.extend(ix.initializers.keys().cloned());
            v.extend(seen_inputs.iter().cloned());
            v
        } else {
            HashSet::default()
        };
        for (i, node) in graph.node.iter().enumerate() {
            let mut reads: Vec<String> = Vec::new();
            for inp in node.input.iter().filter(|s| !s.is_empty()) {
                reads.push(inp.clone());
            }
            let mut implicit = Vec::new();
            for (attr, sub) in node.subgraphs() {
                let sub_scope = if scope.is_empty() {
                    format!("node '{}' attribute '{attr}'", node.display_name())
                } else {
                    format!(
                        "{scope} / node '{}' attribute '{attr}'",
                        node.display_name()
                    )
                };
                let sub_ix = Self::build_scoped(sub, &visible, &sub_scope)?;
                for r in &sub_ix.outer_refs {
                    if !implicit.contains(r) {
                        implicit.push(r.clone());
                    }
                }
                ix.subgraphs.push(NestedGraph {
                    node: i,
                    attribute: attr.to_string(),
                    index: sub_ix,
                });
            }
            for r in &implicit {
                if !reads.contains(r) {
                    reads.push(r.clone());
                }
            }
            if !implicit.is_empty() {
                ix.implicit_inputs.insert(i, implicit);
            }
            for name in reads {
                if local(&name, &ix) {
                    if let Some(&p) = ix.producer.get(&name) {
                        ix.dag
                            .add_edge(NodeIndex::new(p), NodeIndex::new(i), name.clone());
                    }
                } else if outer.contains(&name) {
                    if outer_seen.insert(name.clone()) {
                        outer_refs.push(name.clone());
                    }
                } else {
                    return Err(dangling(node, &name, &where_));
                }
                ix.consumers.entry(name).or_default().push(i);
            }
        }
        for vi in &graph.output {
            let name = vi.name();
            if !local(name, &ix) {
                if outer.contains(name) {
                    if outer_seen.insert(name.to_string()) {
                        outer_refs.push(name.to_string());
                    }
                } else {
                    return Err(PareError::InvalidModel(format!(
                        "graph output '{name}' is not produced by any node, input or initializer{where_}"
                    )));
                }
            }
            ix.outputs.push(name.to_string());
        }
        ix.outer_refs = outer_refs;
        ix.topo = topo_order(&ix.dag, graph)?;
        Ok(ix)
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Nodes that read the outputs of `node`.
    pub fn successors(&self, node: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .dag
            .neighbors_directed(NodeIndex::new(node), petgraph::Direction::Outgoing)
            .map(|n| n.index())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Nodes whose outputs `node` reads.
    pub fn predecessors(&self, node: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .dag
            .neighbors_directed(NodeIndex::new(node), petgraph::Direction::Incoming)
            .map(|n| n.index())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every node reachable from `start` following edges forward (or backward), `start`
    /// included. Iterative BFS.
    pub fn reachable(&self, start: &[usize], forward: bool) -> HashSet<usize> {
        let dir = if forward {
            petgraph::Direction::Outgoing
        } else {
            petgraph::Direction::Incoming
        };
        let mut seen: HashSet<usize> = start.iter().copied().collect();
        let mut queue: VecDeque<usize> = start.iter().copied().collect();
        while let Some(n) = queue.pop_front() {
            for m in self.dag.neighbors_directed(NodeIndex::new(n), dir) {
                if seen.insert(m.index()) {
                    queue.push_back(m.index());
                }
            }
        }
        seen
    }

    /// True when `to` is reachable from `from`.
    pub fn is_reachable(&self, from: usize, to: usize) -> bool {
        self.reachable(&[from], true).contains(&to)
    }

    /// Inputs a node reads, including outer-scope names its nested graphs read.
    pub fn all_inputs<'a>(
        &'a self,
        node: &'a NodeProto,
        id: usize,
    ) -> impl Iterator<Item = &'a str> {
        node.input
            .iter()
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .chain(
                self.implicit_inputs
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            )
    }
}

fn dangling(node: &NodeProto, name: &str, where_: &str) -> PareError {
    PareError::InvalidModel(format!(
        "node '{}' ({}) reads tensor '{name}', which no node, graph input or initializer produces{where_}",
        node.display_name(),
        node.op_type()
    ))
}

/// Kahn's algorithm; ties resolved by file order so the result is deterministic. On a cycle,
/// names the nodes of one actual cycle.
fn topo_order(dag: &DiGraph<usize, String>, graph: &GraphProto) -> Result<Vec<usize>> {
    let n = dag.node_count();
    let mut indeg = vec![0usize; n];
    for e in dag.raw_edges() {
        indeg[e.target().index()] += 1;
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for m in dag.neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing) {
            let j = m.index();
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk backwards among the unsorted nodes until one repeats: that is a cycle.
    let left: HashSet<usize> = (0..n).filter(|&i| indeg[i] > 0).collect();
    let mut at = left.iter().copied().min().unwrap_or(0);
    let mut path = Vec::new();
    let mut pos: HashMap<usize, usize> = HashMap::default();
    loop {
        if let Some(&p) = pos.get(&at) {
            let cycle: Vec<String> = path[p..]
                .iter()
                .rev()
                .map(|&i: &usize| format!("'{}'", graph.node[i].display_name()))
                .collect();
            return Err(PareError::Cycle { nodes: cycle });
        }
        pos.insert(at, path.len());
        path.push(at);
        let next = dag
            .neighbors_directed(NodeIndex::new(at), petgraph::Direction::Incoming)
            .map(|m| m.index())
            .find(|m| left.contains(m));
        match next {
            Some(m) => at = m,
            None => {
                return Err(PareError::Cycle {
                    nodes: left
                        .iter()
                        .map(|&i| format!("'{}'", graph.node[i].display_name()))
                        .collect(),
                });
            }
        }
    }
}

/// Which graph inputs a [`prefix`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixInputs {
    /// Every one: runners built from a sample set feed all of them, in order.
    All,
    /// Only those the outputs need (extraction feeds its pieces by name).
    Needed,
}

/// `proto` reduced to the ancestors of `outputs`, which become its outputs (untyped where a
/// node computes them: the engine infers them); its inputs are all the graph inputs or those the outputs need (`inputs`). Extraction runs pieces of
/// a model this way, and pruning recovery and weight reconstruction run one prefix per layer:
/// onnxruntime builds every node of a session, needed or not (MobileNetV2's 12 reconstructed
/// layers: 9.0 s with whole models, 4.1 s with prefixes). Outer-scope names read inside
/// If/Loop bodies count as inputs of their node. Only what is kept is copied.
pub fn prefix(
    proto: &super::proto::ModelProto,
    outputs: &[String],
    inputs: PrefixInputs,
) -> Result<super::proto::ModelProto> {
    use super::proto::{ModelProto, ValueInfoProto};
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let ix = GraphIndex::build(g)?;
    let mut keep: HashSet<usize> = HashSet::default();
    let mut seen: HashSet<&str> = HashSet::default();
    let mut stack: Vec<&str> = outputs.iter().map(String::as_str).collect();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        if let Some(&p) = ix.producer.get(t)
            && keep.insert(p)
        {
            stack.extend(ix.all_inputs(&g.node[p], p));
        }
    }
    let graph = GraphProto {
        node: ix
            .topo
            .iter()
            .filter(|i| keep.contains(i))
            .map(|&i| g.node[i].clone())
            .collect(),
        name: g.name.clone(),
        initializer: g
            .initializer
            .iter()
            .filter(|t| seen.contains(t.name()))
            .cloned()
            .collect(),
        sparse_initializer: g
            .sparse_initializer
            .iter()
            .filter(|s| s.values.as_ref().is_some_and(|v| seen.contains(v.name())))
            .cloned()
            .collect(),
        doc_string: g.doc_string.clone(),
        input: g
            .input
            .iter()
            .filter(|v| {
                !ix.initializers.contains_key(v.name())
                    && (inputs == PrefixInputs::All || seen.contains(v.name()))
            })
            .cloned()
            .collect(),
        // A graph input asked for as an output keeps its type: tract cannot infer a fact
        // for an output no node computes.
        output: outputs
            .iter()
            .map(|o| {
                g.input
                    .iter()
                    .find(|v| v.name() == o)
                    .cloned()
                    .unwrap_or_else(|| ValueInfoProto {
                        name: Some(o.clone()),
                        ..Default::default()
                    })
            })
            .collect(),
        value_info: Vec::new(),
        quantization_annotation: g.quantization_annotation.clone(),
        metadata_props: g.metadata_props.clone(),
    };
    Ok(ModelProto {
        ir_version: proto.ir_version,
        opset_import: proto.opset_import.clone(),
        producer_name: proto.producer_name.clone(),
        producer_version: proto.producer_version.clone(),
        domain: proto.domain.clone(),
        model_version: proto.model_version,
        doc_string: proto.doc_string.clone(),
        graph: Some(graph),
        metadata_props: proto.metadata_props.clone(),
        training_info: Vec::new(),
        functions: proto.functions.clone(),
        configuration: proto.configuration.clone(),
    })
}
