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

fn dims_of(shapes: &ShapeInfo, name: &str) -> Option<Vec<u64>> {
    shapes
        .static_shape(name)
        .map(|s| s.into_iter().map(|d| d.max(0) as u64).collect())
}

/// MACs of one node, for the ops that dominate vision models.
pub fn node_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
    match node.op_type() {
        "Conv" => {
            let w = dims_of(shapes, input(1)?)?;
            let out = dims_of(shapes, node.output.first()?)?;
            // out numel × (Cin/group × kernel) = out numel × prod(w[1..]).
            Some(out.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
        }
        "ConvTranspose" => {
            let w = dims_of(shapes, input(1)?)?;
            let x = dims_of(shapes, input(0)?)?;
            // Every input element is multiplied into (Cout/group × kernel) outputs.
            Some(x.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
        }
        "Gemm" => {
            let a = dims_of(shapes, input(0)?)?;
            let out = dims_of(shapes, node.output.first()?)?;
            let trans_a = node.attr_i("transA").unwrap_or(0) != 0;
            let k = if trans_a { *a.first()? } else { *a.get(1)? };
            Some(out.iter().product::<u64>() * k)
        }
        "MatMul" => {
            let a = dims_of(shapes, input(0)?)?;
            let out = dims_of(shapes, node.output.first()?)?;
            let k = *a.last()?;
            Some(out.iter().product::<u64>().max(1) * k)
        }
        _ => Some(0),
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
