//! The rules, one file per family. Each [`Rule`] carries its documentation (title, seed case,
//! explanation, source-side snippet, automatic fix) next to its check, so the CLI, the JSON
//! output and the TUI all show the same words.

mod axes;
mod clip;
mod control;
mod convtranspose;
mod gather;
mod hygiene;
mod inputs;
mod ops;
mod qdq;
mod resize;
mod shapes;
mod tract_probe;
mod trt11;
mod trt_misc;

pub use gather::non_negative as gather_non_negative;
pub use tract_probe::{TractFailure, tract_probe};

use super::ctx::LintCtx;
use super::fix::FixKind;
use super::{Diagnostic, Severity};

/// A lint rule.
pub struct Rule {
    /// `L7`, `P1`, `G3`, `T1`.
    pub id: &'static str,
    pub title: &'static str,
    /// Seed case from SEED_CASES.md (`Q4`).
    pub seed_case: Option<&'static str>,
    /// Where it applies and how bad it is, in words.
    pub applies: &'static str,
    pub explanation: &'static str,
    /// Source-side fix: a short Python/PyTorch snippet.
    pub snippet: &'static str,
    /// The automatic rewrite (`pare fix`), when one is safe.
    pub fix: Option<FixKind>,
    pub check: fn(&LintCtx, &mut Sink),
}

/// Collects one rule's findings.
pub struct Sink<'r> {
    rule: &'r Rule,
    target: String,
    out: Vec<Diagnostic>,
}

impl<'r> Sink<'r> {
    pub fn new(rule: &'r Rule, cx: &LintCtx) -> Self {
        Self {
            rule,
            target: cx.target.id(),
            out: Vec::new(),
        }
    }

    /// Records a finding. `fixable` is ignored for rules without an automatic fix.
    pub fn emit(
        &mut self,
        severity: Severity,
        nodes: Vec<String>,
        message: impl Into<String>,
        fixable: bool,
    ) {
        let fixable = fixable && self.rule.fix.is_some();
        self.out.push(Diagnostic {
            rule: self.rule.id.to_string(),
            severity,
            nodes,
            message: message.into(),
            seed_case: self.rule.seed_case.map(str::to_string),
            fixable,
            title: self.rule.title.to_string(),
            target: self.target.clone(),
            fix: if fixable {
                self.rule.fix.map(|f| f.name().to_string())
            } else {
                None
            },
            fix_snippet: self.rule.snippet.to_string(),
            explanation: self.rule.explanation.to_string(),
            tensors: Vec::new(),
        });
    }

    /// Like [`Sink::emit`] for findings about graph inputs or other tensors.
    pub fn emit_tensors(
        &mut self,
        severity: Severity,
        tensors: Vec<String>,
        message: impl Into<String>,
        fixable: bool,
    ) {
        self.emit(severity, Vec::new(), message, fixable);
        if let Some(d) = self.out.last_mut() {
            d.tensors = tensors;
        }
    }

    pub fn finish(self) -> Vec<Diagnostic> {
        self.out
    }
}

/// Every rule, in report order.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    [
        inputs::RULES,
        ops::RULES,
        control::RULES,
        axes::RULES,
        clip::RULES,
        gather::RULES,
        resize::RULES,
        convtranspose::RULES,
        trt_misc::RULES,
        trt11::RULES,
        qdq::RULES,
        shapes::RULES,
        hygiene::RULES,
        tract_probe::RULES,
    ]
    .into_iter()
    .flatten()
}

/// The rule with this id (case-insensitive).
pub fn rule_by_id(id: &str) -> Option<&'static Rule> {
    all_rules().find(|r| r.id.eq_ignore_ascii_case(id))
}

/// Sort key of a rule id: its position in [`all_rules`].
pub fn rule_order(id: &str) -> usize {
    all_rules().position(|r| r.id == id).unwrap_or(usize::MAX)
}

/// Display names of nodes.
pub fn names<'a>(
    nodes: impl IntoIterator<Item = &'a crate::model::proto::NodeProto>,
) -> Vec<String> {
    nodes.into_iter().map(|n| n.display_name()).collect()
}

/// `a, b, c and 4 more`.
pub fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}
