//! The pruning plan: which units of which group to keep.
//!
//! One rounding rule applies per group (seed P16): every member of a group keeps the same
//! multiple of `round_to` channels, because the group is pruned as one set of indices.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::importance::{Criterion, WeightCache, unit_scores};
use crate::analysis::channels::{ChannelAnalysis, ChannelGroup};
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::Analysis;
use crate::tags::{Tag, Tags};

/// Options of a pruning run.
#[derive(Clone, Debug, Serialize)]
pub struct PruneOptions {
    /// Fraction of channels to remove per group (or overall with `global`).
    pub ratio: f64,
    pub criterion: Criterion,
    /// Kept channel counts are multiples of this (1 = no rounding).
    pub round_to: usize,
    /// Rank units across all groups instead of pruning each group by `ratio`.
    pub global: bool,
    /// With `global`: never remove more than this fraction of one group.
    pub max_ratio: f64,
    /// Never keep fewer channels than this in a group.
    pub min_channels: usize,
    pub seed: u64,
    /// Per-group ratios (group id → ratio) chosen by a budget search or given by a caller;
    /// they replace `ratio` for those groups. Tags (skip, lock, ratio) still win. A ratio of 0
    /// keeps the whole group.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub group_ratios: BTreeMap<usize, f64>,
    /// Validation data (`--data`): one input set in model-input order, used instead of the
    /// seeded random inputs when given.
    #[serde(skip)]
    pub inputs: Option<Vec<crate::runtime::HostTensor>>,
    #[serde(skip)]
    pub tags: Tags,
    /// Per-channel activation RMS on calibration data (`--criterion activation`).
    #[serde(skip)]
    pub activations: Option<std::sync::Arc<std::collections::HashMap<String, Vec<f64>>>>,
    /// Refit-aware unit scores per group (see [`super::proxy::LsqProxy::refit_scores`]):
    /// with `--recover lsq`, they replace the activation criterion's scores where present.
    #[serde(skip)]
    pub refit_scores: Option<std::sync::Arc<std::collections::HashMap<usize, Vec<f64>>>>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            ratio: 0.5,
            criterion: Criterion::L1,
            round_to: 8,
            global: false,
            max_ratio: 0.9,
            min_channels: 1,
            seed: 0,
            group_ratios: BTreeMap::new(),
            inputs: None,
            tags: Tags::default(),
            activations: None,
            refit_scores: None,
        }
    }
}

/// The decision for one group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupPlan {
    pub group: usize,
    pub total: usize,
    /// Units kept (indices into the group's units), ascending.
    pub keep: Vec<usize>,
    /// Why nothing is pruned, when so.
    pub locked: Vec<String>,
    /// The ratio asked for this group (after tag overrides).
    pub ratio: f64,
}

impl GroupPlan {
    pub fn kept(&self) -> usize {
        self.keep.len()
    }
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct PrunePlan {
    pub groups: Vec<GroupPlan>,
}

impl PrunePlan {
    /// A plan that keeps everything (used by the exactness tests and as a starting point).
    pub fn keep_all(ca: &ChannelAnalysis) -> Self {
        Self {
            groups: ca
                .groups
                .iter()
                .map(|g| GroupPlan {
                    group: g.id,
                    total: g.channels,
                    keep: (0..g.channels).collect(),
                    locked: g.locks.clone(),
                    ratio: 0.0,
                })
                .collect(),
        }
    }

    pub fn pruned_groups(&self) -> usize {
        self.groups.iter().filter(|g| g.kept() < g.total).count()
    }
}

/// Rounds a kept count to the group's rule: a multiple of `round_to`, within limits.
pub fn rounded_keep(total: usize, ratio: f64, round_to: usize, min_channels: usize) -> usize {
    let r = round_to.max(1);
    let raw = total as f64 * (1.0 - ratio);
    let mut k = ((raw / r as f64).round() as usize) * r;
    k = k.max(r).max(min_channels);
    k.min(total)
}

/// Per group: extra lock reasons, and a ratio override.
type TagEffects = (Vec<Vec<String>>, Vec<Option<f64>>);

/// Applies tags: returns extra lock reasons per group and per-group ratio overrides.
fn tag_effects(a: &Analysis, ca: &ChannelAnalysis, tags: &Tags) -> Result<TagEffects> {
    let g = a.graph();
    let names: Vec<&str> = g.node.iter().map(|n| n.name()).collect();
    tags.check_against(&names)?;
    let mut locks = vec![Vec::new(); ca.groups.len()];
    let mut ratios = vec![None; ca.groups.len()];
    if tags.is_empty() {
        return Ok((locks, ratios));
    }
    for node in &g.node {
        let name = node.name();
        let tag = tags.tag_of(name);
        let ratio = tags.ratio_of(name);
        if tag.is_none() && ratio.is_none() {
            continue;
        }
        // Groups this node produces (its output channels) and groups it touches at all.
        let groups_of = |tensors: &[String]| -> HashSet<usize> {
            tensors
                .iter()
                .filter_map(|t| ca.layouts.get(t))
                .flat_map(|l| l.atoms.iter().map(|&x| ca.atom_group[x as usize]))
                .collect()
        };
        let produced: HashSet<usize> = ca
            .groups
            .iter()
            .filter(|grp| grp.producers.iter().any(|p| p == &node.display_name()))
            .map(|grp| grp.id)
            .collect();
        match tag {
            Some(Tag::Skip) => {
                for &gid in &produced {
                    locks[gid].push(format!("layer '{name}' is tagged skip"));
                }
            }
            Some(Tag::Lock) => {
                let mut touched = groups_of(&node.input);
                touched.extend(groups_of(&node.output));
                touched.extend(produced.iter().copied());
                for m in ca.members.iter().filter(|m| m.node == node.display_name()) {
                    touched.extend(m.atoms.iter().map(|&x| ca.atom_group[x as usize]));
                }
                for gid in touched {
                    locks[gid].push(format!("layer '{name}' is tagged lock"));
                }
            }
            None => {}
        }
        if let Some(r) = ratio {
            for &gid in &produced {
                ratios[gid] = Some(r);
            }
        }
    }
    Ok((locks, ratios))
}

/// Builds the plan.
pub fn make_plan(
    a: &Analysis,
    ca: &ChannelAnalysis,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PrunePlan> {
    if !(0.0..1.0).contains(&opts.ratio) {
        return Err(PareError::Usage(format!(
            "--ratio {} must be in [0, 1)",
            opts.ratio
        )));
    }
    if let Some((g, r)) = opts
        .group_ratios
        .iter()
        .find(|(_, r)| !(0.0..1.0).contains(*r))
    {
        return Err(PareError::Usage(format!(
            "ratio {r} of channel group {g} must be in [0, 1)"
        )));
    }
    let (tag_locks, tag_ratios) = tag_effects(a, ca, &opts.tags)?;
    let mut cache = WeightCache::with_activations(opts.activations.clone());
    progress.phase("ranking", Some(ca.groups.len() as u64));
    let mut plans = Vec::with_capacity(ca.groups.len());
    let mut scored: Vec<(usize, Vec<f64>)> = Vec::new();
    for (k, grp) in ca.groups.iter().enumerate() {
        progress.check_cancel()?;
        let mut locked = grp.locks.clone();
        locked.extend(tag_locks[grp.id].iter().cloned());
        let ratio = tag_ratios[grp.id]
            .or_else(|| opts.group_ratios.get(&grp.id).copied())
            .unwrap_or(opts.ratio);
        let prunable = locked.is_empty()
            && grp.channels > unit_round(grp, opts.round_to).min(grp.channels)
            && grp.channels > 1;
        if prunable {
            let refit = opts
                .refit_scores
                .as_ref()
                .and_then(|r| r.get(&grp.id))
                .filter(|s| s.len() == grp.channels && opts.criterion == Criterion::Activation);
            let scores = match refit {
                Some(s) => s.clone(),
                None => unit_scores(a, ca, grp, opts.criterion, opts.seed, &mut cache),
            };
            scored.push((grp.id, scores));
        } else if locked.is_empty() && grp.channels <= 1 {
            locked.push("a single channel".into());
        } else if locked.is_empty() {
            locked.push(format!(
                "{} channels, not more than round_to {}",
                grp.channels, opts.round_to
            ));
        }
        plans.push(GroupPlan {
            group: grp.id,
            total: grp.channels,
            keep: (0..grp.channels).collect(),
            locked,
            ratio,
        });
        progress.step(k as u64 + 1, "");
    }
    if opts.global {
        global_keep(ca, opts, &scored, &tag_ratios, &mut plans);
    } else {
        // A ratio of 0 keeps the group whole (rounding must not prune what nobody asked for).
        for (gid, scores) in &scored {
            if plans[*gid].ratio <= 0.0 {
                continue;
            }
            let grp: &ChannelGroup = &ca.groups[*gid];
            let keep_n = rounded_keep(
                grp.channels,
                plans[*gid].ratio,
                unit_round(grp, opts.round_to),
                opts.min_channels,
            );
            plans[*gid].keep = top_units(scores, keep_n);
        }
    }
    Ok(PrunePlan { groups: plans })
}

/// `round_to` in units: a unit of `unit_width` channels (an attention head) needs only
/// `round_to / gcd` units for the kept channel count to be a multiple of `round_to`.
pub fn unit_round(grp: &ChannelGroup, round_to: usize) -> usize {
    let (r, w) = (round_to.max(1), grp.unit_width.max(1));
    let (mut a, mut b) = (r, w);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    r / a
}

/// Indices of the `n` highest scores, ascending (ties broken by lower index).
fn top_units(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&x, &y| {
        // total_cmp: a NaN score (NaN weights) must not break the sort's total order; it
        // ranks highest, so a channel whose importance is unknown is kept.
        scores[y].total_cmp(&scores[x]).then(x.cmp(&y))
    });
    let mut keep: Vec<usize> = idx.into_iter().take(n).collect();
    keep.sort_unstable();
    keep
}

/// Global ranking: scores are comparable across groups after per-group normalisation to mean
/// 1; the lowest-scoring units overall go first, within each group's max ratio, then counts
/// are rounded per group.
fn global_keep(
    ca: &ChannelAnalysis,
    opts: &PruneOptions,
    scored: &[(usize, Vec<f64>)],
    tag_ratios: &[Option<f64>],
    plans: &mut [GroupPlan],
) {
    let total: usize = scored.iter().map(|(g, _)| ca.groups[*g].channels).sum();
    let target = (total as f64 * opts.ratio).round() as usize;
    let mut all: Vec<(f64, usize, usize)> = Vec::new();
    for (gid, s) in scored {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        for (u, v) in s.iter().enumerate() {
            all.push((v / mean.max(1e-12), *gid, u));
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut removed = vec![0usize; ca.groups.len()];
    let mut n = 0;
    for (_, gid, _) in &all {
        if n >= target {
            break;
        }
        let cap = tag_ratios[*gid].unwrap_or(opts.max_ratio);
        let limit = (ca.groups[*gid].channels as f64 * cap).floor() as usize;
        if removed[*gid] < limit {
            removed[*gid] += 1;
            n += 1;
        }
    }
    for (gid, s) in scored {
        let c = ca.groups[*gid].channels;
        let ratio = removed[*gid] as f64 / c as f64;
        plans[*gid].ratio = ratio;
        let keep_n = rounded_keep(
            c,
            ratio,
            unit_round(&ca.groups[*gid], opts.round_to),
            opts.min_channels,
        );
        plans[*gid].keep = top_units(s, keep_n);
    }
}
