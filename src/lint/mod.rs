//! Deployment lint: what will break when this model is handed to TensorRT 7.1/8.6/10,
//! onnxruntime or tract, found in the graph before anyone builds an engine — and `pare fix`,
//! which rewrites what can be rewritten safely and proves the result equal.
//!
//! Every rule lives in [`rules`] (one file per rule family) as a [`Rule`]: an id (`L1`–`L30`
//! and `P1`–`P4` follow `TENSORRT_RULES.md`; `G*` are pare's generic rules, `T1` asks tract
//! itself), a title, the seed case it comes from, a plain explanation, the source-side fix as a
//! short PyTorch snippet, and the automatic rewrite that fixes it where one is safe. A rule's
//! check decides severity per target. [`lint`] runs them all and returns [`Diagnostic`]s, which
//! the CLI prints and the TUI attaches to nodes ([`LintReport::by_node`]).

pub mod ctx;
pub mod fix;
pub mod render;
pub mod rules;
pub mod target;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::jobs::Progress;
use crate::model::Analysis;

pub use ctx::LintCtx;
pub use fix::{FixKind, FixOptions, FixOutcome, fix_model};
pub use rules::{Rule, all_rules, rule_by_id};
pub use target::Target;

/// How bad a finding is for the chosen target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The target will refuse the model, or silently compute something else.
    Error,
    /// Works, with a caveat the user must know (a profile to set, a slower path, a version
    /// boundary).
    Warning,
    /// Worth knowing; nothing breaks.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One finding: a rule, the nodes it concerns, and what is wrong there.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    pub rule: String,
    pub severity: Severity,
    /// Node names (display names for unnamed nodes); may be empty for model-level findings.
    pub nodes: Vec<String>,
    pub message: String,
    pub seed_case: Option<String>,
    /// `pare fix` can rewrite this finding away (proven equal before writing).
    pub fixable: bool,
    pub title: String,
    pub target: String,
    /// Name of the automatic fix (`pare fix --rule <name>`), when fixable.
    pub fix: Option<String>,
    /// Source-side fix, as a short Python/PyTorch snippet.
    pub fix_snippet: String,
    /// Why the rule exists, in plain words.
    pub explanation: String,
    /// Graph inputs concerned (model-level findings about inputs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<String>,
}

/// Lint options.
#[derive(Clone, Debug, Default)]
pub struct LintOptions {
    pub target: Target,
    /// Only these rule ids (empty: all).
    pub rules: Vec<String>,
}

/// Everything one lint run found, ordered by severity, then rule, then first node.
#[derive(Clone, Debug, Serialize)]
pub struct LintReport {
    pub target: String,
    pub target_name: String,
    pub model: String,
    pub opset: i64,
    pub node_count: usize,
    pub diagnostics: Vec<Diagnostic>,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub fixable: usize,
}

impl LintReport {
    /// Diagnostics per node name, for per-node display (a node may have several).
    pub fn by_node(&self) -> BTreeMap<&str, Vec<&Diagnostic>> {
        let mut m: BTreeMap<&str, Vec<&Diagnostic>> = BTreeMap::new();
        for d in &self.diagnostics {
            for n in &d.nodes {
                m.entry(n.as_str()).or_default().push(d);
            }
        }
        m
    }

    /// The worst severity found, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.diagnostics.iter().map(|d| d.severity).min()
    }

    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }
}

/// Lints an analysed model for one target. Pure and fast (no model is run), except for the
/// `tract` target, where tract itself is asked to load, type and optimise the model.
pub fn lint(a: &Analysis, opts: &LintOptions) -> LintReport {
    let cx = LintCtx::new(a, opts.target);
    let mut diags = Vec::new();
    for rule in all_rules() {
        if !opts.rules.is_empty() && !opts.rules.iter().any(|r| r.eq_ignore_ascii_case(rule.id)) {
            continue;
        }
        let mut sink = rules::Sink::new(rule, &cx);
        (rule.check)(&cx, &mut sink);
        diags.extend(sink.finish());
    }
    diags.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then_with(|| rules::rule_order(&a.rule).cmp(&rules::rule_order(&b.rule)))
    });
    let count = |s: Severity| diags.iter().filter(|d| d.severity == s).count();
    LintReport {
        target: opts.target.id(),
        target_name: opts.target.display(),
        model: a
            .model
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<in memory>".into()),
        opset: cx.opset,
        node_count: a.graph().node.len(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
        fixable: diags.iter().filter(|d| d.fixable).count(),
        diagnostics: diags,
    }
}

/// [`lint`] as a job: reports a phase and one log line per finding, for the TUI.
pub fn lint_job(a: &Analysis, opts: &LintOptions, progress: &dyn Progress) -> LintReport {
    progress.phase("linting", None);
    let report = lint(a, opts);
    for d in &report.diagnostics {
        progress.log(&format!(
            "{} {} {}: {}",
            d.severity.as_str(),
            d.rule,
            d.nodes.first().map(String::as_str).unwrap_or("model"),
            d.message
        ));
    }
    progress.event(crate::jobs::JobEvent::Finished {
        summary: format!(
            "{}: {} errors, {} warnings, {} notes",
            report.target_name, report.errors, report.warnings, report.infos
        ),
    });
    report
}
