//! Parameter and compute statistics per node and per model.
//!
//! MACs are counted the way pruning papers and Torch-Pruning count them (one multiply-add per
//! weight use), so before/after numbers can be compared with those tools.

use super::graph::GraphIndex;
use super::proto::{GraphProto, NodeProto, TensorProto};
use super::shape::ShapeInfo;
use super::tensor::DataType;

/// Cost of one node.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct NodeCost {
    /// Position in the main graph.
    pub node: usize,
    pub name: String,
    pub op_type: String,
    /// Float weights this node reads from initializers.
    pub params: u64,
    /// Multiply-accumulates; `None` when shapes needed for it are unknown.
    pub macs: Option<u64>,
}

fn is_float(t: &TensorProto) -> bool {
    DataType(t.data_type()).is_float()
}

/// Float parameters of a graph: initializers and float `Constant` values, nested graphs
/// included (the count reviewers and pare_eval use).
pub fn graph_params(g: &GraphProto) -> u64 {
    let mut n: u64 = g
        .initializer
        .iter()
        .filter(|t| is_float(t))
        .map(TensorProto::numel)
        .sum();
    for node in &g.node {
        if node.op_type() == "Constant"
            && let Some(t) = node.attr_t("value").filter(|t| is_float(t))
        {
            n += t.numel();
        }
        for (_, sub) in node.subgraphs() {
            n += graph_params(sub);
        }
    }
    n
}

/// MACs of one node, from the op table's formula (weighted layers: Conv, ConvTranspose, Gemm,
/// MatMul); ops without one, and ops missing from the table, count 0.
pub fn node_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    match crate::ops::lookup(node.op_type()).and_then(|d| d.macs) {
        Some(f) => f(node, shapes),
        None => Some(0),
    }
}

/// Float parameters a node reads directly from initializers.
pub fn node_params(node: &NodeProto, g: &GraphProto, index: &GraphIndex) -> u64 {
    node.input
        .iter()
        .filter_map(|i| index.initializers.get(i))
        .filter_map(|&k| g.initializer.get(k))
        .filter(|t| is_float(t))
        .map(TensorProto::numel)
        .sum()
}

/// Costs of every node of the main graph, in file order.
pub fn node_costs(g: &GraphProto, index: &GraphIndex, shapes: &ShapeInfo) -> Vec<NodeCost> {
    g.node
        .iter()
        .enumerate()
        .map(|(i, n)| NodeCost {
            node: i,
            name: n.display_name(),
            op_type: n.op_type().to_string(),
            params: node_params(n, g, index),
            macs: node_macs(n, shapes),
        })
        .collect()
}

/// Bytes of all intermediate activations with static shapes (node outputs of the main graph).
pub fn activation_bytes(g: &GraphProto, shapes: &ShapeInfo) -> u64 {
    g.node
        .iter()
        .flat_map(|n| n.output.iter())
        .filter_map(|o| {
            let info = shapes.get(o)?;
            let numel = info.numel()? as u64;
            Some(numel * info.dtype.map(|d| d.bits() / 8).unwrap_or(4))
        })
        .sum()
}
