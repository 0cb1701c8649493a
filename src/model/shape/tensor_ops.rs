//! Ops that rearrange tensors without computing on elements: Reshape, Flatten, Transpose,
//! Squeeze/Unsqueeze, Concat, Split, Slice, Gather*, Pad, Expand, Tile, DepthToSpace, …, plus
//! the shape producers Shape, Size, ConstantOfShape and Range.
//!
//! These are the ops of shape arithmetic, so each one also carries small values through (see
//! `eval.rs`): a Reshape whose target is `Concat(Gather(Shape(x)), -1)` must end up concrete.
//! List parameters that migrated from attributes to inputs (Squeeze/Unsqueeze axes at 13,
//! Split at 13, Slice at 10, Pad at 11) are read from whichever the node uses, so one rule
//! serves every opset.

use super::ctx::{OpCtx, Param};
use super::eval::{
    MAX_VALUE_ELEMS, bcast_map, concat_values, gather_map, numel, sane_rank, slice_map,
    static_usize, strides, transpose_map, with_value,
};
use super::{Dim, Shape, TensorInfo, Value};
use crate::model::tensor::{DataType, to_f32, to_i64};

fn unknown_rank(dtype: Option<DataType>, rank: Option<usize>) -> TensorInfo {
    TensorInfo::new(dtype, rank.map(|r| vec![Dim::Unknown; r]))
}

/// The value of input 0 moved by an index map, when input 0 has a static shape and a value.
fn moved_value(cx: &OpCtx, map: impl FnOnce(&[usize]) -> Option<Vec<usize>>) -> Option<Value> {
    let v = cx.value(0)?;
    let s = static_usize(cx.shape(0)?)?;
    let idx = map(&s)?;
    if idx.len() > MAX_VALUE_ELEMS {
        return None;
    }
    v.select(&idx)
}

/// `Reshape`: 0 copies the input dim (unless `allowzero`), -1 is inferred from the element
/// count, symbolic entries (from `Shape`) are kept.
pub fn reshape(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let target: Option<Vec<Dim>> = if cx.has_input(1) {
        cx.int_dims(1).map(<[Dim]>::to_vec)
    } else {
        cx.attr_ints("shape")
            .map(|v| v.iter().map(|&x| Dim::Known(x)).collect())
    };
    let Some(target) = target else {
        let rank = cx
            .shape(1)
            .filter(|s| s.len() == 1)
            .and_then(|s| s[0].known())
            .and_then(sane_rank);
        return vec![unknown_rank(dtype, rank)];
    };
    let input = cx.shape(0);
    let allowzero = cx.attr_i("allowzero", 0) != 0;
    let mut out: Shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.iter().enumerate() {
        let d = match t {
            Dim::Known(0) if !allowzero => match input {
                Some(s) if i < s.len() => s[i].clone(),
                Some(s) => {
                    cx.note(format!(
                        "shape entry {i} is 0 (copy) but the input has rank {}",
                        s.len()
                    ));
                    Dim::Unknown
                }
                None => Dim::Unknown,
            },
            Dim::Known(-1) => {
                if infer_at.is_some() {
                    cx.note(format!("more than one -1 in target shape {target:?}"));
                }
                infer_at = Some(i);
                Dim::Unknown
            }
            Dim::Known(v) if *v < 0 => {
                cx.note(format!("invalid target dim {v}"));
                Dim::Unknown
            }
            other => other.clone(),
        };
        out.push(d);
    }
    if let (Some(k), Some(input)) = (infer_at, input) {
        let total = cx.syms.product(input);
        let others = cx.syms.product(
            out.iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, d)| d),
        );
        out[k] = match (&total, &others) {
            (_, Dim::Known(0)) | (_, Dim::Unknown) | (Dim::Unknown, _) => Dim::Unknown,
            (Dim::Known(t), Dim::Known(o)) if t.checked_rem(*o) != Some(0) => {
                cx.note(format!(
                    "cannot reshape {t} elements into a shape with {o} elements per -1"
                ));
                Dim::Unknown
            }
            _ => cx.syms.div(&total, &others),
        };
    } else if let (Some(input), None) = (input, infer_at) {
        let a = cx.syms.product(input);
        let b = cx.syms.product(&out);
        if let (Dim::Known(x), Dim::Known(y)) = (&a, &b)
            && x != y
        {
            cx.note(format!(
                "reshape of {x} elements into a shape of {y} elements"
            ));
        }
    }
    let v = cx.value(0).cloned();
    vec![with_value(TensorInfo::new(dtype, Some(out)), v)]
}

/// `Flatten`: `[prod(dims[..axis]), prod(dims[axis..])]`.
pub fn flatten(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![unknown_rank(dtype, Some(2))];
    };
    let r = x.len() as i64;
    let mut axis = cx.attr_i("axis", 1);
    if axis < 0 {
        axis += r;
    }
    if !(0..=r).contains(&axis) {
        cx.note_axis(cx.attr_i("axis", 1), x.len());
        return vec![unknown_rank(dtype, Some(2))];
    }
    let a = cx.syms.product(&x[..axis as usize]);
    let b = cx.syms.product(&x[axis as usize..]);
    let v = cx.value(0).cloned();
    vec![with_value(TensorInfo::new(dtype, Some(vec![a, b])), v)]
}

/// `Transpose`: `perm` defaults to reversing the axes.
pub fn transpose(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![unknown_rank(dtype, cx.attr_ints("perm").map(<[i64]>::len))];
    };
    let r = x.len();
    let perm: Vec<usize> = match cx.attr_ints("perm") {
        None => (0..r).rev().collect(),
        Some(p) => {
            let mut seen = vec![false; r];
            let ok = p.len() == r
                && p.iter().all(|&a| {
                    (0..r as i64).contains(&a) && !std::mem::replace(&mut seen[a as usize], true)
                });
            if !ok {
                cx.note(format!("perm {p:?} is not a permutation of the {r} axes"));
                return vec![unknown_rank(dtype, Some(r))];
            }
            p.iter().map(|&a| a as usize).collect()
        }
    };
    let shape = perm.iter().map(|&p| x[p].clone()).collect();
    let v = moved_value(cx, |s| Some(transpose_map(s, &perm)));
    vec![with_value(TensorInfo::new(dtype, Some(shape)), v)]
}

/// `Squeeze`: removes the given axes, or every dim known to be 1. Symbolic dims are assumed
/// not to be 1 when no axes are given.
pub fn squeeze(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let v = cx.value(0).cloned();
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let shape = match cx.ints_param(1, "axes") {
        Param::Known(axes) => {
            let Some(axes) = cx.axes(&axes, x.len()) else {
                return vec![TensorInfo::new(dtype, None)];
            };
            for &a in &axes {
                if let Dim::Known(d) = x[a]
                    && d != 1
                {
                    cx.note(format!("squeezing axis {a} of size {d}"));
                }
            }
            Some(
                x.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            )
        }
        Param::Absent => {
            if x.contains(&Dim::Unknown) {
                None
            } else {
                Some(x.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
            }
        }
        Param::Unknown => None,
    };
    vec![with_value(TensorInfo::new(dtype, shape), v)]
}

/// `Unsqueeze`: inserts 1s at the given axes of the output.
pub fn unsqueeze(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let v = cx.value(0).cloned();
    let x = cx.shape(0);
    match cx.ints_param(1, "axes") {
        Param::Known(axes) => {
            let Some(x) = x else {
                return vec![TensorInfo::new(dtype, None)];
            };
            let r = x.len() + axes.len();
            let Some(axes) = cx.axes(&axes, r) else {
                return vec![unknown_rank(dtype, Some(r))];
            };
            let mut it = x.iter();
            let shape = (0..r)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Known(1)
                    } else {
                        it.next().cloned().unwrap_or(Dim::Unknown)
                    }
                })
                .collect();
            vec![with_value(TensorInfo::new(dtype, Some(shape)), v)]
        }
        _ => {
            let n = cx
                .shape(1)
                .and_then(|s| s.first())
                .and_then(Dim::known)
                .and_then(sane_rank);
            let rank = x.zip(n).map(|(x, n)| x.len() + n);
            vec![unknown_rank(dtype, rank)]
        }
    }
}

/// Keeps the more informative of two dims that must be equal.
fn merge_equal(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(_), _) => a.clone(),
        _ => b.clone(),
    }
}

/// `Concat`: sizes along `axis` add up, the other dims must agree.
pub fn concat(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let n = cx.node.input.len();
    let dtype = (0..n).find_map(|i| cx.dtype(i));
    let shapes: Vec<Option<&[Dim]>> = (0..n)
        .filter(|&i| cx.has_input(i))
        .map(|i| cx.shape(i))
        .collect();
    let Some(rank) = shapes.iter().flatten().map(|s| s.len()).next() else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", 0), rank) else {
        return vec![unknown_rank(dtype, Some(rank))];
    };
    let mut out: Shape = vec![Dim::Unknown; rank];
    let mut along = Dim::Known(0);
    for s in &shapes {
        let Some(s) = s else {
            along = Dim::Unknown;
            continue;
        };
        if s.len() != rank {
            cx.note(format!("inputs have ranks {} and {rank}", s.len()));
            return vec![unknown_rank(dtype, Some(rank))];
        }
        along = cx.syms.add(&along, &s[axis]);
        for (i, d) in s.iter().enumerate() {
            if i != axis {
                if let (Dim::Known(a), Dim::Known(b)) = (&out[i], d)
                    && a != b
                {
                    cx.note(format!("inputs disagree on axis {i}: {a} vs {b}"));
                }
                out[i] = merge_equal(&out[i], d);
            }
        }
    }
    out[axis] = along;
    let ids: Vec<usize> = (0..n).filter(|&i| cx.has_input(i)).collect();
    let v = ids
        .iter()
        .map(|&i| Some((cx.value(i)?, static_usize(cx.shape(i)?)?)))
        .collect::<Option<Vec<_>>>()
        .and_then(|parts| {
            let refs: Vec<(&Value, &[usize])> =
                parts.iter().map(|(v, s)| (*v, s.as_slice())).collect();
            concat_values(&refs, axis)
        });
    vec![with_value(TensorInfo::new(dtype, Some(out)), v)]
}

/// `Split`: sizes from the `split` input/attribute, else `num_outputs` (18) or the number of
/// outputs, in equal parts with a smaller last one.
pub fn split(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let n_out = cx.node.output.len();
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None); n_out];
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", 0), x.len()) else {
        return vec![unknown_rank(dtype, Some(x.len())); n_out];
    };
    let d = &x[axis];
    let sizes: Vec<Dim> = match cx.ints_param(1, "split") {
        Param::Known(s) => {
            if s.len() != n_out {
                cx.note(format!(
                    "split {s:?} has {} entries for {n_out} outputs",
                    s.len()
                ));
            }
            if let Dim::Known(dv) = d
                && s.iter().try_fold(0i64, |a, &b| a.checked_add(b)) != Some(*dv)
            {
                cx.note(format!("split {s:?} does not add up to the axis size {dv}"));
            }
            s.iter().map(|&v| Dim::Known(v)).collect()
        }
        Param::Unknown => vec![Dim::Unknown; n_out],
        Param::Absent => {
            let parts = cx.attr_i("num_outputs", n_out as i64).max(1);
            if parts != n_out as i64 {
                cx.note(format!(
                    "num_outputs {parts} but the node has {n_out} outputs"
                ));
            }
            match d {
                Dim::Known(dv) if *dv >= 0 => {
                    let chunk = dv.saturating_add(parts - 1) / parts;
                    (0..n_out as i64)
                        .map(|k| {
                            Dim::Known(chunk.min(dv.saturating_sub(k.saturating_mul(chunk)).max(0)))
                        })
                        .collect()
                }
                _ => {
                    let c = cx.syms.ceil_div_c(d, parts);
                    vec![c; n_out]
                }
            }
        }
    };
    let vs = cx.value(0).zip(static_usize(x));
    let mut offset = 0i64;
    let mut outs = Vec::with_capacity(n_out);
    for k in 0..n_out {
        let size = sizes.get(k).cloned().unwrap_or(Dim::Unknown);
        let mut s = x.to_vec();
        s[axis] = size.clone();
        let mut v = None;
        if let (Some((val, xs)), Dim::Known(sz)) = (&vs, &size) {
            let mut os = xs.clone();
            os[axis] = *sz as usize;
            let mut starts = vec![0i64; xs.len()];
            starts[axis] = offset;
            if *sz >= 0
                && numel(&os) <= MAX_VALUE_ELEMS
                && offset.saturating_add(*sz) <= xs[axis] as i64
            {
                v = val.select(&slice_map(xs, &starts, &vec![1; xs.len()], &os));
            }
            offset = offset.saturating_add(*sz);
        }
        outs.push(with_value(TensorInfo::new(dtype, Some(s)), v));
    }
    outs
}

/// Start, end and length of one sliced axis of concrete size `n` (ONNX clamping rules).
fn slice_known(n: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let (n, start, end, step) = (n as i128, start as i128, end as i128, step as i128);
    let fix = |v: i128| if v < 0 { v + n } else { v };
    let (s, e) = (fix(start), fix(end));
    let (s, len) = if step > 0 {
        let s = s.clamp(0, n);
        let e = e.clamp(0, n);
        (s, ((e - s + step - 1) / step).max(0))
    } else {
        let s = s.clamp(0, (n - 1).max(0));
        let e = e.clamp(-1, n - 1);
        (s, ((s - e + (-step) - 1) / (-step)).max(0))
    };
    (s as i64, len as i64)
}

/// Length of a slice of a symbolic axis, assuming the symbol is at least as large as the
/// indices used (what every exporter's shape slicing relies on).
fn slice_sym(cx: &mut OpCtx, d: &Dim, start: i64, end: i64, step: i64) -> Dim {
    const BIG: i64 = i32::MAX as i64;
    if step < 0 {
        return if start == -1 && end <= -BIG {
            d.clone()
        } else {
            Dim::Unknown
        };
    }
    let num = match (start >= 0, end >= BIG, end >= 0) {
        (true, true, _) => cx.syms.add_c(d, -start),
        (false, true, _) => Dim::Known(start.saturating_neg()),
        (true, false, true) | (false, false, false) => Dim::Known(end.saturating_sub(start)),
        (true, false, false) => match end.checked_sub(start) {
            Some(e) => cx.syms.add_c(d, e),
            None => Dim::Unknown,
        },
        (false, false, true) => Dim::Unknown,
    };
    if let Dim::Known(v) = num {
        return Dim::Known(v.max(0).saturating_add(step - 1) / step);
    }
    cx.syms.ceil_div_c(&num, step)
}

/// `Slice`: starts/ends/axes/steps from inputs (10+) or attributes (before 10).
pub fn slice(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let r = x.len();
    let from_inputs = cx.has_input(1) || cx.node.attr("starts").is_none();
    let get = |cx: &OpCtx, i: usize, attr: &str| -> Param<Vec<i64>> {
        if from_inputs {
            cx.ints_param(i, "")
        } else {
            cx.ints_param(usize::MAX, attr)
        }
    };
    let (starts, ends, axes, steps) = (
        get(cx, 1, "starts"),
        get(cx, 2, "ends"),
        get(cx, 3, "axes"),
        get(cx, 4, ""),
    );
    let axes: Param<Vec<usize>> = match axes {
        Param::Known(a) => match cx.axes(&a, r) {
            Some(a) => Param::Known(a),
            None => return vec![unknown_rank(dtype, Some(r))],
        },
        Param::Absent => Param::Absent,
        Param::Unknown => Param::Unknown,
    };
    let (Param::Known(starts), Param::Known(ends)) = (starts, ends) else {
        let mut s = x.to_vec();
        match axes {
            Param::Known(a) => a.iter().for_each(|&i| s[i] = Dim::Unknown),
            _ => s.iter_mut().for_each(|d| *d = Dim::Unknown),
        }
        return vec![TensorInfo::new(dtype, Some(s))];
    };
    let axes = match axes {
        Param::Known(a) => a,
        Param::Absent => (0..starts.len().min(r)).collect(),
        Param::Unknown => return vec![unknown_rank(dtype, Some(r))],
    };
    let steps = match steps {
        Param::Known(s) => s,
        Param::Absent => vec![1; axes.len()],
        Param::Unknown => return vec![unknown_rank(dtype, Some(r))],
    };
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        cx.note(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        ));
        return vec![unknown_rank(dtype, Some(r))];
    }
    let mut out = x.to_vec();
    let mut vstart = vec![0i64; r];
    let mut vstep = vec![1i64; r];
    for (k, &a) in axes.iter().enumerate() {
        let step = steps[k];
        if step == 0 {
            cx.note(format!("slice step 0 on axis {a}"));
            out[a] = Dim::Unknown;
            continue;
        }
        out[a] = match &x[a] {
            Dim::Known(n) if *n >= 0 => {
                let (s, len) = slice_known(*n, starts[k], ends[k], step);
                vstart[a] = s;
                vstep[a] = step;
                Dim::Known(len)
            }
            d @ Dim::Sym(_) => slice_sym(cx, d, starts[k], ends[k], step),
            Dim::Known(_) | Dim::Unknown => Dim::Unknown,
        };
    }
    let v = match static_usize(&out) {
        Some(os) if numel(&os) <= MAX_VALUE_ELEMS => {
            moved_value(cx, |s| Some(slice_map(s, &vstart, &vstep, &os)))
        }
        _ => None,
    };
    vec![with_value(TensorInfo::new(dtype, Some(out)), v)]
}

/// `Gather`: `data[..axis] + indices + data[axis+1..]`, evaluated on small values.
pub fn gather(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let (Some(data), Some(ind)) = (cx.shape(0), cx.shape(1)) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", 0), data.len()) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let mut shape: Shape = data[..axis].to_vec();
    shape.extend_from_slice(ind);
    shape.extend_from_slice(&data[axis + 1..]);
    let v = match (static_usize(data), cx.ints(1)) {
        (Some(ds), Some(idx)) => {
            let n = ds[axis] as i64;
            let norm: Option<Vec<usize>> = idx
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    (0..n).contains(&j).then_some(j as usize)
                })
                .collect();
            match norm {
                Some(norm) => moved_value(cx, |s| gather_map(s, axis, &norm)),
                None => {
                    cx.note(format!(
                        "indices {idx:?} out of range for axis {axis} of size {n}"
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    vec![with_value(TensorInfo::new(dtype, Some(shape)), v)]
}

/// `GatherElements`: the shape of the indices.
pub fn gather_elements(cx: &mut OpCtx) -> Vec<TensorInfo> {
    vec![TensorInfo::new(
        cx.dtype(0),
        cx.shape(1).map(<[Dim]>::to_vec),
    )]
}

/// `GatherND`: `indices.shape[:-1] + data.shape[batch_dims + indices.shape[-1]:]`.
pub fn gather_nd(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let (Some(data), Some(ind)) = (cx.shape(0), cx.shape(1)) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let b = cx.attr_i("batch_dims", 0).max(0) as usize;
    let Some(Dim::Known(last)) = ind.last() else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let from = b.saturating_add((*last).max(0) as usize);
    if from > data.len() {
        cx.note(format!(
            "indices reach {from} axes of a rank-{} input",
            data.len()
        ));
        return vec![TensorInfo::new(dtype, None)];
    }
    let mut shape: Shape = ind[..ind.len() - 1].to_vec();
    shape.extend_from_slice(&data[from..]);
    vec![TensorInfo::new(dtype, Some(shape))]
}

/// `Pad`: pads from the input (11+) or the `pads`/`paddings` attribute; `axes` input (18).
pub fn pad(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let r = x.len();
    let axes: Vec<usize> = match cx.ints_param(3, "") {
        Param::Known(a) => match cx.axes(&a, r) {
            Some(a) => a,
            None => return vec![unknown_rank(dtype, Some(r))],
        },
        Param::Absent => (0..r).collect(),
        Param::Unknown => return vec![unknown_rank(dtype, Some(r))],
    };
    let pads = match cx.ints_param(1, "pads") {
        Param::Absent => cx.ints_param(usize::MAX, "paddings"),
        p => p,
    };
    let mut out = x.to_vec();
    match pads {
        Param::Known(p) if p.len() == 2 * axes.len() => {
            let n = axes.len();
            for (k, &a) in axes.iter().enumerate() {
                out[a] = cx.syms.add_c(&x[a], p[k].saturating_add(p[k + n]));
            }
        }
        Param::Known(p) => {
            cx.note(format!("pads {p:?} should have {} entries", 2 * axes.len()));
            axes.iter().for_each(|&a| out[a] = Dim::Unknown);
        }
        Param::Absent => {}
        Param::Unknown => axes.iter().for_each(|&a| out[a] = Dim::Unknown),
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `Shape` (with `start`/`end` from opset 15): the dims as an INT64 value.
pub fn shape(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(
            Some(DataType::INT64),
            Some(vec![Dim::Unknown]),
        )];
    };
    let r = x.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = clampi(cx.attr_i("start", 0));
    let e = clampi(cx.attr_i("end", r));
    let dims: Vec<Dim> = if s < e { x[s..e].to_vec() } else { Vec::new() };
    let info = TensorInfo::new(
        Some(DataType::INT64),
        Some(vec![Dim::Known(dims.len() as i64)]),
    );
    vec![with_value(info, Some(Value::Int(dims)))]
}

/// `Size`: INT64 scalar, the element count.
pub fn size(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let info = TensorInfo::new(Some(DataType::INT64), Some(vec![]));
    let v = cx
        .shape(0)
        .map(|x| cx.syms.product(x))
        .map(|d| Value::Int(vec![d]));
    vec![with_value(info, v)]
}

/// `ConstantOfShape`: the shape is the input's value; dtype and fill from `value`.
pub fn constant_of_shape(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let t = cx.node.attr_t("value");
    let dtype = Some(t.map_or(DataType::FLOAT, |t| DataType(t.data_type())));
    let Some(dims) = cx.int_dims(0) else {
        let rank = cx
            .shape(0)
            .and_then(|s| s.first())
            .and_then(Dim::known)
            .and_then(sane_rank);
        return vec![unknown_rank(dtype, rank)];
    };
    let info = TensorInfo::new(dtype, Some(dims.to_vec()));
    let n = info
        .static_shape()
        .and_then(|s| {
            s.iter()
                .try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) })
        })
        .unwrap_or(i64::MAX);
    let v = if (0..=MAX_VALUE_ELEMS as i64).contains(&n) {
        let fill = match t {
            None => Some(Value::Float(vec![0.0])),
            Some(t) => tensor_value(t),
        };
        fill.and_then(|f| f.splat(n as usize))
    } else {
        None
    };
    vec![with_value(info, v)]
}

/// Contents of a small tensor proto as a [`Value`].
pub fn tensor_value(t: &crate::model::proto::TensorProto) -> Option<Value> {
    let dt = DataType(t.data_type());
    if t.numel() > MAX_VALUE_ELEMS as u64 {
        return None;
    }
    if dt.is_integer() || dt == DataType::BOOL {
        to_i64(t)
            .ok()
            .map(|v| Value::Int(v.into_iter().map(Dim::Known).collect()))
    } else if dt.is_float() {
        if dt == DataType::DOUBLE && t.raw_data.is_none() {
            return Some(Value::Float(t.double_data.clone()));
        }
        to_f32(t)
            .ok()
            .map(|v| Value::Float(v.into_iter().map(f64::from).collect()))
    } else {
        None
    }
}

/// `Range(start, limit, delta)`: `max(ceil((limit - start) / delta), 0)` elements.
pub fn range(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0).or(cx.dtype(1));
    let unknown = TensorInfo::new(dtype, Some(vec![Dim::Unknown]));
    let is_float = dtype.is_some_and(DataType::is_float);
    if is_float {
        let (Some(s), Some(l), Some(d)) = (cx.floats(0), cx.floats(1), cx.floats(2)) else {
            return vec![unknown];
        };
        let (Some(&s), Some(&l), Some(&d)) = (s.first(), l.first(), d.first()) else {
            return vec![unknown];
        };
        if d == 0.0 {
            cx.note("Range delta is 0");
            return vec![unknown];
        }
        let n = ((l - s) / d).ceil().max(0.0) as i64;
        let info = TensorInfo::new(dtype, Some(vec![Dim::Known(n)]));
        let v = (n as usize <= MAX_VALUE_ELEMS)
            .then(|| Value::Float((0..n).map(|i| s + i as f64 * d).collect()));
        return vec![with_value(info, v)];
    }
    let (Some(s), Some(l), Some(d)) = (cx.scalar_dim(0), cx.scalar_dim(1), cx.scalar_dim(2)) else {
        return vec![unknown];
    };
    let n = match (&s, &l, &d) {
        (_, _, Dim::Known(0)) => {
            cx.note("Range delta is 0");
            Dim::Unknown
        }
        (Dim::Known(s), Dim::Known(l), Dim::Known(d)) => {
            let (num, d) = (*l as i128 - *s as i128, *d as i128);
            let q = if d > 0 {
                (num + d - 1).div_euclid(d)
            } else {
                (-num + (-d) - 1).div_euclid(-d)
            };
            Dim::Known(q.clamp(0, i64::MAX as i128) as i64)
        }
        (_, _, Dim::Known(dv)) if *dv > 0 => {
            let num = cx.syms.sub(&l, &s);
            cx.syms.ceil_div_c(&num, *dv)
        }
        _ => Dim::Unknown,
    };
    let info = TensorInfo::new(dtype, Some(vec![n.clone()]));
    let v = match (&s, &d, &n) {
        (Dim::Known(s), Dim::Known(d), Dim::Known(n)) if (*n as usize) <= MAX_VALUE_ELEMS => {
            Some(Value::Int(
                (0..*n)
                    .map(|i| Dim::Known(s.wrapping_add(i.wrapping_mul(*d))))
                    .collect(),
            ))
        }
        _ => None,
    };
    vec![with_value(info, v)]
}

/// `Expand`: bidirectional broadcast of the input with the shape operand.
pub fn expand(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(target) = cx.int_dims(1) else {
        return vec![expand_unknown_target(cx)];
    };
    let target = target.to_vec();
    let Some(out) = super::broadcast::broadcast_shapes(cx, &[cx.shape(0), Some(&target)]) else {
        return vec![unknown_rank(dtype, None)];
    };
    let v = match static_usize(&out) {
        Some(os) if numel(&os) <= MAX_VALUE_ELEMS => moved_value(cx, |s| Some(bcast_map(s, &os))),
        _ => None,
    };
    vec![with_value(TensorInfo::new(dtype, Some(out)), v)]
}

/// `Expand` whose target shape is not constant: its length fixes the rank, and a dim of the
/// input other than 1 survives broadcasting whatever the target says there.
fn expand_unknown_target(cx: &OpCtx) -> TensorInfo {
    let dtype = cx.dtype(0);
    let k = cx
        .shape(1)
        .and_then(|s| s.first())
        .and_then(Dim::known)
        .and_then(sane_rank);
    let (Some(k), Some(x)) = (k, cx.shape(0)) else {
        return unknown_rank(dtype, k.filter(|_| cx.rank(0).is_some()));
    };
    let rank = k.max(x.len());
    let shape = (0..rank)
        .map(|i| match (i + x.len()).checked_sub(rank).map(|j| &x[j]) {
            Some(Dim::Known(v)) if *v != 1 => Dim::Known(*v),
            Some(d) if i < rank - k => d.clone(),
            _ => Dim::Unknown,
        })
        .collect();
    TensorInfo::new(dtype, Some(shape))
}

/// `Tile`: each dim times its repeat count.
pub fn tile(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let Some(reps) = cx.int_dims(1) else {
        return vec![unknown_rank(dtype, Some(x.len()))];
    };
    if reps.len() != x.len() {
        cx.note(format!(
            "repeats has {} entries for a rank-{} input",
            reps.len(),
            x.len()
        ));
        return vec![unknown_rank(dtype, Some(x.len()))];
    }
    let reps = reps.to_vec();
    let out: Shape = x
        .iter()
        .zip(&reps)
        .map(|(d, r)| cx.syms.mul(d, r))
        .collect();
    let v = match static_usize(&out) {
        Some(os) if numel(&os) <= MAX_VALUE_ELEMS => moved_value(cx, |s| {
            let st = strides(s);
            let mut idx = Vec::with_capacity(numel(&os));
            let ost = strides(&os);
            for flat in 0..numel(&os) {
                let mut src = 0;
                for ax in 0..os.len() {
                    let i = (flat / ost[ax]) % os[ax];
                    src += (i % s[ax].max(1)) * st[ax];
                }
                idx.push(src);
            }
            Some(idx)
        }),
        _ => None,
    };
    vec![with_value(TensorInfo::new(dtype, Some(out)), v)]
}

/// `DepthToSpace` / `SpaceToDepth` with `blocksize` b on NCHW.
pub fn depth_space(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let b = cx.attr_i("blocksize", 0);
    let Some(x) = cx.shape(0).filter(|x| x.len() == 4) else {
        cx.note("expects a rank-4 input");
        return vec![unknown_rank(dtype, Some(4))];
    };
    if b <= 0 || b > i32::MAX as i64 {
        cx.note("blocksize must be positive");
        return vec![unknown_rank(dtype, Some(4))];
    }
    let shape = if cx.op == "DepthToSpace" {
        vec![
            x[0].clone(),
            cx.syms.floor_div_c(&x[1], b * b),
            cx.syms.mul_c(&x[2], b),
            cx.syms.mul_c(&x[3], b),
        ]
    } else {
        vec![
            x[0].clone(),
            cx.syms.mul_c(&x[1], b * b),
            cx.syms.floor_div_c(&x[2], b),
            cx.syms.floor_div_c(&x[3], b),
        ]
    };
    vec![TensorInfo::new(dtype, Some(shape))]
}

/// `OneHot(indices, depth, values)`: a `depth` axis inserted at `axis`.
pub fn one_hot(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(2);
    let Some(ind) = cx.shape(0) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let r = ind.len() + 1;
    let Some(axis) = cx.axis(cx.attr_i("axis", -1), r) else {
        return vec![unknown_rank(dtype, Some(r))];
    };
    let depth = cx.scalar_dim(1).unwrap_or(Dim::Unknown);
    let mut shape = ind.to_vec();
    shape.insert(axis, depth);
    vec![TensorInfo::new(dtype, Some(shape))]
}

/// `NonZero`: INT64 `[rank, count]`; the count is known only for known values.
pub fn nonzero(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let Some(x) = cx.shape(0) else {
        return vec![unknown_rank(Some(DataType::INT64), Some(2))];
    };
    let count = match cx.value(0) {
        Some(Value::Int(v)) if v.iter().all(|d| d.known().is_some()) => {
            Dim::Known(v.iter().filter(|d| **d != Dim::Known(0)).count() as i64)
        }
        Some(Value::Float(v)) => Dim::Known(v.iter().filter(|&&f| f != 0.0).count() as i64),
        _ => Dim::Unknown,
    };
    vec![TensorInfo::new(
        Some(DataType::INT64),
        Some(vec![Dim::Known(x.len() as i64), count]),
    )]
}

/// `Compress`: the selected axis (or the flattened input) shrinks to the number of true
/// conditions, known only when the condition is.
pub fn compress(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let count = cx
        .ints(1)
        .map(|c| c.iter().filter(|&&v| v != 0).count() as i64);
    let x = cx.shape(0);
    match cx.node.attr_i("axis") {
        None => vec![TensorInfo::new(
            dtype,
            Some(vec![count.map_or(Dim::Unknown, Dim::Known)]),
        )],
        Some(a) => {
            let Some(x) = x else {
                return vec![TensorInfo::new(dtype, None)];
            };
            let Some(axis) = cx.axis(a, x.len()) else {
                return vec![unknown_rank(dtype, Some(x.len()))];
            };
            let mut s = x.to_vec();
            s[axis] = match (count, &x[axis]) {
                (Some(c), Dim::Known(n)) => Dim::Known(c.min(*n)),
                _ => Dim::Unknown,
            };
            vec![TensorInfo::new(dtype, Some(s))]
        }
    }
}
