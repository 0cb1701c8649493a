//! Graph hygiene: unused initializers and inputs, node names, stored value_info that
//! contradicts the inferred shapes.

use std::collections::HashMap;

use super::{LintCtx, Rule, Severity, Sink, list, names};
use crate::lint::ctx::{declared_info, dims_str};
use crate::lint::fix::FixKind;
use crate::model::DataType;
use crate::model::shape::Dim;

pub const RULES: &[Rule] = &[
    Rule {
        id: "G13",
        title: "Non-finite weights (NaN or Inf)",
        seed_case: None,
        applies: "all targets: error",
        explanation: "A NaN or Inf in a weight, bias or constant makes every output it reaches NaN or \
            saturated. It comes from diverged training runs, broken exports or corrupted files; no \
            runtime complains, the model is silently useless. Pruning ranks such channels last \
            (deterministically) and quantization cannot scale them, so fix the source.",
        snippet: "import torch\nsd = torch.load(\"ckpt.pt\")\n\
            print([k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()])",
        fix: None,
        check: non_finite,
    },
    Rule {
        id: "G9",
        title: "Stored value_info contradicts the inferred shape",
        seed_case: Some("Q8"),
        applies: "all targets: warning",
        explanation: "value_info entries are hints an exporter or tool wrote about intermediate tensors. When \
            they contradict what the graph computes (a stale entry after editing, pruning or a re-export), \
            runtimes warn or trust the wrong shape. pare fix drops the contradicting entries.",
        snippet: "import onnx\nm = onnx.load(\"model.onnx\"); del m.graph.value_info[:]\n\
            onnx.save(onnx.shape_inference.infer_shapes(m), \"model.onnx\")",
        fix: Some(FixKind::ValueInfo),
        check: value_info,
    },
    Rule {
        id: "G6",
        title: "Unused graph inputs",
        seed_case: Some("P6"),
        applies: "TensorRT: warning ('Unused Input'); others: info",
        explanation: "An input no node reads still has to be fed (or bound) by the application; TensorRT \
            drops it from the network and warns, which breaks code that binds inputs by index.",
        snippet: "# remove the argument from forward(), or export without it\n\
            torch.onnx.export(model, (left, right), \"m.onnx\", input_names=[\"left\", \"right\"])",
        fix: None,
        check: unused_inputs,
    },
    Rule {
        id: "G5",
        title: "Unused initializers",
        seed_case: None,
        applies: "all targets: info",
        explanation: "Initializers no node reads make the file bigger and slow loading; they are usually \
            left over from export (folded constants, unused parameters).",
        snippet: "import onnx\nfrom onnx import helper\n# onnxsim model.onnx out.onnx  (or pare fix --rule G5)",
        fix: Some(FixKind::DropUnused),
        check: unused_initializers,
    },
    Rule {
        id: "G8",
        title: "Duplicate node names",
        seed_case: Some("Q1"),
        applies: "TensorRT: warning; others: info",
        explanation: "TensorRT names layers after nodes; per-layer precision settings, profiles, calibration \
            caches and error messages key on those names, and duplicates make them ambiguous.",
        snippet: "# pare fix --rule G8 renames duplicates (name, name_1, ...)",
        fix: Some(FixKind::Names),
        check: duplicate_names,
    },
    Rule {
        id: "G7",
        title: "Unnamed nodes",
        seed_case: Some("Q1"),
        applies: "all targets: info",
        explanation: "Unnamed nodes get generated names in every tool (TensorRT: '(Unnamed Layer* 12)'), so \
            errors and per-layer reports cannot be traced back to the model.",
        snippet: "# pare fix --rule G7 names them <op>_<n>",
        fix: Some(FixKind::Names),
        check: unnamed,
    },
];

fn value_info(cx: &LintCtx, sink: &mut Sink) {
    let a = cx.unpinned();
    let g = a.graph();
    let mut bad = Vec::new();
    let mut examples = Vec::new();
    for vi in g.value_info.iter().chain(&g.output) {
        let decl = declared_info(vi);
        let Some(inf) = a.shapes.get(vi.name()) else {
            continue;
        };
        let mut why = None;
        if let (Some(d), Some(i)) = (decl.dtype, inf.dtype)
            && d != i
        {
            why = Some(format!("dtype {d} vs inferred {i}"));
        }
        if let (Some(ds), Some(is)) = (&decl.shape, &inf.shape) {
            if ds.len() != is.len() {
                why = Some(format!("rank {} vs inferred {}", ds.len(), is.len()));
            } else if ds
                .iter()
                .zip(is)
                .any(|(x, y)| matches!((x, y), (Dim::Known(p), Dim::Known(q)) if p != q))
            {
                why = Some(format!(
                    "shape {} vs inferred {}",
                    dims_str(ds),
                    dims_str(is)
                ));
            }
        }
        if let Some(w) = why {
            let node = cx
                .producer_of(vi.name())
                .map(|n| n.display_name())
                .unwrap_or_else(|| vi.name().to_string());
            bad.push(node);
            examples.push(format!("'{}': {w}", vi.name()));
        }
    }
    if !bad.is_empty() {
        sink.emit(
            Severity::Warning,
            bad,
            format!(
                "{} stored value_info/output entr{} contradict the inferred shapes: {}",
                examples.len(),
                if examples.len() == 1 { "y" } else { "ies" },
                list(&examples, 3)
            ),
            true,
        );
    }
}

fn unused_inputs(cx: &LintCtx, sink: &mut Sink) {
    let unused: Vec<String> = cx
        .graph_inputs()
        .iter()
        .filter(|i| !cx.used.contains(i.as_str()))
        .cloned()
        .collect();
    if unused.is_empty() {
        return;
    }
    let trt = cx.target.trt().is_some();
    sink.emit_tensors(
        if trt {
            Severity::Warning
        } else {
            Severity::Info
        },
        unused.clone(),
        format!(
            "graph input(s) {} are never read{}",
            list(&unused, 4),
            if trt {
                "; TensorRT drops them ('Unused Input') and the bindings shift"
            } else {
                ""
            }
        ),
        false,
    );
}

fn unused_initializers(cx: &LintCtx, sink: &mut Sink) {
    let g = cx.a.graph();
    let unused: Vec<String> = g
        .initializer
        .iter()
        .map(|t| t.name())
        .filter(|n| !cx.used.contains(n))
        .map(str::to_string)
        .collect();
    if unused.is_empty() {
        return;
    }
    let bytes: usize = g
        .initializer
        .iter()
        .filter(|t| unused.iter().any(|u| u == t.name()))
        .map(crate::model::tensor::payload_len)
        .sum();
    sink.emit_tensors(
        Severity::Info,
        unused.clone(),
        format!(
            "{} unused initializer(s) ({}, {} bytes): `pare fix` drops them",
            unused.len(),
            list(&unused, 3),
            bytes
        ),
        true,
    );
}

fn duplicate_names(cx: &LintCtx, sink: &mut Sink) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for nr in &cx.nodes {
        let name = nr.node.name();
        if !name.is_empty() {
            *seen.entry(name).or_default() += 1;
        }
    }
    let mut dups: Vec<(&str, usize)> = seen.into_iter().filter(|(_, c)| *c > 1).collect();
    dups.sort();
    if dups.is_empty() {
        return;
    }
    let desc: Vec<String> = dups.iter().map(|(n, c)| format!("'{n}' ×{c}")).collect();
    sink.emit(
        if cx.target.trt().is_some() {
            Severity::Warning
        } else {
            Severity::Info
        },
        dups.iter().map(|(n, _)| n.to_string()).collect(),
        format!(
            "{} node name(s) used more than once: {}",
            dups.len(),
            list(&desc, 4)
        ),
        true,
    );
}

fn unnamed(cx: &LintCtx, sink: &mut Sink) {
    let nodes: Vec<String> = cx
        .nodes
        .iter()
        .filter(|n| n.node.name().is_empty())
        .map(|n| n.node.display_name())
        .collect();
    if nodes.is_empty() {
        return;
    }
    sink.emit(
        Severity::Info,
        nodes.clone(),
        format!(
            "{} unnamed node(s): `pare fix` names them <op>_<n>",
            nodes.len()
        ),
        true,
    );
}

/// Initializers and Constant values (every graph) holding NaN or Inf, each named with counts.
fn non_finite(cx: &LintCtx, sink: &mut Sink) {
    let mut tensors: Vec<(&str, &crate::model::proto::TensorProto)> =
        cx.initializers.iter().map(|(n, t)| (*n, *t)).collect();
    for nr in &cx.nodes {
        let n = nr.node;
        if n.op_type() == "Constant"
            && let (Some(t), Some(o)) = (n.attr_t("value"), n.output.first())
        {
            tensors.push((o.as_str(), t));
        }
    }
    tensors.sort_by_key(|(n, _)| *n);
    for (name, t) in tensors {
        if !DataType(t.data_type()).is_float() {
            continue;
        }
        let Ok(v) = crate::model::tensor::to_f32(t) else {
            continue;
        };
        let nan = v.iter().filter(|x| x.is_nan()).count();
        let inf = v.iter().filter(|x| x.is_infinite()).count();
        if nan + inf == 0 {
            continue;
        }
        let readers = names(cx.consumers_of(name));
        sink.emit_tensors(
            Severity::Error,
            vec![name.to_string()],
            format!(
                "tensor '{name}' holds {nan} NaN and {inf} Inf of {} values (read by {})",
                v.len(),
                if readers.is_empty() {
                    "no node".to_string()
                } else {
                    list(&readers, 3)
                }
            ),
            false,
        );
        if let Some(d) = sink.last_mut() {
            d.nodes = readers;
        }
    }
}
