//! Inputs TensorRT needs as build-time constants: Squeeze/Unsqueeze axes, Slice/Pad axes,
//! TopK's K, reduction axes.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;
use crate::model::shape::Dim;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L8",
        title: "Squeeze axes not an initializer",
        seed_case: Some("Q4"),
        applies: "TensorRT 7.x–10.14 (opset ≥ 13): error; 10.15: error unless resolvable to a constant",
        explanation: "From opset 13 Squeeze takes its axes as an input. TensorRT's parser reads them \
            only from an initializer (or Constant node); axes computed by other nodes — as exporters \
            produce for dynamic shapes — are refused ('axes must be an initializer').",
        snippet: "x = x.squeeze(1)          # a literal dim exports constant axes\n\
            x = x[:, 0]               # or index, which needs no axes at all",
        fix: Some(FixKind::ConstInputs),
        check: squeeze_axes,
    },
    Rule {
        id: "L9",
        title: "Squeeze without axes on a dynamic shape",
        seed_case: Some("Q11"),
        applies: "TensorRT 10.1–11.4: error; earlier: warning; 11.5+: accepted",
        explanation: "A Squeeze without axes removes every dim that is 1 — which TensorRT must know at \
            build time. With dynamic dims it cannot: 'Cannot infer squeeze dimensions from a dynamic \
            shape! Please re-export your model with the Squeeze axes input set.'",
        snippet: "x = x.squeeze(1)          # always name the dim: never x.squeeze()",
        fix: Some(FixKind::ConstInputs),
        check: squeeze_no_axes,
    },
    Rule {
        id: "L10",
        title: "Axes, K or similar input not a build-time constant",
        seed_case: Some("P11"),
        applies: "TensorRT: Unsqueeze axes and Slice axes (all), Pad axes (10.0–10.1), TopK K (8.2–8.4), Reduce*/CumSum axis/OneHot depth (10.15): error",
        explanation: "These inputs decide the output's rank or layout, so TensorRT's parser needs their \
            values when it builds the network: they must be initializers (or Constant nodes). \
            Computed values (Shape → Gather → … chains) are refused even when they are constant in \
            practice; pare fix folds them when their value is known.",
        snippet: "# use Python ints for dims and sizes in forward(), not tensors:\n\
            k = int(x.shape[1])       # instead of k = x.shape[1] under tracing → Shape/Gather nodes\n\
            x = x.unsqueeze(2)",
        fix: Some(FixKind::ConstInputs),
        check: const_inputs,
    },
];

fn squeeze_axes(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if cx.opset < 13 {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Squeeze" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let axes = cx.input(n, 1);
        if axes.is_empty() || cx.is_weights(axes) {
            continue;
        }
        let known = cx.is_known(axes);
        if v >= 1015 && known {
            continue;
        }
        sink.emit(
            Severity::Error,
            vec![n.display_name()],
            format!(
                "Squeeze axes '{axes}' are computed ({}), not an initializer: {} refuses them{}",
                cx.lineage(axes, 4),
                cx.target.short(),
                if known {
                    "; their value is known, so `pare fix` makes them a constant"
                } else {
                    ""
                }
            ),
            known,
        );
    }
}

fn squeeze_no_axes(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v >= 1105 {
        return; // 11.5 resolves axis-less Squeeze at build time
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Squeeze" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let has_axes = if cx.opset >= 13 {
            !cx.input(n, 1).is_empty()
        } else {
            n.attr("axes").is_some()
        };
        if has_axes {
            continue;
        }
        let x = cx.input(n, 0);
        let declared = cx.unpinned().shapes.shape(x);
        let dynamic = declared.is_none_or(|s| s.iter().any(|d| !matches!(d, Dim::Known(_))));
        if !dynamic {
            continue; // static: TensorRT sees which dims are 1
        }
        let pinned = cx.static_shape(x);
        sink.emit(
            if v >= 1001 { Severity::Error } else { Severity::Warning },
            vec![n.display_name()],
            format!(
                "Squeeze without axes on '{x}' of shape {}: {} cannot tell which dims are 1{}",
                crate::model::shape::format_shape(declared),
                cx.target.short(),
                match &pinned {
                    Some(s) => format!("; with the pinned shapes it is {s:?}, so `pare fix` writes explicit axes (and pins the inputs)"),
                    None => "; pin the input shapes so `pare fix` can write explicit axes, or re-export with squeeze(dim)".into(),
                }
            ),
            pinned.is_some(),
        );
    }
}

/// (input index, what it is) that TensorRT version `v` needs constant (from the op table).
fn needs_const(op: &str, v: u16, opset: i64) -> Vec<(usize, &'static str)> {
    crate::ops::lookup(op)
        .and_then(|d| d.trt_const)
        .map_or_else(Vec::new, |f| f(opset, v).to_vec())
}

fn const_inputs(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for nr in &cx.nodes {
        let n = nr.node;
        if !n.op_domain().is_empty() {
            continue;
        }
        for (i, what) in needs_const(n.op_type(), v, cx.opset) {
            let t = cx.input(n, i);
            if t.is_empty() || cx.is_weights(t) {
                continue;
            }
            let known = cx.is_known(t);
            if v >= 1015 && known {
                continue;
            }
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{} {what} '{t}' is computed ({}), not an initializer: {} needs it constant{}",
                    n.op_type(),
                    cx.lineage(t, 4),
                    cx.target.short(),
                    if known {
                        "; its value is known, so `pare fix` makes it a constant"
                    } else {
                        ""
                    }
                ),
                known,
            );
        }
    }
}
