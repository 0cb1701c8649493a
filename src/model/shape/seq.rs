//! Sequence and optional ops (SequenceEmpty/Construct/Insert/Erase/At/Length,
//! SplitToSequence, ConcatFromSequence, Optional, OptionalGetElement, OptionalHasElement) and
//! StringNormalizer.
//!
//! A sequence's info keeps its elements one by one while the ops that built it fix them
//! (construction from tensors, insert/erase at known positions, a split of a known axis), so
//! that `SequenceAt` at a known position, `SequenceLength` and `ConcatFromSequence` are exact;
//! once a position is unknown only what every element shares is kept.

use super::ctx::OpCtx;
use super::{Dim, SeqInfo, Shape, TensorInfo, Value, ValueKind, merge_infos};
use crate::model::tensor::DataType;

/// Most elements a sequence's info lists one by one; a split into more keeps only what the
/// elements share.
const MAX_ITEMS: i64 = 1024;

fn seq_out(s: SeqInfo) -> Vec<TensorInfo> {
    vec![TensorInfo::of_kind(ValueKind::Sequence(Box::new(s)))]
}

/// Input `i` as a sequence (nothing known of its elements when it is not known to be one).
fn seq_in(cx: &OpCtx, i: usize) -> SeqInfo {
    cx.input(i)
        .and_then(TensorInfo::seq)
        .cloned()
        .unwrap_or_default()
}

/// What `s`'s elements share once `t` may be among them.
fn merged(s: &SeqInfo, t: &TensorInfo) -> TensorInfo {
    if s.items.as_ref().is_some_and(Vec::is_empty) {
        t.clone()
    } else {
        merge_infos(&s.elem, t)
    }
}

/// Position input `i` normalised against a sequence of `n` elements (`n` itself is valid for
/// an insert); `None` when its value is unknown or out of range (with a note).
fn position(cx: &mut OpCtx, i: usize, n: usize, insert: bool) -> Option<usize> {
    let p = cx.scalar_dim(i)?.known()?;
    let n = n as i64;
    let q = if p < 0 { p + n } else { p };
    let hi = if insert { n } else { n - 1 };
    if (0..=hi).contains(&q) {
        Some(q as usize)
    } else {
        cx.note(format!(
            "position {p} is out of range for a sequence of {n}"
        ));
        None
    }
}

/// `SequenceEmpty`: no elements, of the `dtype` attribute (float by default).
pub fn sequence_empty(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = i32::try_from(cx.attr_i("dtype", i64::from(DataType::FLOAT.0)))
        .ok()
        .map(DataType);
    seq_out(SeqInfo::of_items(dtype, Vec::new()))
}

/// `SequenceConstruct`: exactly its inputs.
pub fn sequence_construct(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let items = (0..cx.node.input.len())
        .map(|i| cx.input(i).cloned().unwrap_or_default())
        .collect();
    seq_out(SeqInfo::of_items(None, items))
}

/// `SequenceInsert`: the tensor at `position` (the end when absent).
pub fn sequence_insert(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let s = seq_in(cx, 0);
    let t = cx.input(1).cloned().unwrap_or_default();
    if let Some(mut items) = s.items.clone() {
        let n = items.len();
        let at = if cx.has_input(2) {
            position(cx, 2, n, true)
        } else {
            Some(n)
        };
        if let Some(at) = at {
            items.insert(at, t);
            return seq_out(SeqInfo::of_items(s.elem.dtype, items));
        }
    }
    seq_out(SeqInfo {
        elem: merged(&s, &t),
        items: None,
    })
}

/// `SequenceErase`: without the element at `position` (the last when absent).
pub fn sequence_erase(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let s = seq_in(cx, 0);
    if let Some(mut items) = s.items.clone().filter(|v| !v.is_empty()) {
        let n = items.len();
        let at = if cx.has_input(1) {
            position(cx, 1, n, false)
        } else {
            Some(n - 1)
        };
        if let Some(at) = at {
            items.remove(at);
            return seq_out(SeqInfo::of_items(s.elem.dtype, items));
        }
    }
    seq_out(SeqInfo {
        elem: s.elem,
        items: None,
    })
}

/// `SequenceAt`: the element at a known position, else what every element shares.
pub fn sequence_at(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let s = seq_in(cx, 0);
    if let Some(items) = s.items.as_ref().filter(|v| !v.is_empty())
        && let Some(at) = position(cx, 1, items.len(), false)
    {
        return vec![items[at].clone()];
    }
    vec![s.elem]
}

/// `SequenceLength`: an int64 scalar, known when the elements are.
pub fn sequence_length(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let info = TensorInfo::new(Some(DataType::INT64), Some(Vec::new()));
    vec![match seq_in(cx, 0).items {
        Some(v) => info.with_value(Value::Int(vec![Dim::Known(v.len() as i64)])),
        None => info,
    }]
}

/// Sizes of `SplitToSequence`'s pieces along the axis of size `d`, when known: all 1 without
/// `split`, chunks of a scalar `split` (the last one shorter), or a 1-D `split` as given.
fn split_sizes(cx: &OpCtx, d: &Dim) -> Option<Vec<i64>> {
    let n = d.known();
    let sizes = if !cx.has_input(1) {
        vec![1; usize::try_from(n?.min(MAX_ITEMS + 1)).ok()?]
    } else if cx.rank(1) == Some(0) {
        let c = cx.ints(1)?.first().copied().filter(|&c| c > 0)?;
        let n = n?;
        if n / c > MAX_ITEMS {
            return None;
        }
        let mut v = vec![c; (n / c) as usize];
        if n % c != 0 {
            v.push(n % c);
        }
        v
    } else {
        cx.ints(1)?
    };
    (sizes.len() as i64 <= MAX_ITEMS).then_some(sizes)
}

/// `SplitToSequence`: pieces along `axis`; without `split`, slices of size 1 whose axis
/// `keepdims` = 0 removes.
pub fn split_to_sequence(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let unknown = || {
        seq_out(SeqInfo {
            elem: TensorInfo::new(dtype, None),
            items: None,
        })
    };
    let Some(x) = cx.shape(0).map(<[Dim]>::to_vec) else {
        return unknown();
    };
    let Some(axis) = cx.axis(cx.attr_i("axis", 0), x.len()) else {
        return unknown();
    };
    let drop_axis = !cx.has_input(1) && cx.attr_i("keepdims", 1) == 0;
    let piece = |d: Dim| {
        let mut s = x.clone();
        if drop_axis {
            s.remove(axis);
        } else {
            s[axis] = d;
        }
        TensorInfo::new(dtype, Some(s))
    };
    match split_sizes(cx, &x[axis]) {
        Some(sizes) => seq_out(SeqInfo::of_items(
            dtype,
            sizes.into_iter().map(|d| piece(Dim::Known(d))).collect(),
        )),
        None => {
            let d = if cx.has_input(1) {
                Dim::Unknown
            } else {
                Dim::Known(1)
            };
            seq_out(SeqInfo {
                elem: piece(d),
                items: None,
            })
        }
    }
}

/// Shape of the concatenation of `shapes` along `axis` (normalised against the output
/// rank); with `new_axis`, each gets a 1 inserted there first (stacking).
fn concat_shapes(cx: &mut OpCtx, shapes: Vec<Shape>, axis: i64, new_axis: bool) -> Option<Shape> {
    let r = shapes.first()?.len() + usize::from(new_axis);
    let ax = cx.axis(axis, r)?;
    let mut shapes = shapes.into_iter().map(|mut s| {
        if new_axis && ax <= s.len() {
            s.insert(ax, Dim::Known(1));
        }
        s
    });
    let mut out = shapes.next()?;
    for s in shapes {
        if s.len() != r {
            cx.note(format!("sequence elements have ranks {} and {r}", s.len()));
            return None;
        }
        out[ax] = cx.syms.add(&out[ax], &s[ax]);
        for (i, d) in s.into_iter().enumerate() {
            if i != ax && out[i] != d {
                out[i] = match (&out[i], &d) {
                    (Dim::Known(_), _) => out[i].clone(),
                    (_, Dim::Known(_)) => d,
                    _ => Dim::Unknown,
                };
            }
        }
    }
    Some(out)
}

/// `ConcatFromSequence`: the elements concatenated (or stacked, `new_axis` = 1) along
/// `axis`; exact when the elements are known one by one, else that axis is unknown.
pub fn concat_from_sequence(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let s = seq_in(cx, 0);
    let new_axis = cx.attr_i("new_axis", 0) != 0;
    let axis = cx.attr_i("axis", 0);
    let dtype = s.elem.dtype;
    let shapes: Option<Vec<Shape>> = s
        .items
        .as_ref()
        .filter(|v| !v.is_empty())
        .and_then(|v| v.iter().map(|t| t.shape.clone()).collect());
    if let Some(out) = shapes.and_then(|sh| concat_shapes(cx, sh, axis, new_axis)) {
        return vec![TensorInfo::new(dtype, Some(out))];
    }
    let Some(mut out) = s.elem.shape else {
        return vec![TensorInfo::new(dtype, None)];
    };
    let Some(ax) = cx.axis(axis, out.len() + usize::from(new_axis)) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    if new_axis {
        out.insert(ax, Dim::Unknown);
    } else {
        out[ax] = Dim::Unknown;
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `Optional`: wraps its input (nothing known of the value when it has none).
pub fn optional(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let e = cx.input(0).cloned().unwrap_or_default();
    vec![TensorInfo::of_kind(ValueKind::Optional(Box::new(e)))]
}

/// `OptionalGetElement`: the optional's value; a tensor or sequence input passes through.
pub fn optional_get(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let Some(x) = cx.input(0) else {
        return vec![TensorInfo::default()];
    };
    vec![match &x.kind {
        ValueKind::Optional(e) => (**e).clone(),
        _ => x.clone(),
    }]
}

/// `OptionalHasElement`: a bool scalar.
pub fn optional_has(_: &mut OpCtx) -> Vec<TensorInfo> {
    vec![TensorInfo::new(Some(DataType::BOOL), Some(Vec::new()))]
}

/// `StringNormalizer`: the input's shape, except that removing `stopwords` makes the last
/// dim depend on the strings.
pub fn string_normalizer(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let filters = cx
        .node
        .attr("stopwords")
        .is_some_and(|a| !a.strings.is_empty());
    let shape = cx.shape(0).map(|s| {
        let mut s = s.to_vec();
        if filters && let Some(last) = s.last_mut() {
            *last = Dim::Unknown;
        }
        s
    });
    vec![TensorInfo::new(Some(DataType::STRING), shape)]
}
