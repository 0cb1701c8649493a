//! The Compare view (`pare tui A --compare B`, or `C` on a finished job): the model open in
//! the session (A) against another (B). The comparison is [`crate::diff::run`] as a job (its
//! progress and cancel live in the Jobs view like any other); this view shows the tensors
//! ranked worst first, coloured by error with a legend, and A and B side by side for the
//! tensor under the cursor: its node, the node's structural changes and the numbers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::app::{Areas, Pane};
use super::component::Component;
use super::jobs::{JobEntry, JobKind, JobOutcome};
use super::keymap::{Action, Ctx};
use super::theme::{self, fit, fit_left};
use super::ui::pane_block;
use super::views::{DetailsPane, ListPos};
use crate::diff::structure::Change;
use crate::diff::{DiffReport, DiffRequest, TensorDiff};
use crate::jobs::Progress;
use crate::model::{Analysis, InputPins};
use crate::report::fmt_db;

/// Where the job leaves its report for the view.
type Slot = Arc<Mutex<Option<DiffReport>>>;

/// The Compare view's state.
pub struct CompareView {
    /// The model compared with the session's.
    pub b: PathBuf,
    slot: Slot,
    report: Option<DiffReport>,
    pos: ListPos,
}

impl Component for CompareView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Compare, "compare view")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        vec![Down, Jump, FocusNext, ViewJobs, Help, Quit]
    }
}

/// An error colour band: red below 10 dB, yellow below the threshold, green when exact.
pub fn error_style(sqnr: Option<f64>, threshold: f64) -> Style {
    match sqnr {
        None => theme::dim(),
        Some(s) if s >= 300.0 => Style::default().fg(Color::Green),
        Some(s) if s < 10.0 => Style::default().fg(Color::Red),
        Some(s) if s < threshold => Style::default().fg(Color::Yellow),
        Some(_) => Style::default(),
    }
}

impl CompareView {
    /// A view waiting for the comparison of `a` with `b`, and the job that computes it.
    pub fn start(a: Arc<Analysis>, pins: InputPins, b: PathBuf) -> (Self, JobEntry) {
        let slot: Slot = Arc::default();
        let out = slot.clone();
        let path = b.clone();
        let cmd = format!(
            "pare diff {} {}",
            a.model
                .path
                .as_ref()
                .map_or("<demo>".into(), |p| p.display().to_string()),
            b.display()
        );
        let job = JobEntry::spawn(
            JobKind::Compare,
            format!("compare with {}", b.display()),
            cmd,
            move |p| {
                p.phase("loading B", None);
                let mb = Analysis::open(&path, &pins)?;
                let r = crate::diff::run(&a, &mb, &DiffRequest::default(), p)?;
                let summary = vec![r.summary()];
                if let Ok(mut s) = out.lock() {
                    *s = Some(r);
                }
                Ok(JobOutcome {
                    summary,
                    ..Default::default()
                })
            },
        );
        let view = CompareView {
            b,
            slot,
            report: None,
            pos: ListPos::default(),
        };
        (view, job)
    }

    /// A view over a finished report (tests, snapshots).
    pub fn with_report(b: PathBuf, r: DiffReport) -> Self {
        CompareView {
            b,
            slot: Arc::default(),
            report: Some(r),
            pos: ListPos::default(),
        }
    }

    /// Takes the job's report when it is there. True when it arrived now.
    pub fn poll(&mut self) -> bool {
        if self.report.is_some() {
            return false;
        }
        let got = self.slot.lock().ok().and_then(|mut s| s.take());
        let arrived = got.is_some();
        self.report = got;
        arrived
    }

    /// Worst SQNR of each compared A node, by the session's node index (for the Nodes view).
    pub fn node_errors(
        &self,
        s: &crate::tui::session::Session,
    ) -> Option<super::views::NodeErrors> {
        let r = self.report.as_ref()?;
        let mut sqnr = std::collections::HashMap::new();
        for t in &r.tensors {
            if let (Some(db), Some(&i)) = (t.sqnr_db, s.by_name.get(&t.node)) {
                let e: &mut f64 = sqnr.entry(i).or_insert(db);
                *e = e.min(db);
            }
        }
        Some(super::views::NodeErrors {
            sqnr,
            threshold: r.threshold_db,
        })
    }

    pub fn report(&self) -> Option<&DiffReport> {
        self.report.as_ref()
    }

    pub fn len(&self) -> usize {
        self.report.as_ref().map_or(0, |r| r.tensors.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.pos
    }

    /// The tensor under the cursor.
    pub fn current(&self) -> Option<&TensorDiff> {
        self.report.as_ref()?.tensors.get(self.pos.cursor)
    }

    /// Draws the ranked tensors and A | B for the one under the cursor.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        focus: Pane,
        details: &mut DetailsPane,
        areas: &mut Areas,
        page: &mut usize,
    ) {
        let [list_r, det_r] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let focused = focus == Pane::List;
        let block = pane_block(format!(" Compare · {} ", self.b.display()), focused);
        let inner = block.inner(list_r);
        f.render_widget(block, list_r);
        let w = inner.width as usize;
        let Some(r) = &self.report else {
            let lines = vec![Line::from(Span::styled(
                "comparing… (progress and cancel: 4 Jobs view)",
                theme::dim(),
            ))];
            f.render_widget(Paragraph::new(lines), inner);
            return;
        };
        let mut lines = vec![
            Line::from(Span::styled(fit(&r.summary(), w), theme::bold())),
            legend(r.threshold_db),
        ];
        let h = (inner.height as usize).saturating_sub(lines.len());
        *page = h;
        self.pos.layout(r.tensors.len(), h, list_r, areas);
        // Rows start below the summary and legend lines: clicks map from there.
        areas.list = Rect {
            y: list_r.y + 2,
            height: list_r.height.saturating_sub(2),
            ..list_r
        };
        if r.tensors.is_empty() {
            lines.push(Line::from(Span::styled(
                "no tensors compared",
                theme::dim(),
            )));
        }
        for (k, t) in r.tensors.iter().enumerate().skip(self.pos.offset).take(h) {
            let mut line = row(t, r.threshold_db, w);
            if k == self.pos.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
        let lines = match r.tensors.get(self.pos.cursor) {
            Some(t) => side_by_side(r, t, det_r.width.saturating_sub(2) as usize),
            None => structure_lines(r),
        };
        details.draw(
            f,
            det_r,
            " A | B ".into(),
            lines,
            focus == Pane::Details,
            areas,
        );
    }
}

fn legend(threshold: f64) -> Line<'static> {
    Line::from(vec![
        Span::styled("■ exact ", error_style(Some(300.0), threshold)),
        Span::styled(
            format!("■ ≥{threshold:.0} dB "),
            error_style(Some(threshold), threshold),
        ),
        Span::styled(
            format!("■ <{threshold:.0} dB "),
            error_style(Some(threshold - 1.0), threshold),
        ),
        Span::styled("■ <10 dB ", error_style(Some(0.0), threshold)),
        Span::styled("■ n/a", theme::dim()),
    ])
}

fn row(t: &TensorDiff, threshold: f64, w: usize) -> Line<'static> {
    let db = format!("{:>9} ", fmt_db(t.sqnr_db));
    let op = format!("{:<12} ", fit(&t.op, 12));
    let rest = w.saturating_sub(db.len() + op.chars().count());
    Line::from(vec![
        Span::styled(db, error_style(t.sqnr_db, threshold)),
        Span::styled(op, theme::op()),
        Span::raw(fit_left(&t.name, rest)),
    ])
}

/// A's and B's view of the tensor's node: names, ops, the node's structural changes, then the
/// numbers.
fn side_by_side(r: &DiffReport, t: &TensorDiff, w: usize) -> Vec<Line<'static>> {
    let col = w.saturating_sub(13) / 2;
    let pair = |label: &str, a: &str, b: &str| {
        let style = if a == b {
            Style::default()
        } else {
            theme::accent()
        };
        Line::from(vec![
            Span::styled(format!("{:<11} ", fit(label, 11)), theme::dim()),
            Span::styled(format!("{:<col$} ", fit_left(a, col)), style),
            Span::styled(fit_left(b, col), style),
        ])
    };
    let mut out = vec![
        pair("", "A", "B"),
        pair("tensor", &t.name, t.b_name.as_deref().unwrap_or(&t.name)),
        pair("node", &t.node, &t.node),
    ];
    let change = r.structure.changed.iter().find(|c| c.name == t.node);
    let mut op_b = t.op.clone();
    let mut rows = Vec::new();
    for c in change.map(|c| c.changes.as_slice()).unwrap_or_default() {
        match c {
            Change::Op { after, .. } => op_b = after.clone(),
            Change::Attribute {
                name,
                before,
                after,
            } => rows.push((name.clone(), before.clone(), after.clone())),
            Change::WeightShape {
                input,
                before,
                after,
            } => rows.push((
                format!("input {input}"),
                format!("{before:?}"),
                format!("{after:?}"),
            )),
            Change::Quantized => {
                rows.push(("inputs".into(), "float".into(), "through Q/DQ".into()))
            }
            Change::Renamed { before } => {
                rows.push(("name".into(), before.clone(), t.node.clone()))
            }
            Change::Inputs { before, after } => {
                rows.push(("inputs".into(), before.to_string(), after.to_string()))
            }
            Change::MovedFrom { scope } => {
                rows.push(("scope".into(), scope.clone(), "(main graph)".into()))
            }
        }
    }
    out.push(pair("op", &t.op, &op_b));
    for (l, a, b) in rows {
        out.push(pair(&l, &a, &b));
    }
    out.push(Line::from(""));
    out.push(Line::from(vec![
        Span::styled("SQNR       ", theme::dim()),
        Span::styled(fmt_db(t.sqnr_db), error_style(t.sqnr_db, r.threshold_db)),
    ]));
    out.push(Line::from(format!(
        "cosine     {}",
        t.cosine.map_or("-".into(), |c| format!("{c:.6}"))
    )));
    out.push(Line::from(format!(
        "max |A−B|  {}",
        t.max_abs.map_or("-".into(), |m| format!("{m:.4e}"))
    )));
    if let Some(n) = &t.note {
        out.push(Line::from(Span::styled(n.clone(), theme::dim())));
    }
    if r.first_divergence
        .as_ref()
        .is_some_and(|d| d.name == t.name)
    {
        out.push(Line::from(Span::styled(
            format!(
                "first tensor below {:.0} dB along the execution order",
                r.threshold_db
            ),
            theme::lock(),
        )));
    }
    out.push(Line::from(""));
    out.extend(structure_lines(r));
    out
}

fn structure_lines(r: &DiffReport) -> Vec<Line<'static>> {
    let s = &r.structure;
    let mut out = vec![Line::from(Span::styled("structure", theme::section()))];
    out.push(Line::from(format!(
        "nodes {} → {}  ({} changed, {} added, {} removed, {} folded)",
        s.nodes_a,
        s.nodes_b,
        s.changed.len(),
        s.added.len(),
        s.removed.len(),
        s.folded.len()
    )));
    for g in s.changed_groups.iter().take(8) {
        out.push(Line::from(format!(
            "group #{} {} → {}  {}",
            g.group,
            g.before,
            g.after,
            g.members.first().cloned().unwrap_or_default()
        )));
    }
    for o in &r.outputs {
        out.push(Line::from(vec![
            Span::raw(format!("output {} ", o.name)),
            Span::styled(fmt_db(o.sqnr_db), error_style(o.sqnr_db, r.threshold_db)),
        ]));
    }
    out
}
