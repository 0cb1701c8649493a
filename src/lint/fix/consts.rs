//! Inputs TensorRT needs as constants (axes, K, pads, scales, sizes, shapes, Q/DQ
//! parameters) become initializers when their values are known; a Squeeze without axes on a
//! known shape gets explicit axes.

use super::{FixAction, Pass, edit};
use crate::model::builder::attr_ints;
use crate::model::proto::GraphProto;

/// (input index, what) pairs that parsers want constant, per op.
fn const_positions(op: &str, opset: i64) -> &'static [(usize, &'static str)] {
    match op {
        "Squeeze" | "Unsqueeze" if opset >= 13 => &[(1, "axes")],
        "Slice" if opset >= 10 => &[(1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")],
        "Pad" if opset >= 11 => &[(1, "pads"), (2, "value"), (3, "axes")],
        "TopK" if opset >= 10 => &[(1, "k")],
        "ReduceSum" if opset >= 13 => &[(1, "axes")],
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare"
            if opset >= 18 =>
        {
            &[(1, "axes")]
        }
        "Resize" if opset >= 11 => &[(1, "roi"), (2, "scales"), (3, "sizes")],
        "Resize" | "Upsample" => &[(1, "scales")],
        "Reshape" => &[(1, "shape")],
        "Expand" => &[(1, "shape")],
        "Tile" => &[(1, "repeats")],
        "ConstantOfShape" => &[(0, "shape")],
        "CumSum" => &[(1, "axis")],
        "OneHot" => &[(1, "depth")],
        "QuantizeLinear" | "DequantizeLinear" => &[(1, "scale"), (2, "zero_point")],
        _ => &[],
    }
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
