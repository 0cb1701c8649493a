//! `Resize` / `Upsample` variants (seed Q7): which form each TensorRT version accepts.

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;
use crate::model::proto::NodeProto;

pub const RULES: &[Rule] = &[
    Rule {
        id: "L13",
        title: "Resize form (coordinate_transformation_mode with sizes or scales)",
        seed_case: Some("Q7"),
        applies: "TensorRT 7.0: asymmetric only; 7.1–7.2: asymmetric/align_corners/half_pixel/pytorch_half_pixel, linear takes align_corners only with sizes and asymmetric only with scales; 8.0+: adds tf_half_pixel_for_nn; half_pixel_symmetric and tf_crop_and_resize never: error",
        explanation: "F.interpolate exports a Resize whose coordinate_transformation_mode depends on \
            align_corners and on whether size or scale_factor was given. TensorRT's parser accepts only \
            some combinations, and 7.x is picky: for linear resizes it takes align_corners only with \
            explicit sizes and asymmetric only with scales ('TensorRT only supports half_pixel, \
            pytorch_half_pixel, and align_corners transformation modes for linear resizes when sizes \
            are provided!'). Pick the form the target accepts.",
        snippet: "# TensorRT 7.x: give the size when using align_corners=True ...\n\
            y = F.interpolate(x, size=(int(x.shape[2] * 2), int(x.shape[3] * 2)), mode=\"bilinear\", align_corners=True)\n\
            # ... and a scale_factor with align_corners=False\n\
            y = F.interpolate(x, scale_factor=2.0, mode=\"bilinear\", align_corners=False)",
        fix: None,
        check: ctm,
    },
    Rule {
        id: "L14",
        title: "Resize nearest_mode other than floor",
        seed_case: Some("Q7"),
        applies: "TensorRT ≤ 7.2: error",
        explanation: "TensorRT 7.x rounds nearest-neighbour coordinates down only. PyTorch's mode='nearest' \
            exports floor; other exporters use round_prefer_floor, which 7.x rejects.",
        snippet: "y = F.interpolate(x, scale_factor=2, mode=\"nearest\")   # exports nearest_mode=floor",
        fix: None,
        check: nearest_mode,
    },
    Rule {
        id: "L15",
        title: "Resize mode cubic",
        seed_case: Some("Q7"),
        applies: "TensorRT ≤ 8.4: error",
        explanation: "Bicubic resizing is imported from TensorRT 8.5 ('does not support cubic interpolation!').",
        snippet: "y = F.interpolate(x, scale_factor=2, mode=\"bilinear\")   # instead of mode=\"bicubic\"",
        fix: None,
        check: cubic,
    },
    Rule {
        id: "L16",
        title: "Resize scales not an initializer",
        seed_case: Some("Q7"),
        applies: "TensorRT ≤ 8.2: error",
        explanation: "Up to 8.2 TensorRT reads Resize scales only from an initializer ('Resize scales must \
            be an initializer!'). Scales computed in the graph — e.g. from shapes — are refused; pare fix \
            turns known scales into a constant or, with static shapes, into explicit sizes.",
        snippet: "y = F.interpolate(x, scale_factor=2.0, mode=\"bilinear\")   # a Python float: constant scales\n\
            # or give the output size with Python ints\n\
            y = F.interpolate(x, size=(h * 2, w * 2), mode=\"bilinear\")",
        fix: Some(FixKind::ResizeSizes),
        check: scales_init,
    },
    Rule {
        id: "L17",
        title: "Resize interpolates more than the innermost dims",
        seed_case: Some("Q7"),
        applies: "TensorRT 8.0+: linear beyond the 3 innermost dims, cubic beyond 2: error",
        explanation: "TensorRT's resize layer interpolates linearly over at most the 3 innermost dims \
            (cubic: 2). Resizing batch or channels that way is refused.",
        snippet: "# resize only spatial dims; move other dims out of the way first\n\
            y = F.interpolate(x.flatten(0, 1).unsqueeze(1), size=(d, h, w), mode=\"trilinear\").view(n, c, d, h, w)",
        fix: None,
        check: outer_dims,
    },
    Rule {
        id: "L18",
        title: "Resize antialias / keep_aspect_ratio_policy / axes",
        seed_case: Some("Q7"),
        applies: "TensorRT (opset 18 attributes; 10.x rejects them explicitly): error",
        explanation: "Opset 18 added antialias, keep_aspect_ratio_policy and axes to Resize. TensorRT \
            supports none of antialias=1, a policy other than stretch, or tensor scales whose axes are not \
            all dims in order.",
        snippet: "y = F.interpolate(x, size=(h, w), mode=\"bilinear\", antialias=False)",
        fix: None,
        check: opset18_attrs,
    },
];

/// What one Resize node is.
struct Variant {
    mode: String,
    ctm: String,
    nearest: String,
    /// "sizes", "scales" or "?"
    by: &'static str,
    scales: String,
    sizes: String,
}

fn resize_nodes<'a>(cx: &'a LintCtx) -> impl Iterator<Item = &'a NodeProto> + 'a {
    cx.nodes
        .iter()
        .map(|n| n.node)
        .filter(|n| matches!(n.op_type(), "Resize" | "Upsample") && n.op_domain().is_empty())
}

fn variant(cx: &LintCtx, n: &NodeProto) -> Variant {
    let upsample = n.op_type() == "Upsample";
    let old = upsample || cx.opset < 11;
    let mode = n.attr_s("mode").unwrap_or_else(|| "nearest".into());
    let ctm = if old {
        "asymmetric".to_string()
    } else {
        n.attr_s("coordinate_transformation_mode")
            .unwrap_or_else(|| "half_pixel".into())
    };
    let nearest = if old {
        "floor".to_string()
    } else {
        n.attr_s("nearest_mode")
            .unwrap_or_else(|| "round_prefer_floor".into())
    };
    let (scales, sizes) = if old {
        (cx.input(n, 1), "")
    } else {
        (cx.input(n, 2), cx.input(n, 3))
    };
    // PyTorch's opset-11 export passes an empty constant for the unused one.
    let empty = |t: &str| t.is_empty() || cx.floats(t).is_some_and(|v| v.is_empty());
    let by = if !empty(sizes) {
        "sizes"
    } else if !empty(scales) {
        "scales"
    } else {
        "?"
    };
    Variant {
        mode,
        ctm,
        nearest,
        by,
        scales: if empty(scales) {
            String::new()
        } else {
            scales.to_string()
        },
        sizes: if empty(sizes) {
            String::new()
        } else {
            sizes.to_string()
        },
    }
}

fn label(v: &Variant) -> String {
    format!("{}/{}/{}", v.mode, v.ctm, v.by)
}

fn ctm(cx: &LintCtx, sink: &mut Sink) {
    let Some(ver) = cx.target.trt() else { return };
    for n in resize_nodes(cx) {
        let v = variant(cx, n);
        let t = cx.target.short();
        let problem = if ver < 701 {
            (v.ctm != "asymmetric")
                .then(|| format!("{t} accepts only coordinate_transformation_mode=asymmetric"))
        } else if ver < 800 {
            if !matches!(
                v.ctm.as_str(),
                "asymmetric" | "align_corners" | "half_pixel" | "pytorch_half_pixel"
            ) {
                Some(format!(
                    "{t} accepts asymmetric, align_corners, half_pixel or pytorch_half_pixel, not {}",
                    v.ctm
                ))
            } else if v.mode == "linear" && v.by == "sizes" && v.ctm == "asymmetric" {
                Some(format!(
                    "{t} takes a linear resize with sizes only in half_pixel, pytorch_half_pixel or align_corners mode"
                ))
            } else if v.mode == "linear" && v.by == "scales" && v.ctm == "align_corners" {
                Some(format!(
                    "{t} takes a linear resize with scales only in asymmetric, half_pixel or pytorch_half_pixel mode (align_corners=True needs an explicit size)"
                ))
            } else {
                None
            }
        } else if matches!(
            v.ctm.as_str(),
            "half_pixel_symmetric" | "tf_crop_and_resize"
        ) {
            Some(format!(
                "no TensorRT version supports coordinate_transformation_mode={}",
                v.ctm
            ))
        } else if v.ctm == "tf_half_pixel_for_nn" && v.nearest != "round_prefer_floor" {
            Some(format!(
                "{t} takes tf_half_pixel_for_nn only with nearest_mode=round_prefer_floor"
            ))
        } else {
            None
        };
        match problem {
            Some(p) => sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!("Resize form {} ({}): {p}", label(&v), torch_form(&v)),
                false,
            ),
            None if ver < 800 => sink.emit(
                Severity::Info,
                vec![n.display_name()],
                format!(
                    "Resize form {} ({}) is accepted by {t}; there linear resizes take align_corners only with sizes and asymmetric only with scales",
                    label(&v),
                    torch_form(&v)
                ),
                false,
            ),
            None => {}
        }
    }
}

/// The F.interpolate call that exports this form.
fn torch_form(v: &Variant) -> String {
    let mode = match v.mode.as_str() {
        "linear" => "bilinear/trilinear",
        m => m,
    };
    let arg = if v.by == "sizes" {
        "size=…"
    } else {
        "scale_factor=…"
    };
    let ac = match v.ctm.as_str() {
        "align_corners" => ", align_corners=True",
        "half_pixel" | "pytorch_half_pixel" if v.mode != "nearest" => ", align_corners=False",
        _ => "",
    };
    format!("F.interpolate({arg}, mode='{mode}'{ac})")
}

fn nearest_mode(cx: &LintCtx, sink: &mut Sink) {
    let Some(ver) = cx.target.trt() else { return };
    if ver >= 800 {
        return;
    }
    for n in resize_nodes(cx) {
        let v = variant(cx, n);
        if v.mode == "nearest" && v.nearest != "floor" {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "nearest_mode={}: {} rounds nearest-neighbour coordinates down only (floor)",
                    v.nearest,
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn cubic(cx: &LintCtx, sink: &mut Sink) {
    let Some(ver) = cx.target.trt() else { return };
    if ver > 804 {
        return;
    }
    for n in resize_nodes(cx) {
        if variant(cx, n).mode == "cubic" {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{} does not support cubic interpolation (from TensorRT 8.5)",
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn scales_init(cx: &LintCtx, sink: &mut Sink) {
    let Some(ver) = cx.target.trt() else { return };
    if ver > 802 {
        return;
    }
    for n in resize_nodes(cx) {
        let v = variant(cx, n);
        if v.by != "scales" || cx.is_weights(&v.scales) {
            continue;
        }
        let known = cx.is_known(&v.scales);
        sink.emit(
            Severity::Error,
            vec![n.display_name()],
            format!(
                "Resize scales '{}' are computed ({}): {} asserts 'Resize scales must be an initializer!'{}",
                v.scales,
                cx.lineage(&v.scales, 4),
                cx.target.short(),
                if known { "; their value is known, so `pare fix` makes them constant (or explicit sizes)" } else { "" }
            ),
            known,
        );
    }
}

/// Which axes a Resize changes, when known.
fn resized_axes(cx: &LintCtx, n: &NodeProto, v: &Variant) -> Option<Vec<usize>> {
    let x = cx.input(n, 0);
    if !v.scales.is_empty() {
        let s = cx.floats(&v.scales)?;
        return Some(
            s.iter()
                .enumerate()
                .filter(|(_, f)| (**f - 1.0).abs() > 1e-9)
                .map(|(k, _)| k)
                .collect(),
        );
    }
    if !v.sizes.is_empty() {
        let out = cx.ints(&v.sizes)?;
        let inp = cx.static_shape(x)?;
        if out.len() != inp.len() {
            return None;
        }
        return Some(
            out.iter()
                .zip(&inp)
                .enumerate()
                .filter(|(_, (o, i))| o != i)
                .map(|(k, _)| k)
                .collect(),
        );
    }
    None
}

fn outer_dims(cx: &LintCtx, sink: &mut Sink) {
    let Some(ver) = cx.target.trt() else { return };
    if ver < 800 {
        return;
    }
    for n in resize_nodes(cx) {
        let v = variant(cx, n);
        let inner = match v.mode.as_str() {
            "linear" => 3,
            "cubic" => 2,
            _ => continue,
        };
        let Some(rank) = cx.rank(cx.input(n, 0)) else {
            continue;
        };
        let Some(axes) = resized_axes(cx, n, &v) else {
            continue;
        };
        let outer: Vec<usize> = axes.into_iter().filter(|&k| k + inner < rank).collect();
        if !outer.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "{} resize of a rank-{rank} tensor changes dims {outer:?}: {} interpolates only the {inner} innermost dims",
                    v.mode,
                    cx.target.short()
                ),
                false,
            );
        }
    }
}

fn opset18_attrs(cx: &LintCtx, sink: &mut Sink) {
    if cx.target.trt().is_none() {
        return;
    }
    for n in resize_nodes(cx) {
        let mut p = Vec::new();
        if n.attr_i("antialias").unwrap_or(0) != 0 {
            p.push("antialias=1 is not supported".to_string());
        }
        if let Some(k) = n.attr_s("keep_aspect_ratio_policy")
            && k != "stretch"
        {
            p.push(format!(
                "keep_aspect_ratio_policy={k} (only stretch is supported)"
            ));
        }
        if let Some(axes) = n.attr_ints("axes") {
            let rank = cx.rank(cx.input(n, 0));
            let iota = rank.is_some_and(|r| {
                axes.len() == r && axes.iter().enumerate().all(|(k, &a)| a == k as i64)
            });
            if !iota && !variant(cx, n).scales.is_empty() {
                p.push(format!(
                    "axes={axes:?} with scales (axes must list every dim in order)"
                ));
            }
        }
        if !p.is_empty() {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!("Resize {}: {}", p.join("; "), cx.target.short()),
                false,
            );
        }
    }
}
