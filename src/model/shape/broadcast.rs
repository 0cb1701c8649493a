//! Elementwise ops: unary activations, multidirectional-broadcasting binary and variadic ops,
//! comparisons, `Where`, `Clip`, `Cast`.
//!
//! Broadcasting is where symbolic dims matter most: `1` against `batch` is `batch`, equal
//! symbols stay, a concrete size against a symbol is the concrete size (the runtime would fail
//! otherwise). Two different symbols, or a symbol against something unknown, could each be 1,
//! so the result is `Unknown` rather than a guess.

use super::ctx::OpCtx;
use super::eval::{eval_binary, eval_cast, eval_unary, eval_where, static_usize, with_value};
use super::{Dim, Shape, TensorInfo};
use crate::model::tensor::DataType;
use crate::ops::{Eval, UnOp};

/// Broadcasts two dims; `Err` when both are concrete, differ, and neither is 1.
pub fn bcast_dim(a: &Dim, b: &Dim) -> Result<Dim, ()> {
    Ok(match (a, b) {
        (Dim::Known(1), x) | (x, Dim::Known(1)) => x.clone(),
        (Dim::Known(x), Dim::Known(y)) => {
            if x == y {
                Dim::Known(*x)
            } else {
                return Err(());
            }
        }
        (Dim::Known(x), _) | (_, Dim::Known(x)) => Dim::Known(*x),
        (Dim::Sym(x), Dim::Sym(y)) if x == y => a.clone(),
        _ => Dim::Unknown,
    })
}

/// Multidirectional broadcast of several shapes; `None` when a rank is unknown. A mismatch of
/// concrete dims is noted and gives an `Unknown` dim.
pub fn broadcast_shapes(cx: &mut OpCtx, shapes: &[Option<&[Dim]>]) -> Option<Shape> {
    let mut out: Shape = Vec::new();
    for s in shapes {
        let s = (*s)?;
        if s.len() > out.len() {
            let mut pre = vec![Dim::Known(1); s.len() - out.len()];
            pre.extend(out);
            out = pre;
        }
        let off = out.len() - s.len();
        for (i, d) in s.iter().enumerate() {
            match bcast_dim(&out[off + i], d) {
                Ok(r) => out[off + i] = r,
                Err(()) => {
                    cx.note(format!(
                        "cannot broadcast dim {} with {} (axis {})",
                        out[off + i],
                        d,
                        off + i
                    ));
                    out[off + i] = Dim::Unknown;
                }
            }
        }
    }
    Some(out)
}

/// Shape of inputs broadcast, for the inputs at `idx`.
fn bshape(cx: &mut OpCtx, idx: &[usize]) -> Option<Shape> {
    let shapes: Vec<Option<&[Dim]>> = idx.iter().map(|&i| cx.shape(i)).collect();
    broadcast_shapes(cx, &shapes)
}

/// Unary ops: same shape and dtype, small values evaluated.
pub fn unary(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let info = cx.like_first(cx.shape(0).map(<[Dim]>::to_vec));
    let v = cx
        .value(0)
        .and_then(|v| eval_unary(op_eval(cx.op).unary(), v, cx.dtype(0), cx.syms));
    vec![with_value(info, v)]
}

/// How the op table evaluates this op on small values.
fn op_eval(op: &str) -> Eval {
    crate::ops::lookup(op).map_or(Eval::None, |d| d.eval)
}

/// Broadcasting ops with the inputs' dtype.
pub fn binary(cx: &mut OpCtx) -> Vec<TensorInfo> {
    nary(cx, false)
}

/// Broadcasting ops with a BOOL output.
pub fn compare(cx: &mut OpCtx) -> Vec<TensorInfo> {
    nary(cx, true)
}

/// `Mean`: broadcast shape, never evaluated (shape arithmetic does not average).
pub fn mean(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let n = cx.node.input.len();
    let idx: Vec<usize> = (0..n).filter(|&i| cx.has_input(i)).collect();
    let shape = bshape(cx, &idx);
    let dtype = idx.iter().find_map(|&i| cx.dtype(i));
    vec![TensorInfo::new(dtype, shape)]
}

/// Binary, variadic and comparison ops.
pub fn nary(cx: &mut OpCtx, bool_out: bool) -> Vec<TensorInfo> {
    let n = cx.node.input.len();
    let idx: Vec<usize> = (0..n).filter(|&i| cx.has_input(i)).collect();
    let shape = bshape(cx, &idx);
    let dtype = if bool_out {
        Some(DataType::BOOL)
    } else {
        idx.iter().find_map(|&i| cx.dtype(i))
    };
    let info = TensorInfo::new(dtype, shape);
    let op = op_eval(cx.op).binary();
    // Fold the values left to right.
    let mut acc: Option<(super::Value, Vec<usize>)> = None;
    for &i in &idx {
        let (Some(v), Some(s)) = (cx.value(i), cx.shape(i).and_then(static_usize)) else {
            return vec![info];
        };
        acc = match acc {
            None => Some((v.clone(), s)),
            Some((a, sa)) => {
                let Some(out) = static_bcast(&sa, &s) else {
                    return vec![info];
                };
                let r = eval_binary(op, (&a, &sa), (v, &s), &out, dtype, cx.syms);
                match r {
                    Some(r) => Some((r, out)),
                    None => return vec![info],
                }
            }
        };
    }
    let v = acc.map(|(v, _)| v);
    vec![with_value(info, v)]
}

/// Broadcast of two static shapes.
pub fn static_bcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        let off = r - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..r)
        .map(|i| {
            let (x, y) = (get(a, i), get(b, i));
            if x == y || y == 1 {
                Some(x)
            } else if x == 1 {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// `Where(cond, x, y)`: broadcast of all three, dtype of `x`.
pub fn where_(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let shape = bshape(cx, &[0, 1, 2]);
    let info = TensorInfo::new(cx.dtype(1).or(cx.dtype(2)), shape);
    let vals = (0..3)
        .map(|i| Some((cx.value(i)?, cx.shape(i).and_then(static_usize)?)))
        .collect::<Option<Vec<_>>>();
    let v = vals.and_then(|v| {
        let out = static_bcast(&static_bcast(&v[0].1, &v[1].1)?, &v[2].1)?;
        eval_where(
            (v[0].0, &v[0].1),
            (v[1].0, &v[1].1),
            (v[2].0, &v[2].1),
            &out,
        )
    });
    vec![with_value(info, v)]
}

/// `Clip`: same shape; bounds from attributes (before 11) or inputs; values clamped when
/// known.
pub fn clip(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let info = cx.like_first(cx.shape(0).map(<[Dim]>::to_vec));
    let Some(v) = cx.value(0) else {
        return vec![info];
    };
    let bound = |cx: &OpCtx, i: usize, attr: &str| -> Option<Option<f64>> {
        if cx.has_input(i) {
            cx.floats(i).and_then(|f| f.first().copied()).map(Some)
        } else {
            Some(cx.node.attr_f(attr).map(f64::from))
        }
    };
    let (Some(lo), Some(hi)) = (bound(cx, 1, "min"), bound(cx, 2, "max")) else {
        return vec![info];
    };
    let out = match v {
        super::Value::Float(x) => super::Value::Float(
            x.iter()
                .map(|&a| {
                    let a = lo.map_or(a, |l| a.max(l));
                    hi.map_or(a, |h| a.min(h))
                })
                .collect(),
        ),
        super::Value::Int(x) => super::Value::Int(
            x.iter()
                .map(|d| {
                    let d = lo.map_or(d.clone(), |l| cx.syms.max(d, &Dim::Known(l as i64)));
                    hi.map_or(d.clone(), |h| cx.syms.min(&d, &Dim::Known(h as i64)))
                })
                .collect(),
        ),
    };
    vec![with_value(info, Some(out))]
}

/// `Cast` (dtype from `to`) and `CastLike` (dtype of the second input).
pub fn cast(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let to = if cx.op == "CastLike" {
        cx.dtype(1)
    } else {
        cx.node.attr_i("to").map(|t| DataType(t as i32))
    };
    let info = TensorInfo::new(to, cx.shape(0).map(<[Dim]>::to_vec));
    let v = match (cx.value(0), to) {
        (Some(v), Some(to)) => eval_cast(v, to),
        _ => None,
    };
    vec![with_value(info, v)]
}

/// `PRelu`: unidirectional broadcast of the slope to X, i.e. X's shape.
/// `PRelu`: the output has X's shape. The slope broadcasts to X only (unidirectionally; before
/// opset 7 a `[C]` slope runs along the channel axis), so numpy broadcasting of the two would
/// wrongly give an unknown dim for a per-channel slope.
pub fn prelu(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let shape = match cx.shape(0) {
        Some(x) => Some(x.to_vec()),
        None => bshape(cx, &[0, 1]),
    };
    vec![cx.like_first(shape)]
}

/// `Dropout`: output as input; the optional mask is BOOL of the same shape.
pub fn dropout(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let s = cx.shape(0).map(<[Dim]>::to_vec);
    let v = cx.value(0).cloned();
    vec![
        with_value(cx.like_first(s.clone()), v),
        TensorInfo::new(Some(DataType::BOOL), s),
    ]
}

/// `IsNaN`, `IsInf`: BOOL of the same shape.
pub fn is_special(cx: &mut OpCtx) -> Vec<TensorInfo> {
    vec![TensorInfo::new(
        Some(DataType::BOOL),
        cx.shape(0).map(<[Dim]>::to_vec),
    )]
}

/// `Not`: BOOL, evaluated.
pub fn not(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let info = TensorInfo::new(Some(DataType::BOOL), cx.shape(0).map(<[Dim]>::to_vec));
    let v = cx
        .value(0)
        .and_then(|v| eval_unary(Some(UnOp::Not), v, None, cx.syms));
    vec![with_value(info, v)]
}
