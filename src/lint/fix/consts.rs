//! Inputs TensorRT needs as constants (axes, K, pads, scales, sizes, shapes, Q/DQ
//! parameters) become initializers when their values are known; a Squeeze without axes on a
//! known shape gets explicit axes.

use super::{FixAction, Pass, edit};
use crate::model::builder::attr_ints;
use crate::model::proto::GraphProto;

/// (input index, what) pairs that parsers want constant, per op (from the op table).
fn const_positions(op: &str, opset: i64) -> &'static [(usize, &'static str)] {
    crate::ops::lookup(op).map_or(&[], |d| d.const_positions(opset))
}

pub fn const_inputs(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let opset = p.cx.opset;
    let mut actions = Vec::new();
    let mut inits = Vec::new();
    for n in &mut g.node {
        if !n.op_domain().is_empty() {
            continue;
        }
        let mut done = Vec::new();
        for &(i, what) in const_positions(n.op_type(), opset) {
            let Some(t) = n.input.get(i).cloned() else {
                continue;
            };
            if t.is_empty() || p.cx.is_weights(&t) || !p.cx.is_known(&t) {
                continue;
            }
            let name = p.names.fresh(&format!("{}/{what}", n.display_name()));
            let Some(c) = p.constant_of(&t, &name) else {
                p.names.reserve(&name);
                continue;
            };
            inits.push(c);
            n.input[i] = name;
            done.push(format!("{what} (was computed: {})", p.cx.lineage(&t, 4)));
        }
        // Squeeze without axes on a known shape: spell the axes out.
        if n.op_type() == "Squeeze" && done.is_empty() {
            let has_axes = if opset >= 13 {
                n.input.get(1).is_some_and(|s| !s.is_empty())
            } else {
                n.attr("axes").is_some()
            };
            let x = n.input.first().cloned().unwrap_or_default();
            if !has_axes && let Some(shape) = p.static_shape(&x) {
                let axes: Vec<i64> = shape
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| **d == 1)
                    .map(|(k, _)| k as i64)
                    .collect();
                if opset >= 13 {
                    let name = p.names.fresh(&format!("{}/axes", n.display_name()));
                    if let Some(c) = edit::tensor_i64(
                        &name,
                        crate::model::DataType::INT64,
                        &[axes.len() as i64],
                        &axes,
                    ) {
                        inits.push(c);
                        n.input.truncate(1);
                        n.input.push(name);
                    }
                } else {
                    n.attribute.push(attr_ints("axes", &axes));
                }
                done.push(format!("explicit axes {axes:?} (input shape {shape:?})"));
            }
        }
        if !done.is_empty() {
            actions.push(FixAction {
                fix: String::new(),
                rules: Vec::new(),
                nodes: vec![n.display_name()],
                description: format!(
                    "{} '{}': constant {}",
                    n.op_type(),
                    n.display_name(),
                    done.join(", ")
                ),
            });
        }
    }
    g.initializer.extend(inits);
    actions
}
