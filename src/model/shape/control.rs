//! Control flow: If, Loop, Scan.
//!
//! Both branches of an `If` are always inferred, so every tensor inside them has info. When
//! the condition is a known constant (typically `Equal(Shape(x)[1], 1)` with pinned inputs,
//! which is how PyTorch exports `squeeze(dim)` on a dynamic dim) the outputs are the taken
//! branch's, and diagnostics raised inside the dead branch are dropped: they describe code
//! that never runs. With an unknown condition the two branches' infos are merged.

use super::infer::{Infer, declared_info, graph_attr};
use super::{Dim, SeqInfo, TensorInfo, Value, ValueKind};
use crate::model::graph::GraphIndex;
use crate::model::proto::{GraphProto, NodeProto};
use crate::model::tensor::DataType;

/// What is common to two infos of the same tensor (dims that differ become `Unknown`, ranks
/// that differ make the rank unknown).
pub fn merge_infos(a: &TensorInfo, b: &TensorInfo) -> TensorInfo {
    let dtype = if a.dtype == b.dtype { a.dtype } else { None };
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.len() == y.len() => Some(
            x.iter()
                .zip(y)
                .map(|(p, q)| if p == q { p.clone() } else { Dim::Unknown })
                .collect(),
        ),
        _ => None,
    };
    let value = if a.value == b.value {
        a.value.clone()
    } else {
        None
    };
    let kind = match (&a.kind, &b.kind) {
        (x, y) if x == y => x.clone(),
        (ValueKind::Sequence(x), ValueKind::Sequence(y)) => {
            let items = match (&x.items, &y.items) {
                (Some(p), Some(q)) if p.len() == q.len() => {
                    Some(p.iter().zip(q).map(|(u, v)| merge_infos(u, v)).collect())
                }
                _ => None,
            };
            ValueKind::Sequence(Box::new(SeqInfo {
                elem: merge_infos(&x.elem, &y.elem),
                items,
            }))
        }
        (ValueKind::Optional(x), ValueKind::Optional(y)) => {
            ValueKind::Optional(Box::new(merge_infos(x, y)))
        }
        _ => ValueKind::Tensor,
    };
    TensorInfo {
        dtype,
        shape,
        value,
        kind,
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Int(x) if x.len() == 1 => x[0].known().map(|v| v != 0),
        Value::Float(x) if x.len() == 1 => Some(x[0] != 0.0),
        _ => None,
    }
}

/// Nested graph `attr` of node `id`, with its index.
fn nested<'a>(
    index: &'a GraphIndex,
    node: &'a NodeProto,
    id: usize,
    attr: &str,
) -> Option<(&'a GraphProto, &'a GraphIndex)> {
    let g = graph_attr(node, attr)?;
    let ix = index
        .subgraphs
        .iter()
        .find(|s| s.node == id && s.attribute == attr)?;
    Some((g, &ix.index))
}

fn outputs_of(inf: &Infer, g: &GraphProto) -> Vec<TensorInfo> {
    g.output
        .iter()
        .map(|o| inf.tensors.get(o.name()).cloned().unwrap_or_default())
        .collect()
}

fn write_outputs(inf: &mut Infer, node: &NodeProto, outs: Vec<TensorInfo>) {
    let mut it = outs.into_iter();
    for o in &node.output {
        let info = it.next().unwrap_or_default();
        if !o.is_empty() {
            inf.tensors.insert(o.clone(), info);
        }
    }
}

/// `If`: infer both branches; take the known branch, else merge.
pub fn infer_if(
    inf: &mut Infer,
    _graph: &GraphProto,
    index: &GraphIndex,
    id: usize,
    node: &NodeProto,
) {
    let cond = node
        .input
        .first()
        .and_then(|n| inf.tensors.get(n))
        .and_then(|t| t.value.as_ref())
        .and_then(truth);
    let mut results: Vec<Option<Vec<TensorInfo>>> = Vec::new();
    for (k, attr) in ["then_branch", "else_branch"].iter().enumerate() {
        let Some((g, ix)) = nested(index, node, id, attr) else {
            inf.diag(node, format!("If has no {attr} graph"));
            results.push(None);
            continue;
        };
        let dead = cond.is_some_and(|c| c != (k == 0));
        let before = inf.diags.len();
        inf.run_graph(g, ix, None);
        if dead {
            inf.diags.truncate(before);
        }
        results.push(Some(outputs_of(inf, g)));
    }
    let n = node.output.len();
    let (t, e) = (results[0].take(), results[1].take());
    if let (Some(t), Some(e)) = (&t, &e)
        && (t.len() != n || e.len() != n)
    {
        inf.diag(
            node,
            format!(
                "branches have {} and {} outputs for {n} If outputs",
                t.len(),
                e.len()
            ),
        );
    }
    let outs = match (cond, t, e) {
        (Some(true), Some(t), _) => t,
        (Some(false), _, Some(e)) => e,
        (None, Some(t), Some(e)) => t.iter().zip(&e).map(|(a, b)| merge_infos(a, b)).collect(),
        _ => vec![TensorInfo::default(); n],
    };
    write_outputs(inf, node, outs);
}

/// `Loop(M, cond, v_initial...)`: body inputs are (iteration, cond, carried...), body outputs
/// (cond, carried..., scan...). Carried values merge with their initial infos; scan outputs
/// stack along a new first axis of length M when the loop cannot stop early.
pub fn infer_loop(inf: &mut Infer, index: &GraphIndex, id: usize, node: &NodeProto) {
    let Some((body, ix)) = nested(index, node, id, "body") else {
        inf.diag(node, "Loop has no body graph");
        write_outputs(inf, node, vec![]);
        return;
    };
    let get = |inf: &Infer, i: usize| -> Option<TensorInfo> {
        let n = node.input.get(i).filter(|s| !s.is_empty())?;
        inf.tensors.get(n).cloned()
    };
    let n_carried = node.input.len().saturating_sub(2);
    let initial: Vec<TensorInfo> = (0..n_carried)
        .map(|k| {
            get(inf, 2 + k)
                .map(|t| TensorInfo { value: None, ..t })
                .unwrap_or_default()
        })
        .collect();
    // When the loop starts with a true condition, the body's condition input is seeded true:
    // if the body's condition output then comes out true too, by induction every iteration
    // runs and the trip count is M.
    let cond_in_true = get(inf, 1).is_none_or(|t| t.value.as_ref().and_then(truth) == Some(true));
    for (k, vi) in body.input.iter().enumerate() {
        let info = match k {
            0 => TensorInfo::new(Some(DataType::INT64), Some(vec![])),
            1 => {
                let t = TensorInfo::new(Some(DataType::BOOL), Some(vec![]));
                if cond_in_true {
                    t.with_value(Value::Int(vec![Dim::Known(1)]))
                } else {
                    t
                }
            }
            _ => {
                let init = initial.get(k - 2).cloned().unwrap_or_default();
                if init.shape.is_none() {
                    declared_info(vi)
                } else {
                    init
                }
            }
        };
        inf.tensors.insert(vi.name().to_string(), info);
    }
    inf.run_graph(body, ix, None);
    let body_out = outputs_of(inf, body);
    let max_trip = get(inf, 0)
        .and_then(|t| t.value)
        .and_then(|v| v.as_ints())
        .and_then(|v| v.first().copied());
    let cond_out_true = body_out
        .first()
        .and_then(|t| t.value.as_ref())
        .and_then(truth)
        == Some(true);
    let trip = match max_trip {
        Some(m) if cond_in_true && cond_out_true => Dim::Known(m),
        _ => Dim::Unknown,
    };
    let mut outs = Vec::new();
    for (k, init) in initial.iter().enumerate() {
        let b = body_out.get(1 + k).cloned().unwrap_or_default();
        outs.push(merge_infos(init, &TensorInfo { value: None, ..b }));
    }
    for b in body_out.iter().skip(1 + n_carried) {
        let shape = b.shape.as_ref().map(|s| {
            let mut v = vec![trip.clone()];
            v.extend(s.iter().cloned());
            v
        });
        outs.push(TensorInfo::new(b.dtype, shape));
    }
    write_outputs(inf, node, outs);
}

/// `Scan` (opset 9+): states carried, scan inputs sliced along their scan axis, scan outputs
/// stacked along theirs. Opset 8's batched form is left unknown.
pub fn infer_scan(inf: &mut Infer, index: &GraphIndex, id: usize, node: &NodeProto) {
    let Some((body, ix)) = nested(index, node, id, "body") else {
        inf.diag(node, "Scan has no body graph");
        write_outputs(inf, node, vec![]);
        return;
    };
    if inf.opset < 9 {
        inf.diag(node, "Scan before opset 9 is not inferred; outputs unknown");
        write_outputs(inf, node, vec![]);
        return;
    }
    let m = node.attr_i("num_scan_inputs").unwrap_or(0).max(0) as usize;
    let n_state = node.input.len().saturating_sub(m);
    let in_axes = node
        .attr_ints("scan_input_axes")
        .map(<[i64]>::to_vec)
        .unwrap_or_default();
    let out_axes = node
        .attr_ints("scan_output_axes")
        .map(<[i64]>::to_vec)
        .unwrap_or_default();
    let info_of = |inf: &Infer, i: usize| -> TensorInfo {
        node.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|n| inf.tensors.get(n))
            .map(|t| TensorInfo {
                value: None,
                ..t.clone()
            })
            .unwrap_or_default()
    };
    let mut seq_len = Dim::Unknown;
    let mut body_inputs = Vec::new();
    for i in 0..node.input.len() {
        let mut t = info_of(inf, i);
        if i >= n_state {
            let k = i - n_state;
            t.shape = t.shape.and_then(|mut s| {
                let a = in_axes.get(k).copied().unwrap_or(0);
                let a = if a < 0 { a + s.len() as i64 } else { a };
                if !(0..s.len() as i64).contains(&a) {
                    return None;
                }
                let d = s.remove(a as usize);
                if k == 0 {
                    seq_len = d;
                }
                Some(s)
            });
        }
        body_inputs.push(t);
    }
    for (vi, t) in body.input.iter().zip(body_inputs.iter().cloned()) {
        let t = if t.shape.is_none() {
            declared_info(vi)
        } else {
            t
        };
        inf.tensors.insert(vi.name().to_string(), t);
    }
    inf.run_graph(body, ix, None);
    let body_out = outputs_of(inf, body);
    let mut outs = Vec::new();
    for (k, b) in body_out.iter().enumerate() {
        if k < n_state {
            outs.push(merge_infos(&body_inputs[k], b));
            continue;
        }
        let j = k - n_state;
        let shape = b.shape.as_ref().and_then(|s| {
            let a = out_axes.get(j).copied().unwrap_or(0);
            let r = s.len() as i64 + 1;
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) {
                return None;
            }
            let mut v = s.clone();
            v.insert(a as usize, seq_len.clone());
            Some(v)
        });
        outs.push(TensorInfo::new(b.dtype, shape));
    }
    write_outputs(inf, node, outs);
}
