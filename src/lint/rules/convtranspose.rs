//! `ConvTranspose` (seed Q3): asymmetric 3-D deconvolution, dilation, negative pre-padding,
//! weights and rank.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;
use crate::lint::fix::convtranspose::geometry;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L19",
        title: "3-D ConvTranspose with asymmetric padding (output_padding)",
        seed_case: Some("Q3"),
        applies: "TensorRT 7.0–8.2: error ('does not support asymmetrical padding for 3D deconvolutions!')",
        explanation: "ConvTranspose3d(..., output_padding=1) adds one row at the end of each spatial dim, so \
            the effective padding is asymmetric (begin ≠ end − output_padding). TensorRT up to 8.2 cannot \
            build asymmetric 3-D deconvolutions. pare fix rewrites the node as a ConvTranspose with \
            symmetric padding followed by a Slice (and, where output_padding reaches past the computed \
            area, a Pad plus the bias) — the same values, proven by running both.",
        snippet: "# output_padding=0 and take the extra row by cropping a larger deconvolution:\n\
            self.up = nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=0, output_padding=0)\n\
            y = self.up(x)[:, :, 1:, 1:, 1:]   # == ConvTranspose3d(..., padding=1, output_padding=1)(x)",
        fix: Some(FixKind::ConvTransposePads),
        check: asymmetric_3d,
    },
    Rule {
        id: "L20",
        title: "Dilated ConvTranspose",
        seed_case: Some("Q3"),
        applies: "TensorRT 7.0 and older: error",
        explanation: "TensorRT 7.0's importer rejects dilated deconvolutions ('TRT does not support dilated deconvolutions!').",
        snippet: "nn.ConvTranspose2d(cin, cout, k, stride=s, dilation=1)   # or upgrade TensorRT",
        fix: None,
        check: dilation,
    },
    Rule {
        id: "L21",
        title: "ConvTranspose with negative pre-padding (output_shape)",
        seed_case: Some("Q3"),
        applies: "TensorRT, all versions: error",
        explanation: "An output_shape larger than the deconvolution produces means negative padding at the \
            start, which TensorRT does not support ('does not support negative pre-padding'); \
            onnxruntime rejects such an output_shape too. Give explicit pads instead.",
        snippet: "# pass explicit padding/output_padding instead of output_size=...\n\
            y = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)",
        fix: None,
        check: negative_prepad,
    },
    Rule {
        id: "L22",
        title: "ConvTranspose weights not an initializer, or not 1-D/2-D/3-D",
        seed_case: Some("Q3"),
        applies: "TensorRT ≤ 8.4 (weights), all versions (rank): error",
        explanation: "TensorRT builds deconvolutions from constant weights (up to 8.4) and supports 1-D, 2-D \
            and 3-D deconvolutions only.",
        snippet: "# keep ConvTranspose weights as parameters (no computed or shared-by-op weights)\n\
            self.up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)",
        fix: None,
        check: weights_rank,
    },
];

fn convs<'a>(cx: &'a LintCtx) -> impl Iterator<Item = &'a crate::model::proto::NodeProto> + 'a {
    cx.nodes
        .iter()
        .map(|n| n.node)
        .filter(|n| n.op_type() == "ConvTranspose" && n.op_domain().is_empty())
}

fn asymmetric_3d(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if !(700..=803).contains(&v) {
        return;
    }
    for n in convs(cx) {
        let g = match geometry(
            n,
            cx.static_shape(cx.input(n, 0)).as_deref(),
            cx.static_shape(cx.input(n, 1)).as_deref(),
        ) {
            Ok(g) => g,
            Err(_) => continue,
        };
        if g.kernel.len() != 3 || g.symmetric() {
            continue;
        }
        let has_output_shape = n.attr_ints("output_shape").is_some_and(|v| !v.is_empty());
        let why = if g.out_pad.iter().any(|&p| p != 0) {
            format!(
                "output_padding={:?} with pads={:?}",
                g.out_pad,
                g.pads_attr()
            )
        } else {
            format!("pads={:?}", g.pads_attr())
        };
        sink.emit(
            Severity::Error,
            vec![n.display_name()],
            format!(
                "3-D ConvTranspose with {why}: effective padding begin {:?} vs end {:?} is asymmetric, which {} cannot build (fixed in 8.4){}",
                g.begin,
                g.effective_end(),
                cx.target.short(),
                if has_output_shape { "; it comes from output_shape, which runtimes resolve differently: export explicit padding/output_padding" } else { "; `pare fix` rewrites it as ConvTranspose(symmetric pads) + Slice" }
            ),
            !has_output_shape,
        );
    }
}

fn dilation(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v > 700 {
        return;
    }
    for n in convs(cx) {
        if n.attr_ints("dilations")
            .is_some_and(|d| d.iter().any(|&x| x != 1))
        {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "dilated ConvTranspose: {} does not support dilated deconvolutions",
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn negative_prepad(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return;
    }
    for n in convs(cx) {
        let Ok(g) = geometry(
            n,
            cx.static_shape(cx.input(n, 0)).as_deref(),
            cx.static_shape(cx.input(n, 1)).as_deref(),
        ) else {
            continue;
        };
        if g.begin.iter().any(|&b| b < 0) {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "ConvTranspose output_shape implies negative begin padding {:?}: {} does not support negative pre-padding (onnxruntime rejects it as well); export explicit pads",
                    g.begin,
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn weights_rank(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for n in convs(cx) {
        let w = cx.input(n, 1);
        if v <= 804 && !cx.is_weights(w) {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!("ConvTranspose weights '{w}' are computed ({}): {} needs them as an initializer", cx.lineage(w, 3), cx.target.short()),
                false,
            );
        }
        let spatial = n
            .attr_ints("kernel_shape")
            .map(<[i64]>::len)
            .or_else(|| cx.rank(w).map(|r| r.saturating_sub(2)));
        if let Some(s) = spatial
            && s > 3
        {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{s}-D ConvTranspose: {} supports 1-D, 2-D and 3-D deconvolutions only",
                    cx.target.short()
                ),
                false,
            );
        }
    }
}
