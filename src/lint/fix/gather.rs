//! Negative GatherElements indices normalised (`idx < 0 ? idx + dim : idx`): constant
//! indices are rewritten in place; run-time indices get Less/Add/Where in front when asked
//! for (TensorRT 7.2–8.0 targets or an explicit --rule).

use super::{FixAction, Pass, edit};
use crate::lint::rules::gather_non_negative;
use crate::model::DataType;
use crate::model::builder::attr_i;
use crate::model::proto::GraphProto;

pub fn gather_indices(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let mut actions = Vec::new();
    let mut inits = Vec::new();
    let mut out_nodes = Vec::with_capacity(g.node.len());
    for mut n in std::mem::take(&mut g.node) {
        if n.op_type() != "GatherElements" || !n.op_domain().is_empty() || n.input.len() < 2 {
            out_nodes.push(n);
            continue;
        }
        let (data, idx) = (n.input[0].clone(), n.input[1].clone());
        let rank = p.cx.rank(&data).map(|r| r as i64);
        let axis = n.attr_i("axis").unwrap_or(0);
        let Some(rank) = rank else {
            out_nodes.push(n);
            continue;
        };
        let axis = if axis < 0 { axis + rank } else { axis };
        let idx_dtype = p.cx.dtype(&idx).unwrap_or(DataType::INT64);
        let dim =
            p.cx.static_shape(&data)
                .and_then(|s| s.get(axis as usize).copied());
        if let Some(vals) = p.ints(&idx) {
            if !vals.iter().any(|&v| v < 0) {
                out_nodes.push(n);
                continue;
            }
            let (Some(dim), Some(dims)) = (dim, p.static_shape(&idx)) else {
                out_nodes.push(n);
                continue;
            };
            p.static_shape(&data);
            let fixed: Vec<i64> = vals
                .iter()
                .map(|&v| if v < 0 { v + dim } else { v })
                .collect();
            let name = p.names.fresh(&format!("{}/indices", n.display_name()));
            let Some(t) = edit::tensor_i64(&name, idx_dtype, &dims, &fixed) else {
                out_nodes.push(n);
                continue;
            };
            inits.push(t);
            n.input[1] = name;
            actions.push(FixAction {
                fix: String::new(),
                rules: Vec::new(),
                nodes: vec![n.display_name()],
                description: format!(
                    "GatherElements '{}': negative constant indices normalised (+{dim})",
                    n.display_name()
                ),
            });
            out_nodes.push(n);
            continue;
        }
        if !p.runtime_gather || gather_non_negative(&p.cx, &idx) {
            out_nodes.push(n);
            continue;
        }
        let base = n.display_name();
        let zero = p.names.fresh(&format!("{base}/zero"));
        let Some(zt) = edit::tensor_i64(&zero, idx_dtype, &[], &[0]) else {
            out_nodes.push(n);
            continue;
        };
        inits.push(zt);
        let dim_t = match dim {
            Some(d) => {
                p.static_shape(&data);
                let dn = p.names.fresh(&format!("{base}/dim"));
                let Some(t) = edit::tensor_i64(&dn, idx_dtype, &[], &[d]) else {
                    out_nodes.push(n);
                    continue;
                };
                inits.push(t);
                dn
            }
            None => {
                let shape = p.names.fresh(&format!("{base}/data_shape"));
                let axis_c = p.names.fresh(&format!("{base}/axis"));
                let gathered = p.names.fresh(&format!("{base}/dim"));
                if let Some(t) = edit::tensor_i64(&axis_c, DataType::INT64, &[], &[axis]) {
                    inits.push(t);
                }
                out_nodes.push(edit::node(
                    &p.names.fresh(&format!("{base}/Shape")),
                    "Shape",
                    &[&data],
                    &[&shape],
                    Vec::new(),
                ));
                out_nodes.push(edit::node(
                    &p.names.fresh(&format!("{base}/Gather")),
                    "Gather",
                    &[&shape, &axis_c],
                    &[&gathered],
                    vec![attr_i("axis", 0)],
                ));
                if idx_dtype != DataType::INT64 {
                    let cast = p.names.fresh(&format!("{base}/dim_cast"));
                    out_nodes.push(edit::node(
                        &p.names.fresh(&format!("{base}/Cast")),
                        "Cast",
                        &[&gathered],
                        &[&cast],
                        vec![attr_i("to", idx_dtype.0 as i64)],
                    ));
                    cast
                } else {
                    gathered
                }
            }
        };
        let neg = p.names.fresh(&format!("{base}/is_negative"));
        let plus = p.names.fresh(&format!("{base}/wrapped"));
        let norm = p.names.fresh(&format!("{base}/indices"));
        out_nodes.push(edit::node(
            &p.names.fresh(&format!("{base}/Less")),
            "Less",
            &[&idx, &zero],
            &[&neg],
            Vec::new(),
        ));
        out_nodes.push(edit::node(
            &p.names.fresh(&format!("{base}/Add")),
            "Add",
            &[&idx, &dim_t],
            &[&plus],
            Vec::new(),
        ));
        out_nodes.push(edit::node(
            &p.names.fresh(&format!("{base}/Where")),
            "Where",
            &[&neg, &plus, &idx],
            &[&norm],
            Vec::new(),
        ));
        n.input[1] = norm;
        actions.push(FixAction {
            fix: String::new(),
            rules: Vec::new(),
            nodes: vec![n.display_name()],
            description: format!(
                "GatherElements '{}': run-time indices normalised with Less/Add/Where",
                n.display_name()
            ),
        });
        out_nodes.push(n);
    }
    g.node = out_nodes;
    g.initializer.extend(inits);
    actions
}
