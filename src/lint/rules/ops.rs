//! Operators the target does not import at all (from the operator matrices), QOperator
//! quantization, version-gated ops with their own rule ids, and the opset range.

use std::collections::BTreeMap;

use super::{LintCtx, Rule, Severity, Sink, list};
use crate::lint::Target;
use crate::lint::target::{OpSupport, ort_knows_domain, trt_op_support, version_str};

pub const RULES: &[Rule] = &[
    Rule {
        id: "L27",
        title: "Opset outside the target's range",
        seed_case: Some("Q7"),
        applies: "TensorRT 6.0 ≤10; 7.0/7.1 ≤11; 7.2–8.2 ≤13; 8.4–8.6 ≤17; 9.x ≤19; 10.0/10.1 9–20; 10.15 9–24; onnxruntime 7–23: error",
        explanation: "Each parser knows operator definitions up to some opset. A model exported at a \
            newer opset uses operator versions (inputs instead of attributes, new attributes) the \
            parser has never seen: it refuses the model, or misreads nodes. PyTorch exports at \
            its own default opset unless told otherwise.",
        snippet: "torch.onnx.export(model, args, \"model.onnx\", opset_version=11)  # the target's max\n\
            # or convert an existing file:\n\
            import onnx; from onnx import version_converter\n\
            onnx.save(version_converter.convert_version(onnx.load(\"model.onnx\"), 11), \"model_op11.onnx\")",
        fix: None,
        check: opset,
    },
    Rule {
        id: "G1",
        title: "Operator not supported by the target",
        seed_case: Some("Q1"),
        applies: "TensorRT (per the onnx-tensorrt operator matrix of the version), onnxruntime (custom domains): error",
        explanation: "The target's ONNX parser has no importer for this operator (or, for a custom \
            domain, no kernel/plugin): it stops at the first such node. Replace the construct in \
            the model's source, upgrade to a version that supports it, implement a plugin/custom \
            op, or split the model and run that part elsewhere (pare extract).",
        snippet: "# find the module that exports it and replace it with supported ops, e.g. a custom\n\
            # autograd.Function (MemoryEfficientSwish) -> x * torch.sigmoid(x)\n\
            class Swish(nn.Module):\n    def forward(self, x):\n        return x * torch.sigmoid(x)",
        fix: None,
        check: unsupported_ops,
    },
    Rule {
        id: "L6",
        title: "QOperator quantization (QLinearConv, MatMulInteger, …)",
        seed_case: None,
        applies: "TensorRT, all versions: error",
        explanation: "TensorRT imports quantized models only in QDQ form (QuantizeLinear / \
            DequantizeLinear around float ops). QOperator ops (QLinearConv, QLinearMatMul, \
            ConvInteger, MatMulInteger, DynamicQuantizeLinear) are not supported.",
        snippet: "from onnxruntime.quantization import quantize_static, QuantFormat, QuantType\n\
            quantize_static(\"model.onnx\", \"model_qdq.onnx\", reader, quant_format=QuantFormat.QDQ,\n    \
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,\n    \
            extra_options={\"ActivationSymmetric\": True, \"WeightSymmetric\": True})",
        fix: None,
        check: qoperator,
    },
    Rule {
        id: "L23",
        title: "ScatterND",
        seed_case: None,
        applies: "TensorRT ≤ 8.0: unsupported; 10.x: reduction other than none unsupported: error",
        explanation: "ScatterND (from in-place index assignment such as x[:, idx] = y) is imported \
            from TensorRT 8.2; TensorRT 10 rejects its `reduction` attribute (add/mul/min/max).",
        snippet: "# avoid in-place indexed writes; build the result functionally\n\
            mask = torch.zeros_like(x, dtype=torch.bool); mask[:, idx] = True   # constant at export\n\
            x = torch.where(mask, y_expanded, x)",
        fix: None,
        check: scatter_nd,
    },
    Rule {
        id: "L24",
        title: "NonZero (data-dependent shape)",
        seed_case: None,
        applies: "TensorRT ≤ 8.4: error",
        explanation: "NonZero's output size depends on the data. TensorRT supports data-dependent \
            shapes from 8.5 only.",
        snippet: "# keep shapes static: mask instead of selecting\n\
            y = torch.where(x > t, x, torch.zeros_like(x))   # instead of x[x > t] / x.nonzero()",
        fix: None,
        check: nonzero,
    },
    Rule {
        id: "L30",
        title: "Einsum",
        seed_case: None,
        applies: "TensorRT ≤ 8.0: unsupported; 8.2–8.6: no ellipsis, diagonal or broadcasting: error",
        explanation: "Einsum is imported from TensorRT 8.2, and until 9.0 only without ellipsis \
            ('...'), repeated indices (diagonals) or broadcasting.",
        snippet: "# write the contraction with matmul/permute instead of einsum\n\
            y = torch.einsum(\"bchw,bkc->bkhw\", x, w)  # ->\n\
            y = (w @ x.flatten(2)).view(b, k, h, w_)",
        fix: None,
        check: einsum,
    },
];

fn opset(cx: &LintCtx, sink: &mut Sink) {
    if cx.target == Target::Tract {
        return; // tract is asked directly (T1)
    }
    let (lo, hi) = cx.target.opset_range();
    let v = cx.opset;
    if v > hi || v < lo {
        let range = if lo <= 1 {
            format!("up to {hi}")
        } else {
            format!("{lo} to {hi}")
        };
        sink.emit(
            Severity::Error,
            Vec::new(),
            format!(
                "the model imports default-domain opset {v}; {} parses opsets {range}: re-export with opset_version={} (or convert)",
                cx.target.short(),
                v.clamp(lo, hi)
            ),
            false,
        );
    }
    if cx.target == Target::OnnxRuntime {
        let ir = cx.a.model.proto.ir_version();
        if ir > 11 {
            sink.emit(
                Severity::Error,
                Vec::new(),
                format!("IR version {ir} is newer than onnxruntime reads (11)"),
                false,
            );
        }
    }
}

fn unsupported_ops(cx: &LintCtx, sink: &mut Sink) {
    // op (with domain) → (nodes, message)
    let mut groups: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for nr in &cx.nodes {
        let n = nr.node;
        let op = n.op_type();
        let domain = n.op_domain();
        let msg = match cx.target {
            Target::TensorRt(v) => {
                if !domain.is_empty() {
                    Some(format!(
                        "custom-domain op {domain}.{op}: {} has no importer for it; it needs a TensorRT plugin registered under that name",
                        cx.target.short()
                    ))
                } else if crate::ops::lookup(op).is_some_and(|d| d.trt_dedicated) {
                    None
                } else {
                    match trt_op_support(op, v) {
                        OpSupport::Supported => None,
                        OpSupport::From(f) => Some(format!(
                            "{op} is not supported by {} (its parser imports it from TensorRT {})",
                            cx.target.short(),
                            version_str(f)
                        )),
                        OpSupport::Dropped { since } => Some(format!(
                            "{op} is not supported by {} (the operator matrix drops it from TensorRT {})",
                            cx.target.short(),
                            version_str(since)
                        )),
                        OpSupport::Never => Some(format!("{op} is not supported by any TensorRT version's ONNX parser")),
                    }
                }
            }
            Target::OnnxRuntime => (!ort_knows_domain(domain)).then(|| {
                format!(
                    "custom-domain op {domain}.{op}: onnxruntime has no kernel unless a custom-op library is registered (SessionOptions.register_custom_ops_library)"
                )
            }),
            Target::Tract => None,
        };
        if let Some(m) = msg {
            let key = if domain.is_empty() {
                op.to_string()
            } else {
                format!("{domain}.{op}")
            };
            let e = groups.entry(key).or_insert_with(|| (Vec::new(), m));
            e.0.push(n.display_name());
        }
    }
    for (_, (nodes, msg)) in groups {
        let count = if nodes.len() > 1 {
            format!(" ({} nodes)", nodes.len())
        } else {
            String::new()
        };
        sink.emit(Severity::Error, nodes, format!("{msg}{count}"), false);
    }
}

fn qoperator(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return;
    }
    let nodes: Vec<_> = cx
        .nodes
        .iter()
        .filter(|n| crate::ops::of_node(n.node).is_some_and(|d| d.qoperator))
        .collect();
    if nodes.is_empty() {
        return;
    }
    let mut ops: Vec<&str> = nodes.iter().map(|n| n.node.op_type()).collect();
    ops.sort();
    ops.dedup();
    sink.emit(
        Severity::Error,
        nodes.iter().map(|n| n.node.display_name()).collect(),
        format!(
            "{} QOperator node(s) ({}): {} reads quantized models only in QDQ form; re-quantize with quant_format=QDQ",
            nodes.len(),
            ops.join(", "),
            cx.target.short()
        ),
        false,
    );
}

fn scatter_nd(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "ScatterND" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        if v <= 800 {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "ScatterND is not supported by {} (imported from TensorRT 8.2)",
                    cx.target.short()
                ),
                false,
            );
        } else if v >= 1000 {
            let red = n.attr_s("reduction").unwrap_or_else(|| "none".into());
            if red != "none" {
                sink.emit(
                    Severity::Error,
                    vec![n.display_name()],
                    format!(
                        "ScatterND with reduction='{red}': {} supports only reduction='none'",
                        cx.target.short()
                    ),
                    false,
                );
            }
        }
    }
}

fn nonzero(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v > 804 {
        return;
    }
    let nodes: Vec<String> = cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "NonZero" && n.node.op_domain().is_empty())
        .map(|n| n.node.display_name())
        .collect();
    if !nodes.is_empty() {
        sink.emit(
            Severity::Error,
            nodes.clone(),
            format!(
                "NonZero ({}) has a data-dependent output shape: {} does not support it (TensorRT 8.5+ does)",
                list(&nodes, 3),
                cx.target.short()
            ),
            false,
        );
    }
}

fn einsum(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Einsum" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let eq = n.attr_s("equation").unwrap_or_default();
        if v <= 800 {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "Einsum '{eq}' is not supported by {} (imported from TensorRT 8.2)",
                    cx.target.short()
                ),
                false,
            );
        } else if v < 900 {
            let lhs = eq.split("->").next().unwrap_or("");
            let ellipsis = eq.contains("...");
            let diagonal = lhs.split(',').any(|term| {
                let letters: Vec<char> = term
                    .trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphabetic())
                    .collect();
                let mut s = letters.clone();
                s.sort();
                s.dedup();
                s.len() != letters.len()
            });
            if ellipsis || diagonal {
                sink.emit(
                    Severity::Error,
                    vec![n.display_name()],
                    format!(
                        "Einsum '{eq}' uses {}: {} supports neither ellipsis nor diagonal operations",
                        if ellipsis { "an ellipsis" } else { "a repeated index (diagonal)" },
                        cx.target.short()
                    ),
                    false,
                );
            }
        }
    }
}
