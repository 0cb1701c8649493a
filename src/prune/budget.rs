//! Budgets: `pare prune --target-macs F` / `--target-params F` choose a ratio per group so the
//! model keeps as much fidelity as it can for the asked size. A uniform ratio prunes fragile
//! groups as hard as robust ones; here every round re-measures, for each group, what one more
//! step of pruning costs in fidelity (noise-to-signal of the worst output, linear so costs add
//! up) per unit of budget it saves, and takes the cheapest steps until the round's share of the
//! remaining gap is covered. Re-measuring each round catches interactions a one-off
//! sensitivity scan misses. `--min-sqnr` is a floor: a round that would cross it falls back to
//! its single cheapest step, and the search stops when even that crosses it.
//!
//! Measurements run on the fitting part of the samples only (see [`crate::fidelity::holdout`]);
//! a [`Transform`] (recovery) can be applied to every candidate so the search measures what
//! will be written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use super::plan::{PruneOptions, make_plan};
use super::sensitivity::{Evaluator, Measured, SampleSpec, Transform};
use crate::error::{PareError, Result};
use crate::jobs::{NoProgress, Progress};
use crate::model::Analysis;
use crate::model::info::{human, model_info};
use crate::report::fmt_db;
use crate::runtime::EngineKind;

/// A budget: a fraction of the original to keep, or an absolute count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Fraction(f64),
    Absolute(u64),
}

impl FromStr for Amount {
    type Err = PareError;

    /// `0.8` (a fraction in (0, 1]) or `1.2G`, `300M`, `45k`, `5000000` (absolute).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            PareError::Usage(format!(
                "budget '{s}': give a fraction to keep in (0, 1] (e.g. 0.8) or a count (e.g. 1.2G, 300M)"
            ))
        };
        let t = s.trim();
        let (num, mult) = match t.chars().last() {
            Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) => (
                &t[..t.len() - 1],
                match c.to_ascii_uppercase() {
                    'K' => 1e3,
                    'M' => 1e6,
                    'G' => 1e9,
                    _ => 1e12,
                },
            ),
            _ => (t, 1.0),
        };
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v <= 0.0 {
            return Err(bad());
        }
        if mult == 1.0 && v <= 1.0 {
            Ok(Amount::Fraction(v))
        } else {
            Ok(Amount::Absolute((v * mult).round() as u64))
        }
    }
}

impl Amount {
    /// The absolute count for an original of `total`.
    pub fn of(self, total: u64) -> u64 {
        match self {
            Amount::Fraction(f) => (total as f64 * f).round() as u64,
            Amount::Absolute(n) => n,
        }
    }

    /// The flag value that parses back to this amount.
    pub fn flag(self) -> String {
        match self {
            Amount::Fraction(f) => format!("{f}"),
            Amount::Absolute(n) => format!("{n}"),
        }
    }
}

/// What a budget search is asked for.
#[derive(Clone, Debug)]
pub struct BudgetOptions {
    pub target_macs: Option<Amount>,
    pub target_params: Option<Amount>,
    /// Stop before the lowest output SQNR (on the fitting samples) falls below this.
    pub min_sqnr_db: Option<f64>,
    pub data: SampleSpec,
    /// Share of the samples held out from the search (left for the final fidelity report).
    pub holdout: f64,
    /// One step prunes about this fraction of a group's channels.
    pub step: f64,
    /// Rounds the gap is planned to close in (more rounds: finer choices, more runs).
    pub rounds: usize,
    /// The search measures on at most this many fitting samples (each round runs every
    /// group's candidate on all of them).
    pub search_samples: usize,
}

impl BudgetOptions {
    pub fn new(data: SampleSpec) -> Self {
        BudgetOptions {
            target_macs: None,
            target_params: None,
            min_sqnr_db: None,
            data,
            holdout: 0.25,
            step: 0.125,
            rounds: 6,
            search_samples: 16,
        }
    }

    /// The flags for a command line (`--target-macs 0.8 --min-sqnr 20`).
    pub fn flags(&self) -> String {
        let mut s = String::new();
        if let Some(m) = self.target_macs {
            let _ = write!(s, " --target-macs {}", m.flag());
        }
        if let Some(p) = self.target_params {
            let _ = write!(s, " --target-params {}", p.flag());
        }
        if let Some(f) = self.min_sqnr_db {
            let _ = write!(s, " --min-sqnr {f}");
        }
        s
    }
}

/// Why the search stopped.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum StopReason {
    /// Every target is met.
    TargetReached,
    /// One more step would take the SQNR below `--min-sqnr`.
    MinSqnr { floor_db: f64 },
    /// No group can be pruned further (max ratio, min channels, round_to).
    NothingLeft,
}

/// One point of the search: the plan after a round.
#[derive(Clone, Debug, Serialize)]
pub struct TracePoint {
    pub round: usize,
    pub macs: u64,
    pub params: u64,
    pub sqnr_db: Option<f64>,
    /// Lowest task measure (top-1 agreement, mask IoU, …) when the outputs have one.
    pub agreement: Option<f64>,
    /// Groups stepped this round.
    pub stepped: usize,
}

/// The ratio chosen for one group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupChoice {
    pub group: usize,
    pub total: usize,
    pub kept: usize,
    pub ratio: f64,
}

/// What the search did (`budget` in `pare prune --json`).
#[derive(Clone, Debug, Serialize)]
pub struct BudgetReport {
    pub target_macs: Option<u64>,
    pub target_params: Option<u64>,
    pub min_sqnr_db: Option<f64>,
    pub reached: bool,
    pub stop: StopReason,
    /// Every searched group, pruned or not.
    pub ratios: Vec<GroupChoice>,
    pub trace: Vec<TracePoint>,
    /// Fitting samples the search measured on.
    pub samples: usize,
    pub source: String,
    pub random_data: bool,
    pub engine: EngineKind,
    pub evaluations: usize,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// Search state: kept units of every searchable group.
struct State {
    keep: BTreeMap<usize, usize>,
    totals: BTreeMap<usize, usize>,
    min_keep: BTreeMap<usize, usize>,
    step: BTreeMap<usize, usize>,
    round_to: usize,
}

impl State {
    /// The next (smaller) kept count of `g`: a multiple of round_to at least one step down.
    fn next(&self, g: usize) -> Option<usize> {
        let (k, r) = (self.keep[&g], self.round_to);
        let n = k.checked_sub(self.step[&g])?.div_ceil(r) * r;
        (n >= self.min_keep[&g] && n < k).then_some(n)
    }

    fn ratios(&self) -> BTreeMap<usize, f64> {
        self.keep
            .iter()
            .map(|(&g, &k)| (g, 1.0 - k as f64 / self.totals[&g] as f64))
            .collect()
    }

    fn options(&self, base: &PruneOptions) -> PruneOptions {
        let mut o = base.clone();
        o.ratio = 0.0;
        o.global = false;
        o.group_ratios = self.ratios();
        o
    }
}

/// Targets in absolute counts and how far the current plan is from them.
struct Targets {
    macs: Option<u64>,
    params: Option<u64>,
}

impl Targets {
    fn met(&self, m: &Measured) -> bool {
        self.macs.is_none_or(|t| m.macs <= t) && self.params.is_none_or(|t| m.params <= t)
    }

    /// The share of the binding gap (the larger relative one) that going from `cur` to
    /// `cand` closes.
    fn saving(&self, cur: &Measured, cand: &Measured) -> f64 {
        let gaps = [
            self.macs.map(|t| (cur.macs, cand.macs, t)),
            self.params.map(|t| (cur.params, cand.params, t)),
        ];
        let binding = gaps
            .into_iter()
            .flatten()
            .filter(|(c, _, t)| c > t)
            .max_by(|a, b| {
                let rel = |(c, _, t): &(u64, u64, u64)| (c - t) as f64 / *c as f64;
                rel(a).total_cmp(&rel(b))
            });
        match binding {
            Some((c, n, t)) => (c as f64 - n as f64) / (c - t) as f64,
            None => 0.0,
        }
    }
}

/// The searchable groups of `a` and the state that keeps them whole.
fn initial_state(ev: &Evaluator, base: &PruneOptions, step: f64) -> Result<State> {
    let mut probe = base.clone();
    probe.ratio = 0.0;
    probe.global = false;
    probe.group_ratios.clear();
    let plan = make_plan(ev.analysis, &ev.channels, &probe, &NoProgress)?;
    let r = base.round_to.max(1);
    let mut st = State {
        keep: BTreeMap::new(),
        totals: BTreeMap::new(),
        min_keep: BTreeMap::new(),
        step: BTreeMap::new(),
        round_to: r,
    };
    // Groups a tag gave a ratio keep it (tags win); locked groups are not searched.
    for g in plan
        .groups
        .iter()
        .filter(|g| g.locked.is_empty() && g.ratio == 0.0)
    {
        let t = g.total;
        let floor = (t as f64 * (1.0 - base.max_ratio)).ceil() as usize;
        st.keep.insert(g.group, t);
        st.totals.insert(g.group, t);
        st.min_keep
            .insert(g.group, floor.max(r).max(base.min_channels).max(1));
        let units = ((t as f64 * step / r as f64).round() as usize).max(1) * r;
        st.step.insert(g.group, units);
    }
    Ok(st)
}

/// `--target-macs` on a model whose MACs count is 0 because its inputs have symbolic sizes:
/// without this, every plan "meets" the budget and nothing is pruned.
fn unknown_macs(a: &Analysis) -> PareError {
    let graph = a.model.proto.graph.clone().unwrap_or_default();
    let symbolic: Vec<String> = crate::data::input_decls(&graph, &a.pins)
        .unwrap_or_default()
        .iter()
        .filter(|d| d.is_dynamic())
        .map(|d| format!("'{}' {}", d.name, d.describe()))
        .collect();
    PareError::Usage(format!(
        "--target-macs: the model's MACs are unknown{}; pin the sizes with --input-shape \
         NAME:1x3x224x224 (the size it runs at)",
        if symbolic.is_empty() {
            String::new()
        } else {
            format!(" because input {} has symbolic dims", symbolic.join(", "))
        }
    ))
}

/// Chooses per-group ratios for the budget in `b`; returns them (for
/// [`PruneOptions::group_ratios`]) and the report. `transform` (recovery) is applied to every
/// candidate before it is measured.
pub fn search(
    a: &Analysis,
    base: &PruneOptions,
    b: &BudgetOptions,
    transform: Option<&Transform>,
    progress: &dyn Progress,
) -> Result<(BTreeMap<usize, f64>, BudgetReport)> {
    if b.target_macs.is_none() && b.target_params.is_none() {
        return Err(PareError::Usage(
            "a budget needs --target-macs or --target-params".into(),
        ));
    }
    let start = Instant::now();
    let info = model_info(a);
    if b.target_macs.is_some() && info.macs == 0 {
        return Err(unknown_macs(a));
    }
    let targets = Targets {
        macs: b.target_macs.map(|m| m.of(info.macs)),
        params: b.target_params.map(|p| p.of(info.params)),
    };
    let mut ev = Evaluator::new(a, &b.data, Some(b.holdout), b.search_samples, progress)?;
    ev.transform = transform;
    let mut st = initial_state(&ev, base, b.step)?;
    // The plan before any step: tag ratios may already prune something.
    let mut cur = ev.measure(&st.options(base), progress)?;
    let mut trace = vec![point(0, &cur, 0, info.macs, progress)];
    let mut stop = StopReason::NothingLeft;
    let mut round = 0;
    while round < b.rounds * 4 {
        if targets.met(&cur) {
            stop = StopReason::TargetReached;
            break;
        }
        round += 1;
        let cands = measure_steps(&ev, &st, base, &cur, &targets, b, round, progress)?;
        if cands.is_empty() {
            break;
        }
        let floor_ok = |m: &Measured| {
            b.min_sqnr_db
                .is_none_or(|f| m.fidelity.min_sqnr_db().is_none_or(|s| s >= f))
        };
        let ok: Vec<&Step> = cands.iter().filter(|c| floor_ok(&c.measured)).collect();
        if ok.is_empty() {
            stop = StopReason::MinSqnr {
                floor_db: b.min_sqnr_db.unwrap_or_default(),
            };
            break;
        }
        let need = 1.0 / (b.rounds.saturating_sub(round - 1)).max(1) as f64;
        let (mut chosen, mut covered) = (Vec::new(), 0.0);
        for c in &ok {
            chosen.push(*c);
            covered += c.saving;
            if covered >= need {
                break;
            }
        }
        let mut next = st.keep.clone();
        for c in &chosen {
            next.insert(c.group, c.keep);
        }
        let saved = std::mem::replace(&mut st.keep, next);
        let combined = if chosen.len() == 1 {
            chosen[0].measured.clone()
        } else {
            ev.measure(&st.options(base), progress)?
        };
        if floor_ok(&combined) {
            trace.push(point(round, &combined, chosen.len(), info.macs, progress));
            cur = combined;
        } else {
            // Together the steps cross the floor: take only the cheapest one.
            st.keep = saved;
            st.keep.insert(ok[0].group, ok[0].keep);
            cur = ok[0].measured.clone();
            trace.push(point(round, &cur, 1, info.macs, progress));
        }
        progress.log(&format!(
            "round {round}: MACs {} params {} SQNR {}",
            human(cur.macs),
            human(cur.params),
            fmt_db(cur.fidelity.min_sqnr_db())
        ));
    }
    if targets.met(&cur) {
        stop = StopReason::TargetReached;
    }
    let report = finish(&ev, &st, &targets, b, stop, trace, start);
    Ok((st.ratios(), report))
}

/// One more step of one group, measured.
struct Step {
    group: usize,
    keep: usize,
    saving: f64,
    measured: Measured,
}

/// Measures one more step of every group that has one; cheapest (fidelity lost per share of
/// the gap closed) first. Steps that save nothing are dropped.
#[allow(clippy::too_many_arguments)]
fn measure_steps(
    ev: &Evaluator,
    st: &State,
    base: &PruneOptions,
    cur: &Measured,
    targets: &Targets,
    b: &BudgetOptions,
    round: usize,
    progress: &dyn Progress,
) -> Result<Vec<Step>> {
    let groups: Vec<(usize, usize)> = st
        .keep
        .keys()
        .filter_map(|&g| st.next(g).map(|n| (g, n)))
        .collect();
    progress.phase(
        &format!("budget search, round {round} of ~{}", b.rounds),
        Some(groups.len() as u64),
    );
    let mut out = Vec::with_capacity(groups.len());
    for (k, &(g, n)) in groups.iter().enumerate() {
        progress.check_cancel()?;
        let mut keep = st.keep.clone();
        keep.insert(g, n);
        let trial = State {
            keep,
            totals: st.totals.clone(),
            min_keep: BTreeMap::new(),
            step: BTreeMap::new(),
            round_to: st.round_to,
        };
        let m = ev.measure(&trial.options(base), progress)?;
        let saving = targets.saving(cur, &m);
        if saving > 0.0 {
            out.push(Step {
                group: g,
                keep: n,
                saving,
                measured: m,
            });
        }
        progress.step(k as u64 + 1, &format!("group {g}"));
    }
    let cost = |s: &Step| (s.measured.loss() - cur.loss()).max(0.0) / s.saving;
    out.sort_by(|x, y| cost(x).total_cmp(&cost(y)).then(x.group.cmp(&y.group)));
    Ok(out)
}

/// A trace point; also sent to the job's chart (MACs share, SQNR clamped to 0..=100 dB).
fn point(
    round: usize,
    m: &Measured,
    stepped: usize,
    macs0: u64,
    progress: &dyn Progress,
) -> TracePoint {
    progress.event(crate::jobs::JobEvent::Point {
        x: m.macs as f64 / macs0.max(1) as f64,
        y: m.fidelity.min_sqnr_db().unwrap_or(100.0).clamp(0.0, 100.0),
    });
    TracePoint {
        round,
        macs: m.macs,
        params: m.params,
        sqnr_db: m.fidelity.min_sqnr_db(),
        agreement: m.fidelity.task_agreement(),
        stepped,
    }
}

fn finish(
    ev: &Evaluator,
    st: &State,
    targets: &Targets,
    b: &BudgetOptions,
    stop: StopReason,
    trace: Vec<TracePoint>,
    start: Instant,
) -> BudgetReport {
    let mut notes = ev.set.notes.clone();
    if b.data.is_random() {
        notes.push(
            "no --calib: the search measured fidelity on random inputs; give calibration data for choices that hold on real inputs".into(),
        );
    }
    if let StopReason::MinSqnr { floor_db } = stop {
        notes.push(format!(
            "stopped early: one more step would take the SQNR below --min-sqnr {floor_db} dB; the budget is not reached"
        ));
    }
    BudgetReport {
        target_macs: targets.macs,
        target_params: targets.params,
        min_sqnr_db: b.min_sqnr_db,
        reached: stop == StopReason::TargetReached,
        stop,
        ratios: st
            .keep
            .iter()
            .map(|(&g, &k)| GroupChoice {
                group: g,
                total: st.totals[&g],
                kept: k,
                ratio: 1.0 - k as f64 / st.totals[&g] as f64,
            })
            .collect(),
        trace,
        samples: ev.reference.indices.len(),
        source: ev.set.source.clone(),
        random_data: b.data.is_random(),
        engine: ev.engine,
        evaluations: ev.evaluations.get(),
        seconds: start.elapsed().as_secs_f64(),
        notes,
    }
}

impl BudgetReport {
    /// Text lines for `pare prune`: the target, the search trace, the chosen ratios.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let t = [
            self.target_macs.map(|m| format!("MACs ≤ {}", human(m))),
            self.target_params.map(|p| format!("params ≤ {}", human(p))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let _ = writeln!(
            s,
            "budget     {t}: {} ({} candidates on {} samples from {}, {}, {:.1} s)",
            if self.reached {
                "reached"
            } else {
                "NOT reached"
            },
            self.evaluations,
            self.samples,
            self.source,
            self.engine,
            self.seconds
        );
        for p in &self.trace {
            let _ = writeln!(
                s,
                "  round {:>2}  MACs {:>8}  params {:>8}  SQNR {:>9}{}",
                p.round,
                human(p.macs),
                human(p.params),
                fmt_db(p.sqnr_db),
                p.agreement
                    .map_or(String::new(), |a| format!("  agreement {a:.3}"))
            );
        }
        let ratios: Vec<String> = self
            .ratios
            .iter()
            .map(|g| format!("{}:{:.2}", g.group, g.ratio))
            .collect();
        let _ = writeln!(s, "  ratios (group:ratio) {}", ratios.join(" "));
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse() {
        assert_eq!("0.8".parse::<Amount>().ok(), Some(Amount::Fraction(0.8)));
        assert_eq!(
            "1.2G".parse::<Amount>().ok(),
            Some(Amount::Absolute(1_200_000_000))
        );
        assert_eq!(
            "300M".parse::<Amount>().ok(),
            Some(Amount::Absolute(300_000_000))
        );
        assert_eq!("5000".parse::<Amount>().ok(), Some(Amount::Absolute(5000)));
        assert!("0".parse::<Amount>().is_err());
        assert!("-0.5".parse::<Amount>().is_err());
        assert!("abc".parse::<Amount>().is_err());
        assert_eq!(Amount::Fraction(0.5).of(1000), 500);
    }
}
