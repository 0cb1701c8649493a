//! The tract target: instead of guessing, ask tract itself to load, type and optimise the
//! model, and map its error to the node it names.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::Target;
use crate::model::proto::ModelProto;
use crate::model::shape::InputPins;

pub const RULES: &[Rule] = &[Rule {
    id: "T1",
    title: "tract cannot load, type or optimise the model",
    seed_case: Some("Q1"),
    applies: "tract: error",
    explanation: "pare hands the model to tract (the pure-Rust ONNX runtime pare itself runs models with) \
        and reports the first node tract refuses, in tract's words. tract stops at the first problem: \
        fix it (often `pare fix` does) and lint again.",
    snippet: "# typical causes: a data-dependent If (torch.squeeze on a dynamic dim), an op tract lacks,\n\
        # or dims tract cannot type; pin input shapes (--input-shape) and run `pare fix`",
    fix: Some(crate::lint::fix::FixKind::FoldIf),
    check: probe_rule,
}];

/// Where tract stopped.
#[derive(Clone, Debug)]
pub struct TractFailure {
    /// "load", "type", "optimise" or "plan".
    pub stage: &'static str,
    pub message: String,
    /// ONNX node names mentioned by tract, outermost first.
    pub nodes: Vec<String>,
}

/// Loads, types and optimises `model` with tract (input shapes from `pins` where given).
pub fn tract_probe(model: &ModelProto, pins: &InputPins) -> Result<(), TractFailure> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::Factoid;
    let fail = |stage: &'static str, e: TractError| {
        let message = format!("{e:#}");
        TractFailure {
            stage,
            nodes: mentioned_nodes(&message),
            message,
        }
    };
    // tract can spin forever on an axis out of range (see `runtime::tract`): refuse first.
    if let Some(d) = crate::model::shape::invalid_axes(model, pins) {
        return Err(TractFailure {
            stage: "load",
            message: format!("{} (invalid ONNX)", d.message),
            nodes: vec![d.node],
        });
    }
    let bytes = crate::model::io::encode_model(model);
    let mut im = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| fail("load", e))?;
    let outlets = im.input_outlets().map_err(|e| fail("load", e))?.to_vec();
    for (i, outlet) in outlets.iter().enumerate() {
        let name = im.node(outlet.node).name.clone();
        if let Some(p) = pins.get(&name) {
            let fact = im
                .outlet_fact(*outlet)
                .map_err(|e| fail("load", e))?
                .clone();
            let shape: TVec<usize> = p.iter().map(|&d| d.max(0) as usize).collect();
            let fact = match fact.datum_type.concretize() {
                Some(dt) => InferenceFact::dt_shape(dt, shape),
                None => InferenceFact::default().with_shape(shape),
            };
            im = im.with_input_fact(i, fact).map_err(|e| fail("load", e))?;
        }
    }
    let typed = im.into_typed().map_err(|e| fail("type", e))?;
    let opt = typed.into_optimized().map_err(|e| fail("optimise", e))?;
    opt.into_runnable().map_err(|e| fail("plan", e))?;
    Ok(())
}

/// Node names tract quotes in its messages (`node #12 "/If"`), in order of appearance.
fn mentioned_nodes(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = msg;
    while let Some(p) = rest.find("node #") {
        rest = &rest[p + 6..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let after = &rest[digits..];
        if let Some(q) = after.strip_prefix(" \"")
            && let Some(end) = q.find('"')
        {
            let name = q[..end].to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Maps a tract node name to the ONNX node it came from (tract suffixes expanded nodes, e.g.
/// `/Resize.scales`).
fn onnx_node(cx: &LintCtx, tract_name: &str) -> Option<String> {
    let mut best: Option<&str> = None;
    for nr in &cx.nodes {
        let n = nr.node.name();
        if n.is_empty() {
            continue;
        }
        if n == tract_name {
            return Some(n.to_string());
        }
        if tract_name.starts_with(n)
            && tract_name[n.len()..].starts_with(['.', '#', '_', '-'])
            && best.is_none_or(|b| b.len() < n.len())
        {
            best = Some(n);
        }
    }
    best.map(str::to_string)
}

fn probe_rule(cx: &LintCtx, sink: &mut Sink) {
    if cx.target != Target::Tract {
        return;
    }
    if let Err(f) = tract_probe(&cx.a.model.proto, &cx.a.pins) {
        let nodes: Vec<String> = f.nodes.iter().filter_map(|n| onnx_node(cx, n)).collect();
        let mut nodes_dedup = Vec::new();
        for n in nodes {
            if !nodes_dedup.contains(&n) {
                nodes_dedup.push(n);
            }
        }
        // The innermost node is usually the culprit; keep at most the last two.
        let keep: Vec<String> = nodes_dedup.iter().rev().take(2).rev().cloned().collect();
        let mut msg = f.message.replace('\n', " ");
        if msg.chars().count() > 400 {
            msg = msg.chars().take(400).collect::<String>() + "…";
        }
        let op = keep
            .last()
            .and_then(|n| cx.nodes.iter().find(|x| x.node.name() == n))
            .map(|x| format!(" at {} node '{}'", x.node.op_type(), x.node.display_name()))
            .unwrap_or_default();
        // An If whose condition pare knows is what `pare fix` removes.
        let foldable_if = keep
            .last()
            .and_then(|n| cx.nodes.iter().find(|x| x.node.name() == n))
            .is_some_and(|x| {
                x.node.op_type() == "If"
                    && cx.ints(cx.input(x.node, 0)).is_some_and(|v| v.len() == 1)
            });
        let hint = if foldable_if {
            "; its condition is known, so `pare fix` inlines it"
        } else {
            ""
        };
        sink.emit(
            Severity::Error,
            keep,
            format!("tract cannot {} the model{op}: {msg}{hint}", f.stage),
            foldable_if,
        );
    }
}
