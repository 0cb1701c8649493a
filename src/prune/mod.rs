//! Structured channel pruning: importance → plan → rewrite → validate, each a plain function
//! over plain data. [`run`] is the command (`pare prune` and the TUI's prune job): a typed
//! [`PruneRequest`] in, a [`PruneReport`] out; [`groups`] is `pare groups`.

pub mod budget;
pub mod importance;
pub mod plan;
pub mod proxy;
pub mod recover;
pub mod rewrite;
pub mod sensitivity;
pub mod validate;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use importance::Criterion;
pub use plan::{GroupPlan, PruneOptions, PrunePlan, make_plan};
pub use rewrite::apply_plan;
pub use validate::{Validation, validate};

use crate::analysis::channels::{ChannelAnalysis, GroupDetail, analyze_channels};
use crate::error::{PareError, Result};
use crate::jobs::{JobEvent, NoProgress, Progress};
use crate::model::info::{human, model_info};
use crate::model::{Analysis, Model, SaveOptions, save_model};
use crate::report::{Report, check_output, reduction_pct, truncate};
use crate::tags::Tags;

impl Criterion {
    /// The `--criterion` value (`l1`, `bn-scale`, …).
    pub fn name(self) -> &'static str {
        match self {
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::Fpgm => "fpgm",
            Criterion::BnScale => "bn-scale",
            Criterion::Random => "random",
            Criterion::Activation => "activation",
        }
    }
}

/// What `pare prune` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct PruneRequest {
    pub options: PruneOptions,
    /// Where the pruned model goes; `None` is a dry run (plan and report, nothing written).
    pub output: Option<PathBuf>,
    /// Compare the pruned model's outputs with the original's on seeded random inputs.
    pub validate: bool,
    /// Samples for fidelity (held-out part) and recovery (fit part); `None` measures no
    /// fidelity.
    pub calib: Option<recover::CalibOptions>,
    /// Write the output even when validation ran and did not pass (`--allow-unvalidated`);
    /// otherwise an unvalidated model is not written.
    pub allow_unvalidated: bool,
    /// `--target-macs`/`--target-params`: search per-group ratios for a budget first.
    pub budget: Option<budget::BudgetOptions>,
    /// Reconstruction after the channels are chosen (`--recover`); needs `calib` with real
    /// samples unless `None`.
    pub recover: RecoverMode,
}

/// `--recover none|bias|lsq`: how consumers of pruned groups are re-fitted (see
/// [`recover`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RecoverMode {
    /// Leave the kept weights as they are.
    #[default]
    None,
    /// Fold the removed channels' mean contribution into each consumer's bias.
    Bias,
    /// Ridge least squares of each consumer toward the original's output (bias folding
    /// where a fit does not apply).
    Lsq,
}

impl RecoverMode {
    pub const ALL: [RecoverMode; 3] = [RecoverMode::None, RecoverMode::Bias, RecoverMode::Lsq];

    pub fn name(self) -> &'static str {
        match self {
            RecoverMode::None => "none",
            RecoverMode::Bias => "bias",
            RecoverMode::Lsq => "lsq",
        }
    }
}

impl PruneRequest {
    /// The equivalent `pare prune` command line (what the TUI's job view shows). `tags` names
    /// the tags file when the request carries tags.
    pub fn command_line(&self, model: &str, tags: Option<&str>) -> String {
        let o = &self.options;
        let mut s = format!(
            "pare prune {model} --ratio {} --criterion {} --round-to {}",
            o.ratio,
            o.criterion.name(),
            o.round_to
        );
        if o.global {
            s.push_str(" --global");
        }
        if !self.validate {
            s.push_str(" --no-validate");
        }
        if self.allow_unvalidated {
            s.push_str(" --allow-unvalidated");
        }
        if let Some(t) = tags {
            s.push_str(&format!(" --tags {t}"));
        }
        if let Some(b) = &self.budget {
            s.push_str(&b.flags());
            if let crate::data::DataSource::Path(p) = &b.data.source {
                s.push_str(&format!(" --calib {}", p.display()));
            }
        }
        if let (None, Some(c)) = (&self.budget, &self.calib)
            && let crate::data::DataSource::Path(p) = &c.data.source
        {
            s.push_str(&format!(" --calib {}", p.display()));
        }
        if self.recover != RecoverMode::None {
            s.push_str(&format!(" --recover {}", self.recover.name()));
        }
        match &self.output {
            Some(out) => s.push_str(&format!(" -o {}", out.display())),
            None => s.push_str(" --dry-run"),
        }
        s
    }
}

/// Everything a pruning run reports (`pare prune --json`).
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub params_before: u64,
    pub params_after: u64,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Number of channel groups.
    pub groups: usize,
    pub locked_groups: usize,
    pub pruned_groups: usize,
    /// Both models ran on one engine with the same output shapes and finite outputs; false
    /// when validation was skipped or no engine could run them.
    pub validated: bool,
    pub validation: Option<Validation>,
    /// Written file (None on a dry run, or when withheld).
    pub output: Option<String>,
    /// The output not written because validation did not pass (`--allow-unvalidated`
    /// writes it anyway).
    pub withheld: Option<String>,
    pub plan: Vec<GroupSummary>,
    pub options: PruneOptions,
    /// Engine that ran the validation (`tract`, `onnxruntime`); `None` when nothing ran.
    pub engine: Option<String>,
    /// Pruned (and recovered) model against the original on held-out samples.
    pub fidelity: Option<crate::fidelity::Fidelity>,
    /// The same before recovery ran (only when it ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity_before_recovery: Option<crate::fidelity::Fidelity>,
    pub recovery: Option<recover::Recovery>,
    /// Time of each phase.
    pub phases: Vec<recover::PhaseTime>,
    /// The budget search (chosen ratios, trace), when a budget was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<budget::BudgetReport>,
}

impl Report for PruneReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "groups     {} ({} pruned, {} locked)",
            self.groups, self.pruned_groups, self.locked_groups
        );
        for g in self.plan.iter().filter(|g| g.kept < g.total) {
            let _ = writeln!(
                s,
                "  group {:>4}  {:>5} → {:<5} {}",
                g.group,
                g.total,
                g.kept,
                truncate(&g.producers.join(", "), 70)
            );
        }
        if let Some(b) = &self.budget {
            s.push_str(&b.render_text());
        }
        let _ = writeln!(
            s,
            "params     {} → {} (−{:.1}%)",
            human(self.params_before),
            human(self.params_after),
            reduction_pct(self.params_before, self.params_after)
        );
        if self.macs_before == 0 {
            // Symbolic sizes: no layer's MACs can be counted, so "0 → 0" would mislead.
            let _ = writeln!(
                s,
                "MACs       unknown (symbolic input sizes: pin them with --input-shape)"
            );
        } else {
            let _ = writeln!(
                s,
                "MACs       {} → {} (−{:.1}%)",
                human(self.macs_before),
                human(self.macs_after),
                reduction_pct(self.macs_before, self.macs_after)
            );
        }
        self.render_validation(&mut s);
        self.render_fidelity(&mut s);
        match (&self.output, &self.withheld) {
            (Some(o), _) => {
                let _ = writeln!(s, "wrote      {o}");
            }
            (None, Some(w)) => {
                let _ = writeln!(
                    s,
                    "NOT written {w}: validation did not pass (--allow-unvalidated writes it anyway)"
                );
            }
            (None, None) => {
                let _ = writeln!(s, "dry run: nothing written");
            }
        }
        s
    }
}

impl PruneReport {
    /// Recovery, fidelity (before and after recovery) and phase times.
    fn render_fidelity(&self, s: &mut String) {
        if let Some(r) = &self.recovery {
            let count = |m: recover::FitMethod| r.layers.iter().filter(|l| l.method == m).count();
            let _ = writeln!(
                s,
                "recovery   {}: {} layers by least squares, {} by bias folding, {} unchanged ({} samples, {:.1} s)",
                r.mode.name(),
                count(recover::FitMethod::Lsq),
                count(recover::FitMethod::Bias),
                count(recover::FitMethod::Unchanged),
                r.samples,
                r.seconds
            );
            let sums = r
                .layers
                .iter()
                .filter(|l| l.method == recover::FitMethod::Lsq)
                .filter(|l| l.target == Some(recover::FitTarget::ResidualSum))
                .count();
            if sums > 0 {
                let _ = writeln!(
                    s,
                    "           {sums} residual projections fitted toward the original sums"
                );
            }
        }
        if let Some(f) = &self.fidelity_before_recovery {
            let _ = write!(s, "before recovery:\n{}", f.render_text());
        }
        if let Some(f) = &self.fidelity {
            s.push_str(&f.render_text());
        }
        if self.fidelity.is_some() {
            let p: Vec<String> = self
                .phases
                .iter()
                .map(|p| format!("{} {:.2} s", p.phase, p.seconds))
                .collect();
            let _ = writeln!(s, "time       {}", p.join(", "));
        }
    }
}

impl PruneReport {
    /// The `validated` line and its notes; a loud warning when an unvalidated model was
    /// written anyway.
    fn render_validation(&self, s: &mut String) {
        let Some(v) = &self.validation else {
            if self.output.is_some() {
                let _ = writeln!(s, "validated  no (skipped: --no-validate)");
            }
            return;
        };
        let lat = match (v.latency_ms_before, v.latency_ms_after) {
            (Some(b), Some(a)) => format!(", latency {b:.1} ms → {a:.1} ms"),
            _ => String::new(),
        };
        let how = match v.engine {
            Some(e) => format!("ran both models on {e}"),
            None => "no engine ran the models".into(),
        };
        let _ = writeln!(
            s,
            "validated  {} ({how}){lat}",
            if v.passed { "yes" } else { "NO" }
        );
        for n in &v.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if !v.passed && self.output.is_some() {
            let _ = writeln!(
                s,
                "WARNING: the pruned model did NOT pass validation and was written only because of --allow-unvalidated"
            );
        }
    }
}

/// `pare prune`: plans, rewrites, validates (unless asked not to) and writes the model when
/// the request names an output.
/// With least-squares recovery, a proxy of it (moments of every re-fittable consumer's
/// input) ranks channels by redundancy (for the activation criterion) and lets a budget
/// search measure repaired candidates.
fn lsq_proxy(
    a: &Analysis,
    req: &PruneRequest,
    mode: RecoverMode,
    opts: &mut PruneOptions,
    phases: &mut Vec<recover::PhaseTime>,
    progress: &dyn Progress,
) -> Result<Option<proxy::LsqProxy>> {
    let Some(c) = req.calib.as_ref().filter(|_| mode == RecoverMode::Lsq) else {
        return Ok(None);
    };
    let t = std::time::Instant::now();
    let search = req
        .budget
        .as_ref()
        .map_or((c.holdout, 0), |b| (b.holdout, b.search_samples));
    let x = proxy::LsqProxy::new(a, c, search, progress)?;
    if opts.criterion == Criterion::Activation {
        let ca = crate::analysis::channels::analyze_channels(a);
        opts.refit_scores = Some(std::sync::Arc::new(x.refit_scores(a, &ca)?));
    }
    phases.push(recover::PhaseTime::since("recovery proxy", t));
    Ok(Some(x))
}

/// Fidelity on the validation input (random data), when validation ran both models.
fn validation_fidelity(a: &Analysis, v: Option<&Validation>) -> Option<crate::fidelity::Fidelity> {
    let v = v?;
    let (o0, o1) = v.outputs.as_ref()?;
    let mut acc = crate::fidelity::Accumulator::new(a.index.outputs.clone());
    acc.add(o0, o1).ok()?;
    let mut f = acc.finish(true, "random (the validation input)", v.engine);
    f.notes.push(
        "random inputs (1 sample, the validation's): give --calib DIR for fidelity on real data"
            .into(),
    );
    Some(f)
}

/// The stand-in for recovery a budget search measures candidates with.
enum Repair<'p> {
    Lsq(&'p proxy::LsqProxy),
    Bias(recover::BiasFolder),
}

pub fn run(a: &Analysis, req: &PruneRequest, progress: &dyn Progress) -> Result<PruneReport> {
    if let Some(out) = &req.output {
        check_output(a.model.path.as_deref(), out)?;
    }
    let mut opts = req.options.clone();
    let mut phases = Vec::new();
    let mode = match &req.calib {
        Some(c) if c.given => req.recover,
        _ if req.recover == RecoverMode::None => RecoverMode::None,
        _ => {
            return Err(PareError::Usage(format!(
                "--recover {} needs calibration samples (--calib DIR)",
                req.recover.name()
            )));
        }
    };
    if opts.criterion == Criterion::Activation {
        let t = std::time::Instant::now();
        let c = req.calib.as_ref().filter(|c| c.given).ok_or_else(|| {
            PareError::Usage("--criterion activation needs --calib samples".into())
        })?;
        opts.activations = Some(std::sync::Arc::new(recover::activation_stats(
            a, c, progress,
        )?));
        phases.push(recover::PhaseTime::since("activation statistics", t));
    }
    let lsq_proxy = lsq_proxy(a, req, mode, &mut opts, &mut phases, progress)?;
    let budget = match &req.budget {
        Some(b) => {
            let t = std::time::Instant::now();
            // Candidates are measured as repaired when a repair will run on the result: by
            // closed-form least squares from stored moments for `lsq`, by bias folding for
            // `bias` (see `proxy`).
            let repair = match (&req.calib, &lsq_proxy) {
                (_, Some(x)) => Some(Repair::Lsq(x)),
                (Some(c), None) if mode != RecoverMode::None => {
                    Some(Repair::Bias(recover::BiasFolder::new(a, c, progress)?))
                }
                _ => None,
            };
            let fold = |p: &Pruned| match &repair {
                Some(Repair::Lsq(x)) => x.apply(a, p),
                Some(Repair::Bias(f)) => f.apply(a, p),
                None => Ok(p.model.proto.clone()),
            };
            let transform: Option<&sensitivity::Transform> = repair.as_ref().map(|_| &fold as _);
            let mut b = b.clone();
            if let Some(Repair::Lsq(x)) = &repair {
                b.search_samples = x.search_samples;
            }
            let (ratios, rep) = budget::search(a, &opts, &b, transform, progress)?;
            opts.group_ratios = ratios;
            opts.ratio = 0.0;
            opts.global = false;
            phases.push(recover::PhaseTime::since("budget search", t));
            Some(rep)
        }
        None => None,
    };
    let t = std::time::Instant::now();
    let mut pruned = prune(a, &opts, progress)?;
    phases.push(recover::PhaseTime::since("plan and rewrite", t));
    progress.check_cancel()?;
    // Without --calib, validation's own run (both models on the same random input) gives
    // the fidelity: no second pair of runners, so a plain prune costs what it did.
    let from_validation = req.validate && req.calib.as_ref().is_some_and(|c| !c.given);
    let calib = match &req.calib {
        Some(c) if !from_validation => {
            let mut model = pruned.model.proto.clone();
            let out =
                match recover::calibrate_and_measure(a, &pruned, &mut model, c, mode, progress) {
                    Ok(out) => out,
                    // Fidelity on random inputs is a courtesy: a model no engine runs is
                    // reported by validation, not turned into an error here.
                    Err(e) if !c.given && !matches!(e, PareError::Cancelled) => {
                        recover::CalibOutcome::default()
                    }
                    Err(e) => return Err(e),
                };
            if out.recovery.is_some() {
                pruned.model.file_size = prost::Message::encoded_len(&model) as u64;
                pruned.model.proto = model;
                pruned.analysis = Analysis::new(pruned.model.clone(), &a.pins)?;
            }
            out
        }
        _ => recover::CalibOutcome::default(),
    };
    phases.extend(calib.phases);
    let t = std::time::Instant::now();
    let mut rep = report(a, &pruned, &opts, !req.validate, progress);
    if req.validate {
        phases.push(recover::PhaseTime::since("validation", t));
    }
    rep.budget = budget;
    rep.fidelity = match from_validation {
        true => validation_fidelity(a, rep.validation.as_ref()),
        false => calib.fidelity,
    };
    rep.fidelity_before_recovery = calib.fidelity_before_recovery;
    rep.recovery = calib.recovery;
    rep.phases = phases;
    progress.check_cancel()?;
    if let Some(out) = &req.output {
        if req.validate && !rep.validated && !req.allow_unvalidated {
            rep.withheld = Some(out.display().to_string());
        } else {
            progress.phase("writing", None);
            write(&pruned, out)?;
            rep.output = Some(out.display().to_string());
        }
    }
    progress.event(JobEvent::Finished {
        summary: format!(
            "params {} → {} (−{:.1}%)",
            human(rep.params_before),
            human(rep.params_after),
            reduction_pct(rep.params_before, rep.params_after)
        ),
    });
    Ok(rep)
}

/// `pare groups`: every channel group with its lock status under `tags`.
#[derive(Clone, Debug, Serialize)]
pub struct GroupsReport {
    pub groups: Vec<GroupDetail>,
    pub notes: Vec<String>,
}

/// Lists the channel groups of `a`; tags change lock status, so the planner's view (ratio 0)
/// decides what is prunable.
pub fn groups(a: &Analysis, tags: &Tags) -> Result<GroupsReport> {
    let ca = analyze_channels(a);
    let opts = PruneOptions {
        ratio: 0.0,
        round_to: 1,
        tags: tags.clone(),
        ..Default::default()
    };
    let plan = make_plan(a, &ca, &opts, &NoProgress)?;
    let mut groups = Vec::with_capacity(ca.groups.len());
    for g in &ca.groups {
        let mut d = ca
            .detail(g.id)
            .ok_or_else(|| PareError::Runtime(format!("channel group {} has no detail", g.id)))?;
        d.locks = plan.groups[g.id].locked.clone();
        d.prunable = d.locks.is_empty() && d.channels > 1;
        groups.push(d);
    }
    Ok(GroupsReport {
        groups,
        notes: ca.notes.clone(),
    })
}

impl Report for GroupsReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        let prunable = self.groups.iter().filter(|g| g.prunable).count();
        let _ = writeln!(
            s,
            "{} channel groups, {} prunable, {} locked",
            self.groups.len(),
            prunable,
            self.groups.len() - prunable
        );
        let _ = writeln!(
            s,
            "{:>4}  {:>5}  {:<9}  {:<8}  {:<48}  why",
            "id", "chans", "kind", "status", "producers"
        );
        for g in &self.groups {
            let status = if g.prunable { "prunable" } else { "locked" };
            let producers: Vec<&str> = g.producers.iter().map(|p| p.as_str()).collect();
            let mut prod = producers
                .iter()
                .take(2)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if producers.len() > 2 {
                prod.push_str(&format!(" +{}", producers.len() - 2));
            }
            let why = g.locks.first().cloned().unwrap_or_default();
            let more = if g.locks.len() > 1 {
                format!(" (+{} more)", g.locks.len() - 1)
            } else {
                String::new()
            };
            // Heads show their head dim: `heads×8` is a group of heads of 8 channels each.
            let kind = match g.kind {
                crate::analysis::channels::GroupKind::Heads => format!("heads×{}", g.unit_width),
                k => k.label().to_string(),
            };
            let _ = writeln!(
                s,
                "{:>4}  {:>5}  {:<9}  {:<8}  {:<48}  {why}{more}",
                g.id,
                g.channels,
                kind,
                status,
                truncate(&prod, 48)
            );
        }
        s
    }
}

/// One line of the plan for reports.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSummary {
    pub group: usize,
    pub kept: usize,
    pub total: usize,
    pub producers: Vec<String>,
    pub locked: Vec<String>,
}

/// The pruned model with its analysis, before anything is written.
pub struct Pruned {
    pub model: Model,
    pub analysis: Analysis,
    pub channels: ChannelAnalysis,
    pub plan: PrunePlan,
}

/// Plans and rewrites; `validate_run` adds the tract comparison.
pub fn prune(a: &Analysis, opts: &PruneOptions, progress: &dyn Progress) -> Result<Pruned> {
    progress.phase("analysing channels", None);
    let ca = analyze_channels(a);
    let plan = make_plan(a, &ca, opts, progress)?;
    progress.phase("rewriting", None);
    let mut proto = apply_plan(a, &ca, &plan)?;
    crate::diff::keepmap::record(&mut proto, &ca, &plan);
    let model = Model {
        file_size: prost::Message::encoded_len(&proto) as u64,
        proto,
        path: None,
        external_tensors: a.model.external_tensors.clone(),
    };
    let analysis = Analysis::new(model.clone(), &a.pins)?;
    Ok(Pruned {
        model,
        analysis,
        channels: ca,
        plan,
    })
}

/// Builds the report, validating unless `skip_validation`.
pub fn report(
    a: &Analysis,
    pruned: &Pruned,
    opts: &PruneOptions,
    skip_validation: bool,
    progress: &dyn Progress,
) -> PruneReport {
    let before = model_info(a);
    let after = model_info(&pruned.analysis);
    let validation = if skip_validation {
        None
    } else {
        progress.phase("validating", None);
        Some(validate::validate_with(
            a,
            &pruned.model.proto,
            &pruned.analysis,
            opts.seed,
            opts.inputs.as_deref(),
        ))
    };
    let engine = validation
        .as_ref()
        .and_then(|v| v.engine)
        .map(|e| e.name().to_string());
    let ca = &pruned.channels;
    PruneReport {
        params_before: before.params,
        params_after: after.params,
        macs_before: before.macs,
        macs_after: after.macs,
        groups: ca.groups.len(),
        locked_groups: pruned
            .plan
            .groups
            .iter()
            .filter(|g| !g.locked.is_empty())
            .count(),
        pruned_groups: pruned.plan.pruned_groups(),
        validated: validation.as_ref().is_some_and(|v| v.passed),
        validation,
        output: None,
        withheld: None,
        plan: pruned
            .plan
            .groups
            .iter()
            .map(|g| GroupSummary {
                group: g.group,
                kept: g.kept(),
                total: g.total,
                producers: ca.groups[g.group].producers.clone(),
                locked: g.locked.clone(),
            })
            .collect(),
        options: opts.clone(),
        engine,
        fidelity: None,
        fidelity_before_recovery: None,
        recovery: None,
        phases: Vec::new(),
        budget: None,
    }
}

/// Writes the pruned model atomically (the caller checked it is not the input).
pub fn write(pruned: &Pruned, out: &Path) -> Result<()> {
    save_model(&pruned.model, out, &SaveOptions::default())
}
