//! Graph editing helpers shared by the fixes: fresh names, constants from known values,
//! dead-node removal, topological order.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::error::{PareError, Result};
use crate::model::DataType;
use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::model::shape::Value;
pub use crate::model::tensor::f32_to_f16;
use crate::runtime::HostTensor;

/// Hands out names not used anywhere in a model (nodes, tensors, nested graphs).
#[derive(Clone, Debug, Default)]
pub struct NameGen {
    used: HashSet<String>,
}

impl NameGen {
    pub fn of(model: &ModelProto) -> Self {
        let mut g = NameGen::default();
        if let Some(graph) = model.graph() {
            g.add_graph(graph);
        }
        g
    }

    fn add_graph(&mut self, graph: &GraphProto) {
        for v in graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
        {
            self.used.insert(v.name().to_string());
        }
        for t in &graph.initializer {
            self.used.insert(t.name().to_string());
        }
        for n in &graph.node {
            self.used.insert(n.name().to_string());
            self.used.extend(n.input.iter().cloned());
            self.used.extend(n.output.iter().cloned());
            for (_, sub) in n.subgraphs() {
                self.add_graph(sub);
            }
        }
    }

    pub fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    pub fn is_used(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// `base`, else `base_1`, `base_2`, …; the result is reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while name.is_empty() || self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }
}

fn raw(name: &str, dtype: DataType, dims: &[i64], data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(dtype.0),
        raw_data: Some(Bytes::from(data)),
        ..Default::default()
    }
}

/// A tensor of `dtype` and `dims` holding `values` (converted), or `None` for types pare
/// does not write.
pub fn tensor_f64(
    name: &str,
    dtype: DataType,
    dims: &[i64],
    values: &[f64],
) -> Option<TensorProto> {
    let mut out = Vec::new();
    match dtype {
        DataType::FLOAT => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as f32).to_le_bytes())),
        DataType::DOUBLE => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::FLOAT16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f32_to_f16(*v as f32).to_le_bytes())),
        DataType::INT64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as i64).to_le_bytes())),
        DataType::INT32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as i32).to_le_bytes())),
        DataType::INT16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as i16).to_le_bytes())),
        DataType::INT8 => values.iter().for_each(|v| out.push(*v as i8 as u8)),
        DataType::UINT8 => values.iter().for_each(|v| out.push(*v as u8)),
        DataType::BOOL => values.iter().for_each(|v| out.push((*v != 0.0) as u8)),
        _ => return None,
    }
    Some(raw(name, dtype, dims, out))
}

/// Integer tensor with exact values (no float round trip).
pub fn tensor_i64(
    name: &str,
    dtype: DataType,
    dims: &[i64],
    values: &[i64],
) -> Option<TensorProto> {
    let mut out = Vec::new();
    match dtype {
        DataType::INT64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::INT32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as i32).to_le_bytes())),
        DataType::INT16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as i16).to_le_bytes())),
        DataType::INT8 => values.iter().for_each(|v| out.push(*v as i8 as u8)),
        DataType::UINT8 => values.iter().for_each(|v| out.push(*v as u8)),
        DataType::UINT16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as u16).to_le_bytes())),
        DataType::UINT32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as u32).to_le_bytes())),
        DataType::UINT64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as u64).to_le_bytes())),
        DataType::BOOL => values.iter().for_each(|v| out.push((*v != 0) as u8)),
        d if d.is_float() => {
            return tensor_f64(
                name,
                d,
                dims,
                &values.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            );
        }
        _ => return None,
    }
    Some(raw(name, dtype, dims, out))
}

/// A constant holding a value pare's inference computed.
pub fn tensor_from_value(
    name: &str,
    dtype: DataType,
    dims: &[i64],
    v: &Value,
) -> Option<TensorProto> {
    let n: i64 = dims.iter().product();
    if n as usize != v.len() {
        return None;
    }
    match v {
        Value::Int(_) => tensor_i64(name, dtype, dims, &v.as_ints()?),
        Value::Float(f) => {
            if dtype.is_float() {
                tensor_f64(name, dtype, dims, f)
            } else {
                None
            }
        }
    }
}

/// A host tensor as an initializer (the one raw-tensor codec, in its own type).
pub fn host_to_proto(name: &str, t: &HostTensor) -> TensorProto {
    let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    raw(name, t.dtype(), &dims, crate::data::codec::host_bytes(t))
}

/// An initializer as a host tensor.
pub fn proto_to_host(t: &TensorProto) -> Result<HostTensor> {
    crate::data::tensor_to_host(t)
}

/// Names a node reads: its inputs plus the names its nested graphs read from outside.
pub fn reads_of(n: &NodeProto) -> Vec<String> {
    let mut v: Vec<String> = n.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    for (_, g) in n.subgraphs() {
        for r in free_reads(g) {
            if !v.contains(&r) {
                v.push(r);
            }
        }
    }
    v
}

/// Names a graph reads from enclosing scopes.
pub fn free_reads(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &g.input {
        defined.insert(i.name());
    }
    for t in &g.initializer {
        defined.insert(t.name());
    }
    for n in &g.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let mut out = Vec::new();
    let push = |s: String, out: &mut Vec<String>| {
        if !s.is_empty() && !defined.contains(s.as_str()) && !out.contains(&s) {
            out.push(s);
        }
    };
    for n in &g.node {
        for r in reads_of(n) {
            push(r, &mut out);
        }
    }
    for o in &g.output {
        push(o.name().to_string(), &mut out);
    }
    out
}

/// Removes nodes none of whose outputs is read (graph outputs and nested reads count), then
/// initializers that were read before and no longer are. Returns the removed nodes' names.
pub fn dce(g: &mut GraphProto) -> Vec<String> {
    let used_names = |g: &GraphProto| -> HashSet<String> {
        let mut used: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
        for n in &g.node {
            used.extend(reads_of(n));
        }
        used
    };
    let before = used_names(g);
    let mut removed = Vec::new();
    loop {
        let used = used_names(g);
        let n0 = g.node.len();
        let mut keep = Vec::with_capacity(n0);
        for n in std::mem::take(&mut g.node) {
            if n.output.iter().any(|o| !o.is_empty() && used.contains(o)) {
                keep.push(n);
            } else {
                removed.push(n.display_name());
            }
        }
        g.node = keep;
        if g.node.len() == n0 {
            break;
        }
    }
    let after = used_names(g);
    let dropped: HashSet<String> = g
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| before.contains(n) && !after.contains(n))
        .collect();
    if !dropped.is_empty() {
        g.initializer.retain(|t| !dropped.contains(t.name()));
        g.input.retain(|i| !dropped.contains(i.name()));
    }
    prune_value_info(g);
    removed
}

/// Drops value_info entries of tensors the graph no longer has.
pub fn prune_value_info(g: &mut GraphProto) {
    let mut defined: HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for n in &g.node {
        defined.extend(n.output.iter().cloned());
    }
    g.value_info.retain(|v| defined.contains(v.name()));
}

/// Reorders nodes topologically (stable: ties keep their current order).
pub fn sort_topologically(g: &mut GraphProto) -> Result<()> {
    let n = g.node.len();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in g.node.iter().enumerate() {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, i);
        }
    }
    let mut indeg = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.node.iter().enumerate() {
        let mut preds: Vec<usize> = reads_of(node)
            .iter()
            .filter_map(|r| producer.get(r.as_str()).copied())
            .collect();
        preds.sort_unstable();
        preds.dedup();
        for p in preds {
            if p != i {
                succ[p].push(i);
                indeg[i] += 1;
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &succ[i] {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    if order.len() != n {
        return Err(PareError::InvalidModel(
            "the rewritten graph has a cycle".into(),
        ));
    }
    let mut old: Vec<Option<NodeProto>> =
        std::mem::take(&mut g.node).into_iter().map(Some).collect();
    g.node = order.into_iter().filter_map(|i| old[i].take()).collect();
    Ok(())
}

/// Renames tensor references (node inputs/outputs and graph outputs) in a graph and the
/// graphs nested in it.
pub fn rename_in_graph(g: &mut GraphProto, map: &HashMap<String, String>) {
    for n in &mut g.node {
        for s in n.input.iter_mut().chain(n.output.iter_mut()) {
            if let Some(r) = map.get(s.as_str()) {
                *s = r.clone();
            }
        }
        for sub in n.subgraphs_mut() {
            rename_in_graph(sub, map);
        }
    }
    for o in &mut g.output {
        if let Some(r) = o.name.as_ref().and_then(|n| map.get(n)) {
            o.name = Some(r.clone());
        }
    }
    for t in &mut g.initializer {
        if let Some(r) = t.name.as_ref().and_then(|n| map.get(n)) {
            t.name = Some(r.clone());
        }
    }
}

/// A plain node.
pub fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<crate::model::proto::AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_round_trips() {
        for x in [
            0.0f32,
            1.0,
            -2.5,
            65504.0,
            6.1e-5,
            1e-7,
            f32::INFINITY,
            0.333_333,
        ] {
            let h = f32_to_f16(x);
            let back = crate::model::tensor::f16_to_f32(h);
            assert!(
                back == x || (back - x).abs() <= x.abs() * 1e-3 + 1e-7,
                "{x} -> {back}"
            );
        }
        assert_eq!(f32_to_f16(1e6), 0x7c00, "overflow is infinity");
    }

    #[test]
    fn fresh_names_never_collide() {
        let mut g = NameGen::default();
        g.reserve("a");
        assert_eq!(g.fresh("a"), "a_1");
        assert_eq!(g.fresh("a"), "a_2");
        assert_eq!(g.fresh("b"), "b");
    }

    #[test]
    fn dce_keeps_outputs_and_nested_reads() {
        use crate::model::builder::{GraphBuilder, attr_g};
        let mut b = GraphBuilder::new("g");
        b.input("x", &[crate::model::builder::D::N(1)]);
        let dead = b.op("Relu", &["x"], vec![]);
        let used = b.op("Neg", &["x"], vec![]);
        let mut t = GraphBuilder::new("t");
        t.node_named("/t/Id", "Identity", &[&used], &["t_out"], vec![]);
        t.output_typed("t_out", DataType::FLOAT, None);
        let c = b.init_i64("c", &[], &[1]);
        let tg = t.graph();
        b.node_named(
            "/If",
            "If",
            &[&c],
            &["y"],
            vec![attr_g("then_branch", tg.clone()), attr_g("else_branch", tg)],
        );
        b.output_typed("y", DataType::FLOAT, None);
        let mut g = b.graph();
        let removed = dce(&mut g);
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(g.node.iter().all(|n| n.output.first() != Some(&dead)));
        assert!(
            g.node.iter().any(|n| n.op_type() == "Neg"),
            "read only by the If's branches"
        );
    }
}
