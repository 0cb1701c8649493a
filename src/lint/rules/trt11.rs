//! TensorRT 11: 5-D GridSample before 11.2, plugins 11.0 removed, and strongly typed builds
//! (a model without reduced-precision tensors builds an FP32 engine).

use super::{LintCtx, Rule, Severity, Sink, names};
use crate::lint::target::TRT_STRONGLY_TYPED;
use crate::model::DataType;
use crate::model::proto::NodeProto;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L31",
        title: "GridSample on a 5-D input",
        seed_case: None,
        applies: "TensorRT 8.5–11.1: error (4-D only); 11.2+: supported",
        explanation: "TensorRT's GridSample imported 4-D (N, C, H, W) inputs only until 11.2 added \
            volumetric (5-D) sampling.",
        snippet: "# sample each depth slice with 4-D grid_sample, or upgrade to TensorRT 11.2\n\
            out = torch.stack([F.grid_sample(x[:, :, d], grid[:, d]) for d in range(x.shape[2])], 2)",
        fix: None,
        check: grid_sample_5d,
    },
    Rule {
        id: "L32",
        title: "Plugin removed in TensorRT 11",
        seed_case: None,
        applies: "TensorRT 11+: error",
        explanation: "TensorRT 11.0 removed the legacy plugins that duplicate ONNX operators (Clip, \
            LeakyRelu, NMS, Proposal, Split, Normalize, …). A model that names them as custom ops \
            no longer parses; the standard ONNX operator imports natively.",
        snippet: "# export the standard op instead of the plugin node\n\
            x = torch.clamp(x, lo, hi)           # Clip_TRT\n\
            x = F.leaky_relu(x, 0.1)             # LReLU_TRT\n\
            keep = torchvision.ops.nms(b, s, t)  # NMS_TRT / BatchedNMS_TRT (or EfficientNMS_TRT)",
        fix: None,
        check: removed_plugins,
    },
    Rule {
        id: "L33",
        title: "No FP16/INT8 tensors: builds an FP32 engine",
        seed_case: None,
        applies: "TensorRT 11+: info",
        explanation: "TensorRT 11 networks are always strongly typed: the builder flags kFP16/kINT8 and \
            `trtexec --fp16/--int8/--best` are gone, so precision comes only from the ONNX file. A \
            model whose tensors are all FP32 builds an FP32 engine, typically 2–4x slower than FP16.",
        snippet: "pare convert model.onnx -o model_fp16.onnx --precision fp16\n\
            # or INT8 + FP16: pare quantize model.onnx -o model_int8.onnx --format trt --data calib/",
        fix: None,
        check: fp32_engine,
    },
];

/// Legacy plugin names (as custom-op types) that TensorRT 11.0 no longer registers, with the
/// standard operator to use instead.
const REMOVED_PLUGINS: &[(&str, &str)] = &[
    ("Clip_TRT", "Clip"),
    ("CustomClipPlugin", "Clip"),
    ("LReLU_TRT", "LeakyRelu"),
    ("NMS_TRT", "NonMaxSuppression (or EfficientNMS_TRT)"),
    ("BatchedNMS_TRT", "NonMaxSuppression (or EfficientNMS_TRT)"),
    (
        "BatchedNMSDynamic_TRT",
        "NonMaxSuppression (or EfficientNMS_TRT)",
    ),
    ("Proposal", "RoiAlign-based proposal decoding"),
    ("ProposalLayer_TRT", "RoiAlign-based proposal decoding"),
    ("ProposalDynamic", "RoiAlign-based proposal decoding"),
    ("Split", "Split (default ONNX domain)"),
    ("Normalize_TRT", "LpNormalization or ReduceL2 + Div"),
];

fn removed_plugin(n: &NodeProto) -> Option<&'static str> {
    let op = n.op_type();
    // A default-domain `Split`/`Clip` is the ONNX op itself; plugins live in custom domains
    // (or carry a `_TRT` name, which no ONNX op has).
    let custom = !n.op_domain().is_empty() && n.op_domain() != "ai.onnx";
    REMOVED_PLUGINS
        .iter()
        .find(|(name, _)| *name == op && (custom || name.ends_with("_TRT")))
        .map(|(_, instead)| *instead)
}

fn grid_sample_5d(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v >= 1102 {
        return;
    }
    let nodes: Vec<&NodeProto> = cx
        .nodes
        .iter()
        .map(|n| n.node)
        .filter(|n| n.op_type() == "GridSample" && n.op_domain().is_empty())
        .filter(|n| cx.rank(cx.input(n, 0)) == Some(5))
        .collect();
    if !nodes.is_empty() {
        sink.emit(
            Severity::Error,
            names(nodes.iter().copied()),
            format!(
                "{} GridSample node(s) on 5-D inputs: {} samples 4-D inputs only (5-D from TensorRT 11.2)",
                nodes.len(),
                cx.target.short()
            ),
            false,
        );
    }
}

fn removed_plugins(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v < TRT_STRONGLY_TYPED {
        return;
    }
    for nr in &cx.nodes {
        let n = nr.node;
        if let Some(instead) = removed_plugin(n) {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "plugin op {} was removed in TensorRT 11.0 ({} has no importer for it): export {instead} instead",
                    n.op_type(),
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

/// Tensor types that make a strongly typed engine run below FP32.
fn reduced(dt: DataType) -> bool {
    // FLOAT16, BFLOAT16, INT8, and the FP8 / INT4 / FP4 types (17–23).
    matches!(dt.0, 3 | 10 | 16 | 17..=23)
}

fn fp32_engine(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v < TRT_STRONGLY_TYPED {
        return;
    }
    let any_reduced = cx
        .initializers
        .values()
        .any(|t| reduced(DataType(t.data_type())))
        || cx.nodes.iter().any(|nr| {
            let n = nr.node;
            n.op_type() == "QuantizeLinear"
                || n.output.iter().any(|o| cx.dtype(o).is_some_and(reduced))
                || n.input.iter().any(|i| cx.dtype(i).is_some_and(reduced))
        })
        || cx
            .graph_inputs()
            .iter()
            .any(|i| cx.dtype(i).is_some_and(reduced));
    let float = cx.nodes.iter().any(|nr| {
        nr.node
            .output
            .iter()
            .any(|o| cx.dtype(o) == Some(DataType::FLOAT))
    });
    if any_reduced || !float {
        return;
    }
    sink.emit(
        Severity::Info,
        Vec::new(),
        String::from(
            "no FP16, BF16 or INT8 tensors (networks are strongly typed from TensorRT 11; `--fp16` is gone): this builds an FP32 engine on TensorRT 11; `pare convert --precision fp16`"
        ),
        false,
    );
}
