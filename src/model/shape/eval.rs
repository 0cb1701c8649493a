//! Evaluation of small tensors without running the model.
//!
//! Exporters compute Reshape targets, Resize sizes, Pad amounts and Slice bounds with little
//! subgraphs over `Shape` (`Shape → Gather → Div → Concat → Reshape`). Knowing those values is
//! the difference between "rank 3, dims unknown" and the real shape, so tensors of at most
//! [`MAX_VALUE_ELEMS`] elements carry their contents. Integer elements are [`Dim`]s so a value
//! taken from a symbolic shape stays symbolic through the arithmetic.
//!
//! Structural ops (Gather, Slice, Transpose, Expand, Tile, Concat) only move elements, so they
//! are written once as *index maps* — for each output element, the flat input position — and
//! applied to either kind of [`Value`].

use crate::ops::{BinOp, RedOp, UnOp};
use std::cmp::Ordering;

use super::sym::SymTable;
use super::{Dim, TensorInfo, Value};
use crate::model::tensor::DataType;

/// Largest tensor (in elements) whose contents inference keeps.
pub const MAX_VALUE_ELEMS: usize = 64;

/// The shape as sizes when every dim is concrete and non-negative.
pub fn static_usize(shape: &[Dim]) -> Option<Vec<usize>> {
    shape
        .iter()
        .map(|d| d.known().filter(|&v| v >= 0).map(|v| v as usize))
        .collect()
}

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// Element count, saturating (shapes here can be garbage from a broken model).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// A rank read from a tensor's contents, when plausible (at most 64).
pub fn sane_rank(r: i64) -> Option<usize> {
    (0..=64).contains(&r).then_some(r as usize)
}

/// Calls `f` with each multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n = numel(shape);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// For each element of `out`, the flat index of the element of an input of shape `inp`
/// broadcast (numpy-style, right-aligned) to `out`.
pub fn bcast_map(inp: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(inp);
    let off = out.len().saturating_sub(inp.len());
    let mut v = Vec::with_capacity(numel(out));
    for_each_index(out, |idx| {
        let mut flat = 0;
        for (k, (&d, &s)) in inp.iter().zip(&st).enumerate() {
            if d != 1 {
                flat += idx[off + k] * s;
            }
        }
        v.push(flat);
    });
    v
}

/// Index map of a transpose: output axis `i` is input axis `perm[i]`.
pub fn transpose_map(inp: &[usize], perm: &[usize]) -> Vec<usize> {
    let st = strides(inp);
    let out: Vec<usize> = perm.iter().map(|&p| inp[p]).collect();
    let mut v = Vec::with_capacity(numel(&out));
    for_each_index(&out, |idx| {
        v.push(idx.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum());
    });
    v
}

/// Index map of a strided slice: per axis a start and a (possibly negative) step.
pub fn slice_map(inp: &[usize], starts: &[i64], steps: &[i64], out: &[usize]) -> Vec<usize> {
    let st = strides(inp);
    let mut v = Vec::with_capacity(numel(out));
    for_each_index(out, |idx| {
        let mut flat = 0i64;
        for ax in 0..inp.len() {
            flat += (starts[ax] + idx[ax] as i64 * steps[ax]) * st[ax] as i64;
        }
        v.push(flat.max(0) as usize);
    });
    v
}

/// Index map of `Gather(axis)` with already normalised indices; `None` when the result would
/// be larger than [`MAX_VALUE_ELEMS`].
pub fn gather_map(inp: &[usize], axis: usize, indices: &[usize]) -> Option<Vec<usize>> {
    let outer = numel(&inp[..axis]);
    let inner = numel(&inp[axis + 1..]);
    let n = outer.saturating_mul(indices.len()).saturating_mul(inner);
    if n > MAX_VALUE_ELEMS {
        return None;
    }
    if n == 0 {
        return Some(Vec::new());
    }
    let mut v = Vec::with_capacity(n);
    for o in 0..outer {
        for &i in indices {
            for k in 0..inner {
                v.push((o * inp[axis] + i) * inner + k);
            }
        }
    }
    Some(v)
}

impl Value {
    pub fn len(&self) -> usize {
        match self {
            Value::Int(v) => v.len(),
            Value::Float(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at the given flat positions (`None` if any is out of range).
    pub fn select(&self, idx: &[usize]) -> Option<Value> {
        Some(match self {
            Value::Int(v) => Value::Int(
                idx.iter()
                    .map(|&i| v.get(i).cloned())
                    .collect::<Option<_>>()?,
            ),
            Value::Float(v) => Value::Float(
                idx.iter()
                    .map(|&i| v.get(i).copied())
                    .collect::<Option<_>>()?,
            ),
        })
    }

    /// All elements concrete integers.
    pub fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::Int(v) => v.iter().map(Dim::known).collect(),
            Value::Float(v) => Some(v.iter().map(|&x| x as i64).collect()),
        }
    }

    /// Elements as floats (concrete integers converted).
    pub fn as_floats(&self) -> Option<Vec<f64>> {
        match self {
            Value::Float(v) => Some(v.clone()),
            Value::Int(v) => v.iter().map(|d| d.known().map(|x| x as f64)).collect(),
        }
    }

    /// Truth of each element, when decidable.
    fn truth(&self, i: usize) -> Option<bool> {
        match self {
            Value::Int(v) => v.get(i)?.known().map(|x| x != 0),
            Value::Float(v) => v.get(i).map(|&x| x != 0.0),
        }
    }

    /// `n` copies of one element.
    pub fn splat(&self, n: usize) -> Option<Value> {
        self.select(&vec![0; n])
    }
}

/// Concatenates values along `axis`, given each one's static shape.
pub fn concat_values(parts: &[(&Value, &[usize])], axis: usize) -> Option<Value> {
    let ints = matches!(parts.first()?.0, Value::Int(_));
    if parts
        .iter()
        .any(|(v, _)| matches!(v, Value::Int(_)) != ints)
    {
        return None;
    }
    if parts.iter().all(|(v, _)| v.is_empty()) {
        // Also keeps a huge outer count over zero-sized chunks from looping.
        return Some(if ints {
            Value::Int(Vec::new())
        } else {
            Value::Float(Vec::new())
        });
    }
    let outer = numel(&parts[0].1[..axis]);
    let mut out_i = Vec::new();
    let mut out_f = Vec::new();
    for o in 0..outer {
        for (v, s) in parts {
            let chunk = numel(&s[axis..]);
            let idx: Vec<usize> = (o * chunk..(o + 1) * chunk).collect();
            match v.select(&idx)? {
                Value::Int(x) => out_i.extend(x),
                Value::Float(x) => out_f.extend(x),
            }
        }
    }
    Some(if ints {
        Value::Int(out_i)
    } else {
        Value::Float(out_f)
    })
}

/// Rounds to the precision of the element type, so f32 arithmetic (`512 * 0.5`, `1 / 3`)
/// matches what a runtime computes.
fn round_to(dt: Option<DataType>, x: f64) -> f64 {
    match dt {
        Some(DataType::FLOAT) => x as f32 as f64,
        _ => x,
    }
}

fn bool_dim(b: Option<bool>) -> Dim {
    match b {
        Some(b) => Dim::Known(b as i64),
        None => Dim::Unknown,
    }
}

/// One element of an integer binary op. Symbolic operands go through [`SymTable`].
fn int_bin(op: Option<BinOp>, a: &Dim, b: &Dim, syms: &mut SymTable) -> Dim {
    use Ordering::*;
    let ord = || syms.cmp(a, b);
    match op {
        Some(BinOp::Add) => syms.add(a, b),
        Some(BinOp::Sub) => syms.sub(a, b),
        Some(BinOp::Mul) => syms.mul(a, b),
        Some(BinOp::Div) => syms.div(a, b),
        Some(BinOp::Mod) => match (a, b) {
            (Dim::Known(x), Dim::Known(y)) if *y != 0 => {
                // Python-style: the result takes the divisor's sign.
                let r = x.wrapping_rem_euclid(*y);
                Dim::Known(if *y < 0 && r != 0 { r + y } else { r })
            }
            _ => Dim::Unknown,
        },
        Some(BinOp::Pow) => match (a, b) {
            (Dim::Known(x), Dim::Known(y)) if (0..63).contains(y) => {
                Dim::Known(x.wrapping_pow(*y as u32))
            }
            _ => Dim::Unknown,
        },
        Some(BinOp::Max) => syms.max(a, b),
        Some(BinOp::Min) => syms.min(a, b),
        Some(BinOp::Equal) => bool_dim(if a == b && *a != Dim::Unknown {
            Some(true)
        } else {
            ord().map(|o| o == Equal)
        }),
        Some(BinOp::Less) => bool_dim(ord().map(|o| o == Less)),
        Some(BinOp::Greater) => bool_dim(ord().map(|o| o == Greater)),
        Some(BinOp::LessOrEqual) => bool_dim(ord().map(|o| o != Greater)),
        Some(BinOp::GreaterOrEqual) => bool_dim(ord().map(|o| o != Less)),
        Some(BinOp::And) | Some(BinOp::Or) | Some(BinOp::Xor) => match (a.known(), b.known()) {
            (Some(x), Some(y)) => {
                let (x, y) = (x != 0, y != 0);
                Dim::Known(match op {
                    Some(BinOp::And) => x && y,
                    Some(BinOp::Or) => x || y,
                    _ => x ^ y,
                } as i64)
            }
            _ => Dim::Unknown,
        },
        _ => Dim::Unknown,
    }
}

/// One element of a float binary op; comparisons give `None` here (handled separately).
fn float_bin(op: Option<BinOp>, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        Some(BinOp::Add) => a + b,
        Some(BinOp::Sub) => a - b,
        Some(BinOp::Mul) => a * b,
        Some(BinOp::Div) => a / b,
        Some(BinOp::Pow) => a.powf(b),
        Some(BinOp::Max) => a.max(b),
        Some(BinOp::Min) => a.min(b),
        Some(BinOp::Mod) => a % b,
        _ => return None,
    })
}

fn float_cmp(op: Option<BinOp>, a: f64, b: f64) -> Option<bool> {
    Some(match op {
        Some(BinOp::Equal) => a == b,
        Some(BinOp::Less) => a < b,
        Some(BinOp::Greater) => a > b,
        Some(BinOp::LessOrEqual) => a <= b,
        Some(BinOp::GreaterOrEqual) => a >= b,
        Some(BinOp::And) => a != 0.0 && b != 0.0,
        Some(BinOp::Or) => a != 0.0 || b != 0.0,
        Some(BinOp::Xor) => (a != 0.0) ^ (b != 0.0),
        _ => return None,
    })
}

/// Evaluates an elementwise binary op on two small values broadcast to `out`.
pub fn eval_binary(
    op: Option<BinOp>,
    (a, sa): (&Value, &[usize]),
    (b, sb): (&Value, &[usize]),
    out: &[usize],
    out_dtype: Option<DataType>,
    syms: &mut SymTable,
) -> Option<Value> {
    if numel(out) > MAX_VALUE_ELEMS {
        return None;
    }
    let ia = bcast_map(sa, out);
    let ib = bcast_map(sb, out);
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(Value::Int(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| Some(int_bin(op, x.get(i)?, y.get(j)?, syms)))
                .collect::<Option<_>>()?,
        )),
        _ => {
            let x = a.as_floats()?;
            let y = b.as_floats()?;
            let pairs = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| Some((*x.get(i)?, *y.get(j)?)));
            if let Some(DataType::BOOL) = out_dtype {
                Some(Value::Int(
                    pairs
                        .map(|p| {
                            p.and_then(|(u, v)| float_cmp(op, u, v))
                                .map(|b| Dim::Known(b as i64))
                        })
                        .collect::<Option<_>>()?,
                ))
            } else {
                let v: Vec<f64> = pairs
                    .map(|p| {
                        p.and_then(|(u, v)| float_bin(op, u, v))
                            .map(|r| round_to(out_dtype, r))
                    })
                    .collect::<Option<_>>()?;
                Some(if out_dtype.is_some_and(|d| d.is_integer()) {
                    Value::Int(v.into_iter().map(|f| Dim::Known(f as i64)).collect())
                } else {
                    Value::Float(v)
                })
            }
        }
    }
}

/// Evaluates an elementwise unary op on a small value. Only ops that occur in shape
/// arithmetic are evaluated.
pub fn eval_unary(
    op: Option<UnOp>,
    v: &Value,
    out_dtype: Option<DataType>,
    syms: &mut SymTable,
) -> Option<Value> {
    match v {
        Value::Int(x) => {
            let f = |d: &Dim, syms: &mut SymTable| -> Dim {
                match op {
                    Some(UnOp::Identity) | Some(UnOp::Ceil) | Some(UnOp::Floor)
                    | Some(UnOp::Round) => d.clone(),
                    Some(UnOp::Neg) => syms.mul_c(d, -1),
                    Some(UnOp::Abs) => match d {
                        Dim::Known(v) => Dim::Known(v.wrapping_abs()),
                        Dim::Sym(_) => d.clone(),
                        Dim::Unknown => Dim::Unknown,
                    },
                    Some(UnOp::Relu) => syms.max(d, &Dim::Known(0)),
                    Some(UnOp::Sign) => match d {
                        Dim::Known(v) => Dim::Known(v.signum()),
                        _ => Dim::Unknown,
                    },
                    Some(UnOp::Not) => match d {
                        Dim::Known(v) => Dim::Known((*v == 0) as i64),
                        _ => Dim::Unknown,
                    },
                    _ => Dim::Unknown,
                }
            };
            if !matches!(
                op,
                Some(UnOp::Identity)
                    | Some(UnOp::Ceil)
                    | Some(UnOp::Floor)
                    | Some(UnOp::Round)
                    | Some(UnOp::Neg)
                    | Some(UnOp::Abs)
                    | Some(UnOp::Relu)
                    | Some(UnOp::Sign)
                    | Some(UnOp::Not)
            ) {
                return None;
            }
            Some(Value::Int(x.iter().map(|d| f(d, syms)).collect()))
        }
        Value::Float(x) => {
            let f: fn(f64) -> f64 = match op {
                Some(UnOp::Identity) => |a| a,
                Some(UnOp::Neg) => |a| -a,
                Some(UnOp::Abs) => f64::abs,
                Some(UnOp::Ceil) => f64::ceil,
                Some(UnOp::Floor) => f64::floor,
                Some(UnOp::Round) => f64::round_ties_even,
                Some(UnOp::Sqrt) => f64::sqrt,
                Some(UnOp::Reciprocal) => |a| 1.0 / a,
                Some(UnOp::Exp) => f64::exp,
                Some(UnOp::Log) => f64::ln,
                Some(UnOp::Relu) => |a| a.max(0.0),
                Some(UnOp::Sign) => |a| if a == 0.0 { 0.0 } else { a.signum() },
                Some(UnOp::Not) => |a| (a == 0.0) as i64 as f64,
                _ => return None,
            };
            Some(Value::Float(
                x.iter().map(|&a| round_to(out_dtype, f(a))).collect(),
            ))
        }
    }
}

/// `Cast` of a small value to `to`.
pub fn eval_cast(v: &Value, to: DataType) -> Option<Value> {
    if to == DataType::BOOL {
        return Some(Value::Int(
            (0..v.len()).map(|i| bool_dim(v.truth(i))).collect(),
        ));
    }
    if to.is_integer() {
        return Some(match v {
            Value::Int(x) => Value::Int(x.clone()),
            Value::Float(x) => Value::Int(
                x.iter()
                    .map(|&f| {
                        if f.is_finite() {
                            Dim::Known(f.trunc() as i64)
                        } else {
                            Dim::Unknown
                        }
                    })
                    .collect(),
            ),
        });
    }
    if to.is_float() {
        let f = v.as_floats()?;
        return Some(Value::Float(
            f.into_iter().map(|x| round_to(Some(to), x)).collect(),
        ));
    }
    None
}

/// `Where(cond, x, y)` on small values broadcast to `out`.
pub fn eval_where(
    (c, sc): (&Value, &[usize]),
    (x, sx): (&Value, &[usize]),
    (y, sy): (&Value, &[usize]),
    out: &[usize],
) -> Option<Value> {
    if numel(out) > MAX_VALUE_ELEMS {
        return None;
    }
    let ic = bcast_map(sc, out);
    let ix = bcast_map(sx, out);
    let iy = bcast_map(sy, out);
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => Some(Value::Int(
            (0..ic.len())
                .map(|k| match c.truth(ic[k]) {
                    Some(true) => a.get(ix[k]).cloned(),
                    Some(false) => b.get(iy[k]).cloned(),
                    None => Some(Dim::Unknown),
                })
                .collect::<Option<_>>()?,
        )),
        (Value::Float(a), Value::Float(b)) => Some(Value::Float(
            (0..ic.len())
                .map(|k| match c.truth(ic[k])? {
                    true => a.get(ix[k]).copied(),
                    false => b.get(iy[k]).copied(),
                })
                .collect::<Option<_>>()?,
        )),
        _ => None,
    }
}

/// Reduction of a small integer or float value over `axes` (output laid out without the
/// reduced axes; keepdims only changes the shape, not the order).
pub fn eval_reduce(
    op: Option<RedOp>,
    v: &Value,
    shape: &[usize],
    axes: &[usize],
    syms: &mut SymTable,
) -> Option<Value> {
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out = numel(&out_shape);
    let ost = strides(&out_shape);
    let mut slot = Vec::with_capacity(numel(shape));
    for_each_index(shape, |idx| {
        slot.push(
            idx.iter()
                .enumerate()
                .map(|(i, &x)| if axes.contains(&i) { 0 } else { x * ost[i] })
                .sum::<usize>(),
        );
    });
    match v {
        Value::Int(x) => {
            let mut acc: Vec<Option<Dim>> = vec![None; n_out];
            for (e, &s) in x.iter().zip(&slot) {
                acc[s] = Some(match acc[s].take() {
                    None => e.clone(),
                    Some(a) => match op {
                        Some(RedOp::Sum) => syms.add(&a, e),
                        Some(RedOp::Prod) => syms.mul(&a, e),
                        Some(RedOp::Max) => syms.max(&a, e),
                        Some(RedOp::Min) => syms.min(&a, e),
                        _ => return None,
                    },
                });
            }
            let empty = match op {
                Some(RedOp::Sum) => Dim::Known(0),
                Some(RedOp::Prod) => Dim::Known(1),
                _ => Dim::Unknown,
            };
            Some(Value::Int(
                acc.into_iter()
                    .map(|a| a.unwrap_or_else(|| empty.clone()))
                    .collect(),
            ))
        }
        Value::Float(x) => {
            let mut acc: Vec<Option<f64>> = vec![None; n_out];
            for (&e, &s) in x.iter().zip(&slot) {
                acc[s] = Some(match acc[s] {
                    None => e,
                    Some(a) => match op {
                        Some(RedOp::Sum) => a + e,
                        Some(RedOp::Prod) => a * e,
                        Some(RedOp::Max) => a.max(e),
                        Some(RedOp::Min) => a.min(e),
                        _ => return None,
                    },
                });
            }
            Some(Value::Float(
                acc.into_iter().map(|a| a.unwrap_or(0.0)).collect(),
            ))
        }
    }
}

/// Attaches a value to an info when its size is consistent with a static shape and small.
pub fn with_value(mut info: TensorInfo, v: Option<Value>) -> TensorInfo {
    if let Some(v) = v
        && v.len() <= MAX_VALUE_ELEMS
        && info
            .static_shape()
            .and_then(|s| s.iter().try_fold(1i64, |a, &d| a.checked_mul(d)))
            .is_some_and(|n| n == v.len() as i64)
    {
        info.value = Some(v);
    }
    info
}
