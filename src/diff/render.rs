//! The one text rendering of a [`DiffReport`] (CLI output, TUI job log).

use std::fmt::Write as _;

use super::DiffReport;
use super::structure::{Change, FoldKind};
use crate::model::info::human;
use crate::report::{fmt_db, reduction_pct, truncate};

/// Rows shown per list before "… N more".
const SHOWN: usize = 20;

/// One line for a job's end.
pub fn summary(r: &DiffReport) -> String {
    let s = &r.structure;
    let mut line = format!(
        "{} changed, {} added, {} removed, {} folded",
        s.changed.len(),
        s.added.len(),
        s.removed.len(),
        s.folded.len()
    );
    if let Some(d) = &r.first_divergence {
        let _ = write!(
            line,
            "; first divergence {} ({})",
            d.name,
            fmt_db(d.sqnr_db)
        );
    } else if !r.tensors.is_empty() {
        let _ = write!(line, "; no tensor below {:.0} dB", r.threshold_db);
    }
    line
}

fn change_text(c: &Change) -> String {
    match c {
        Change::Op { before, after } => format!("op {before} → {after}"),
        Change::Renamed { before } => format!("renamed from {before}"),
        Change::Attribute {
            name,
            before,
            after,
        } => format!("{name} {} → {}", truncate(before, 24), truncate(after, 24)),
        Change::WeightShape {
            input,
            before,
            after,
        } => format!("input {input} {before:?} → {after:?}"),
        Change::Inputs { before, after } => format!("{before} → {after} inputs"),
        Change::Quantized => "quantized (Q/DQ)".into(),
        Change::MovedFrom { scope } => format!("moved out of {scope}"),
    }
}

fn more(s: &mut String, n: usize) {
    if n > SHOWN {
        let _ = writeln!(s, "  … {} more", n - SHOWN);
    }
}

/// "−12.3%" for a reduction, "+1.4%" for growth (a quantized model carries scales).
fn change_pct(before: u64, after: u64) -> String {
    let r = reduction_pct(before, after);
    if r >= 0.0 {
        format!("−{r:.1}%")
    } else {
        format!("+{:.1}%", -r)
    }
}

fn structure_text(r: &DiffReport, s: &mut String) {
    let st = &r.structure;
    let _ = writeln!(
        s,
        "nodes      {} → {} ({} matched, {} Q/DQ wrappers)",
        st.nodes_a, st.nodes_b, st.matched, st.qdq_nodes
    );
    let _ = writeln!(
        s,
        "params     {} → {} ({})   MACs {}",
        human(st.params_before),
        human(st.params_after),
        change_pct(st.params_before, st.params_after),
        if st.macs_before > 0 {
            format!(
                "{} → {} ({})",
                human(st.macs_before),
                human(st.macs_after),
                change_pct(st.macs_before, st.macs_after)
            )
        } else {
            "unknown (symbolic input sizes: give --input-shape)".to_string()
        },
    );
    for (what, list) in [("added", &st.added), ("removed", &st.removed)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "{what} ({})", list.len());
        for n in list.iter().take(SHOWN) {
            let scope = if n.scope.is_empty() {
                String::new()
            } else {
                format!("  in {}", n.scope)
            };
            let _ = writeln!(s, "  {:<16} {}{scope}", n.op, n.name);
        }
        more(s, list.len());
    }
    if !st.folded.is_empty() {
        let _ = writeln!(s, "folded ({})", st.folded.len());
        for f in st.folded.iter().take(SHOWN) {
            let how = match f.kind {
                FoldKind::Folded => "folded",
                FoldKind::Inlined => "inlined",
            };
            let into = f
                .into
                .as_deref()
                .map(|i| format!(" into {i}"))
                .unwrap_or_default();
            let dropped = if f.dropped > 0 {
                format!(" ({} nodes of the other branch dropped)", f.dropped)
            } else {
                String::new()
            };
            let _ = writeln!(s, "  {:<16} {} {how}{into}{dropped}", f.op, f.name);
        }
        more(s, st.folded.len());
    }
    if !st.changed.is_empty() {
        let _ = writeln!(s, "changed ({})", st.changed.len());
        for c in st.changed.iter().take(SHOWN) {
            let what: Vec<String> = c.changes.iter().map(change_text).collect();
            let _ = writeln!(s, "  {:<16} {}: {}", c.op, c.name, what.join("; "));
        }
        more(s, st.changed.len());
    }
    if !st.changed_groups.is_empty() {
        let _ = writeln!(s, "channel groups ({} changed)", st.changed_groups.len());
        for g in st.changed_groups.iter().take(SHOWN) {
            let _ = writeln!(
                s,
                "  #{:<4} {:>5} → {:<5} {}",
                g.group,
                g.before,
                g.after,
                truncate(&g.members.join(", "), 60)
            );
        }
        more(s, st.changed_groups.len());
    }
    if !st.scopes.is_empty() {
        let _ = writeln!(s, "scopes     params before → after   MACs before → after");
        for c in st.scopes.iter().take(SHOWN) {
            let _ = writeln!(
                s,
                "  {:<24} {:>8} → {:<8} {:>8} → {}",
                truncate(&c.scope, 24),
                human(c.params_before),
                human(c.params_after),
                human(c.macs_before),
                human(c.macs_after)
            );
        }
        more(s, st.scopes.len());
    }
    if r.same_structure() {
        let _ = writeln!(s, "structure  no changes");
    }
}

fn numbers_text(r: &DiffReport, s: &mut String) {
    if r.tensors.is_empty() {
        return;
    }
    let engine = r.engine.map(|e| format!(", {e}")).unwrap_or_default();
    let _ = writeln!(
        s,
        "tensors    {} compared on {} samples from {}{engine}",
        r.tensors.len(),
        r.samples,
        r.source.as_deref().unwrap_or("-")
    );
    let exact = r
        .tensors
        .iter()
        .filter(|t| t.sqnr_db.is_some_and(|v| v >= 300.0))
        .count();
    if exact == r.tensors.len() {
        let _ = writeln!(s, "  every tensor exact");
    } else {
        let _ = writeln!(s, "worst tensors ({exact} exact)");
        for t in r.tensors.iter().take(SHOWN) {
            let note = t
                .note
                .as_deref()
                .map(|n| format!("  {n}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<40} {:<14} {:>9}  cos {:<8} max|d| {}{note}",
                truncate(&t.name, 40),
                truncate(&t.op, 14),
                fmt_db(t.sqnr_db),
                t.cosine.map_or("-".into(), |c| format!("{c:.5}")),
                t.max_abs.map_or("-".into(), |m| format!("{m:.3e}")),
            );
        }
        more(s, r.tensors.len());
    }
    match &r.first_divergence {
        Some(d) => {
            let _ = writeln!(
                s,
                "first divergence below {:.0} dB: {} ({}) at {}",
                r.threshold_db,
                d.name,
                fmt_db(d.sqnr_db),
                d.node
            );
        }
        None => {
            let _ = writeln!(s, "first divergence: none below {:.0} dB", r.threshold_db);
        }
    }
    for o in &r.outputs {
        let note = o
            .note
            .as_deref()
            .map(|n| format!("  {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "output     {:<24} SQNR {}{note}",
            truncate(&o.name, 24),
            fmt_db(o.sqnr_db)
        );
    }
}

/// The whole report as text.
pub fn text(r: &DiffReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "diff       {} → {}", r.a, r.b);
    structure_text(r, &mut s);
    numbers_text(r, &mut s);
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
