//! Vision-network ops with their own output rules: normalisations with extra outputs,
//! Resize/Upsample, quantisation, and the detection/sampling ops (NonMaxSuppression,
//! RoiAlign, GridSample).
//!
//! Resize computes `floor(dim * scale)` in f32 as runtimes do (tract, onnxruntime), so a
//! scale such as 1/3 stored as f32 gives the same size they do.

use super::ctx::OpCtx;

use super::{Dim, Shape, TensorInfo};
use crate::model::tensor::DataType;

/// `BatchNormalization`: Y like X; the training-mode statistics outputs are per-channel.
pub fn batch_norm(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let y = cx.like_first(cx.shape(0).map(<[Dim]>::to_vec));
    let c = cx
        .shape(1)
        .map(<[Dim]>::to_vec)
        .or_else(|| cx.shape(0).and_then(|x| x.get(1)).map(|c| vec![c.clone()]));
    let stat = TensorInfo::new(cx.dtype(1).or(cx.dtype(0)), c);
    let mut out = vec![y];
    out.extend(std::iter::repeat_n(
        stat,
        cx.node.output.len().saturating_sub(1),
    ));
    out
}

/// `Softmax`, `LogSoftmax`, `Hardmax`, `RMSNormalization`: Y like X, whose rank must admit
/// the `axis` attribute (default -1; 1 for the softmax family before opset 13). An axis out of
/// range is noted as invalid so no engine is handed the node (tract wraps it to a huge axis).
pub fn unary_axis(cx: &mut OpCtx) -> Vec<TensorInfo> {
    if let Some(r) = cx.rank(0) {
        let default = if cx.opset < 13 && cx.op != "RMSNormalization" {
            1
        } else {
            -1
        };
        let _ = cx.axis(cx.attr_i("axis", default), r);
    }
    super::broadcast::unary(cx)
}

/// `LayerNormalization`: Y like X; Mean and InvStdDev keep the dims before `axis` and are 1
/// after it, in the stash type (float).
pub fn layer_norm(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let y = cx.like_first(cx.shape(0).map(<[Dim]>::to_vec));
    let Some(x) = cx.shape(0) else {
        return vec![y, TensorInfo::default(), TensorInfo::default()];
    };
    let stash = Some(DataType(cx.attr_i("stash_type", 1) as i32));
    let stat = match cx.axis(cx.attr_i("axis", -1), x.len()) {
        Some(a) => {
            let s: Shape = x
                .iter()
                .enumerate()
                .map(|(i, d)| if i < a { d.clone() } else { Dim::Known(1) })
                .collect();
            TensorInfo::new(stash, Some(s))
        }
        None => TensorInfo::new(stash, Some(vec![Dim::Unknown; x.len()])),
    };
    vec![y, stat.clone(), stat]
}

/// Output size of one resized axis for a scale factor.
fn scaled(cx: &mut OpCtx, d: &Dim, s: f64) -> Dim {
    let s32 = s as f32;
    if s32.round() == s32 && s32 >= 0.0 {
        return cx.syms.mul_c(d, s32 as i64);
    }
    match d {
        Dim::Known(v) => Dim::Known((*v as f32 * s32).floor() as i64),
        _ if s32 > 0.0 && (1.0 / s32).round() == 1.0 / s32 => {
            cx.syms.floor_div_c(d, (1.0 / s32) as i64)
        }
        _ => Dim::Unknown,
    }
}

/// `Resize` (10: `X, scales`; 11+: `X, roi, scales, sizes`; 18: `axes`,
/// `keep_aspect_ratio_policy`) and `Upsample` (`scales` attribute before 9, input after).
pub fn resize(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let r = x.len();
    let old = cx.op == "Upsample" || cx.opset <= 10 || cx.node.input.len() == 2;
    let (scales_ix, sizes_ix) = if old { (1, usize::MAX) } else { (2, 3) };
    let axes: Vec<usize> = match cx.attr_ints("axes") {
        Some(a) => match cx.axes(a, r) {
            Some(a) => a,
            None => return vec![TensorInfo::new(dtype, Some(vec![Dim::Unknown; r]))],
        },
        None => (0..r).collect(),
    };
    let mut out = x.to_vec();
    let unknown_axes = |out: &mut Shape| axes.iter().for_each(|&a| out[a] = Dim::Unknown);
    // Sizes first: when both are wired, the empty one is the unused one.
    let sizes_given =
        cx.has_input(sizes_ix) && cx.shape(sizes_ix).is_none_or(|s| s != [Dim::Known(0)]);
    if sizes_given {
        match cx.int_dims(sizes_ix) {
            Some(sz) if sz.len() == axes.len() => {
                let sz = sz.to_vec();
                let policy = cx
                    .attr_s("keep_aspect_ratio_policy")
                    .unwrap_or_else(|| "stretch".into());
                if policy == "stretch" {
                    for (k, &a) in axes.iter().enumerate() {
                        out[a] = sz[k].clone();
                    }
                } else {
                    let ratios: Option<Vec<f32>> = axes
                        .iter()
                        .zip(&sz)
                        .map(|(&a, s)| Some(s.known()? as f32 / x[a].known()? as f32))
                        .collect();
                    match ratios {
                        Some(rt) => {
                            let sc = if policy == "not_larger" {
                                rt.iter().copied().fold(f32::INFINITY, f32::min)
                            } else {
                                rt.iter().copied().fold(0.0, f32::max)
                            };
                            for &a in &axes {
                                out[a] = x[a].known().map_or(Dim::Unknown, |v| {
                                    Dim::Known((v as f32 * sc + 0.5).floor() as i64)
                                });
                            }
                        }
                        None => unknown_axes(&mut out),
                    }
                }
            }
            Some(sz) => {
                cx.note(format!(
                    "sizes has {} entries for {} axes",
                    sz.len(),
                    axes.len()
                ));
                unknown_axes(&mut out);
            }
            None => unknown_axes(&mut out),
        }
        return vec![TensorInfo::new(dtype, Some(out))];
    }
    let scales: Option<Vec<f64>> = if cx.has_input(scales_ix) {
        cx.floats(scales_ix)
    } else {
        cx.node
            .attr("scales")
            .map(|a| a.floats.iter().map(|&f| f64::from(f)).collect())
    };
    match scales {
        Some(s) if s.len() == axes.len() => {
            for (k, &a) in axes.iter().enumerate() {
                out[a] = scaled(cx, &x[a], s[k]);
            }
        }
        Some(s) => {
            cx.note(format!(
                "scales has {} entries for {} axes",
                s.len(),
                axes.len()
            ));
            unknown_axes(&mut out);
        }
        None => unknown_axes(&mut out),
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `QuantizeLinear`: X's shape; the dtype of the zero point, else `output_dtype` (21), else
/// uint8.
pub fn quantize(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dt = if cx.has_input(2) {
        cx.dtype(2)
    } else {
        Some(match cx.attr_i("output_dtype", 0) {
            0 => DataType::UINT8,
            t => DataType(t as i32),
        })
    };
    vec![TensorInfo::new(dt, cx.shape(0).map(<[Dim]>::to_vec))]
}

/// `DequantizeLinear`: X's shape in the scale's float type.
pub fn dequantize(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dt = cx
        .dtype(1)
        .filter(|d| d.is_float())
        .or(Some(DataType::FLOAT));
    let dt = match cx.attr_i("output_dtype", 0) {
        0 => dt,
        t => Some(DataType(t as i32)),
    };
    vec![TensorInfo::new(dt, cx.shape(0).map(<[Dim]>::to_vec))]
}

/// `DynamicQuantizeLinear`: uint8 Y like X, scalar scale and zero point.
pub fn dynamic_quantize(cx: &mut OpCtx) -> Vec<TensorInfo> {
    vec![
        TensorInfo::new(Some(DataType::UINT8), cx.shape(0).map(<[Dim]>::to_vec)),
        TensorInfo::new(Some(DataType::FLOAT), Some(vec![])),
        TensorInfo::new(Some(DataType::UINT8), Some(vec![])),
    ]
}

/// `NonMaxSuppression`: INT64 `[selected, 3]`.
pub fn nms(_cx: &mut OpCtx) -> Vec<TensorInfo> {
    vec![TensorInfo::new(
        Some(DataType::INT64),
        Some(vec![Dim::Unknown, Dim::Known(3)]),
    )]
}

/// `RoiAlign` / `MaxRoiPool`: `[num_rois, C, out_h, out_w]`.
pub fn roi(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let n = cx
        .shape(1)
        .and_then(|s| s.first())
        .cloned()
        .unwrap_or(Dim::Unknown);
    let c = cx
        .shape(0)
        .and_then(|s| s.get(1))
        .cloned()
        .unwrap_or(Dim::Unknown);
    let (h, w) = if cx.op == "MaxRoiPool" {
        match cx.attr_ints("pooled_shape") {
            Some([h, w]) => (Dim::Known(*h), Dim::Known(*w)),
            _ => (Dim::Unknown, Dim::Unknown),
        }
    } else {
        (
            Dim::Known(cx.attr_i("output_height", 1)),
            Dim::Known(cx.attr_i("output_width", 1)),
        )
    };
    vec![cx.like_first(Some(vec![n, c, h, w]))]
}

/// `GridSample`: `[N, C]` of X followed by the grid's spatial dims.
pub fn grid_sample(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let (Some(x), Some(g)) = (cx.shape(0), cx.shape(1)) else {
        return vec![cx.like_first(cx.rank(0).map(|r| vec![Dim::Unknown; r]))];
    };
    if x.len() < 3 || g.len() != x.len() {
        cx.note(format!(
            "input rank {} and grid rank {} do not match",
            x.len(),
            g.len()
        ));
        return vec![cx.like_first(None)];
    }
    let mut s: Shape = x[..2].to_vec();
    s.extend_from_slice(&g[1..g.len() - 1]);
    vec![cx.like_first(Some(s))]
}

/// `EyeLike`, `RandomNormalLike`, `RandomUniformLike`, `Bernoulli`: the input's shape, the
/// `dtype` attribute's type if given.
pub fn like(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dt = cx
        .node
        .attr_i("dtype")
        .map(|t| DataType(t as i32))
        .or(cx.dtype(0));
    vec![TensorInfo::new(dt, cx.shape(0).map(<[Dim]>::to_vec))]
}

/// `RandomNormal`, `RandomUniform`: shape and dtype (default float) from attributes.
pub fn random(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dt = Some(DataType(cx.attr_i("dtype", 1) as i32));
    let s = cx
        .attr_ints("shape")
        .map(|s| s.iter().map(|&v| Dim::Known(v)).collect());
    vec![TensorInfo::new(dt, s)]
}
