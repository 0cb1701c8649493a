//! Reductions (`Reduce*` with keepdims and noop_with_empty_axes), ArgMax/ArgMin and TopK.
//!
//! The axes of the Reduce family moved from an attribute to an input (ReduceSum at 13, the
//! rest at 18); both are read. Small integer reductions (ReduceProd of a shape, the classic
//! element count) are evaluated.

use super::ctx::{OpCtx, Param};
use super::eval::{eval_reduce, static_usize, with_value};
use super::{Dim, Shape, TensorInfo};
use crate::model::tensor::DataType;

/// `ReduceMean`, `ReduceSum`, `ReduceMax`, … : reduced axes become 1 (keepdims) or vanish.
pub fn reduce(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let keep = cx.attr_i("keepdims", 1) != 0;
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let r = x.len();
    let axes: Vec<usize> = match cx.ints_param(1, "axes") {
        Param::Known(a) if !a.is_empty() => match cx.axes(&a, r) {
            Some(a) => a,
            None => return vec![TensorInfo::new(dtype, keep.then(|| vec![Dim::Unknown; r]))],
        },
        Param::Known(_) | Param::Absent => {
            if cx.attr_i("noop_with_empty_axes", 0) != 0 {
                let v = cx.value(0).cloned();
                return vec![with_value(cx.like_first(Some(x.to_vec())), v)];
            }
            (0..r).collect()
        }
        Param::Unknown => return vec![TensorInfo::new(dtype, keep.then(|| vec![Dim::Unknown; r]))],
    };
    let shape: Shape = x
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
            (false, _) => Some(d.clone()),
        })
        .collect();
    let v = match (cx.value(0), static_usize(x)) {
        (Some(v), Some(s))
            if matches!(
                cx.op,
                "ReduceSum" | "ReduceProd" | "ReduceMax" | "ReduceMin"
            ) =>
        {
            eval_reduce(
                crate::ops::lookup(cx.op).and_then(|d| d.eval.reduce()),
                v,
                &s,
                &axes,
                cx.syms,
            )
        }
        _ => None,
    };
    vec![with_value(TensorInfo::new(dtype, Some(shape)), v)]
}

/// `ArgMax` / `ArgMin`: INT64, one axis reduced.
pub fn arg(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dt = Some(DataType::INT64);
    let keep = cx.attr_i("keepdims", 1) != 0;
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dt, None)];
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", 0), x.len()) else {
        return vec![TensorInfo::new(dt, None)];
    };
    let mut s = x.to_vec();
    if keep {
        s[axis] = Dim::Known(1);
    } else {
        s.remove(axis);
    }
    vec![TensorInfo::new(dt, Some(s))]
}

/// `TopK`: values (input dtype) and INT64 indices, the axis shrunk to K.
pub fn topk(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let idt = Some(DataType::INT64);
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None), TensorInfo::new(idt, None)];
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", -1), x.len()) else {
        return vec![TensorInfo::new(dtype, None), TensorInfo::new(idt, None)];
    };
    let k = if cx.has_input(1) {
        cx.scalar_dim(1).unwrap_or(Dim::Unknown)
    } else {
        cx.node.attr_i("k").map_or(Dim::Unknown, Dim::Known)
    };
    if let (Dim::Known(k), Dim::Known(n)) = (&k, &x[axis])
        && k > n
    {
        cx.note(format!("K = {k} is larger than the axis size {n}"));
    }
    let mut s = x.to_vec();
    s[axis] = k;
    vec![
        TensorInfo::new(dtype, Some(s.clone())),
        TensorInfo::new(idt, Some(s)),
    ]
}
