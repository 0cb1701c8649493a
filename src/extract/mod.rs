//! Subgraph extraction: cut any part of a model out as a valid standalone ONNX model.
//!
//! Every selector (`--inputs/--outputs` tensors, one `--node`, a `--from/--to` node range) is
//! resolved to a pair of tensor lists, and [`extract`] walks backwards from the outputs,
//! stopping at the inputs, to find the minimal node set. What the walk reaches beyond the
//! inputs decides validity: an original graph input reached means the outputs cannot be
//! computed from what was given, and the error names every such tensor.
//!
//! What the anchors (`onnx.utils.extract_model`) miss and this module does not:
//! - names read from the outer scope inside `If`/`Loop` bodies are dependencies like any
//!   other input; when not computed inside the piece they become inputs of the piece;
//! - new inputs and outputs are typed from pare's own shape inference, never a `KeyError`;
//! - `Constant` nodes (and anything computed from constants alone) feeding the piece are
//!   pulled in instead of becoming inputs, so the piece needs only real activations;
//! - model-local functions called anywhere in the piece (bodies included) are kept.
//!
//! [`data`] computes real boundary tensors with tract, [`split`] cuts a model in two and
//! [`reduce`] shrinks a model to a minimal subgraph for which a user's check still fails.

pub mod data;
pub mod reduce;
pub mod run;
pub mod split;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::proto::{
    Dimension, FunctionProto, GraphProto, ModelProto, NodeProto, TensorShapeDimension,
    TensorShapeProto, TypeProto, TypeTensor, TypeValue, ValueInfoProto,
};
use crate::model::shape::Dim;
use crate::model::{Analysis, DataType, Model};

/// Which part of a model to extract.
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    /// Tensor boundary. Empty `inputs`: the model inputs the outputs need. Empty `outputs`:
    /// the model outputs that depend on the inputs.
    Tensors {
        inputs: Vec<String>,
        outputs: Vec<String>,
    },
    /// One node: its non-constant inputs become graph inputs, its weights stay initializers.
    Node(String),
    /// Every node on a path from `from` to `to` (both included).
    Range { from: String, to: String },
}

/// A selector resolved to tensors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Boundary {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// What resolution decided on the user's behalf (for the CLI to print).
    pub notes: Vec<String>,
}

/// An extracted piece of a model.
#[derive(Clone, Debug)]
pub struct Piece {
    /// The standalone model (external data stays external when saved, like its source).
    pub model: Model,
    /// Graph inputs of the piece, in order (`input_K.pb` is the K-th).
    pub inputs: Vec<String>,
    /// Graph outputs of the piece, in order.
    pub outputs: Vec<String>,
    /// Original top-level node positions kept, in topological order.
    pub nodes: Vec<usize>,
    /// Number of initializers kept and their payload size.
    pub initializers: usize,
    pub initializer_bytes: u64,
    /// Warnings: guessed types, unused inputs.
    pub notes: Vec<String>,
}

impl Piece {
    pub fn graph(&self) -> &GraphProto {
        self.model
            .proto
            .graph
            .as_ref()
            .expect("pieces always have a graph")
    }

    /// `(name, dtype, shape)` of each input as declared in the piece.
    pub fn input_types(&self) -> Vec<(String, Option<DataType>, Option<Vec<Dim>>)> {
        self.graph()
            .input
            .iter()
            .take(self.inputs.len())
            .map(vi_type)
            .collect()
    }

    pub fn output_types(&self) -> Vec<(String, Option<DataType>, Option<Vec<Dim>>)> {
        self.graph().output.iter().map(vi_type).collect()
    }

    /// Op histogram of the kept nodes, most frequent first (`Conv x3, Relu`).
    pub fn op_summary(&self) -> String {
        let mut h: Vec<(String, usize)> = Vec::new();
        for n in &self.graph().node {
            match h.iter_mut().find(|(k, _)| k == n.op_type()) {
                Some(e) => e.1 += 1,
                None => h.push((n.op_type().to_string(), 1)),
            }
        }
        h.sort_by_key(|e| std::cmp::Reverse(e.1));
        h.iter()
            .map(|(k, c)| {
                if *c > 1 {
                    format!("{k} x{c}")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Declared dtype/shape of a value info.
pub fn vi_type(v: &ValueInfoProto) -> (String, Option<DataType>, Option<Vec<Dim>>) {
    let tt = v.tensor_type();
    let dtype = tt
        .and_then(|t| t.elem_type)
        .filter(|&e| e != 0)
        .map(DataType);
    let shape = tt.and_then(|t| t.shape.as_ref()).map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(Dimension::DimValue(v)) => Dim::Known(*v),
                Some(Dimension::DimParam(p)) => Dim::Sym(p.clone()),
                None => Dim::Unknown,
            })
            .collect()
    });
    (v.name().to_string(), dtype, shape)
}

/// Builds a tensor value info.
pub fn make_value_info(name: &str, dtype: DataType, shape: Option<&[Dim]>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: Some(dtype.0),
                shape: shape.map(|s| TensorShapeProto {
                    dim: s
                        .iter()
                        .map(|d| TensorShapeDimension {
                            value: match d {
                                Dim::Known(v) => Some(Dimension::DimValue(*v)),
                                Dim::Sym(p) => Some(Dimension::DimParam(p.clone())),
                                Dim::Unknown => None,
                            },
                            denotation: None,
                        })
                        .collect(),
                }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Names: lookup, nested-scope hints and closest-name suggestions.

/// Levenshtein distance over chars (two rows).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to `k` candidates closest to `name`, best first (ties: shorter, then alphabetical).
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>, k: usize) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .filter(|c| !c.is_empty())
        .map(|c| {
            let cl = c.to_lowercase();
            // A case-insensitive containment is as good as a near miss.
            let d = if cl.contains(&lower) || (lower.len() > 3 && lower.contains(&cl)) {
                c.len().abs_diff(name.len()).min(edit_distance(&lower, &cl))
            } else {
                edit_distance(&lower, &cl)
            };
            (d, c)
        })
        .collect();
    scored.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.len().cmp(&b.1.len()))
            .then(a.1.cmp(b.1))
    });
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(k)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn quote_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `name` is a tensor of the main graph (produced, input or initializer).
pub fn is_tensor(a: &Analysis, name: &str) -> bool {
    a.index.producer.contains_key(name)
        || a.index.initializers.contains_key(name)
        || a.index.inputs.iter().any(|i| i == name)
}

/// If `name` is a tensor or node that lives only inside a nested graph, the top-level node
/// owning that graph.
fn nested_owner(a: &Analysis, name: &str, node_name: bool) -> Option<String> {
    fn has(ix: &crate::model::GraphIndex, g: &GraphProto, name: &str, node_name: bool) -> bool {
        if node_name {
            g.node.iter().any(|n| n.name() == name)
                || g.node.iter().zip(0..).any(|(n, i)| {
                    n.subgraphs().any(|(attr, sub)| {
                        ix.subgraphs
                            .iter()
                            .find(|s| s.node == i && s.attribute == attr)
                            .is_some_and(|s| has(&s.index, sub, name, true))
                    })
                })
        } else {
            ix.producer.contains_key(name)
                || ix.initializers.contains_key(name)
                || ix.inputs.iter().any(|i| i == name)
                || ix.subgraphs.iter().any(|s| {
                    g.node
                        .get(s.node)
                        .and_then(|n| n.subgraphs().find(|(attr, _)| *attr == s.attribute))
                        .is_some_and(|(_, sub)| has(&s.index, sub, name, false))
                })
        }
    }
    let g = a.graph();
    for s in &a.index.subgraphs {
        let node = &g.node[s.node];
        let Some((_, sub)) = node.subgraphs().find(|(attr, _)| *attr == s.attribute) else {
            continue;
        };
        if has(&s.index, sub, name, node_name) {
            return Some(format!(
                "{} '{}' (attribute {})",
                node.op_type(),
                node.display_name(),
                s.attribute
            ));
        }
    }
    None
}

fn all_tensor_names(a: &Analysis) -> impl Iterator<Item = &str> {
    a.index
        .producer
        .keys()
        .map(String::as_str)
        .chain(a.index.inputs.iter().map(String::as_str))
        .chain(a.index.initializers.keys().map(String::as_str))
}

fn unknown_tensor_message(a: &Analysis, name: &str) -> String {
    if let Some(owner) = nested_owner(a, name, false) {
        return format!(
            "tensor '{name}' exists only inside the body of {owner}; extraction works on the main graph: select that node instead"
        );
    }
    let near = closest(name, all_tensor_names(a), 3);
    if near.is_empty() {
        format!("no tensor named '{name}' in the model")
    } else {
        format!(
            "no tensor named '{name}' in the model (closest: {})",
            quote_list(&near)
        )
    }
}

/// Checks that every name is a main-graph tensor; one error names every unknown one.
pub fn check_tensors(a: &Analysis, names: &[String]) -> Result<()> {
    let bad: Vec<String> = names
        .iter()
        .filter(|n| !is_tensor(a, n))
        .map(|n| unknown_tensor_message(a, n))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(PareError::Usage(bad.join("; ")))
    }
}

/// Finds a top-level node by name; a tensor name selects the node producing it.
pub fn find_node(a: &Analysis, name: &str) -> Result<usize> {
    let g = a.graph();
    let hits: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].name() == name)
        .collect();
    match hits.len() {
        1 => return Ok(hits[0]),
        0 => {}
        _ => {
            let outs: Vec<String> = hits
                .iter()
                .filter_map(|&i| g.node[i].output.first().cloned())
                .collect();
            return Err(PareError::Usage(format!(
                "{} nodes are named '{name}'; select one by an output tensor instead: {}",
                hits.len(),
                quote_list(&outs)
            )));
        }
    }
    if let Some(&p) = a.index.producer.get(name) {
        return Ok(p);
    }
    if let Some(owner) = nested_owner(a, name, true).or_else(|| nested_owner(a, name, false)) {
        return Err(PareError::Usage(format!(
            "node '{name}' is inside the body of {owner}; extraction works on the main graph: select that node instead"
        )));
    }
    let near = closest(name, g.node.iter().map(|n| n.name()), 3);
    Err(PareError::Usage(if near.is_empty() {
        format!("no node named '{name}' in the model")
    } else {
        format!(
            "no node named '{name}' in the model (closest: {})",
            quote_list(&near)
        )
    }))
}

// ---------------------------------------------------------------------------------------------
// Graph facts the walks need.

/// Per top-level node: true when it computes from constants alone (a `Constant`, or a
/// default-domain op whose inputs are all initializers or such nodes' outputs). Those are
/// free to include, so they are pulled into a piece instead of becoming its inputs.
pub fn const_only_nodes(a: &Analysis) -> Vec<bool> {
    let g = a.graph();
    let mut c = vec![false; g.node.len()];
    for &i in &a.index.topo {
        let n = &g.node[i];
        if !n.op_domain().is_empty()
            || crate::ops::lookup(n.op_type()).is_some_and(|d| d.nondeterministic)
            || n.subgraphs().next().is_some()
        {
            continue;
        }
        c[i] = a.index.all_inputs(n, i).all(|t| {
            a.index.initializers.contains_key(t) || a.index.producer.get(t).is_some_and(|&p| c[p])
        });
    }
    c
}

/// What a backward walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Nodes needed.
    pub nodes: BTreeSet<usize>,
    /// Stop tensors the walk reached, in discovery order.
    pub reached: Vec<String>,
    /// Original graph inputs reached that are not stop tensors, in discovery order.
    pub missing: Vec<String>,
}

/// Walks backwards from `outputs` through producers (outer-scope reads of nested graphs
/// included), stopping at tensors for which `stop` holds and at initializers.
pub fn walk_back(a: &Analysis, outputs: &[String], stop: &dyn Fn(&str) -> bool) -> Walk {
    let g = a.graph();
    let mut w = Walk::default();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = outputs.iter().rev().map(String::as_str).collect();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        if stop(t) {
            w.reached.push(t.to_string());
            continue;
        }
        if a.index.initializers.contains_key(t) {
            continue;
        }
        if let Some(&p) = a.index.producer.get(t) {
            if w.nodes.insert(p) {
                let ins: Vec<&str> = a.index.all_inputs(&g.node[p], p).collect();
                stack.extend(ins.into_iter().rev());
            }
        } else {
            w.missing.push(t.to_string());
        }
    }
    w
}

/// Original model outputs that depend on any of `tensors`.
fn outputs_downstream_of(a: &Analysis, tensors: &[String]) -> Vec<String> {
    let mut starts: Vec<usize> = Vec::new();
    for t in tensors {
        if let Some(cs) = a.index.consumers.get(t) {
            starts.extend(cs.iter().copied());
        }
    }
    let fwd = a.index.reachable(&starts, true);
    a.index
        .outputs
        .iter()
        .filter(|o| {
            tensors.contains(o) || a.index.producer.get(*o).is_some_and(|p| fwd.contains(p))
        })
        .cloned()
        .collect()
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    v.iter()
        .filter(|s| seen.insert(s.as_str()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Selection.

/// Resolves a selector to the tensors bounding the piece.
pub fn resolve(a: &Analysis, sel: &Selector) -> Result<Boundary> {
    let g = a.graph();
    let consts = const_only_nodes(a);
    let is_const = |t: &str| a.index.producer.get(t).is_some_and(|&p| consts[p]);
    let mut notes = Vec::new();
    // The non-constant, non-weight tensors a node set reads from outside itself.
    let frontier = |set: &BTreeSet<usize>| -> Vec<String> {
        let produced: HashSet<&str> = set
            .iter()
            .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
            .collect();
        let mut v: Vec<String> = Vec::new();
        for &i in a.index.topo.iter().filter(|i| set.contains(i)) {
            for t in a.index.all_inputs(&g.node[i], i) {
                if !produced.contains(t)
                    && !a.index.initializers.contains_key(t)
                    && !is_const(t)
                    && !v.iter().any(|x| x == t)
                {
                    v.push(t.to_string());
                }
            }
        }
        v
    };
    let node_outputs = |i: usize| -> Vec<String> {
        g.node[i]
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .cloned()
            .collect()
    };
    match sel {
        Selector::Tensors { inputs, outputs } => {
            let inputs = dedup(inputs);
            let outputs = dedup(outputs);
            let mut names = inputs.clone();
            names.extend(outputs.iter().cloned());
            check_tensors(a, &names)?;
            if inputs.is_empty() && outputs.is_empty() {
                return Err(PareError::Usage(
                    "select something: --inputs/--outputs, --node or --from/--to".into(),
                ));
            }
            let outputs = if outputs.is_empty() {
                let o: Vec<String> = outputs_downstream_of(a, &inputs)
                    .into_iter()
                    .filter(|o| !inputs.contains(o))
                    .collect();
                if o.is_empty() {
                    return Err(PareError::Usage(format!(
                        "no model output depends on {}: give --outputs",
                        quote_list(&inputs)
                    )));
                }
                notes.push(format!(
                    "outputs: the model outputs downstream of the inputs ({})",
                    o.join(", ")
                ));
                o
            } else {
                outputs
            };
            let inputs = if inputs.is_empty() {
                let w = walk_back(a, &outputs, &|_| false);
                notes.push(if w.missing.is_empty() {
                    "inputs: none needed (the outputs are computed from constants)".to_string()
                } else {
                    format!(
                        "inputs: the model inputs the outputs need ({})",
                        w.missing.join(", ")
                    )
                });
                w.missing
            } else {
                inputs
            };
            Ok(Boundary {
                inputs,
                outputs,
                notes,
            })
        }
        Selector::Node(name) => {
            let i = find_node(a, name)?;
            if g.node[i].name() != name.as_str() {
                notes.push(format!(
                    "selected node '{}', which produces tensor '{name}'",
                    g.node[i].display_name()
                ));
            }
            let set: BTreeSet<usize> = [i].into();
            Ok(Boundary {
                inputs: frontier(&set),
                outputs: node_outputs(i),
                notes,
            })
        }
        Selector::Range { from, to } => {
            let (f, t) = (find_node(a, from)?, find_node(a, to)?);
            let fwd = a.index.reachable(&[f], true);
            if !fwd.contains(&t) {
                let hint = if a.index.is_reachable(t, f) {
                    " (did you swap --from and --to?)"
                } else {
                    ""
                };
                return Err(PareError::Usage(format!(
                    "node '{}' is not downstream of node '{}': no path runs between them{hint}",
                    g.node[t].display_name(),
                    g.node[f].display_name()
                )));
            }
            let bwd = a.index.reachable(&[t], false);
            let set: BTreeSet<usize> = fwd.intersection(&bwd).copied().collect();
            Ok(Boundary {
                inputs: frontier(&set),
                outputs: node_outputs(t),
                notes,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extraction.

/// Extracts the minimal piece computing `outputs` from `inputs`.
pub fn extract(a: &Analysis, inputs: &[String], outputs: &[String]) -> Result<Piece> {
    let inputs = dedup(inputs);
    let outputs = dedup(outputs);
    let mut names = inputs.clone();
    names.extend(outputs.iter().cloned());
    check_tensors(a, &names)?;
    if outputs.is_empty() {
        return Err(PareError::Usage("empty selection: no outputs".into()));
    }
    let both: Vec<String> = outputs
        .iter()
        .filter(|o| inputs.contains(o))
        .cloned()
        .collect();
    if !both.is_empty() {
        return Err(PareError::Usage(format!(
            "{} both an input and an output of the selection; a piece must compute its outputs",
            if both.len() == 1 {
                format!("tensor '{}' is", both[0])
            } else {
                format!("tensors {} are", quote_list(&both))
            }
        )));
    }
    let consts: Vec<String> = outputs
        .iter()
        .filter(|o| a.index.initializers.contains_key(*o))
        .cloned()
        .collect();
    if !consts.is_empty() {
        return Err(PareError::Usage(format!(
            "output {} is an initializer (a weight), not computed by any node",
            quote_list(&consts)
        )));
    }
    let input_set: HashSet<&str> = inputs.iter().map(String::as_str).collect();
    let w = walk_back(a, &outputs, &|t| input_set.contains(t));
    if !w.missing.is_empty() {
        let unused: Vec<String> = inputs
            .iter()
            .filter(|i| !w.reached.contains(i))
            .cloned()
            .collect();
        let unused = if unused.is_empty() {
            String::new()
        } else {
            format!("; {} not upstream of any output", quote_list(&unused))
        };
        // Where the unsupplied dependencies join the part downstream of the given inputs:
        // the tensors the user most likely forgot (a residual shortcut, a second branch).
        let g = a.graph();
        let consts = const_only_nodes(a);
        let starts: Vec<usize> = inputs
            .iter()
            .flat_map(|t| a.index.consumers.get(t).into_iter().flatten().copied())
            .collect();
        let down = a.index.reachable(&starts, true);
        let mut entries: Vec<String> = Vec::new();
        for &n in a
            .index
            .topo
            .iter()
            .filter(|n| w.nodes.contains(n) && down.contains(n))
        {
            for t in a.index.all_inputs(&g.node[n], n) {
                let side = match a.index.producer.get(t) {
                    Some(&p) => !down.contains(&p) && !consts[p],
                    None => w.missing.iter().any(|m| m == t),
                };
                if side && !input_set.contains(t) && !entries.iter().any(|e| e == t) {
                    entries.push(t.to_string());
                }
            }
        }
        let entries = if entries.is_empty() || entries == w.missing {
            String::new()
        } else {
            format!(
                ", which reach the selection through {}",
                quote_list(&entries)
            )
        };
        return Err(PareError::Usage(format!(
            "outputs {} cannot be computed from the given inputs: they also need model input(s) {} (not supplied){entries}; add those tensors to the inputs or choose inputs closer to the outputs{unused}",
            quote_list(&outputs),
            quote_list(&w.missing)
        )));
    }
    if w.nodes.is_empty() {
        return Err(PareError::Usage(
            "empty selection: the outputs are the inputs, no node lies between them".into(),
        ));
    }
    let mut notes = Vec::new();
    for i in &inputs {
        if !w.reached.contains(i) {
            notes.push(format!(
                "input '{i}' is not used by any selected output; it stays an input of the piece"
            ));
        }
    }
    build_piece(a, &w.nodes, &inputs, &outputs, notes)
}

/// Every tensor produced by the original top-level nodes `nodes`, plus inputs/initializers.
fn produced_by(g: &GraphProto, nodes: &BTreeSet<usize>) -> HashSet<String> {
    nodes
        .iter()
        .flat_map(|&i| g.node[i].output.iter().filter(|o| !o.is_empty()).cloned())
        .collect()
}

/// Declared type of a tensor in the original graph (input, output or value_info).
fn declared<'a>(g: &'a GraphProto, name: &str) -> Option<&'a ValueInfoProto> {
    g.input
        .iter()
        .chain(g.output.iter())
        .chain(g.value_info.iter())
        .find(|v| v.name() == name && v.tensor_type().is_some())
}

/// Value info for a boundary tensor of a piece: original declarations for original graph
/// inputs/outputs, pare's shape inference for everything else (declared value_info and a
/// guess from the producer as fallbacks, with a note).
fn boundary_value_info(a: &Analysis, name: &str, notes: &mut Vec<String>) -> ValueInfoProto {
    let g = a.graph();
    let original_io = g
        .input
        .iter()
        .chain(g.output.iter())
        .find(|v| v.name() == name);
    if let Some(v) = original_io {
        let (_, dt, _) = vi_type(v);
        if dt.is_some() {
            return v.clone();
        }
    }
    let info = a.shapes.get(name);
    let decl = declared(g, name).map(vi_type);
    let dtype = info
        .and_then(|i| i.dtype)
        .or_else(|| decl.as_ref().and_then(|d| d.1));
    let shape = info
        .and_then(|i| i.shape.clone())
        .or_else(|| decl.as_ref().and_then(|d| d.2.clone()));
    let dtype = dtype.unwrap_or_else(|| {
        let producer = a.index.producer.get(name).map(|&p| &g.node[p]);
        let guess = producer
            .and_then(|n| n.input.iter().find(|i| !i.is_empty()))
            .and_then(|i| a.shapes.dtype(i))
            .unwrap_or(DataType::FLOAT);
        notes.push(format!(
            "the type of '{name}' is unknown to pare's shape inference{}; declared as {guess} (its producer's input type)",
            producer.map(|n| format!(" (produced by {} '{}')", n.op_type(), n.display_name())).unwrap_or_default()
        ));
        guess
    });
    make_value_info(name, dtype, shape.as_deref())
}

/// Identity of a function call: (domain, name, overload).
type FnKey = (String, String, String);

fn fn_key_of_node(n: &NodeProto) -> FnKey {
    (
        n.domain().to_string(),
        n.op_type().to_string(),
        n.overload().to_string(),
    )
}

fn fn_key(f: &FunctionProto) -> FnKey {
    (
        f.domain().to_string(),
        f.name().to_string(),
        f.overload().to_string(),
    )
}

/// Local functions called by `nodes` (nested graphs and function bodies included).
fn used_functions(m: &ModelProto, nodes: &[&NodeProto]) -> Vec<FunctionProto> {
    if m.functions.is_empty() {
        return Vec::new();
    }
    let by_key: HashMap<FnKey, &FunctionProto> =
        m.functions.iter().map(|f| (fn_key(f), f)).collect();
    let mut used: HashSet<FnKey> = HashSet::new();
    let mut stack: Vec<&NodeProto> = nodes.to_vec();
    while let Some(n) = stack.pop() {
        for (_, sub) in n.subgraphs() {
            stack.extend(sub.node.iter());
        }
        let k = fn_key_of_node(n);
        if let Some(f) = by_key.get(&k)
            && used.insert(k)
        {
            stack.extend(f.node.iter());
        }
    }
    m.functions
        .iter()
        .filter(|f| used.contains(&fn_key(f)))
        .cloned()
        .collect()
}

/// Builds the standalone model holding the original top-level `nodes`, with the given graph
/// inputs and outputs. The caller guarantees that every tensor the nodes read is produced by
/// one of them, an initializer or one of `inputs`.
pub fn build_piece(
    a: &Analysis,
    nodes: &BTreeSet<usize>,
    inputs: &[String],
    outputs: &[String],
    mut notes: Vec<String>,
) -> Result<Piece> {
    let g = a.graph();
    let order: Vec<usize> = a
        .index
        .topo
        .iter()
        .copied()
        .filter(|i| nodes.contains(i))
        .collect();
    let produced = produced_by(g, nodes);
    // Initializers read by the kept nodes, including outer-scope reads of their bodies.
    let mut used_inits: HashSet<&str> = HashSet::new();
    for &i in &order {
        for t in a.index.all_inputs(&g.node[i], i) {
            if a.index.initializers.contains_key(t) && !inputs.iter().any(|x| x == t) {
                used_inits.insert(t);
            }
        }
    }
    for o in outputs {
        if a.index.initializers.contains_key(o) && !produced.contains(o) {
            used_inits.insert(o);
        }
    }
    let initializer: Vec<_> = g
        .initializer
        .iter()
        .filter(|t| used_inits.contains(t.name()))
        .cloned()
        .collect();
    let sparse_initializer: Vec<_> = g
        .sparse_initializer
        .iter()
        .filter(|s| {
            s.values
                .as_ref()
                .is_some_and(|v| used_inits.contains(v.name()))
        })
        .cloned()
        .collect();
    let initializer_bytes: u64 = initializer
        .iter()
        .map(|t| crate::model::tensor::payload_len(t) as u64)
        .sum::<u64>()
        + sparse_initializer
            .iter()
            .flat_map(|s| s.values.iter().chain(s.indices.iter()))
            .map(|t| crate::model::tensor::payload_len(t) as u64)
            .sum::<u64>();

    let mut input_vi: Vec<ValueInfoProto> = inputs
        .iter()
        .map(|n| boundary_value_info(a, n, &mut notes))
        .collect();
    // Initializers the source also listed as graph inputs (overridable, or IR < 4) stay listed.
    for v in &g.input {
        if used_inits.contains(v.name()) {
            input_vi.push(v.clone());
        }
    }
    let output_vi: Vec<ValueInfoProto> = outputs
        .iter()
        .map(|n| boundary_value_info(a, n, &mut notes))
        .collect();
    let boundary: HashSet<&str> = inputs
        .iter()
        .chain(outputs.iter())
        .map(String::as_str)
        .collect();
    let value_info: Vec<ValueInfoProto> = g
        .value_info
        .iter()
        .filter(|v| produced.contains(v.name()) && !boundary.contains(v.name()))
        .cloned()
        .collect();
    let in_piece = |t: &str| produced.contains(t) || used_inits.contains(t) || boundary.contains(t);
    let quantization_annotation = g
        .quantization_annotation
        .iter()
        .filter(|q| in_piece(q.tensor_name()))
        .cloned()
        .collect();
    let node: Vec<NodeProto> = order.iter().map(|&i| g.node[i].clone()).collect();
    let node_refs: Vec<&NodeProto> = node.iter().collect();
    let functions = used_functions(&a.model.proto, &node_refs);
    let graph = GraphProto {
        node,
        name: g.name.clone(),
        initializer,
        sparse_initializer,
        doc_string: None,
        input: input_vi,
        output: output_vi,
        value_info,
        quantization_annotation,
        metadata_props: g.metadata_props.clone(),
    };
    let src = &a.model.proto;
    let proto = ModelProto {
        ir_version: src.ir_version,
        opset_import: src.opset_import.clone(),
        producer_name: src.producer_name.clone(),
        producer_version: src.producer_version.clone(),
        domain: src.domain.clone(),
        model_version: src.model_version,
        doc_string: src.doc_string.clone(),
        graph: Some(graph),
        metadata_props: src.metadata_props.clone(),
        training_info: Vec::new(),
        functions,
        configuration: src.configuration.clone(),
    };
    let external_tensors = a
        .model
        .external_tensors
        .iter()
        .filter(|t| used_inits.contains(t.as_str()))
        .cloned()
        .collect();
    let model = Model {
        proto,
        path: None,
        file_size: 0,
        external_tensors,
    };
    let mut piece = Piece {
        model,
        inputs: inputs.to_vec(),
        outputs: outputs.to_vec(),
        nodes: order,
        initializers: used_inits.len(),
        initializer_bytes,
        notes,
    };
    data::complete_shapes(a, &mut piece);
    Ok(piece)
}

/// Extracts what `sel` selects.
pub fn extract_selection(a: &Analysis, sel: &Selector) -> Result<(Boundary, Piece)> {
    let b = resolve(a, sel)?;
    let p = extract(a, &b.inputs, &b.outputs)?;
    Ok((b, p))
}

// ---------------------------------------------------------------------------------------------
// The equivalent command line.

/// Quotes a word for POSIX shells when it needs it.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:+=@%^,".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn list_flag(flag: &str, names: &[String]) -> String {
    if names.iter().any(|n| n.contains(',')) {
        names
            .iter()
            .map(|n| format!(" {flag} {}", shell_quote(n)))
            .collect()
    } else {
        format!(" {flag} {}", shell_quote(&names.join(",")))
    }
}

/// `pare extract MODEL --inputs .. --outputs .. -o OUT [--input-shape ..]`: the tensor form of
/// any selection, which reproduces the piece exactly.
pub fn command_line(
    model: &Path,
    out: &Path,
    inputs: &[String],
    outputs: &[String],
    pins: &crate::model::InputPins,
) -> String {
    let mut s = format!("pare extract {}", shell_quote(&model.display().to_string()));
    if !inputs.is_empty() {
        s.push_str(&list_flag("--inputs", inputs));
    }
    s.push_str(&list_flag("--outputs", outputs));
    s.push_str(&format!(" -o {}", shell_quote(&out.display().to_string())));
    let mut pins: Vec<_> = pins.iter().collect();
    pins.sort();
    for (name, dims) in pins {
        let d = dims
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join("x");
        s.push_str(&format!(
            " --input-shape {}",
            shell_quote(&format!("{name}:{d}"))
        ));
    }
    s
}

/// Splits comma-separated tensor lists, keeping a whole argument that names a tensor as is
/// (tensor names may contain commas).
pub fn split_names(a: &Analysis, args: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for arg in args {
        if is_tensor(a, arg) {
            v.push(arg.clone());
        } else {
            v.extend(
                arg.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
    }
    v
}
