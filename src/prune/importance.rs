//! Importance criteria: a score per prunable unit of a group.
//!
//! Each member (a weight slice along a channel axis) scores its indices; scores are
//! normalised per member (divided by the member's largest score) so a wide 3x3 conv does not
//! drown out a 1x1 shortcut, then summed per unit. Low score = prune first.

use std::collections::HashMap;

use crate::analysis::channels::{ChannelAnalysis, ChannelGroup, Role, member_values};
use crate::model::Analysis;
use crate::rng::Rng;

/// How units are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Sum of absolute weights of each channel's filters (and consumer slices).
    L1,
    /// Euclidean norm of each channel's weights.
    L2,
    /// Distance of each filter to the geometric median of its layer (FPGM).
    Fpgm,
    /// |gamma| of the BatchNorm after the producer (network slimming); L1 where none.
    BnScale,
    /// Seeded random ranking (a baseline).
    Random,
    /// Norm of each channel's consumer weights × RMS of the channel's activation on the
    /// --calib samples: a channel that carries little signal into its consumers goes first
    /// (weights alone miss a channel that is large but nearly constant, or always small).
    Activation,
}

/// A weight tensor read as f32: its dims and values.
type DimsAndValues = (Vec<i64>, Vec<f32>);

/// Most bytes of f32 weights a [`WeightCache`] keeps before starting over.
const CACHE_BYTES: usize = 256 << 20;

/// Cache of member tensors read as f32.
#[derive(Default)]
pub struct WeightCache {
    cache: HashMap<String, Option<DimsAndValues>>,
    /// Per-channel RMS of tensors on calibration data (for [`Criterion::Activation`]).
    pub activations: Option<std::sync::Arc<HashMap<String, Vec<f64>>>>,
}

impl WeightCache {
    /// A cache that also knows per-channel activation RMS (for [`Criterion::Activation`]).
    pub fn with_activations(
        activations: Option<std::sync::Arc<HashMap<String, Vec<f64>>>>,
    ) -> Self {
        WeightCache {
            cache: HashMap::new(),
            activations,
        }
    }

    fn get(&mut self, a: &Analysis, t: &str) -> Option<&DimsAndValues> {
        // Bounded: past CACHE_BYTES the cache starts over, so ranking a model of 2.5 GB of
        // weights holds about one weight as f32 at a time, not all of them.
        if !self.cache.contains_key(t) {
            let held: usize = self
                .cache
                .values()
                .flatten()
                .map(|(_, v)| v.len() * 4)
                .sum();
            if held > CACHE_BYTES {
                self.cache.clear();
            }
        }
        self.cache
            .entry(t.to_string())
            .or_insert_with(|| member_values(a, t))
            .as_ref()
    }
}

/// Rows of `values` along `axis`: row i holds every element whose index on `axis` is i.
fn rows(dims: &[i64], values: &[f32], axis: usize) -> Vec<Vec<f32>> {
    let d: Vec<usize> = dims.iter().map(|&x| x.max(0) as usize).collect();
    let n = d.get(axis).copied().unwrap_or(0);
    let inner: usize = d[axis + 1..].iter().product();
    let outer: usize = d[..axis].iter().product();
    let mut out = vec![Vec::with_capacity(outer * inner); n];
    for o in 0..outer {
        for (i, row) in out.iter_mut().enumerate() {
            let base = (o * n + i) * inner;
            if let Some(chunk) = values.get(base..base + inner) {
                row.extend_from_slice(chunk);
            }
        }
    }
    out
}

/// Weiszfeld iterations for the geometric median of the rows.
fn geometric_median(rows: &[Vec<f32>]) -> Vec<f64> {
    let dim = rows.first().map(Vec::len).unwrap_or(0);
    let mut m: Vec<f64> = vec![0.0; dim];
    for r in rows {
        for (x, v) in m.iter_mut().zip(r) {
            *x += *v as f64 / rows.len().max(1) as f64;
        }
    }
    for _ in 0..20 {
        let mut num = vec![0.0; dim];
        let mut den = 0.0;
        for r in rows {
            let d = r
                .iter()
                .zip(&m)
                .map(|(a, b)| (*a as f64 - b).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            for (x, v) in num.iter_mut().zip(r) {
                *x += *v as f64 / d;
            }
            den += 1.0 / d;
        }
        m = num.into_iter().map(|x| x / den).collect();
    }
    m
}

/// Scores of every unit of `group`.
pub fn unit_scores(
    a: &Analysis,
    ca: &ChannelAnalysis,
    group: &ChannelGroup,
    criterion: Criterion,
    seed: u64,
    cache: &mut WeightCache,
) -> Vec<f64> {
    let mut scores = vec![0.0f64; group.channels];
    if criterion == Criterion::Random {
        let mut rng = Rng::new(seed ^ (group.id as u64).wrapping_mul(0x9E37_79B9));
        return scores.iter().map(|_| rng.uniform()).collect();
    }
    let has_bn = group
        .members
        .iter()
        .any(|&m| ca.members[m].role == Role::NormScale);
    let acts = cache.activations.clone();
    let mut used = 0;
    for &mi in &group.members {
        let m = &ca.members[mi];
        // The channel RMS of the consumer's input, for the activation criterion.
        let rms = match (&acts, criterion) {
            (Some(acts), Criterion::Activation) if m.role == Role::ConsumerWeight => a
                .graph()
                .node
                .iter()
                .find(|n| n.display_name() == m.node)
                .and_then(|n| n.input.first())
                .and_then(|x| acts.get(x)),
            _ => None,
        };
        if criterion == Criterion::Activation && rms.is_none() {
            continue;
        }
        let relevant = match criterion {
            Criterion::BnScale if has_bn => m.role == Role::NormScale,
            Criterion::Fpgm => m.role == Role::ProducerWeight,
            _ => matches!(m.role, Role::ProducerWeight | Role::ConsumerWeight),
        };
        if !relevant {
            continue;
        }
        let Some((dims, values)) = cache.get(a, &m.tensor) else {
            continue;
        };
        let rows = rows(dims, values, m.axis);
        let per_index: Vec<f64> = match criterion {
            Criterion::Activation => rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let norm = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                    norm * rms.and_then(|x| x.get(i)).copied().unwrap_or(0.0)
                })
                .collect(),
            Criterion::L2 => rows
                .iter()
                .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
                .collect(),
            Criterion::Fpgm => {
                let med = geometric_median(&rows);
                rows.iter()
                    .map(|r| {
                        r.iter()
                            .zip(&med)
                            .map(|(a, b)| (*a as f64 - b).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect()
            }
            _ => rows
                .iter()
                .map(|r| r.iter().map(|v| v.abs() as f64).sum())
                .collect(),
        };
        let max = per_index.iter().cloned().fold(0.0, f64::max);
        if max <= 0.0 {
            continue;
        }
        used += 1;
        for (i, s) in per_index.iter().enumerate() {
            let Some(&atom) = m.atoms.get(i) else {
                continue;
            };
            if ca.atom_group[atom as usize] == group.id {
                scores[ca.atom_unit[atom as usize]] += s / max;
            }
        }
    }
    if used == 0 && criterion != Criterion::L1 {
        return unit_scores(a, ca, group, Criterion::L1, seed, cache);
    }
    scores
}
