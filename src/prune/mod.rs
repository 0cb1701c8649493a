//! Structured channel pruning: importance → plan → rewrite → validate, each a plain function
//! over plain data, and [`prune`] chaining them for the CLI and the TUI.

pub mod importance;
pub mod plan;
pub mod rewrite;
pub mod validate;

use std::path::Path;

use serde::Serialize;

pub use importance::Criterion;
pub use plan::{GroupPlan, PruneOptions, PrunePlan, make_plan};
pub use rewrite::apply_plan;
pub use validate::{Validation, validate};

use crate::analysis::channels::{ChannelAnalysis, analyze_channels};
use crate::error::Result;
use crate::jobs::Progress;
use crate::model::info::model_info;
use crate::model::{Analysis, Model, SaveOptions, save_model};

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
    pub validated: bool,
    pub validation: Option<Validation>,
    /// Written file (None on a dry run).
    pub output: Option<String>,
    pub plan: Vec<GroupSummary>,
    pub options: PruneOptions,
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
    let proto = apply_plan(a, &ca, &plan)?;
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
        progress.phase("validating with tract", None);
        Some(validate::validate_with(
            a,
            &pruned.model.proto,
            &pruned.analysis,
            opts.seed,
            opts.inputs.as_deref(),
        ))
    };
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
    }
}

/// Writes the pruned model atomically (the caller checked it is not the input).
pub fn write(pruned: &Pruned, out: &Path) -> Result<()> {
    save_model(&pruned.model, out, &SaveOptions::default())
}
