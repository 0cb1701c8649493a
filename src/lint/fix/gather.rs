//! Negative GatherElements indices normalised (`idx < 0 ? idx + dim : idx`): constant
//! indices are rewritten in place; run-time indices get Less/Add/Where in front when asked
//! for (TensorRT 7.2–8.0 targets or an explicit --rule).

use super::{FixAction, Pass, edit};
use crate::lint::rules::gather_non_negative;
use crate::model::DataType;
use crate::model::builder::attr_i;
use crate::model::proto::{GraphProto, NodeProto, TensorProto};

pub fn gather_indices(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let mut e = Emitted::default();
    for mut n in std::mem::take(&mut g.node) {
        if n.op_type() == "GatherElements"
            && n.op_domain().is_empty()
            && n.input.len() >= 2
            && let Some(description) = normalise(p, &mut n, &mut e)
        {
            e.actions.push(FixAction {
                fix: String::new(),
                rules: Vec::new(),
                nodes: vec![n.display_name()],
                description,
            });
        }
        e.nodes.push(n);
    }
    g.node = e.nodes;
    g.initializer.extend(e.inits);
    e.actions
}

/// What the fix has written so far, in order.
#[derive(Default)]
struct Emitted {
    actions: Vec<FixAction>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

/// Normalises the indices of GatherElements `n` when they may be negative: its description,
/// or `None` when `n` stays as it is (helpers already emitted stay too, unread).
fn normalise(p: &mut Pass, n: &mut NodeProto, e: &mut Emitted) -> Option<String> {
    let (data, idx) = (n.input[0].clone(), n.input[1].clone());
    let rank = p.cx.rank(&data)? as i64;
    let axis = n.attr_i("axis").unwrap_or(0);
    let axis = if axis < 0 { axis + rank } else { axis };
    let idx_dtype = p.cx.dtype(&idx).unwrap_or(DataType::INT64);
    let dim =
        p.cx.static_shape(&data)
            .and_then(|s| s.get(axis as usize).copied());
    if let Some(vals) = p.ints(&idx) {
        if !vals.iter().any(|&v| v < 0) {
            return None;
        }
        let dims = p.static_shape(&idx);
        let (dim, dims) = (dim?, dims?);
        p.static_shape(&data);
        let fixed: Vec<i64> = vals
            .iter()
            .map(|&v| if v < 0 { v + dim } else { v })
            .collect();
        let name = p.names.fresh(&format!("{}/indices", n.display_name()));
        e.inits
            .push(edit::tensor_i64(&name, idx_dtype, &dims, &fixed)?);
        n.input[1] = name;
        return Some(format!(
            "GatherElements '{}': negative constant indices normalised (+{dim})",
            n.display_name()
        ));
    }
    if !p.runtime_gather || gather_non_negative(&p.cx, &idx) {
        return None;
    }
    let base = n.display_name();
    let zero = p.names.fresh(&format!("{base}/zero"));
    e.inits.push(edit::tensor_i64(&zero, idx_dtype, &[], &[0])?);
    let dim_t = match dim {
        Some(d) => {
            p.static_shape(&data);
            let dn = p.names.fresh(&format!("{base}/dim"));
            e.inits.push(edit::tensor_i64(&dn, idx_dtype, &[], &[d])?);
            dn
        }
        None => runtime_dim(p, &base, &data, axis, idx_dtype, e),
    };
    n.input[1] = wrap_negative(p, &base, &idx, &zero, &dim_t, e);
    Some(format!(
        "GatherElements '{}': run-time indices normalised with Less/Add/Where",
        n.display_name()
    ))
}

/// `Shape(data)[axis]` computed at run time (cast to the indices' type): its tensor name.
fn runtime_dim(
    p: &mut Pass,
    base: &str,
    data: &str,
    axis: i64,
    idx_dtype: DataType,
    e: &mut Emitted,
) -> String {
    let shape = p.names.fresh(&format!("{base}/data_shape"));
    let axis_c = p.names.fresh(&format!("{base}/axis"));
    let gathered = p.names.fresh(&format!("{base}/dim"));
    if let Some(t) = edit::tensor_i64(&axis_c, DataType::INT64, &[], &[axis]) {
        e.inits.push(t);
    }
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Shape")),
        "Shape",
        &[data],
        &[&shape],
        Vec::new(),
    ));
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Gather")),
        "Gather",
        &[&shape, &axis_c],
        &[&gathered],
        vec![attr_i("axis", 0)],
    ));
    if idx_dtype == DataType::INT64 {
        return gathered;
    }
    let cast = p.names.fresh(&format!("{base}/dim_cast"));
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Cast")),
        "Cast",
        &[&gathered],
        &[&cast],
        vec![attr_i("to", idx_dtype.0 as i64)],
    ));
    cast
}

/// `idx < 0 ? idx + dim : idx` as Less/Add/Where: the normalised indices' tensor name.
fn wrap_negative(
    p: &mut Pass,
    base: &str,
    idx: &str,
    zero: &str,
    dim_t: &str,
    e: &mut Emitted,
) -> String {
    let neg = p.names.fresh(&format!("{base}/is_negative"));
    let plus = p.names.fresh(&format!("{base}/wrapped"));
    let norm = p.names.fresh(&format!("{base}/indices"));
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Less")),
        "Less",
        &[idx, zero],
        &[&neg],
        Vec::new(),
    ));
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Add")),
        "Add",
        &[idx, dim_t],
        &[&plus],
        Vec::new(),
    ));
    e.nodes.push(edit::node(
        &p.names.fresh(&format!("{base}/Where")),
        "Where",
        &[&neg, &plus, idx],
        &[&norm],
        Vec::new(),
    ));
    norm
}
