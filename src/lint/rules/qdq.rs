//! QDQ (explicit quantization) rules: zero points, scales, per-axis activations, and where
//! Q/DQ pairs sit relative to the ops TensorRT fuses.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;
use crate::lint::target::TRT_STRONGLY_TYPED;
use crate::model::DataType;
use crate::model::proto::NodeProto;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L1",
        title: "Q/DQ zero point not zero",
        seed_case: Some("Q9"),
        applies: "TensorRT (all versions with Q/DQ): error",
        explanation: "TensorRT implements only symmetric INT8 quantization: every QuantizeLinear / \
            DequantizeLinear zero point must be 0. Asymmetric quantization (onnxruntime's CPU default) is \
            rejected.",
        snippet: "quantize_static(fp32, out, reader, quant_format=QuantFormat.QDQ,\n    \
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,\n    \
            extra_options={\"ActivationSymmetric\": True, \"WeightSymmetric\": True})",
        fix: None,
        check: zero_point,
    },
    Rule {
        id: "L2",
        title: "Q/DQ zero point of type UINT8",
        seed_case: Some("Q9"),
        applies: "TensorRT ≤ 8.6: error; 9.0–10.x: warning (silently treated as INT8); 11+: error",
        explanation: "TensorRT quantizes to INT8. UINT8 Q/DQ is rejected up to 8.6; later versions warn \
            'TensorRT will use INT8 instead' and reinterpret the values — wrong results for anything \
            above 127.",
        snippet: "quantize_static(..., activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)",
        fix: None,
        check: uint8,
    },
    Rule {
        id: "L3",
        title: "Q/DQ scale or zero point not an initializer, or zero point missing",
        seed_case: Some("Q9"),
        applies: "TensorRT ≤ 7.2: scale/zero point must be initializers; 8.0: all three inputs required; 11+: constant scales and zero points: error",
        explanation: "Early TensorRT versions read Q/DQ scales and zero points only from initializers, and \
            8.0 requires the zero point input to be present.",
        snippet: "# emit constant scales and an explicit zero point (0) for every Q/DQ node",
        fix: Some(FixKind::ConstInputs),
        check: scale_init,
    },
    Rule {
        id: "L4",
        title: "Non-positive Q/DQ scale",
        seed_case: Some("Q9"),
        applies: "TensorRT 8.0+: error ('Scale coefficients must all be positive')",
        explanation: "A zero or negative scale (from a channel that is constant zero during calibration) \
            is rejected. Clamp scales to a small positive minimum.",
        snippet: "quantize_static(..., extra_options={\"MinimumRealRange\": 1e-4})",
        fix: None,
        check: positive_scale,
    },
    Rule {
        id: "L5",
        title: "Per-axis scale on an activation",
        seed_case: Some("Q9"),
        applies: "TensorRT 8.0 and 11+: error; others: warning",
        explanation: "TensorRT quantizes activations per tensor; per-channel scales are for weights (axis 0 \
            for Conv, 1 for ConvTranspose). The 8.0 importer assumes per-axis Q/DQ is on KCRS weights.",
        snippet: "quantize_static(..., per_channel=True)   # per-channel applies to weights only",
        fix: None,
        check: per_axis_activation,
    },
    Rule {
        id: "P1",
        title: "Weighted op without Q/DQ on input or weight, or per-tensor weights",
        seed_case: Some("Q9"),
        applies: "TensorRT explicit quantization: warning",
        explanation: "TensorRT runs a Conv/Gemm/MatMul in INT8 only when both its input and its weight come \
            through DequantizeLinear. Weights should be quantized per channel (axis 0 for Conv, 1 for \
            ConvTranspose); per-tensor weight scales cost accuracy.",
        snippet: "# ModelOpt / pytorch-quantization default: quantize inputs of weighted ops, per-channel weights\n\
            quantize_static(..., per_channel=True, op_types_to_quantize=[\"Conv\", \"ConvTranspose\", \"Gemm\", \"MatMul\"])",
        fix: None,
        check: weighted_inputs,
    },
    Rule {
        id: "P2",
        title: "Residual Add quantized on the wrong input",
        seed_case: Some("Q9"),
        applies: "TensorRT explicit quantization: warning",
        explanation: "TensorRT fuses a residual Add into the preceding Conv when the skip input comes through \
            Q/DQ and the Conv branch does not. Without Q/DQ on the skip input the Add runs in higher \
            precision; with Q/DQ on the Conv branch the fusion breaks.",
        snippet: "# quantize the residual (skip) input of the add, not the conv branch\n\
            out = self.conv_branch(x) + self.residual_quantizer(identity)",
        fix: None,
        check: residual_add,
    },
    Rule {
        id: "P3",
        title: "Q/DQ between ops TensorRT fuses",
        seed_case: Some("Q9"),
        applies: "TensorRT explicit quantization: warning",
        explanation: "Q/DQ on the output of a Conv/Gemm (before its BatchNorm/activation) or between a Pad \
            and the Conv it feeds prevents TensorRT from fusing them; quantize the fused group's input only.",
        snippet: "quantize_static(..., extra_options={\"OpTypesToExcludeOutputQuantization\": [\"Conv\", \"Gemm\", \"MatMul\"]})",
        fix: None,
        check: fusion_breakers,
    },
    Rule {
        id: "P4",
        title: "Quantized layer too small to gain from INT8",
        seed_case: Some("Q9"),
        applies: "TensorRT explicit quantization: info",
        explanation: "Convs with fewer than 16 input or output channels and GEMMs with K or N below 16 run no \
            faster in INT8 and lose accuracy; leave them in FP16.",
        snippet: "quantize_static(..., nodes_to_exclude=[\"/stem/Conv\"])",
        fix: None,
        check: small_layers,
    },
];

fn is_q(n: &NodeProto) -> bool {
    n.op_type() == "QuantizeLinear" && n.op_domain().is_empty()
}
fn is_dq(n: &NodeProto) -> bool {
    n.op_type() == "DequantizeLinear" && n.op_domain().is_empty()
}
fn qdq_nodes<'a>(cx: &'a LintCtx) -> impl Iterator<Item = &'a NodeProto> + 'a {
    cx.nodes
        .iter()
        .map(|n| n.node)
        .filter(|n| is_q(n) || is_dq(n))
}
fn has_qdq(cx: &LintCtx) -> bool {
    qdq_nodes(cx).next().is_some()
}

/// TensorRT 11 takes precision only from the file, so a Q/DQ it cannot import is fatal; pare's
/// own TensorRT-format quantization writes what it accepts.
fn trt11_fix(cx: &LintCtx) -> &'static str {
    if cx.target.trt().is_some_and(|v| v >= TRT_STRONGLY_TYPED) {
        "; fix: `pare quantize --format trt` (symmetric INT8, constant per-tensor activation scales)"
    } else {
        ""
    }
}

fn zero_point(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return;
    }
    let nodes: Vec<String> = qdq_nodes(cx)
        .filter(|n| {
            cx.ints(cx.input(n, 2))
                .is_some_and(|z| z.iter().any(|&v| v != 0))
        })
        .map(|n| n.display_name())
        .collect();
    if !nodes.is_empty() {
        sink.emit(
            Severity::Error,
            nodes.clone(),
            format!("{} Q/DQ node(s) with a non-zero zero point: {} supports symmetric quantization only{}", nodes.len(), cx.target.short(), trt11_fix(cx)),
            false,
        );
    }
}

fn uint8(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    let nodes: Vec<String> = qdq_nodes(cx)
        .filter(|n| {
            let z = cx.input(n, 2);
            !z.is_empty() && cx.dtype(z) == Some(DataType::UINT8)
        })
        .map(|n| n.display_name())
        .collect();
    if nodes.is_empty() {
        return;
    }
    let (sev, what) = if v < 900 {
        (Severity::Error, "rejects UINT8 quantization")
    } else if v >= TRT_STRONGLY_TYPED {
        (
            Severity::Error,
            "rejects UINT8 (onnxruntime-style asymmetric) Q/DQ on the GPU",
        )
    } else {
        (
            Severity::Warning,
            "warns 'TensorRT will use INT8 instead' and reinterprets UINT8 values above 127",
        )
    };
    sink.emit(
        sev,
        nodes.clone(),
        format!(
            "{} Q/DQ node(s) with UINT8 zero points: {} {what}{}",
            nodes.len(),
            cx.target.short(),
            trt11_fix(cx)
        ),
        false,
    );
}

fn scale_init(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for n in qdq_nodes(cx) {
        let mut p = Vec::new();
        let mut fixable = true;
        if v <= 702 || v >= TRT_STRONGLY_TYPED {
            for (i, what) in [(1usize, "scale"), (2, "zero point")] {
                let t = cx.input(n, i);
                if !t.is_empty() && !cx.is_weights(t) {
                    fixable &= cx.is_known(t);
                    p.push(format!("{what} '{t}' is computed"));
                }
            }
        }
        if v == 800 && cx.input(n, 2).is_empty() {
            p.push("the zero point input is missing".to_string());
            fixable = false;
        }
        if !p.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{}: {} needs constant Q/DQ parameters{}",
                    p.join("; "),
                    cx.target.short(),
                    trt11_fix(cx)
                ),
                fixable,
            );
        }
    }
}

fn positive_scale(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v < 800 {
        return;
    }
    let nodes: Vec<String> = qdq_nodes(cx)
        .filter(|n| {
            cx.floats(cx.input(n, 1))
                .is_some_and(|s| s.iter().any(|&x| x <= 0.0 || !x.is_finite()))
        })
        .map(|n| n.display_name())
        .collect();
    if !nodes.is_empty() {
        sink.emit(
            Severity::Error,
            nodes.clone(),
            format!("{} Q/DQ node(s) with a zero, negative or non-finite scale: {} requires positive scales{}", nodes.len(), cx.target.short(), trt11_fix(cx)),
            false,
        );
    }
}

fn scale_len(cx: &LintCtx, n: &NodeProto) -> Option<i64> {
    let s = cx.input(n, 1);
    cx.static_shape(s)
        .map(|d| d.iter().product())
        .or_else(|| cx.const_tensor(s).map(|t| t.numel() as i64))
}

fn per_axis_activation(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    let nodes: Vec<String> = qdq_nodes(cx)
        .filter(|n| {
            let x = cx.input(n, 0);
            let weight = cx.is_weights(x)
                || (is_dq(n)
                    && cx
                        .producer_of(x)
                        .is_some_and(|p| is_q(p) && cx.is_weights(cx.input(p, 0))));
            !weight && scale_len(cx, n).is_some_and(|l| l > 1)
        })
        .map(|n| n.display_name())
        .collect();
    if !nodes.is_empty() {
        sink.emit(
            if v == 800 || v >= TRT_STRONGLY_TYPED { Severity::Error } else { Severity::Warning },
            nodes.clone(),
            format!("{} activation Q/DQ node(s) with per-axis scales: {} quantizes activations per tensor{}", nodes.len(), cx.target.short(), trt11_fix(cx)),
            false,
        );
    }
}

/// A weighted layer for quantization (Conv, ConvTranspose, Gemm, MatMul), per the op table.
fn is_weighted(n: &NodeProto) -> bool {
    crate::ops::of_node(n).is_some_and(|d| d.is_weighted())
}

/// The output-channel axis of a weighted layer's weight, per the op table.
fn weight_axis(n: &NodeProto, rank: usize) -> Option<usize> {
    match crate::ops::of_node(n)?.quant {
        crate::ops::QuantRole::Weighted { axis, .. } => Some(axis.resolve(n, rank)),
        _ => None,
    }
}

fn from_dq<'a>(cx: &LintCtx<'a>, t: &str) -> Option<&'a NodeProto> {
    cx.producer_of(t).filter(|p| is_dq(p))
}

fn weighted_inputs(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() || !has_qdq(cx) {
        return;
    }
    let (mut no_in, mut no_w, mut per_tensor) = (Vec::new(), Vec::new(), Vec::new());
    for nr in &cx.nodes {
        let n = nr.node;
        if !is_weighted(n) {
            continue;
        }
        let (x, w) = (cx.input(n, 0), cx.input(n, 1));
        if from_dq(cx, x).is_none() {
            no_in.push(n.display_name());
        }
        match from_dq(cx, w) {
            None => no_w.push(n.display_name()),
            Some(dq) => {
                let oc = cx
                    .static_shape(w)
                    .and_then(|s| s.get(weight_axis(n, s.len())?).copied());
                if n.op_type().starts_with("Conv")
                    && scale_len(cx, dq) == Some(1)
                    && oc.is_some_and(|c| c > 1)
                {
                    per_tensor.push(n.display_name());
                }
            }
        }
    }
    let t = cx.target.short();
    if !no_in.is_empty() {
        sink.emit(
            Severity::Warning,
            no_in.clone(),
            format!(
                "{} weighted op(s) whose input has no Q/DQ: {t} runs them in higher precision",
                no_in.len()
            ),
            false,
        );
    }
    if !no_w.is_empty() {
        sink.emit(
            Severity::Warning,
            no_w.clone(),
            format!(
                "{} weighted op(s) whose weight has no Q/DQ: {t} cannot run them in INT8",
                no_w.len()
            ),
            false,
        );
    }
    if !per_tensor.is_empty() {
        sink.emit(
            Severity::Warning,
            per_tensor.clone(),
            format!("{} conv(s) with per-tensor weight scales: use per-channel (axis 0 Conv, 1 ConvTranspose)", per_tensor.len()),
            false,
        );
    }
}

/// Skips Q/DQ nodes upwards.
fn through_qdq<'a>(cx: &LintCtx<'a>, t: &str) -> Option<&'a NodeProto> {
    let mut cur = cx.producer_of(t)?;
    for _ in 0..4 {
        if is_q(cur) || is_dq(cur) {
            cur = cx.producer_of(cx.input(cur, 0))?;
        } else {
            break;
        }
    }
    Some(cur)
}

fn conv_branch(cx: &LintCtx, t: &str) -> bool {
    let mut p = through_qdq(cx, t);
    for _ in 0..2 {
        match p {
            Some(n) if matches!(n.op_type(), "Conv" | "ConvTranspose") => return true,
            Some(n) if n.op_type() == "BatchNormalization" => p = through_qdq(cx, cx.input(n, 0)),
            _ => return false,
        }
    }
    false
}

fn residual_add(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() || !has_qdq(cx) {
        return;
    }
    let mut skip_plain = Vec::new();
    let mut branch_q = Vec::new();
    for nr in &cx.nodes {
        let n = nr.node;
        if n.op_type() != "Add" || n.input.len() != 2 {
            continue;
        }
        let (a, b) = (cx.input(n, 0), cx.input(n, 1));
        let (ca, cb) = (conv_branch(cx, a), conv_branch(cx, b));
        if ca == cb {
            continue;
        }
        let (conv_in, skip) = if ca { (a, b) } else { (b, a) };
        if from_dq(cx, skip).is_none() {
            skip_plain.push(n.display_name());
        }
        if from_dq(cx, conv_in).is_some() {
            branch_q.push(n.display_name());
        }
    }
    if !skip_plain.is_empty() {
        sink.emit(
            Severity::Warning,
            skip_plain.clone(),
            format!("{} residual Add(s) whose skip input has no Q/DQ: the add cannot fuse into the conv and runs in higher precision", skip_plain.len()),
            false,
        );
    }
    if !branch_q.is_empty() {
        sink.emit(
            Severity::Warning,
            branch_q.clone(),
            format!("{} residual Add(s) with Q/DQ on the conv branch: this blocks the conv+add fusion; quantize the skip input instead", branch_q.len()),
            false,
        );
    }
}

/// A constant-mode Pad that pads with zeros (the value input, or the `value` attribute before
/// opset 11, absent or 0).
fn zero_pad(cx: &LintCtx, pad: &NodeProto) -> bool {
    let mode_constant = pad.attr_s("mode").is_none_or(|m| m == "constant");
    let value = match pad.input.get(2).filter(|v| !v.is_empty()) {
        Some(v) => cx.floats(v).and_then(|f| f.first().copied()),
        None => pad.attr_f("value").map(f64::from).or(Some(0.0)),
    };
    mode_constant && value == Some(0.0)
}

fn fusion_breakers(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return;
    }
    let mut hits = Vec::new();
    for nr in &cx.nodes {
        let q = nr.node;
        if !is_q(q) {
            continue;
        }
        let Some(prod) = cx.producer_of(cx.input(q, 0)) else {
            continue;
        };
        let dq_consumers: Vec<&NodeProto> = q
            .output
            .first()
            .map(|o| cx.consumers_of(o))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| is_dq(c))
            .flat_map(|dq| {
                dq.output
                    .first()
                    .map(|o| cx.consumers_of(o))
                    .unwrap_or_default()
            })
            .collect();
        let fuses =
            |n: &NodeProto| crate::ops::lookup(n.op_type()).is_some_and(|d| d.fuses_into_weighted);
        let after_weighted = (crate::ops::lookup(prod.op_type()).is_some_and(|d| d.is_weighted())
            || prod.op_type() == "BatchNormalization")
            && dq_consumers.iter().any(|c| fuses(c));
        // Only a zero pad folds into the conv's own padding; a Pad with another value (pare's
        // activation centering writes them) stays a layer of its own either way.
        let pad_conv = prod.op_type() == "Pad"
            && zero_pad(cx, prod)
            && dq_consumers.iter().any(|c| c.op_type() == "Conv");
        if after_weighted || pad_conv {
            hits.push((
                q.display_name(),
                format!(
                    "{} → Q/DQ → {}",
                    prod.op_type(),
                    dq_consumers.first().map(|c| c.op_type()).unwrap_or("?")
                ),
            ));
        }
    }
    if !hits.is_empty() {
        let examples: Vec<String> = hits.iter().take(3).map(|h| h.1.clone()).collect();
        sink.emit(
            Severity::Warning,
            hits.into_iter().map(|h| h.0).collect(),
            format!(
                "Q/DQ between fusible ops ({}): remove them so TensorRT fuses the group",
                examples.join(", ")
            ),
            false,
        );
    }
}

fn small_layers(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() || !has_qdq(cx) {
        return;
    }
    let mut small = Vec::new();
    for nr in &cx.nodes {
        let n = nr.node;
        if !is_weighted(n) || from_dq(cx, cx.input(n, 0)).is_none() {
            continue;
        }
        let Some(ws) = cx.static_shape(cx.input(n, 1)) else {
            continue;
        };
        let (a, b) = match n.op_type() {
            "Conv" if ws.len() >= 2 => (ws[0], ws[1] * n.attr_i("group").unwrap_or(1)),
            "ConvTranspose" if ws.len() >= 2 => (ws[0], ws[1]),
            "Gemm" | "MatMul" if ws.len() >= 2 => (ws[ws.len() - 2], ws[ws.len() - 1]),
            _ => continue,
        };
        if a < 16 || b < 16 {
            small.push(n.display_name());
        }
    }
    if !small.is_empty() {
        sink.emit(
            Severity::Info,
            small.clone(),
            format!("{} quantized layer(s) with fewer than 16 channels/features on a side: INT8 gains nothing there; consider FP16", small.len()),
            false,
        );
    }
}
