//! Fast mixed precision: `--target-sqnr` / `--min-agreement` choose the layers that stay float
//! from the one sensitivity pass the diagnostics already make, plus a few confirmation runs.
//!
//! Returning layers to float one at a time and re-measuring after each (the old search) costs
//! one full-model run per layer: 222 s on a text detector against 19 s for onnxruntime's whole
//! quantization. Here the quantized layers are ranked once by their *isolated* SQNR (each
//! layer quantized alone, on float inputs: independent of the others), and the float set is
//! always a prefix of that ranking. The prefix length is searched:
//! - an additive noise model predicts it — output noise ∝ the sum of the remaining layers'
//!   isolated noise ratios, rescaled by every measured probe — so the first guess is usually
//!   within a few layers;
//! - each guess is confirmed by one run of the quantized model on the evaluation samples,
//!   compared with the float model's stored outputs (output SQNR and task agreement: top-1,
//!   mask IoU, pixel agreement), which narrows a bisection bracket; the search ends when the
//!   bracket closes or after [`MAX_PROBES`] runs, keeping the smallest prefix that passed.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::placement::Plan;
use crate::data::SampleSet;
use crate::error::Result;
use crate::fidelity::{self, Fidelity};
use crate::jobs::{JobEvent, LayerLabel, NoProgress, Progress};
use crate::model::Analysis;
use crate::model::proto::ModelProto;
use crate::runtime::EngineKind;
use crate::runtime::pool::RunnerCache;

/// Most confirmation runs of one search (a bisection over 128 layers needs 7).
pub const MAX_PROBES: usize = 8;

/// What the quantized model must keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Target {
    /// Lowest output SQNR (dB) over the model's float outputs.
    pub sqnr_db: Option<f64>,
    /// Lowest task agreement (top-1 / mask IoU / pixel agreement) with the float model.
    pub agreement: Option<f64>,
}

impl Target {
    pub fn is_set(&self) -> bool {
        self.sqnr_db.is_some() || self.agreement.is_some()
    }

    /// True when `m` meets every bound that is set (an unmeasurable bound counts as met:
    /// a model without class-score or mask outputs has no agreement to keep).
    pub fn met(&self, m: &Measured) -> bool {
        let sqnr = match (self.sqnr_db, m.sqnr_db) {
            (Some(t), Some(v)) => v >= t,
            _ => true,
        };
        let agree = match (self.agreement, m.agreement) {
            (Some(t), Some(v)) => v >= t,
            _ => true,
        };
        sqnr && agree
    }
}

/// One confirmation run's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Measured {
    pub sqnr_db: Option<f64>,
    pub agreement: Option<f64>,
}

/// One confirmation run: the worst `float_layers` ranked layers in float.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probe {
    pub float_layers: usize,
    pub output_sqnr_db: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    pub passed: bool,
    pub seconds: f64,
}

/// What the search chose and what it cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixedReport {
    pub target: Target,
    pub reached: bool,
    /// Layers returned to float, worst isolated SQNR first.
    pub float_layers: Vec<String>,
    /// Share of the model's MACs that run in INT8 with the chosen plan.
    pub int8_mac_share: Option<f64>,
    /// Seconds to run the float model on the evaluation samples (once).
    pub reference_seconds: f64,
    pub probes: Vec<Probe>,
    pub search_seconds: f64,
}

impl MixedReport {
    /// Report lines: the target, the float layers, the INT8 share of MACs, each probe.
    pub fn render_text(&self, s: &mut String) {
        use std::fmt::Write as _;
        let t = &self.target;
        let mut goal = Vec::new();
        if let Some(d) = t.sqnr_db {
            goal.push(format!("output SQNR >= {d} dB"));
        }
        if let Some(a) = t.agreement {
            goal.push(format!("task agreement >= {a}"));
        }
        let _ = writeln!(
            s,
            "mixed       {} {}: {} layers float, {} of MACs in INT8 ({} runs, {:.1} s)",
            goal.join(", "),
            if self.reached {
                "reached"
            } else {
                "NOT reached"
            },
            self.float_layers.len(),
            self.int8_mac_share
                .map_or("?".into(), |x| format!("{:.1} %", 100.0 * x)),
            self.probes.len(),
            self.search_seconds
        );
        for p in &self.probes {
            let _ = writeln!(
                s,
                "  {:>3} float  -> output {}{}  {}",
                p.float_layers,
                crate::report::fmt_db(p.output_sqnr_db),
                p.agreement
                    .map_or(String::new(), |a| format!(", agreement {a:.3}")),
                if p.passed { "pass" } else { "fail" }
            );
        }
        for l in &self.float_layers {
            let _ = writeln!(s, "  float  {l}");
        }
    }
}

/// Quantized candidates, worst isolated SQNR first (unmeasured layers last), with their
/// isolated SQNR.
pub fn ranking(plan: &Plan, iso_db: &[Option<f64>]) -> Vec<(usize, Option<f64>)> {
    let mut order: Vec<(usize, Option<f64>)> = plan
        .candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.quantized)
        .map(|(i, _)| (i, iso_db.get(i).copied().flatten()))
        .collect();
    order.sort_by(|x, y| {
        x.1.unwrap_or(f64::INFINITY)
            .total_cmp(&y.1.unwrap_or(f64::INFINITY))
    });
    order
}

/// `base` with the first `k` ranked layers returned to float.
pub fn with_prefix_float(base: &Plan, order: &[(usize, Option<f64>)], k: usize, why: &str) -> Plan {
    let mut p = base.clone();
    for &(ci, _) in order.iter().take(k) {
        p.candidates[ci].quantized = false;
        p.candidates[ci].reason = Some(why.to_string());
    }
    p.finalize();
    p
}

/// Noise-to-signal ratio of an SQNR in dB.
fn ratio(db: f64) -> f64 {
    10f64.powf(-db / 10.0)
}

/// The search state: a bracket `lo` (fails) < `hi` (passes) over prefix lengths, and the
/// noise model `tail[k]` = Σ of the isolated noise ratios of ranked layers `k..`.
struct Bracket {
    lo: usize,
    hi: usize,
    tail: Vec<f64>,
}

impl Bracket {
    fn new(order: &[(usize, Option<f64>)]) -> Self {
        let mut tail = vec![0.0; order.len() + 1];
        for k in (0..order.len()).rev() {
            tail[k] = tail[k + 1] + order[k].1.map_or(0.0, ratio);
        }
        Bracket {
            lo: 0,
            hi: order.len(),
            tail,
        }
    }

    /// The smallest prefix the noise model predicts reaches `want_db`, given that prefix `k`
    /// measured `got_db`.
    fn predict(&self, k: usize, got_db: f64, want_db: f64) -> usize {
        if self.tail[k] <= 0.0 {
            return k;
        }
        let c = ratio(got_db) / self.tail[k];
        let goal = ratio(want_db);
        (0..self.tail.len())
            .find(|&j| c * self.tail[j] <= goal)
            .unwrap_or(self.tail.len() - 1)
    }

    /// The next prefix to try after a probe at `k` (in the bracket's interior).
    fn next(&self, k: usize, m: &Measured, passed: bool, target: &Target, probes: usize) -> usize {
        let mid = (self.lo + self.hi) / 2;
        let guess = match (m.sqnr_db, passed) {
            // Below target: aim for the SQNR target, or 10 dB more when only agreement is set.
            (Some(v), false) => self.predict(k, v, target.sqnr_db.unwrap_or(v + 10.0)),
            // Above target: shrink the prefix toward the bracket's middle.
            _ => mid,
        };
        // After two model-guided probes, average with bisection so the bracket keeps halving.
        let guess = if probes >= 2 {
            (guess + mid).div_ceil(2)
        } else {
            guess
        };
        guess.clamp(self.lo + 1, self.hi.saturating_sub(1).max(self.lo + 1))
    }
}

/// Searches the smallest prefix of `order` to return to float so that `target` holds.
/// `base` is the measured all-INT8 point (prefix 0). `measure(plan)` runs one confirmation.
/// Returns the chosen prefix length, whether it met the target, and the probes.
pub fn search(
    order: &[(usize, Option<f64>)],
    base: Measured,
    target: &Target,
    progress: &dyn Progress,
    measure: &mut dyn FnMut(usize) -> Result<Measured>,
) -> Result<(usize, bool, Vec<Probe>)> {
    let mut probes = Vec::new();
    if target.met(&base) || order.is_empty() {
        return Ok((0, target.met(&base), probes));
    }
    let mut b = Bracket::new(order);
    let (mut k, mut m, mut passed) = (0, base, false);
    let mut best_measured = false;
    while b.hi > b.lo + 1 && probes.len() < MAX_PROBES {
        progress.check_cancel()?;
        k = b.next(k, &m, passed, target, probes.len());
        let t = Instant::now();
        m = measure(k)?;
        passed = target.met(&m);
        probes.push(Probe {
            float_layers: k,
            output_sqnr_db: m.sqnr_db,
            agreement: m.agreement,
            passed,
            seconds: t.elapsed().as_secs_f64(),
        });
        progress.step(probes.len() as u64, &format!("{k} layers float"));
        progress.event(JobEvent::Fidelity {
            float_layers: k,
            output_sqnr_db: m.sqnr_db,
            agreement: m.agreement,
        });
        if passed {
            b.hi = k;
            best_measured = true;
        } else {
            b.lo = k;
        }
    }
    // All ranked layers in float is the float model for these layers: it passes unless the
    // loss comes from layers outside the ranking; measure it when nothing smaller passed.
    let reached = if best_measured {
        true
    } else {
        let t = Instant::now();
        let m = measure(b.hi)?;
        let passed = target.met(&m);
        probes.push(Probe {
            float_layers: b.hi,
            output_sqnr_db: m.sqnr_db,
            agreement: m.agreement,
            passed,
            seconds: t.elapsed().as_secs_f64(),
        });
        passed
    };
    Ok((b.hi, reached, probes))
}

/// What a search needs from the quantization it runs in.
pub struct Context<'a> {
    pub a: &'a Analysis,
    pub set: &'a SampleSet,
    /// Samples every confirmation run is measured on.
    pub eval: &'a [usize],
    pub threads: usize,
    pub engine: EngineKind,
    /// The quantized model for a plan (the Q/DQ writer).
    pub build: &'a dyn Fn(&Plan) -> Result<ModelProto>,
}

/// The chosen plan's measurement: per output, and the steps in rank order.
pub struct Chosen {
    pub report: MixedReport,
    /// The confirmation run of the chosen plan (`None` when the all-INT8 plan was kept without
    /// a run of its own).
    pub fidelity: Option<Fidelity>,
    pub steps: Vec<super::FallbackStep>,
}

/// Why a layer went back to float, as the report says it.
fn reason(t: &Target) -> String {
    let mut v = Vec::new();
    if let Some(d) = t.sqnr_db {
        v.push(format!("--target-sqnr {d} dB"));
    }
    if let Some(a) = t.agreement {
        v.push(format!("--min-agreement {a}"));
    }
    format!("returned to float to reach {}", v.join(" and "))
}

/// Live events for the layers whose precision changed between prefix `prev` and `k`: float
/// ones as [`LayerLabel::Fallback`], quantized-again ones back to their isolated SQNR.
fn layer_events(
    order: &[(usize, Option<f64>)],
    plan: &Plan,
    prev: usize,
    k: usize,
    p: &dyn Progress,
) {
    for (i, &(ci, db)) in order.iter().enumerate() {
        let label = match (i < k, i < prev) {
            (true, false) => LayerLabel::Fallback,
            (false, true) => LayerLabel::SqnrDb,
            _ => continue,
        };
        p.event(JobEvent::Layer {
            node: plan.candidates[ci].name.clone(),
            value: db.unwrap_or(f64::NAN),
            label,
        });
    }
}

/// Chooses the float layers of `plan` (changed in place) so that `target` holds, from the
/// isolated SQNR of each candidate (`iso_db`, the diagnostics pass) and the all-INT8 output
/// SQNR (`base_sqnr`, reused when only an SQNR target is set).
pub fn choose(
    cx: &Context,
    plan: &mut Plan,
    iso_db: &[Option<f64>],
    base_sqnr: Option<f64>,
    target: &Target,
    progress: &dyn Progress,
) -> Result<Chosen> {
    let start = Instant::now();
    let order = ranking(plan, iso_db);
    let why = reason(target);
    progress.phase("mixed precision", Some(MAX_PROBES as u64));
    if let Some(v) = base_sqnr.filter(|_| target.agreement.is_none())
        && target.met(&Measured {
            sqnr_db: Some(v),
            agreement: None,
        })
    {
        // Met by the all-INT8 model as the diagnostics measured it: nothing to run.
        return Ok(Chosen {
            report: MixedReport {
                target: *target,
                reached: true,
                float_layers: Vec::new(),
                int8_mac_share: int8_mac_share(plan, &model_macs(cx.a)),
                reference_seconds: 0.0,
                probes: Vec::new(),
                search_seconds: start.elapsed().as_secs_f64(),
            },
            fidelity: None,
            steps: Vec::new(),
        });
    }
    let t = Instant::now();
    let reference = {
        let r =
            RunnerCache::new(cx.a.model.proto.clone(), "float reference").on(cx.engine, cx.threads);
        fidelity::reference_outputs(&r, cx.set, cx.eval, cx.threads, &NoProgress)?
    };
    let reference_seconds = t.elapsed().as_secs_f64();
    let base_plan = plan.clone();
    let mut runs: HashMap<usize, Fidelity> = HashMap::new();
    let mut prev = 0;
    let mut measure = |k: usize| -> Result<Measured> {
        let p = with_prefix_float(&base_plan, &order, k, &why);
        layer_events(&order, &base_plan, prev, k, progress);
        prev = k;
        let cache = RunnerCache::new((cx.build)(&p)?, "mixed precision").on(cx.engine, cx.threads);
        let f = fidelity::measure_against(&reference, &cache, cx.set, cx.threads, &NoProgress)?
            .finish(false, &cx.set.source, Some(cx.engine));
        let m = Measured {
            sqnr_db: f.min_sqnr_db(),
            agreement: f.task_agreement(),
        };
        runs.insert(k, f);
        Ok(m)
    };
    let mut base_probe = None;
    let base = match base_sqnr {
        Some(v) if target.agreement.is_none() => Measured {
            sqnr_db: Some(v),
            agreement: None,
        },
        _ => {
            let t = Instant::now();
            let m = measure(0)?;
            base_probe = Some(Probe {
                float_layers: 0,
                output_sqnr_db: m.sqnr_db,
                agreement: m.agreement,
                passed: target.met(&m),
                seconds: t.elapsed().as_secs_f64(),
            });
            m
        }
    };
    let (k, reached, mut probes) = search(&order, base, target, progress, &mut measure)?;
    probes.splice(0..0, base_probe);
    if prev != k {
        layer_events(&order, &base_plan, prev, k, progress);
    }
    *plan = with_prefix_float(&base_plan, &order, k, &why);
    let steps = order[..k]
        .iter()
        .enumerate()
        .map(|(i, &(ci, db))| super::FallbackStep {
            node: plan.candidates[ci].name.clone(),
            layer_sqnr_db: db,
            output_sqnr_db: runs.get(&(i + 1)).and_then(Fidelity::min_sqnr_db),
        })
        .collect();
    let macs = model_macs(cx.a);
    Ok(Chosen {
        report: MixedReport {
            target: *target,
            reached,
            float_layers: order[..k]
                .iter()
                .map(|&(ci, _)| plan.candidates[ci].name.clone())
                .collect(),
            int8_mac_share: int8_mac_share(plan, &macs),
            reference_seconds,
            probes,
            search_seconds: start.elapsed().as_secs_f64(),
        },
        fidelity: runs.remove(&k),
        steps,
    })
}

/// MACs of every node of the main graph (0 where unknown).
fn model_macs(a: &Analysis) -> Vec<u64> {
    a.graph()
        .node
        .iter()
        .map(|n| crate::model::stats::node_macs(n, &a.shapes).unwrap_or(0))
        .collect()
}

/// Share of MACs (of the whole model) in layers `plan` quantizes, from `macs[node]`.
pub fn int8_mac_share(plan: &Plan, macs: &[u64]) -> Option<f64> {
    let total: u64 = macs.iter().sum();
    if total == 0 {
        return None;
    }
    let q: u64 = plan
        .candidates
        .iter()
        .filter(|c| c.quantized)
        .filter_map(|c| macs.get(c.node))
        .sum();
    Some(q as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(db: &[f64]) -> Vec<(usize, Option<f64>)> {
        db.iter().enumerate().map(|(i, &d)| (i, Some(d))).collect()
    }

    /// A model whose output noise is exactly the sum of the remaining isolated noises.
    fn additive(o: &[(usize, Option<f64>)], k: usize) -> Measured {
        let n: f64 = o[k..].iter().map(|x| ratio(x.1.unwrap())).sum();
        Measured {
            sqnr_db: Some(if n > 0.0 { -10.0 * n.log10() } else { 300.0 }),
            agreement: None,
        }
    }

    #[test]
    fn additive_noise_is_found_in_one_probe() {
        let o = order(&[10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0]);
        let t = Target {
            sqnr_db: Some(28.0),
            agreement: None,
        };
        let mut runs = 0;
        let (k, ok, probes) = search(
            &o,
            additive(&o, 0),
            &t,
            &crate::jobs::NoProgress,
            &mut |k| {
                runs += 1;
                Ok(additive(&o, k))
            },
        )
        .unwrap();
        // The smallest prefix meeting 28 dB.
        let want = (0..=o.len())
            .find(|&j| additive(&o, j).sqnr_db.unwrap() >= 28.0)
            .unwrap();
        assert!(ok);
        assert_eq!(k, want);
        assert!(runs <= 3, "{runs} runs: {probes:?}");
    }

    #[test]
    fn bisection_finds_a_threshold_the_model_mispredicts() {
        // Agreement jumps at prefix 37 of 60, unrelated to the noise model.
        let o = order(&(0..60).map(|i| 10.0 + i as f64).collect::<Vec<_>>());
        let t = Target {
            sqnr_db: None,
            agreement: Some(0.9),
        };
        let m = |k: usize| Measured {
            sqnr_db: Some(10.0 + k as f64 / 10.0),
            agreement: Some(if k >= 37 { 0.95 } else { 0.5 }),
        };
        let (k, ok, probes) =
            search(&o, m(0), &t, &crate::jobs::NoProgress, &mut |k| Ok(m(k))).unwrap();
        assert!(ok);
        assert!(probes.len() <= MAX_PROBES);
        // Every passing probe is ≥ 37, and the chosen one passed.
        assert!(k >= 37 && probes.iter().any(|p| p.float_layers == k && p.passed));
    }

    #[test]
    fn unreachable_target_says_so() {
        let o = order(&[10.0, 20.0]);
        let t = Target {
            sqnr_db: Some(500.0),
            agreement: None,
        };
        let (k, ok, _) = search(
            &o,
            additive(&o, 0),
            &t,
            &crate::jobs::NoProgress,
            &mut |k| Ok(additive(&o, k)),
        )
        .unwrap();
        assert_eq!(k, 2);
        assert!(!ok);
    }
}
