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
use std::path::PathBuf;

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
    /// A pare command that resolves the finding but is not a `pare fix` rewrite: it changes
    /// the numbers, so it is measured (fidelity against the original) rather than proven equal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
}

/// A measured, not proven, way out of a finding (the TUI's fix action runs it as a job).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Remedy {
    /// `pare convert --precision P`: an FP32-only model becomes a mixed-precision one.
    Convert {
        precision: crate::convert::Precision,
    },
}

impl Remedy {
    /// The command line, for reports and the TUI.
    pub fn command(self) -> String {
        match self {
            Remedy::Convert { precision } => {
                format!("pare convert --precision {}", precision.suffix())
            }
        }
    }
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

impl std::str::FromStr for Target {
    type Err = crate::PareError;

    /// `--target` values: see [`Target::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s).map_err(crate::PareError::Usage)
    }
}

/// What `pare fix` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct FixRequest {
    pub options: FixOptions,
    /// Where the fixed model goes; `None` is a dry run (fix and verify, write nothing).
    pub output: Option<PathBuf>,
    /// Write the fixed model even when it could not be verified (never when it diverged).
    pub allow_unverified: bool,
}

impl FixRequest {
    /// The equivalent `pare fix` command line (what the TUI's job view shows).
    pub fn command_line(&self, model: &str) -> String {
        let mut s = format!("pare fix {model}");
        if let Some(t) = self.options.target {
            s.push_str(&format!(" --target {t}"));
        }
        for r in &self.options.only {
            s.push_str(&format!(" --rule {r}"));
        }
        if self.allow_unverified {
            s.push_str(" --allow-unverified");
        }
        match &self.output {
            Some(out) => s.push_str(&format!(" -o {}", out.display())),
            None => s.push_str(" --dry-run"),
        }
        s
    }
}

/// What `pare fix` did: the fixes and their verification, the lint of the result when a
/// target was given, and why nothing was written when writing was refused.
#[derive(Debug, Serialize)]
pub struct FixReport {
    #[serde(flatten)]
    pub outcome: FixOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Remaining>,
    /// Why the fixed model was not written (diverged, unverified, output is the input).
    #[serde(rename = "error", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip)]
    pub write_error: Option<crate::PareError>,
    /// Engine that ran the verification (`tract`, `onnxruntime`); `None` when nothing ran.
    pub engine: Option<String>,
}

/// Lint errors left after the fixes, for the target the fixes were chosen for.
#[derive(Clone, Debug, Serialize)]
pub struct Remaining {
    pub target: String,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Rule ids of the remaining errors.
    pub rules: Vec<String>,
    #[serde(skip)]
    pub target_name: String,
    /// `RULE title` of each remaining error, for the text rendering.
    #[serde(skip)]
    pub titles: Vec<String>,
}

impl Remaining {
    fn of(r: &LintReport) -> Self {
        let errors: Vec<&Diagnostic> = r
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        Remaining {
            target: r.target.clone(),
            errors: r.errors,
            warnings: r.warnings,
            infos: r.infos,
            rules: errors.iter().map(|d| d.rule.clone()).collect(),
            target_name: r.target_name.clone(),
            titles: errors
                .iter()
                .map(|d| format!("{} {}", d.rule, d.title))
                .collect(),
        }
    }
}

impl crate::report::Report for FixReport {
    fn render_text(&self) -> String {
        let mut s = render::render_fix(&self.outcome);
        if let Some(r) = &self.remaining {
            s.push_str(&format!(
                "remaining  {}: {} error(s), {} warning(s){}\n",
                r.target_name,
                r.errors,
                r.warnings,
                if r.titles.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", rules::list(&r.titles, 4))
                }
            ));
        }
        s
    }
}

impl FixReport {
    /// True when writing was refused because the fixed model diverged or could not be run:
    /// a failed check (exit 1), not bad input.
    pub fn check_failed(&self) -> bool {
        self.write_error.is_some()
            && matches!(
                self.outcome.verification.status,
                fix::VerifyStatus::Failed | fix::VerifyStatus::Impossible
            )
    }
}

/// `pare fix`: applies the fixes, verifies them, writes the result when it is proven equal
/// (or `allow_unverified`), and lints it again when the request names a target. A refused
/// write is reported in the report, so the caller can still show what was done.
pub fn fix(a: &Analysis, req: &FixRequest, progress: &dyn Progress) -> crate::Result<FixReport> {
    let input = a.model.path.clone().unwrap_or_default();
    if let Some(out) = &req.output {
        crate::report::check_output(a.model.path.as_deref(), out)?;
    }
    let mut outcome = fix_model(a, &req.options, progress)?;
    let mut write_error = None;
    if let Some(out) = &req.output
        && let Err(e) = fix::write_fixed(&mut outcome, &input, out, req.allow_unverified)
    {
        write_error = Some(e);
    }
    // A fixed model that cannot be analysed again has no "remaining" section; the fix itself
    // and its verification still stand.
    let remaining = req.options.target.and_then(|t| {
        let fixed = Analysis::new(outcome.model.clone(), &a.pins).ok()?;
        let opts = LintOptions {
            target: t,
            rules: Vec::new(),
        };
        Some(Remaining::of(&lint(&fixed, &opts)))
    });
    let engine =
        (outcome.verification.status != fix::VerifyStatus::NotRun).then(|| "tract".to_string());
    Ok(FixReport {
        outcome,
        remaining,
        error_message: write_error.as_ref().map(|e| e.to_string()),
        write_error,
        engine,
    })
}
