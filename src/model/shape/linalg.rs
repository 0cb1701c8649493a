//! Matrix products: Gemm, MatMul (numpy semantics with batch broadcasting and the 1-D
//! special cases), MatMulInteger/QLinearMatMul, and Einsum (best effort).

use super::broadcast::broadcast_shapes;
use super::ctx::OpCtx;
use super::{Dim, Shape, TensorInfo};
use crate::model::tensor::DataType;

/// `Gemm`: `[M, N]` from `A` (`[M, K]`, or `[K, M]` with transA) and `B` (`[K, N]`, or
/// `[N, K]` with transB).
pub fn gemm(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let pick = |cx: &mut OpCtx, i: usize, trans: bool, first: bool| -> Dim {
        match cx.shape(i) {
            Some(s) if s.len() == 2 => s[usize::from(trans == first)].clone(),
            Some(s) => {
                cx.note(format!("Gemm input {i} has rank {}, expected 2", s.len()));
                Dim::Unknown
            }
            None => Dim::Unknown,
        }
    };
    let ta = cx.attr_i("transA", 0) != 0;
    let tb = cx.attr_i("transB", 0) != 0;
    let m = pick(cx, 0, ta, true);
    let n = pick(cx, 1, tb, false);
    vec![TensorInfo::new(dtype, Some(vec![m, n]))]
}

/// `MatMul`: 1-D operands get a 1 prepended (A) or appended (B) that is removed again;
/// batch dims broadcast.
pub fn matmul(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let (a_ix, b_ix, dtype) = match cx.op {
        "QLinearMatMul" => (0, 3, cx.dtype(7)),
        "MatMulInteger" => (0, 1, Some(DataType::INT32)),
        _ => (0, 1, cx.dtype(0)),
    };
    let (Some(a), Some(b)) = (cx.shape(a_ix), cx.shape(b_ix)) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    if a.is_empty() || b.is_empty() {
        cx.note("MatMul of a scalar");
        return vec![TensorInfo::new(dtype, None)];
    }
    let a1 = a.len() == 1;
    let b1 = b.len() == 1;
    let a2: Shape = if a1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Shape = if b1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb)
        && x != y
    {
        cx.note(format!("inner dims differ: {x} vs {y}"));
    }
    let batch_a = &a2[..a2.len() - 2];
    let batch_b = &b2[..b2.len() - 2];
    let Some(mut out) = broadcast_shapes(cx, &[Some(batch_a), Some(batch_b)]) else {
        return vec![TensorInfo::new(dtype, None)];
    };
    if !a1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if !b1 {
        out.push(b2[b2.len() - 1].clone());
    }
    vec![TensorInfo::new(dtype, Some(out))]
}

/// `Einsum`: letters map to dims; the output is the explicit `->` part or, implicitly, the
/// letters used once in alphabetical order. An ellipsis stands for the broadcast of the
/// dims it covers in each operand.
pub fn einsum(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let dtype = cx.dtype(0);
    let Some(eq) = cx.attr_s("equation") else {
        cx.note("no equation attribute");
        return vec![TensorInfo::new(dtype, None)];
    };
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    let mut letters: Vec<(char, Dim)> = Vec::new();
    let mut ell: Vec<Option<&[Dim]>> = Vec::new();
    let mut counts: std::collections::BTreeMap<char, usize> = Default::default();
    for (i, term) in terms.iter().enumerate() {
        let Some(s) = cx.shape(i) else {
            return vec![TensorInfo::new(dtype, None)];
        };
        let n_letters = term.chars().filter(char::is_ascii_alphabetic).count();
        let has_ell = term.contains("...");
        if (!has_ell && n_letters != s.len()) || (has_ell && n_letters > s.len()) {
            cx.note(format!("term '{term}' does not match rank {}", s.len()));
            return vec![TensorInfo::new(dtype, None)];
        }
        let ell_len = s.len() - n_letters;
        let mut pos = 0;
        let mut chars = term.chars().peekable();
        while let Some(c) = chars.next() {
            let bad = |cx: &mut OpCtx| {
                cx.note(format!(
                    "cannot parse einsum term '{term}' against rank {}",
                    s.len()
                ));
                vec![TensorInfo::new(dtype, None)]
            };
            if c == '.' {
                chars.next();
                chars.next();
                let Some(sub) = s.get(pos..pos + ell_len) else {
                    return bad(cx);
                };
                ell.push(Some(sub));
                pos += ell_len;
                continue;
            }
            let Some(d) = s.get(pos).filter(|_| c.is_ascii_alphabetic()).cloned() else {
                return bad(cx);
            };
            *counts.entry(c).or_default() += 1;
            match letters.iter_mut().find(|(l, _)| *l == c) {
                Some((_, e)) => {
                    if *e == Dim::Known(1) || *e == Dim::Unknown {
                        *e = d;
                    }
                }
                None => letters.push((c, d)),
            }
            pos += 1;
        }
    }
    let ell_shape = if ell.is_empty() {
        Vec::new()
    } else {
        match broadcast_shapes(cx, &ell) {
            Some(s) => s,
            None => return vec![TensorInfo::new(dtype, None)],
        }
    };
    let out_spec = rhs.unwrap_or_else(|| {
        let once: String = counts
            .iter()
            .filter(|(_, n)| **n == 1)
            .map(|(c, _)| *c)
            .collect();
        if ell.is_empty() {
            once
        } else {
            format!("...{once}")
        }
    });
    let mut out: Shape = Vec::new();
    let mut chars = out_spec.chars();
    while let Some(c) = chars.next() {
        if c == '.' {
            chars.next();
            chars.next();
            out.extend(ell_shape.iter().cloned());
            continue;
        }
        match letters.iter().find(|(l, _)| *l == c) {
            Some((_, d)) => out.push(d.clone()),
            None => {
                cx.note(format!("output letter '{c}' is not in any input"));
                out.push(Dim::Unknown);
            }
        }
    }
    vec![TensorInfo::new(dtype, Some(out))]
}
