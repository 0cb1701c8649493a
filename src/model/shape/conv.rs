//! Sliding-window ops: Conv, ConvTranspose, MaxPool/AveragePool/LpPool and the global pools,
//! for any number of spatial dims (1-D, 2-D, 3-D).
//!
//! Output sizes follow the ONNX operator docs exactly (auto_pad, ceil_mode and its "last
//! window must start inside the input" rule, output_padding, output_shape), because an
//! off-by-one here is what pruning and lint reports would silently inherit. Symbolic spatial
//! dims go through the symbolic arithmetic, so `height` through a stride-2 3x3 conv with
//! padding 1 becomes `(height+1)/2`.

use super::ctx::OpCtx;
use super::{Dim, Shape, TensorInfo};
use crate::model::tensor::DataType;

/// Window parameters of one node, one entry per spatial axis.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Begin pads then end pads, as ONNX lays them out.
    pads: Vec<i64>,
    auto_pad: String,
}

/// Reads and checks the window attributes for `r` spatial axes. The kernel comes from
/// `kernel_shape` or, for convolutions, from the weight's shape.
fn window(cx: &mut OpCtx, r: usize, weight_kernel: Option<Vec<Option<i64>>>) -> Option<Window> {
    let kernel: Vec<i64> = match cx.attr_ints("kernel_shape") {
        Some(k) => k.to_vec(),
        None => match weight_kernel {
            Some(k) => k.into_iter().collect::<Option<Vec<_>>>()?,
            None => {
                cx.note("no kernel_shape attribute");
                return None;
            }
        },
    };
    let list = |cx: &mut OpCtx, name: &str, n: usize, default: i64| -> Option<Vec<i64>> {
        match cx.attr_ints(name) {
            None => Some(vec![default; n]),
            Some([]) => Some(vec![default; n]),
            Some(v) if v.len() == n => Some(v.to_vec()),
            Some(v) => {
                cx.note(format!(
                    "{name} {v:?} has {} entries, expected {n}",
                    v.len()
                ));
                None
            }
        }
    };
    if kernel.len() != r {
        cx.note(format!(
            "kernel_shape {kernel:?} has {} entries but the input has {r} spatial dims",
            kernel.len()
        ));
        return None;
    }
    let strides = list(cx, "strides", r, 1)?;
    let dilations = list(cx, "dilations", r, 1)?;
    let pads = list(cx, "pads", 2 * r, 0)?;
    if strides.iter().chain(&dilations).any(|&v| v <= 0) {
        cx.note(format!(
            "strides {strides:?} / dilations {dilations:?} must be positive"
        ));
        return None;
    }
    let auto_pad = cx.attr_s("auto_pad").unwrap_or_else(|| "NOTSET".into());
    Some(Window {
        kernel,
        strides,
        dilations,
        pads,
        auto_pad,
    })
}

/// Output size of one spatial axis of a convolution or pooling window.
fn window_out(cx: &mut OpCtx, w: &Window, axis: usize, d: &Dim, ceil_mode: bool) -> Dim {
    let r = w.kernel.len();
    let (k, s, dil) = (w.kernel[axis], w.strides[axis], w.dilations[axis]);
    let ek = dil.saturating_mul(k.saturating_sub(1)).saturating_add(1);
    match w.auto_pad.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => cx.syms.ceil_div_c(d, s),
        "VALID" => {
            let n = cx.syms.add_c(d, 1i64.saturating_sub(ek));
            cx.syms.ceil_div_c(&n, s)
        }
        _ => {
            let (pb, pe) = (w.pads[axis], w.pads[axis + r]);
            let num = cx.syms.add_c(d, pb.saturating_add(pe).saturating_sub(ek));
            if let Dim::Known(n) = num
                && n < 0
            {
                cx.note(format!(
                    "spatial axis {axis}: input {d} with pads {pb}+{pe} is smaller than the dilated kernel {ek}"
                ));
                return Dim::Unknown;
            }
            if ceil_mode {
                let out = cx.syms.ceil_div_c(&num, s);
                let out = cx.syms.add_c(&out, 1);
                // The last window must start inside the input or the begin padding.
                if let (Dim::Known(o), Dim::Known(dv)) = (&out, d)
                    && o.saturating_sub(1).saturating_mul(s) >= dv.saturating_add(pb)
                {
                    return Dim::Known(o.saturating_sub(1));
                }
                out
            } else {
                let out = cx.syms.floor_div_c(&num, s);
                cx.syms.add_c(&out, 1)
            }
        }
    }
}

/// Spatial dims of the first input, or a note when its rank is too small.
fn spatial<'a>(cx: &mut OpCtx<'a>) -> Option<&'a [Dim]> {
    let x = cx.shape(0)?;
    if x.len() < 3 {
        cx.note(format!(
            "input has rank {}, expected N x C x spatial...",
            x.len()
        ));
        return None;
    }
    Some(x)
}

/// `Conv` and the quantized/integer convolutions with the same layout.
pub fn conv(cx: &mut OpCtx) -> Vec<TensorInfo> {
    // ConvInteger and QLinearConv keep the layout; QLinearConv's weight is input 3.
    let (w_ix, dtype) = match cx.op {
        "QLinearConv" => (3, cx.dtype(7)),
        "ConvInteger" => (1, Some(DataType::INT32)),
        _ => (1, cx.dtype(0)),
    };
    let unknown = |cx: &OpCtx, dt| {
        let rank = cx.rank(0).or(cx.rank(w_ix));
        TensorInfo::new(dt, rank.map(|r| vec![Dim::Unknown; r]))
    };
    let Some(x) = spatial(cx) else {
        return vec![unknown(cx, dtype)];
    };
    let r = x.len() - 2;
    let w = cx.shape(w_ix);
    if let Some(w) = w
        && w.len() != x.len()
    {
        cx.note(format!(
            "weight has rank {} but input has rank {}",
            w.len(),
            x.len()
        ));
        return vec![unknown(cx, dtype)];
    }
    let wk = w.map(|w| w[2..].iter().map(Dim::known).collect());
    let Some(win) = window(cx, r, wk) else {
        return vec![unknown(cx, dtype)];
    };
    let mut out: Shape = vec![x[0].clone(), w.map_or(Dim::Unknown, |w| w[0].clone())];
    for (i, d) in x[2..].iter().enumerate() {
        out.push(window_out(cx, &win, i, d, false));
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `ConvTranspose`: `stride*(in-1) + output_padding + dilated kernel - pads`, or
/// `output_shape` when given, or `in*stride` under SAME auto-padding.
pub fn conv_transpose(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let unknown = |cx: &OpCtx| {
        TensorInfo::new(
            dtype,
            cx.rank(0).or(cx.rank(1)).map(|r| vec![Dim::Unknown; r]),
        )
    };
    let Some(x) = spatial(cx) else {
        return vec![unknown(cx)];
    };
    let r = x.len() - 2;
    let w = cx.shape(1);
    let wk = w.map(|w| w.get(2..).unwrap_or(&[]).iter().map(Dim::known).collect());
    let Some(win) = window(cx, r, wk) else {
        return vec![unknown(cx)];
    };
    let group = cx.attr_i("group", 1);
    let cout = match w.and_then(|w| w.get(1)) {
        Some(c) => cx.syms.mul_c(c, group),
        None => Dim::Unknown,
    };
    let mut out: Shape = vec![x[0].clone(), cout];
    if let Some(os) = cx.attr_ints("output_shape").filter(|v| !v.is_empty()) {
        if os.len() < r {
            cx.note(format!("output_shape {os:?} has fewer than {r} entries"));
            out.extend(vec![Dim::Unknown; r]);
        } else {
            out.extend(os[os.len() - r..].iter().map(|&v| Dim::Known(v)));
        }
        return vec![TensorInfo::new(dtype, Some(out))];
    }
    let opad = cx
        .attr_ints("output_padding")
        .map(<[i64]>::to_vec)
        .unwrap_or_default();
    for (i, d) in x[2..].iter().enumerate() {
        let s = win.strides[i];
        let dim = match win.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => cx.syms.mul_c(d, s),
            _ => {
                let ek = win.dilations[i]
                    .saturating_mul(win.kernel[i].saturating_sub(1))
                    .saturating_add(1);
                let (pb, pe) = if win.auto_pad == "VALID" {
                    (0, 0)
                } else {
                    (win.pads[i], win.pads[i + r])
                };
                let op = opad.get(i).copied().unwrap_or(0);
                let t = cx.syms.add_c(d, -1);
                // (in - 1) * stride + output_padding + dilated kernel - pads
                let t = cx.syms.mul_c(&t, s);
                cx.syms.add_c(
                    &t,
                    op.saturating_add(ek).saturating_sub(pb).saturating_sub(pe),
                )
            }
        };
        out.push(dim);
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `MaxPool` (with its optional INT64 indices), `AveragePool`, `LpPool`.
pub fn pool(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let unknown = |cx: &OpCtx| {
        let s = cx.rank(0).map(|r| vec![Dim::Unknown; r]);
        vec![
            TensorInfo::new(dtype, s.clone()),
            TensorInfo::new(Some(DataType::INT64), s),
        ]
    };
    let Some(x) = spatial(cx) else {
        return unknown(cx);
    };
    let r = x.len() - 2;
    let Some(win) = window(cx, r, None) else {
        return unknown(cx);
    };
    let ceil_mode = cx.attr_i("ceil_mode", 0) != 0;
    let mut out: Shape = x[..2].to_vec();
    for (i, d) in x[2..].iter().enumerate() {
        out.push(window_out(cx, &win, i, d, ceil_mode));
    }
    vec![
        TensorInfo::new(dtype, Some(out.clone())),
        TensorInfo::new(Some(DataType::INT64), Some(out)),
    ]
}

/// `GlobalAveragePool`, `GlobalMaxPool`, `GlobalLpPool`: `[N, C, 1, 1, ...]`.
pub fn global_pool(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let shape = cx.shape(0).map(|x| {
        x.iter()
            .enumerate()
            .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
            .collect()
    });
    vec![cx.like_first(shape)]
}
