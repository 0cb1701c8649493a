//! The numeric half of `pare diff`: both models run on the same samples and every matched
//! intermediate tensor is compared (SQNR, cosine, max |diff| through [`crate::fidelity`]).
//! Tensors are exposed a chunk at a time ([`NumericOptions::chunk`] extra outputs per run), so
//! at most a chunk of activations per model is alive whatever the model's size; each chunk
//! re-runs the samples, which costs time, not memory.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use super::structure::Compared;
use crate::data::SampleSet;
use crate::error::{PareError, Result};
use crate::fidelity::Accumulator;
use crate::jobs::Progress;
use crate::model::Analysis;
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{EngineKind, HostData, HostTensor};

/// One matched tensor's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorDiff {
    /// The tensor in A.
    pub name: String,
    /// The tensor in B, when named otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_name: Option<String>,
    /// The A node producing it.
    pub node: String,
    pub op: String,
    /// Position along A's execution order.
    pub order: usize,
    pub sqnr_db: Option<f64>,
    pub cosine: Option<f64>,
    pub max_abs: Option<f64>,
    /// Why it has no numbers ("not comparable: …"), or how it was compared ("kept 8 of 16
    /// channels").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A tensor pair to compare.
#[derive(Clone, Debug)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub node: String,
    pub op: String,
    pub order: usize,
}

/// How the numbers are taken.
#[derive(Clone, Debug)]
pub struct NumericOptions {
    /// Extra outputs exposed per run.
    pub chunk: usize,
    pub engine: EngineKind,
    pub threads: usize,
}

/// Matched main-graph tensors in A's execution order: every output of a matched node pair,
/// plus the graph outputs (by name, else by position).
pub fn pairs(a: &Analysis, b: &Analysis, c: &Compared) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let is_float = |an: &Analysis, t: &str| an.shapes.dtype(t).is_none_or(|d| d.is_float());
    for (k, n) in c.a.nodes[..c.a.main].iter().enumerate() {
        let Some(bk) = c.matching.a_to_b[k].filter(|&bk| bk < c.b.main) else {
            continue;
        };
        let bn = c.b.nodes[bk].node;
        for (ta, tb) in n.node.output.iter().zip(&bn.output) {
            if ta.is_empty() || tb.is_empty() || !is_float(a, ta) || !seen.insert(ta.clone()) {
                continue;
            }
            out.push(Pair {
                a: ta.clone(),
                b: tb.clone(),
                node: n.node.display_name(),
                op: n.op().to_string(),
                order: k,
            });
        }
    }
    for (i, ta) in a.index.outputs.iter().enumerate() {
        let tb = if b.index.outputs.contains(ta) {
            Some(ta)
        } else {
            b.index.outputs.get(i)
        };
        if let Some(tb) = tb
            && !out.iter().any(|p| p.a == *ta)
        {
            out.push(Pair {
                a: ta.clone(),
                b: tb.clone(),
                node: String::new(),
                op: "output".into(),
                order: usize::MAX,
            });
        }
    }
    out
}

/// Running sums of one pair.
struct Slot {
    acc: Accumulator,
    note: Option<String>,
    /// Set once a sample could not be compared.
    broken: bool,
}

/// Compares `pairs` on `indices` of `set`, a chunk at a time.
pub fn compare(
    a: &Analysis,
    b: &Analysis,
    pairs: &[Pair],
    set: &SampleSet,
    indices: &[usize],
    opts: &NumericOptions,
    progress: &dyn Progress,
) -> Result<Vec<TensorDiff>> {
    let keep = super::keepmap::read(&b.model.proto);
    let order = input_order(a, b)?;
    let chunk = opts.chunk.max(1);
    let chunks = pairs.len().div_ceil(chunk);
    progress.phase("comparing tensors", Some((chunks * indices.len()) as u64));
    let mut out = Vec::with_capacity(pairs.len());
    for (ci, part) in pairs.chunks(chunk).enumerate() {
        progress.check_cancel()?;
        let ra = RunnerCache::watching(
            a.model.proto.clone(),
            part.iter().map(|p| p.a.clone()).collect(),
            "model A",
        )
        .on(opts.engine, opts.threads);
        let rb = RunnerCache::watching(
            b.model.proto.clone(),
            part.iter().map(|p| p.b.clone()).collect(),
            "model B",
        )
        .on(opts.engine, opts.threads);
        let slots: Mutex<Vec<Slot>> = Mutex::new(
            part.iter()
                .map(|p| Slot {
                    acc: Accumulator::new(vec![p.a.clone()]),
                    note: None,
                    broken: false,
                })
                .collect(),
        );
        let done_before = (ci * indices.len()) as u64;
        for_each_sample(&ra, set, indices, 1, progress, done_before, |s, r| {
            let got_a = r.run(&s.tensors)?;
            let inputs_b: Vec<HostTensor> = order.iter().map(|&i| s.tensors[i].clone()).collect();
            let got_b = rb.get(set, s.index)?.run(&inputs_b)?;
            let mut slots = slots
                .lock()
                .map_err(|_| PareError::Runtime("diff: a worker failed".into()))?;
            for ((slot, p), (x, y)) in slots.iter_mut().zip(part).zip(got_a.iter().zip(&got_b)) {
                add(slot, keep.get(&p.b), x, y);
            }
            Ok(())
        })?;
        let slots = slots
            .into_inner()
            .map_err(|_| PareError::Runtime("diff: a worker failed".into()))?;
        for (slot, p) in slots.into_iter().zip(part) {
            out.push(finish(slot, p));
        }
    }
    Ok(out)
}

/// For each input of B, its position among A's inputs (the sample set follows A).
fn input_order(a: &Analysis, b: &Analysis) -> Result<Vec<usize>> {
    let pos: HashMap<&str, usize> = a
        .index
        .inputs
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    b.index
        .inputs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            pos.get(n.as_str())
                .copied()
                .or_else(|| (a.index.inputs.len() == b.index.inputs.len()).then_some(i))
                .ok_or_else(|| {
                    PareError::Usage(format!(
                        "diff: input '{n}' of B is not an input of A (A's inputs: {})",
                        a.index.inputs.join(", ")
                    ))
                })
        })
        .collect()
}

fn add(slot: &mut Slot, keep: Option<&(usize, Vec<usize>)>, x: &HostTensor, y: &HostTensor) {
    if slot.broken {
        return;
    }
    if x.shape == y.shape {
        let _ = slot
            .acc
            .add(std::slice::from_ref(x), std::slice::from_ref(y));
        return;
    }
    let kept = keep.and_then(|(total, k)| gather(x, &y.shape, *total, k));
    match kept {
        Some(x) => {
            slot.note = Some(format!(
                "kept {} of {} channels",
                keep.map_or(0, |k| k.1.len()),
                keep.map_or(0, |k| k.0)
            ));
            let _ = slot
                .acc
                .add(std::slice::from_ref(&x), std::slice::from_ref(y));
        }
        None => {
            slot.broken = true;
            slot.note = Some(format!(
                "not comparable: shape {:?} in A, {:?} in B{}",
                x.shape,
                y.shape,
                if keep.is_none() && one_axis_differs(&x.shape, &y.shape) {
                    " (no kept-channel mapping)"
                } else {
                    ""
                }
            ));
        }
    }
}

fn one_axis_differs(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).filter(|(p, q)| p != q).count() == 1
}

/// `x` restricted to the kept channels along the one axis where it is `total` wide and
/// `target` is `keep.len()` wide (every other dim equal).
fn gather(x: &HostTensor, target: &[usize], total: usize, keep: &[usize]) -> Option<HostTensor> {
    if x.shape.len() != target.len() {
        return None;
    }
    let axis = (0..x.shape.len()).find(|&i| {
        x.shape[i] == total
            && target[i] == keep.len()
            && (0..x.shape.len()).all(|j| j == i || x.shape[j] == target[j])
    })?;
    if keep.iter().any(|&k| k >= total) {
        return None;
    }
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let v = x.to_f64();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let base = (o * total + k) * inner;
            out.extend(v[base..base + inner].iter().map(|&f| f as f32));
        }
    }
    Some(HostTensor {
        shape: target.to_vec(),
        data: HostData::F32(out),
    })
}

fn finish(slot: Slot, p: &Pair) -> TensorDiff {
    let o = (!slot.broken && slot.acc.samples() > 0).then(|| slot.acc.outputs().remove(0));
    TensorDiff {
        name: p.a.clone(),
        b_name: (p.a != p.b).then(|| p.b.clone()),
        node: p.node.clone(),
        op: p.op.clone(),
        order: p.order,
        // An all-zero reference has no SQNR; equal to it everywhere is still exact.
        sqnr_db: o
            .as_ref()
            .and_then(|o| o.sqnr_db.or((o.max_abs_diff == 0.0).then_some(300.0))),
        cosine: o.as_ref().and_then(|o| o.cosine),
        max_abs: o.as_ref().map(|o| o.max_abs_diff),
        note: slot.note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_takes_kept_channels_on_the_right_axis() {
        let x = HostTensor::f32(vec![1, 4, 2], (0..8).map(|v| v as f32).collect());
        let g = gather(&x, &[1, 2, 2], 4, &[1, 3]).unwrap();
        assert_eq!(g.data, HostData::F32(vec![2.0, 3.0, 6.0, 7.0]));
        assert!(gather(&x, &[1, 3, 2], 4, &[1, 3]).is_none());
    }
}
