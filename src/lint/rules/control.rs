//! Control flow: `If` (seed Q4) and `Loop`.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::ctx::Origin;
use crate::lint::fix::FixKind;
use crate::model::proto::{GraphProto, NodeProto};
use crate::model::shape::format_shape;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L7",
        title: "If node",
        seed_case: Some("Q4"),
        applies: "TensorRT ≤ 7.2: error (no If importer); 8.0–10.x: warning (branches need broadcastable shapes, 10.1+ the same rank, and distinct output names — error when violated and the condition cannot be folded)",
        explanation: "torch.squeeze(x, dim) on a dim that is dynamic at export time becomes an If: \
            'is that dim 1? then Squeeze else Identity'. TensorRT before 8.0 cannot import If at all; \
            later versions inline it when the condition folds to a constant at build time and \
            otherwise need both branches to produce compatible shapes — the two branches of a \
            squeeze differ in rank. With known input shapes the condition is a constant, so pare \
            fix inlines the taken branch (graphsurgeon's flatten_subgraphs / onnx-optimizer's \
            eliminate_if_with_const_cond do the same).",
        snippet: "# index instead of squeeze: no If, static rank\n\
            x = x[:, 0]                # instead of torch.squeeze(x, 1) / x.squeeze(1)\n\
            # or export with static shapes (no dynamic_axes) so the condition is a constant",
        fix: Some(FixKind::FoldIf),
        check: if_nodes,
    },
    Rule {
        id: "L25",
        title: "Loop with dynamic trip count or shape-changing state",
        seed_case: None,
        applies: "TensorRT 10.1+: error (scan outputs need a static length, carried values a fixed shape)",
        explanation: "TensorRT's loop layer needs the length of scan outputs at build time and loop-carried \
            values whose shape does not change between iterations.",
        snippet: "# unroll short loops in forward() (Python loop over a constant range exports unrolled),\n\
            # or make the trip count a constant: for i in range(4): ...",
        fix: None,
        check: loops,
    },
];

fn branch<'a>(n: &'a NodeProto, attr: &str) -> Option<&'a GraphProto> {
    n.attr(attr).and_then(|a| a.g.as_deref())
}

fn truth(v: &[i64]) -> Option<bool> {
    (v.len() == 1).then(|| v[0] != 0)
}

/// Shapes can broadcast against each other (numpy rules), when both are known.
fn broadcastable(a: &[crate::model::shape::Dim], b: &[crate::model::shape::Dim]) -> Option<bool> {
    use crate::model::shape::Dim;
    let mut unknown = false;
    for k in 0..a.len().max(b.len()) {
        let x = if k < a.len() {
            &a[a.len() - 1 - k]
        } else {
            &Dim::Known(1)
        };
        let y = if k < b.len() {
            &b[b.len() - 1 - k]
        } else {
            &Dim::Known(1)
        };
        match (x, y) {
            (Dim::Known(p), Dim::Known(q)) if p != q && *p != 1 && *q != 1 => return Some(false),
            (Dim::Known(_), Dim::Known(_)) => {}
            (p, q) if p == q => {}
            _ => unknown = true,
        }
    }
    if unknown { None } else { Some(true) }
}

/// A branch's ops for messages (`Conv+Relu`, `pass-through`, `missing`).
fn branch_ops(g: Option<&GraphProto>) -> String {
    g.map(|g| {
        let v: Vec<&str> = g
            .node
            .iter()
            .map(|x| x.op_type())
            .filter(|o| *o != "Constant")
            .collect();
        if v.is_empty() {
            "pass-through".to_string()
        } else {
            v.join("+")
        }
    })
    .unwrap_or_else(|| "missing".into())
}

/// How an If's two branches' outputs compare (names, ranks, shapes).
#[derive(Default)]
struct BranchShapes {
    notes: Vec<String>,
    rank_mismatch: bool,
    not_bcast: bool,
    same_names: bool,
}

fn branch_shapes(
    cx: &LintCtx,
    tb: Option<&GraphProto>,
    eb: Option<&GraphProto>,
    v: u16,
) -> BranchShapes {
    let mut b = BranchShapes::default();
    let (Some(t), Some(e)) = (tb, eb) else {
        return b;
    };
    for (k, (to, eo)) in t.output.iter().zip(&e.output).enumerate() {
        if to.name() == eo.name() {
            b.same_names = true;
        }
        let (Some(ts), Some(es)) = (cx.shape(to.name()), cx.shape(eo.name())) else {
            continue;
        };
        if ts.len() != es.len() {
            b.rank_mismatch = true;
            b.notes.push(format!(
                "output {k}: then {} (rank {}) vs else {} (rank {})",
                format_shape(Some(ts)),
                ts.len(),
                format_shape(Some(es)),
                es.len()
            ));
        }
        if broadcastable(ts, es) == Some(false) || ts.len() != es.len() && v < 1001 {
            // TensorRT#2846/#1650: the conditional output layer wants equal shapes in practice.
            b.not_bcast = true;
        }
    }
    b
}

fn if_nodes(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return; // onnxruntime runs If; tract is asked directly (T1)
    }
    let v = cx.target.trt().unwrap_or(0);
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "If" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let cond = cx.input(n, 0);
        let value = cx.ints(cond).and_then(|x| truth(&x));
        let how = {
            let l = cx.lineage(cond, 5);
            if l.is_empty() {
                format!("'{cond}'")
            } else {
                format!("{l} ('{cond}')")
            }
        };
        let (tb, eb) = (branch(n, "then_branch"), branch(n, "else_branch"));
        let BranchShapes {
            notes: shape_notes,
            rank_mismatch,
            not_bcast,
            same_names,
        } = branch_shapes(cx, tb, eb, v);
        let origin = cx.origin(cond);
        // Known without pins: it depends only on static dims, whatever the input size.
        let always = value.is_some()
            && cx
                .unpinned()
                .shapes
                .get(cond)
                .and_then(|i| i.int_values())
                .is_some();
        let when = if always {
            "always"
        } else {
            "under the pinned input shapes"
        };
        let branches = format!("then: {}, else: {}", branch_ops(tb), branch_ops(eb));
        if v < 800 {
            let tail = match (value, origin) {
                (Some(c), _) => format!(
                    "its condition {how} is {c} {when}: `pare fix` inlines the {} branch",
                    if c { "then" } else { "else" }
                ),
                (None, Origin::Data) => format!(
                    "its condition {how} depends on tensor values, so it cannot be folded: remove the construct in the source"
                ),
                (None, _) => format!(
                    "its condition {how} depends on dynamic input dims: pin them with --input-shape to let `pare fix` fold it"
                ),
            };
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{} cannot import If (supported from TensorRT 8.0; {branches}); {tail}",
                    cx.target.short()
                ),
                value.is_some(),
            );
            continue;
        }
        // 8.0 and later.
        let mut problems = Vec::new();
        if same_names {
            problems.push(
                "both branches name their output the same; TensorRT needs distinct names"
                    .to_string(),
            );
        }
        if rank_mismatch && v >= 1001 {
            problems.push(format!(
                "branch outputs differ in rank ({}); {} requires the same rank",
                shape_notes.join("; "),
                cx.target.short()
            ));
        } else if not_bcast {
            problems.push(format!(
                "branch outputs have different shapes ({}); the conditional output layer needs broadcastable (in practice equal) shapes — 'IIfConditionalOutputLayer inputs must have the same shape'",
                if shape_notes.is_empty() { "not broadcastable".to_string() } else { shape_notes.join("; ") }
            ));
        }
        let folds_at_build = value.is_some() && origin != Origin::Data;
        let (sev, msg) = match (folds_at_build, problems.is_empty()) {
            (true, true) => (
                Severity::Warning,
                format!(
                    "If ({branches}): its condition {how} is {} {when}, so TensorRT can fold it and inline the branch at build time; if it does not, both branches must be importable. `pare fix` removes it",
                    value.unwrap_or(false)
                ),
            ),
            (true, false) => (
                Severity::Warning,
                format!(
                    "If ({branches}): its condition {how} is {} {when}, so TensorRT can inline it at build time; if it does not fold it (dynamic dims): {}. `pare fix` removes it",
                    value.unwrap_or(false),
                    problems.join("; ")
                ),
            ),
            (false, true) => (
                Severity::Warning,
                format!(
                    "If ({branches}) with a run-time condition {how}: TensorRT builds a conditional; both branches must produce broadcastable shapes{} and distinct output names",
                    if v >= 1001 { " of the same rank" } else { "" }
                ),
            ),
            (false, false) => (
                Severity::Error,
                format!(
                    "If ({branches}) with a run-time condition {how}: {}",
                    problems.join("; ")
                ),
            ),
        };
        sink.emit(sev, vec![n.display_name()], msg, value.is_some());
    }
}

fn loops(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v < 1001 {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Loop" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let Some(body) = branch(n, "body") else {
            continue;
        };
        let n_carried = n.input.len().saturating_sub(2);
        let n_scan = n.output.len().saturating_sub(n_carried);
        let trip = cx.input(n, 0);
        let trip_known = !trip.is_empty() && cx.is_known(trip);
        let mut problems = Vec::new();
        if n_scan > 0 && !trip_known {
            problems.push(format!(
                "{n_scan} scan output(s) with a trip count not known at build time"
            ));
        }
        for k in 0..n_carried {
            let (Some(i), Some(o)) = (body.input.get(k + 2), body.output.get(k + 1)) else {
                continue;
            };
            if let (Some(a), Some(b)) = (cx.shape(i.name()), cx.shape(o.name()))
                && a.len() != b.len()
            {
                problems.push(format!(
                    "carried value {k} changes rank ({} → {})",
                    a.len(),
                    b.len()
                ));
            }
        }
        if !problems.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "Loop: {}; {} needs static scan lengths and fixed carried shapes",
                    problems.join("; "),
                    cx.target.short()
                ),
                false,
            );
        }
    }
}
