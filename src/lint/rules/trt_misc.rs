//! INT64 tensors, TopK limits and Pad restrictions.

use super::{LintCtx, Rule, Severity, Sink, list};
use crate::lint::fix::FixKind;
use crate::model::DataType;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L29",
        title: "Pad: computed pads, non-constant mode, or more than 2 padded dims",
        seed_case: Some("P14"),
        applies: "TensorRT 7.x–8.0: error (pads must be an initializer; zero padding of the last 2 dims only); 8.2+: N-D, edge and reflect",
        explanation: "TensorRT 7.x pads only the two innermost dims, with zeros, and reads the pads from an \
            initializer. PyTorch's F.pad exports its pads through a chain of shape ops \
            (ConstantOfShape → Concat → Reshape → Slice → Transpose → Cast) that 7.x refuses; with known \
            shapes pare fix folds that chain into a constant.",
        snippet: "x = F.pad(x, (1, 1, 1, 1))                     # constant, last two dims only\n\
            x = nn.ZeroPad2d((0, 1, 0, 1))(x)              # TF-'SAME' style padding",
        fix: Some(FixKind::ConstInputs),
        check: pad,
    },
    Rule {
        id: "L28",
        title: "TopK with sorted=0 or K ≥ 3840",
        seed_case: None,
        applies: "TensorRT 10.1+: error",
        explanation: "TensorRT 10's TopK needs sorted=1 and K below 3840.",
        snippet: "vals, idx = torch.topk(x, k=min(k, 3839), sorted=True)",
        fix: None,
        check: topk,
    },
    Rule {
        id: "L26",
        title: "INT64 tensors",
        seed_case: None,
        applies: "TensorRT ≤ 8.6: warning (cast to INT32 with clamping); 9.0+: info (INT64 inputs/outputs need INT64 bindings)",
        explanation: "Up to 8.6 TensorRT has no INT64: the parser casts INT64 weights and I/O to INT32, \
            clamping values beyond ±2^31. From 9.0 INT64 is native, and INT64 inputs/outputs need INT64 \
            buffers in the application.",
        snippet: "idx = idx.to(torch.int32)   # return/accept int32 tensors at the model boundary",
        fix: None,
        check: int64,
    },
];

fn pad(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if !(700..=800).contains(&v) {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Pad" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let mut problems = Vec::new();
        let mut fixable = true;
        let mode = n.attr_s("mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            problems.push(format!("mode={mode} (only constant)"));
            fixable = false;
        }
        let pads: Option<Vec<i64>> = if cx.opset >= 11 {
            let p = cx.input(n, 1);
            if !p.is_empty() && !cx.is_weights(p) {
                let known = cx.is_known(p);
                fixable &= known;
                problems.push(format!(
                    "pads '{p}' are computed ({}){}",
                    cx.lineage(p, 6),
                    if known { ", value known" } else { "" }
                ));
            }
            cx.ints(p)
        } else {
            n.attr_ints("pads").map(<[i64]>::to_vec)
        };
        if cx.opset >= 11 {
            let c = cx.input(n, 2);
            if !c.is_empty() && cx.floats(c).is_some_and(|x| x.iter().any(|&f| f != 0.0)) {
                problems.push("a non-zero pad value".to_string());
                fixable = false;
            }
        }
        if let Some(p) = &pads {
            let r = p.len() / 2;
            let padded: Vec<usize> = (0..r).filter(|&k| p[k] != 0 || p[k + r] != 0).collect();
            if padded.iter().any(|&k| k + 2 < r) {
                problems.push(format!(
                    "pads {p:?} pad dims {padded:?}, beyond the last two"
                ));
                fixable = false;
            }
        }
        if !problems.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{}; {} pads only the last two dims, with zeros, from an initializer{}",
                    problems.join("; "),
                    cx.target.short(),
                    if fixable {
                        "; `pare fix` folds the pads into a constant"
                    } else {
                        ""
                    }
                ),
                fixable,
            );
        }
    }
}

fn topk(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v < 1001 {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "TopK" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let mut p = Vec::new();
        if n.attr_i("sorted").unwrap_or(1) == 0 {
            p.push("sorted=0".to_string());
        }
        let k = if cx.opset >= 10 {
            cx.ints(cx.input(n, 1)).and_then(|v| v.first().copied())
        } else {
            n.attr_i("k")
        };
        if let Some(k) = k
            && k >= 3840
        {
            p.push(format!("K={k} (must be < 3840)"));
        }
        if !p.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "TopK {}: not supported by {}",
                    p.join(", "),
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn int64(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    let g = cx.a.graph();
    let io: Vec<String> = g
        .input
        .iter()
        .chain(&g.output)
        .filter(|vi| !cx.is_initializer(vi.name()))
        .filter(|vi| vi.tensor_type().and_then(|t| t.elem_type) == Some(DataType::INT64.0))
        .map(|vi| vi.name().to_string())
        .collect();
    if !io.is_empty() {
        if v <= 806 {
            sink.emit_tensors(
                Severity::Warning,
                io.clone(),
                format!(
                    "INT64 model inputs/outputs ({}): {} casts them to INT32 (values beyond ±2^31 clamp); bind INT32 buffers",
                    list(&io, 4),
                    cx.target.short()
                ),
                false,
            );
        } else {
            sink.emit_tensors(
                Severity::Info,
                io.clone(),
                format!(
                    "INT64 model inputs/outputs ({}): {} keeps them INT64, so the application must bind INT64 buffers (before 9.0 these were INT32)",
                    list(&io, 4),
                    cx.target.short()
                ),
                false,
            );
        }
    }
    if v > 806 {
        return;
    }
    // INT64 weights whose values do not fit INT32 (Slice ends of INT64_MAX clamp harmlessly).
    let mut bad = Vec::new();
    for (name, t) in &cx.initializers {
        if t.data_type() != DataType::INT64.0 || t.numel() > 1 << 20 {
            continue;
        }
        let Ok(vals) = crate::model::tensor::to_i64(t) else {
            continue;
        };
        if !vals
            .iter()
            .any(|&x| x > i32::MAX as i64 || x < i32::MIN as i64)
        {
            continue;
        }
        let harmless = cx.consumers_of(name).iter().all(|c| c.op_type() == "Slice");
        if !harmless {
            bad.push(name.to_string());
        }
    }
    bad.sort();
    if !bad.is_empty() {
        let nodes: Vec<String> = bad
            .iter()
            .flat_map(|b| cx.consumers_of(b))
            .map(|n| n.display_name())
            .collect();
        sink.emit(
            Severity::Warning,
            nodes,
            format!(
                "INT64 initializers with values beyond INT32 ({}): {} clamps them when casting to INT32",
                list(&bad, 4),
                cx.target.short()
            ),
            false,
        );
    }
}
