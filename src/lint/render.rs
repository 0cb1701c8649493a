//! Text rendering of lint and fix reports for the terminal.

use std::fmt::Write;

use super::fix::{FixOutcome, VerifyStatus};
use super::{Diagnostic, LintReport, Severity};

/// How much to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// One line per finding, no explanations or snippets.
    pub brief: bool,
    /// Findings listed per rule before "… and N more".
    pub max_per_rule: usize,
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

fn sev_tag(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error  ",
        Severity::Warning => "warning",
        Severity::Info => "info   ",
    }
}

/// A message with its quoted names blanked, to spot findings that differ only by name.
fn unquote(m: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in m.chars() {
        if c == '\'' {
            inside = !inside;
            out.push('\'');
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Renders a lint report grouped by rule (errors first).
pub fn render_lint(r: &LintReport, opts: &RenderOptions) -> String {
    let max = if opts.max_per_rule == 0 {
        8
    } else {
        opts.max_per_rule
    };
    let mut s = String::new();
    let file = std::path::Path::new(&r.model)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.model.clone());
    let _ = writeln!(
        s,
        "{file} · {} · opset {} · {} nodes",
        r.target_name, r.opset, r.node_count
    );
    // Group by (severity, rule) preserving report order.
    let mut groups: Vec<(Severity, &str, Vec<&Diagnostic>)> = Vec::new();
    for d in &r.diagnostics {
        match groups
            .iter_mut()
            .find(|g| g.0 == d.severity && g.1 == d.rule)
        {
            Some(g) => g.2.push(d),
            None => groups.push((d.severity, &d.rule, vec![d])),
        }
    }
    for (sev, rule, ds) in &groups {
        let first = ds[0];
        let mut head = format!("\n{} {rule:<4} {}", sev_tag(*sev), first.title);
        if let Some(seed) = &first.seed_case {
            let _ = write!(head, " · seed {seed}");
        }
        if ds.iter().any(|d| d.fixable) {
            let fix = ds.iter().find_map(|d| d.fix.clone()).unwrap_or_default();
            let _ = write!(head, " · fixable: pare fix --rule {fix}");
        }
        let _ = writeln!(s, "{head}");
        // Findings that differ only in tensor names print once, with all their nodes.
        let mut merged: Vec<(String, Vec<String>, String, bool)> = Vec::new();
        for d in ds {
            let key = unquote(&d.message);
            let items = if d.nodes.is_empty() {
                d.tensors.clone()
            } else {
                d.nodes.clone()
            };
            match merged.iter_mut().find(|m| m.0 == key) {
                Some(m) => {
                    m.1.extend(items);
                    m.3 |= m.2 != d.message;
                }
                None => merged.push((key, items, d.message.clone(), false)),
            }
        }
        for (_, items, msg, differs) in merged.iter().take(max) {
            let who = if items.is_empty() {
                "model".to_string()
            } else if items.len() > 1 && ds.len() > 1 {
                format!("{} nodes ({})", items.len(), super::rules::list(items, 3))
            } else {
                super::rules::list(items, 3)
            };
            let msg = if *differs {
                format!("{msg} (names of the first)")
            } else {
                msg.clone()
            };
            s.push_str(&wrap(&format!("{who}: {msg}"), 110, "    "));
        }
        if merged.len() > max {
            let _ = writeln!(
                s,
                "    … and {} more (--json lists all)",
                merged.len() - max
            );
        }
        if !opts.brief && *sev != Severity::Info {
            s.push_str(&wrap(&format!("why: {}", first.explanation), 110, "    "));
            if !first.fix_snippet.is_empty() {
                let _ = writeln!(s, "    source fix:");
                for l in first.fix_snippet.lines() {
                    let _ = writeln!(s, "      {l}");
                }
            }
        }
    }
    let _ = writeln!(s);
    let verdict = if r.errors > 0 {
        format!("not deployable on {} as is", r.target_name)
    } else if r.warnings > 0 {
        format!("deployable on {}, with caveats", r.target_name)
    } else {
        format!("no problems found for {}", r.target_name)
    };
    let fixable = if r.fixable > 0 {
        format!(" · {} fixable by `pare fix`", r.fixable)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "{} error(s), {} warning(s), {} note(s){fixable} — {verdict}",
        r.errors, r.warnings, r.infos
    );
    s
}

/// Renders what `pare fix` did.
pub fn render_fix(o: &FixOutcome) -> String {
    let mut s = String::new();
    if o.actions.is_empty() {
        let _ = writeln!(s, "nothing to fix: no applicable rewrite found");
        return s;
    }
    for a in &o.actions {
        s.push_str(&wrap(
            &format!("{:<19} {}", a.fix, a.description),
            110,
            "  ",
        ));
    }
    let _ = writeln!(s, "nodes      {} → {}", o.nodes_before, o.nodes_after);
    if !o.pinned_inputs.is_empty() {
        let p: Vec<String> = o
            .pinned_inputs
            .iter()
            .map(|(n, d)| {
                format!(
                    "{n}:{}",
                    d.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "inputs     now declared static ({}): the folded model is valid for these shapes only",
            p.join(", ")
        );
    }
    let v = &o.verification;
    match v.status {
        VerifyStatus::Passed => {
            let _ = writeln!(
                s,
                "verified   outputs equal within {:.0e} (max |diff| {:.3e}) on {} seeded input set(s) [{}]",
                v.tolerance,
                v.max_abs_diff.unwrap_or(0.0),
                v.seeds.len(),
                v.inputs.join("; ")
            );
            let _ = writeln!(
                s,
                "           original: {}; fixed: {}",
                v.reference, v.fixed
            );
        }
        VerifyStatus::Failed => {
            let _ = writeln!(
                s,
                "verify     FAILED: outputs differ (max |diff| {}){}",
                v.max_abs_diff
                    .map(|d| format!("{d:.3e}"))
                    .unwrap_or_else(|| "shape mismatch".into()),
                v.diverged_fix
                    .as_ref()
                    .map(|f| format!("; first diverging fix: {f}"))
                    .unwrap_or_default()
            );
        }
        other => {
            let _ = writeln!(s, "verify     {other}");
        }
    }
    for n in &v.notes {
        s.push_str(&wrap(&format!("note: {n}"), 110, "           "));
    }
    match &o.written {
        Some(w) => {
            let _ = writeln!(s, "wrote      {w}");
        }
        None => {
            let _ = writeln!(s, "nothing written");
        }
    }
    s
}
