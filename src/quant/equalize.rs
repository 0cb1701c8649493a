//! Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019, §4.1): in a chain
//! `conv1 → (Relu | Clip(0, m) | nothing) → conv2`, output channel `c` of conv1 can be divided
//! by `s_c` and input channel `c` of conv2 multiplied by it without changing the function,
//! because ReLU is positively homogeneous. Choosing `s_c = sqrt(r1_c / r2_c)` (weight ranges of
//! the channel in both layers) gives both the same range, which evens out the channels of the
//! activation between them — the tensor that gets one per-tensor scale. On MobileNetV2 the
//! depthwise layers' channels span three decades (BatchNorm folding), so a single activation
//! scale drowned the small channels.
//!
//! `Clip(0, m)` (ReLU6) is homogeneous only if its bound scales too: `Clip(x/s, 0, m)` differs
//! from `Clip(x, 0, m)/s`. The bound becomes per-channel, which one `Clip` cannot express, so
//! an equalized `Clip(0, m)` is rewritten as `Relu` followed by `Min(·, m/s_c)` with a `[C,1,1]`
//! constant — the same function, and both ops fuse into the producing convolution on
//! TensorRT and onnxruntime.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::model::tensor::{DataType, f32_tensor, to_f32};

/// What equalization did (for the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EqualizeReport {
    /// Conv pairs equalized.
    pub pairs: usize,
    /// `Clip(0, m)` activations rewritten as `Relu` + per-channel `Min`.
    pub clips_rewritten: usize,
    /// Mean over the equalized weights of log10(largest / smallest per-channel range), before
    /// and after: how many decades the channels of one tensor span.
    pub spread_before: f64,
    pub spread_after: f64,
    /// Activation equalization only: pairs whose second conv is an ordinary one, and the
    /// strength they were equalized with (see [`equalize_activations`]).
    pub dense_pairs: usize,
    pub dense_strength: f32,
}

/// Between the two convolutions.
#[derive(Clone, Debug)]
enum Act {
    None,
    Relu,
    /// Clip node index and its upper bound.
    Clip(usize, f32),
}

#[derive(Clone, Debug)]
struct Pair {
    /// Weight and bias initializer indices of conv1, weight of conv2.
    w1: usize,
    b1: Option<usize>,
    w2: usize,
    /// conv2 is depthwise: its weight is `[C, 1, k…]`.
    depthwise2: bool,
    act: Act,
    /// The tensor between the convs (conv2's input).
    x2: String,
}

/// Equalizes every eligible conv pair of `model`, `iterations` sweeps (chains converge in a
/// few). Returns the new model (the input is untouched) and what changed.
pub fn equalize(model: &ModelProto, iterations: usize) -> Result<(ModelProto, EqualizeReport)> {
    let mut m = model.clone();
    let opset = model.opset("").unwrap_or(0);
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let pairs = find_pairs(g, opset);
    let mut report = EqualizeReport {
        pairs: pairs.len(),
        ..Default::default()
    };
    if pairs.is_empty() {
        return Ok((m, report));
    }
    let mut vals: HashMap<usize, Vec<f32>> = HashMap::new();
    for p in &pairs {
        for i in [Some(p.w1), p.b1, Some(p.w2)].into_iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(e) = vals.entry(i) {
                e.insert(to_f32(&g.initializer[i])?);
            }
        }
    }
    let dims = |i: usize| g.initializer[i].dims.clone();
    let weights: Vec<usize> = {
        let mut w: Vec<usize> = pairs.iter().flat_map(|p| [p.w1, p.w2]).collect();
        w.sort_unstable();
        w.dedup();
        w
    };
    report.spread_before = mean_spread(&weights, &vals, &dims);
    // Per Clip node, its per-channel bound.
    let mut bounds: HashMap<usize, Vec<f32>> = HashMap::new();
    for _ in 0..iterations.max(1) {
        for p in &pairs {
            let (d1, d2) = (dims(p.w1), dims(p.w2));
            let c = d1[0].max(0) as usize;
            let r1 = channel_ranges(&vals[&p.w1], &d1, false, c);
            let r2 = channel_ranges(&vals[&p.w2], &d2, !p.depthwise2, c);
            let s: Vec<f32> = r1
                .iter()
                .zip(&r2)
                .map(|(&a, &b)| {
                    let s = (a / b).sqrt();
                    if s.is_finite() && s > 0.0 { s } else { 1.0 }
                })
                .collect();
            scale_rows(vals.get_mut(&p.w1), &d1, &s, true);
            if let Some(b) = p.b1 {
                scale_rows(vals.get_mut(&b), &[c as i64], &s, true);
            }
            scale_w2(vals.get_mut(&p.w2), &d2, &s, p.depthwise2);
            if let Act::Clip(n, m) = p.act {
                let b = bounds.entry(n).or_insert_with(|| vec![m; c]);
                for (b, s) in b.iter_mut().zip(&s) {
                    *b /= s;
                }
            }
        }
    }
    report.spread_after = mean_spread(&weights, &vals, &dims);
    for (i, v) in vals {
        let t = &g.initializer[i];
        g.initializer[i] = f32_tensor(t.name(), &t.dims.clone(), &v);
    }
    report.clips_rewritten = bounds.len();
    rewrite_clips(g, &bounds, &pairs);
    Ok((m, report))
}

/// The activations that [`equalize_activations`] can even out: inputs of depthwise convs fed
/// by a convolution (through Relu, `Clip(0, m)` or nothing), and with `dense` also inputs of
/// ordinary convolutions fed that way (depthwise → pointwise, projection → expansion), with
/// their channel counts.
pub fn activation_pairs(model: &ModelProto, dense: bool) -> Vec<(String, usize)> {
    let opset = model.opset("").unwrap_or(0);
    model.graph.as_ref().map_or_else(Vec::new, |g| {
        find_pairs(g, opset)
            .into_iter()
            .filter(|p| p.depthwise2 || dense)
            .map(|p| {
                let c = g.initializer[p.w1].dims.first().copied().unwrap_or(0);
                (p.x2, c.max(0) as usize)
            })
            .collect()
    })
}

/// Activation-range equalization: in `conv1 → act → depthwise conv2`, scales channel `c` of
/// the activation so that every channel reaches the same largest value (`amax` per channel,
/// measured on calibration samples), at most by `cap`. Per-channel weight quantization makes
/// this free for both weights — conv1's row `c` and conv2's filter `c` each have their own
/// scale — while the one per-tensor activation scale no longer drowns the small channels
/// (on MobileNetV2 the first ReLU6 output has channels below 0.03 next to ones reaching 4).
/// The float function is unchanged (ReLU6 bounds become per-channel, see the module doc).
/// The report's spreads are of the activations' per-channel ranges.
///
/// `dense` (0–1) is the strength for pairs whose second conv is an ordinary one (depthwise →
/// pointwise projection, projection → expansion): there the scaling is not free, because
/// conv2's input column `c` shrinks by `s_c` inside rows that share one weight scale, so
/// channel `c` is only moved part of the way, `s_c^dense` (0 leaves those pairs alone). On
/// trained MobileNetV2 the projection convs cancel large inputs into small outputs, so the
/// activation noise of the depthwise output dominates; 0.5 measured best there.
pub fn equalize_activations(
    model: &ModelProto,
    amax: &HashMap<String, Vec<f32>>,
    cap: f32,
    dense: f32,
) -> Result<(ModelProto, EqualizeReport)> {
    let mut m = model.clone();
    let opset = model.opset("").unwrap_or(0);
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let pairs: Vec<Pair> = find_pairs(g, opset)
        .into_iter()
        .filter(|p| p.depthwise2 || dense > 0.0)
        .filter(|p| {
            let c = g.initializer[p.w1]
                .dims
                .first()
                .copied()
                .unwrap_or(0)
                .max(0) as usize;
            amax.get(&p.x2).is_some_and(|a| a.len() == c && c > 0)
        })
        .collect();
    let mut report = EqualizeReport {
        pairs: pairs.len(),
        dense_pairs: pairs.iter().filter(|p| !p.depthwise2).count(),
        dense_strength: dense.clamp(0.0, 1.0),
        ..Default::default()
    };
    let mut bounds: HashMap<usize, Vec<f32>> = HashMap::new();
    let (mut before, mut after) = (0.0, 0.0);
    for p in &pairs {
        let a = &amax[&p.x2];
        let top = a.iter().fold(0.0f32, |m, &x| m.max(x));
        let alpha = if p.depthwise2 {
            1.0
        } else {
            dense.clamp(0.0, 1.0)
        };
        // Channel c is multiplied by 1/s_c (s_c <= 1): the operations of `equalize`. conv2's
        // input channel c is multiplied by s_c: a row of a depthwise weight, a column of an
        // ordinary one.
        let s: Vec<f32> = a
            .iter()
            .map(|&x| {
                if top > 0.0 && x > top * 1e-6 {
                    (x / top).max(1.0 / cap).powf(alpha)
                } else {
                    1.0
                }
            })
            .collect();
        let scaled: Vec<f32> = a.iter().zip(&s).map(|(x, s)| x / s).collect();
        before += spread(a);
        after += spread(&scaled);
        let (d1, d2) = (
            g.initializer[p.w1].dims.clone(),
            g.initializer[p.w2].dims.clone(),
        );
        let c = s.len();
        let mut apply = |i: usize, f: &dyn Fn(&mut Vec<f32>)| -> Result<()> {
            let t = &g.initializer[i];
            let mut v = to_f32(t)?;
            f(&mut v);
            g.initializer[i] = f32_tensor(t.name(), &t.dims.clone(), &v);
            Ok(())
        };
        apply(p.w1, &|v| scale_rows(Some(v), &d1, &s, true))?;
        if let Some(b) = p.b1 {
            apply(b, &|v| scale_rows(Some(v), &[c as i64], &s, true))?;
        }
        apply(p.w2, &|v| scale_w2(Some(v), &d2, &s, p.depthwise2))?;
        if let Act::Clip(n, m) = p.act {
            bounds.insert(n, s.iter().map(|s| m / s).collect());
        }
    }
    report.spread_before = before / pairs.len().max(1) as f64;
    report.spread_after = after / pairs.len().max(1) as f64;
    report.clips_rewritten = bounds.len();
    rewrite_clips(g, &bounds, &pairs);
    Ok((m, report))
}

/// Decades between the largest and the smallest non-zero value of `a` (per-channel ranges).
pub(super) fn spread(a: &[f32]) -> f64 {
    let nz = a.iter().filter(|&&x| x > 0.0);
    let hi = nz.clone().fold(0.0f32, |m, &x| m.max(x));
    let lo = nz.fold(f32::INFINITY, |m, &x| m.min(x));
    if hi > 0.0 && lo.is_finite() {
        (hi as f64 / lo as f64).log10()
    } else {
        0.0
    }
}

/// Per channel `c`, the largest |w| of output row `c` (`column = false`) or of input column
/// `c` (`column = true`, a `[O, C, k…]` weight).
fn channel_ranges(w: &[f32], dims: &[i64], column: bool, c: usize) -> Vec<f32> {
    let mut r = vec![0.0f32; c];
    let inner: usize = dims[2..].iter().map(|&d| d.max(1) as usize).product();
    let cols = dims.get(1).copied().unwrap_or(1).max(1) as usize;
    for (k, x) in w.iter().enumerate() {
        let ch = if column {
            (k / inner) % cols
        } else {
            k / (cols * inner)
        };
        if let Some(r) = r.get_mut(ch) {
            *r = r.max(x.abs());
        }
    }
    r
}

/// Divides (or multiplies) output row `c` of a `[C, …]` tensor by `s[c]`.
fn scale_rows(w: Option<&mut Vec<f32>>, dims: &[i64], s: &[f32], divide: bool) {
    let Some(w) = w else { return };
    let per = w.len() / dims[0].max(1) as usize;
    for (k, x) in w.iter_mut().enumerate() {
        let f = s.get(k / per.max(1)).copied().unwrap_or(1.0);
        *x = if divide { *x / f } else { *x * f };
    }
}

/// Multiplies input channel `c` of conv2's weight by `s[c]`.
fn scale_w2(w: Option<&mut Vec<f32>>, dims: &[i64], s: &[f32], depthwise: bool) {
    if depthwise {
        return scale_rows(w, dims, s, false);
    }
    let Some(w) = w else { return };
    let inner: usize = dims[2..].iter().map(|&d| d.max(1) as usize).product();
    let cols = dims[1].max(1) as usize;
    for (k, x) in w.iter_mut().enumerate() {
        *x *= s.get((k / inner) % cols).copied().unwrap_or(1.0);
    }
}

fn mean_spread(
    weights: &[usize],
    vals: &HashMap<usize, Vec<f32>>,
    dims: &dyn Fn(usize) -> Vec<i64>,
) -> f64 {
    let mut total = 0.0;
    for &i in weights {
        let d = dims(i);
        let r = channel_ranges(&vals[&i], &d, false, d[0].max(0) as usize);
        let nz = r.iter().filter(|&&x| x > 0.0);
        let hi = nz.clone().fold(0.0f32, |m, &x| m.max(x));
        let lo = nz.fold(f32::INFINITY, |m, &x| m.min(x));
        if hi > 0.0 && lo.is_finite() {
            total += (hi as f64 / lo as f64).log10();
        }
    }
    total / weights.len().max(1) as f64
}

/// Per tensor name, the nodes reading it (graph outputs count as a reader).
fn readers(g: &GraphProto) -> HashMap<&str, usize> {
    let mut r: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *r.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &g.output {
        *r.entry(o.name()).or_default() += 1;
    }
    r
}

fn float_init<'g>(g: &'g GraphProto, name: &str) -> Option<(usize, &'g TensorProto)> {
    g.initializer
        .iter()
        .enumerate()
        .find(|(_, t)| t.name() == name)
        .filter(|(_, t)| DataType(t.data_type()) == DataType::FLOAT)
}

/// `Some(group)` for a Conv with no padding mode surprises; weights must be initializers.
fn conv_group(n: &NodeProto) -> Option<i64> {
    (n.op_type() == "Conv" && n.domain().is_empty()).then(|| n.attr_i("group").unwrap_or(1))
}

/// The activation between the convs, if equalization can pass through it.
fn activation(g: &GraphProto, n: &NodeProto, opset: i64) -> Option<(Act, String)> {
    let out = n.output.first()?.clone();
    match n.op_type() {
        "Relu" => Some((Act::Relu, out)),
        "Clip" => {
            let (lo, hi) = super::center::clip_bounds(g, n, opset)?;
            let i = g.node.iter().position(|m| std::ptr::eq(m, n))?;
            (lo == Some(0.0) && hi.is_some_and(|h| h > 0.0))
                .then(|| (Act::Clip(i, hi.unwrap_or(6.0)), out))
        }
        _ => None,
    }
}

fn find_pairs(g: &GraphProto, opset: i64) -> Vec<Pair> {
    let r = readers(g);
    let consumer = |t: &str| -> Option<&NodeProto> {
        if r.get(t) != Some(&1) {
            return None;
        }
        g.node
            .iter()
            .find(|n| n.input.first().map(String::as_str) == Some(t))
    };
    let own_init = |name: Option<&String>| -> Option<usize> {
        let name = name?;
        (r.get(name.as_str()) == Some(&1)).then_some(())?;
        float_init(g, name).map(|(i, _)| i)
    };
    let mut pairs = Vec::new();
    for n1 in &g.node {
        let Some(_) = conv_group(n1) else { continue };
        let Some(w1) = own_init(n1.input.get(1)) else {
            continue;
        };
        let b1 = match n1.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match own_init(Some(b)) {
                Some(i) => Some(i),
                None => continue,
            },
            None => None,
        };
        let Some(y) = n1.output.first() else { continue };
        let Some(next) = consumer(y) else { continue };
        let (act, x2) = if conv_group(next).is_some() {
            (Act::None, y.clone())
        } else {
            match activation(g, next, opset) {
                Some(a) => a,
                None => continue,
            }
        };
        let Some(n2) = consumer(&x2).filter(|n| conv_group(n).is_some()) else {
            continue;
        };
        let Some(w2) = own_init(n2.input.get(1)) else {
            continue;
        };
        let (d1, d2) = (&g.initializer[w1].dims, &g.initializer[w2].dims);
        let c = d1.first().copied().unwrap_or(0);
        let group2 = conv_group(n2).unwrap_or(1);
        let depthwise2 = group2 == c && d2.first() == Some(&c) && d2.get(1) == Some(&1);
        if c <= 0 || d2.len() < 3 || !(depthwise2 || (group2 == 1 && d2.get(1) == Some(&c))) {
            continue;
        }
        pairs.push(Pair {
            w1,
            b1,
            w2,
            depthwise2,
            act,
            x2,
        });
    }
    pairs
}

/// Rewrites each equalized `Clip(0, m)` as `Relu` → `Min(·, bound)` with its per-channel bound.
fn rewrite_clips(g: &mut GraphProto, bounds: &HashMap<usize, Vec<f32>>, pairs: &[Pair]) {
    let rank = |n: usize| -> usize {
        pairs
            .iter()
            .find(|p| matches!(p.act, Act::Clip(i, _) if i == n))
            .map_or(4, |p| g.initializer[p.w1].dims.len())
    };
    let mut out = Vec::with_capacity(g.node.len() + bounds.len());
    let mut inits = Vec::new();
    for (i, n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        let Some(b) = bounds.get(&i) else {
            out.push(n);
            continue;
        };
        let y = n.output.first().cloned().unwrap_or_default();
        let relu_out = format!("{y}__pare_relu");
        let bound = format!("{y}__pare_bound");
        let mut bdims = vec![b.len() as i64];
        bdims.resize(rank(i).saturating_sub(1).max(1), 1);
        inits.push(f32_tensor(&bound, &bdims, b));
        out.push(NodeProto {
            name: Some(format!("{}__pare_relu", n.name())),
            op_type: Some("Relu".into()),
            input: vec![n.input[0].clone()],
            output: vec![relu_out.clone()],
            ..Default::default()
        });
        out.push(NodeProto {
            name: Some(n.name().to_string()),
            op_type: Some("Min".into()),
            input: vec![relu_out, bound],
            output: vec![y],
            ..Default::default()
        });
    }
    g.node = out;
    g.initializer.extend(inits);
}
