//! The Groups view: every channel group with its status, lock reason and importance.

use std::collections::{HashMap, HashSet};

use crate::prune::sensitivity::{GroupSensitivity, SensitivityReport};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::Pane;
use super::super::component::Component;
use super::super::details;
use super::super::keymap::{Action, Ctx};
use super::super::session::Session;
use super::super::theme::{self, fit};
use super::super::ui::pane_block;
use super::{DetailsPane, DrawCx, ListPos};

#[derive(Debug, Default)]
pub struct GroupsView {
    /// The cursor is a row; rows map to groups through `rows`.
    pos: ListPos,
    /// The last sensitivity measurement (the `S` job), most sensitive group first.
    sensitivity: Option<SensitivityReport>,
    /// Group ids in row order when sorted by sensitivity (most sensitive first); `None`: by
    /// id.
    rows: Option<Vec<usize>>,
}

impl Component for GroupsView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Groups, "groups view")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        vec![
            Down,
            Jump,
            Sensitivity,
            SortGroups,
            Prune,
            Search,
            Help,
            Quit,
        ]
    }
}

/// How many groups are prunable, and how many tags lock.
fn counts(s: &Session) -> (usize, usize) {
    let n = s.channels.groups.len();
    let prunable = (0..n)
        .filter(|&g| s.group_status[g].locks.is_empty() && s.channels.groups[g].channels > 1)
        .count();
    let by_tags = s
        .group_status
        .iter()
        .filter(|g| !g.tag_locks.is_empty())
        .count();
    (prunable, by_tags)
}

impl GroupsView {
    /// The group under the cursor.
    pub fn cursor(&self) -> usize {
        self.group_at(self.pos.cursor)
    }

    /// Puts the cursor on group `g`'s row.
    pub fn set_cursor(&mut self, g: usize) {
        self.pos.cursor = match &self.rows {
            Some(rows) => rows.iter().position(|&x| x == g).unwrap_or(0),
            None => g,
        };
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.pos
    }

    /// The highlighted group: the one under the cursor.
    pub fn highlight(&self, s: &Session) -> Option<usize> {
        let g = self.cursor();
        (g < s.channels.groups.len()).then_some(g)
    }

    /// Takes a finished sensitivity measurement of a model with `n` groups (the column
    /// appears; the rows re-sort when sorted; the cursor stays on its group).
    pub fn set_sensitivity(&mut self, r: Option<SensitivityReport>, n: usize) {
        let g = self.cursor();
        self.sensitivity = r;
        if self.rows.is_some() {
            self.rows = self.sorted_rows(n);
        }
        self.set_cursor(g);
    }

    pub fn sensitivity(&self) -> Option<&SensitivityReport> {
        self.sensitivity.as_ref()
    }

    /// Toggles the order between group id and sensitivity (most sensitive first); false when
    /// nothing is measured yet.
    pub fn toggle_sort(&mut self, n: usize) -> bool {
        if self.sensitivity.is_none() {
            return false;
        }
        let g = self.cursor();
        self.rows = match self.rows {
            Some(_) => None,
            None => self.sorted_rows(n),
        };
        self.set_cursor(g);
        true
    }

    pub fn is_sorted(&self) -> bool {
        self.rows.is_some()
    }

    /// Group ids in row order when sorted: the measured groups as the report ranks them, then
    /// the unmeasured (locked, tagged) ones by id.
    fn sorted_rows(&self, n: usize) -> Option<Vec<usize>> {
        let r = self.sensitivity.as_ref()?;
        let mut rows: Vec<usize> = r
            .groups
            .iter()
            .map(|g| g.group)
            .filter(|&g| g < n)
            .collect();
        let measured: HashSet<usize> = rows.iter().copied().collect();
        rows.extend((0..n).filter(|g| !measured.contains(g)));
        Some(rows)
    }

    /// The group shown on `row`.
    fn group_at(&self, row: usize) -> usize {
        self.rows
            .as_ref()
            .and_then(|r| r.get(row).copied())
            .unwrap_or(row)
    }

    /// Draws the group list and the details of the group under the cursor.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        importance: &HashMap<usize, Vec<f64>>,
        details_pane: &mut DetailsPane,
        cx: &mut DrawCx,
    ) {
        let [list_r, det_r] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let s = cx.session;
        let focused = cx.focus == Pane::List;
        let n = s.channels.groups.len();
        let block = pane_block(self.title(s), focused);
        let inner = block.inner(list_r);
        f.render_widget(block, list_r);
        let h = inner.height.saturating_sub(1) as usize;
        *cx.page = h;
        self.pos.layout(n, h, list_r, cx.areas);
        let w = inner.width as usize;
        let cols = Columns {
            spark: if w >= 60 { 12 } else { 0 },
            sens: if self.sensitivity.is_some() { 9 } else { 0 },
            reason: 0,
        };
        let cols = Columns {
            reason: w.saturating_sub(5 + 6 + 9 + cols.spark + cols.sens + 1),
            ..cols
        };
        let mut lines = vec![header(&cols)];
        let measured = self.measured();
        for r in (0..n).skip(self.pos.offset).take(h) {
            let g = self.group_at(r);
            let mut spans = row(s, g, &cols, importance);
            if cols.sens > 0 {
                spans.insert(3, sensitivity_cell(measured.get(&g).copied()));
            }
            let mut line = Line::from(spans);
            if r == self.pos.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
        let g = self.cursor();
        let mut lines = details::group_details(s, g, importance.get(&g));
        if let Some(m) = measured.get(&g) {
            lines.extend(sensitivity_details(m, self.sensitivity.as_ref()));
        }
        let focused = cx.focus == Pane::Details;
        details_pane.draw(f, det_r, format!(" Group #{g} "), lines, focused, cx.areas);
    }

    fn title(&self, s: &Session) -> String {
        let n = s.channels.groups.len();
        let (prunable, by_tags) = counts(s);
        let mut title = format!(" Groups {n} · {prunable} prunable ");
        if by_tags > 0 {
            title.push_str(&format!("· {by_tags} locked by tags "));
        }
        if self.is_sorted() {
            title.push_str("· most sensitive first ");
        }
        title
    }

    /// Measured groups by id.
    fn measured(&self) -> HashMap<usize, &GroupSensitivity> {
        self.sensitivity
            .iter()
            .flat_map(|r| r.groups.iter().map(|g| (g.group, g)))
            .collect()
    }
}

/// Column widths of the group list (0: the column is hidden).
struct Columns {
    reason: usize,
    sens: usize,
    spark: usize,
}

fn header(c: &Columns) -> Line<'static> {
    let reason_w = c.reason;
    Line::from(Span::styled(
        format!(
            "{:>4} {:>5} {:<8} {}{:<reason_w$}{}",
            "id",
            "chans",
            "status",
            if c.sens > 0 { " out SQNR " } else { "" },
            "why / producers",
            if c.spark > 0 { " importance" } else { "" }
        ),
        theme::dim().add_modifier(Modifier::UNDERLINED),
    ))
}

/// The output SQNR with only this group pruned (red below 20 dB, the fragile ones).
fn sensitivity_cell(m: Option<&GroupSensitivity>) -> Span<'static> {
    match m {
        Some(g) => {
            let text = format!("{:>8} ", crate::report::fmt_db(g.sqnr_db));
            let fragile = g.sqnr_db.is_some_and(|db| db < 20.0);
            Span::styled(text, if fragile { theme::lock() } else { theme::ok() })
        }
        None => Span::styled(format!("{:>8} ", "·"), theme::dim()),
    }
}

/// The group's sensitivity in the details pane.
fn sensitivity_details(g: &GroupSensitivity, r: Option<&SensitivityReport>) -> Vec<Line<'static>> {
    let Some(r) = r else { return Vec::new() };
    let macs_pct = 100.0 * g.macs_saved as f64 / r.macs.max(1) as f64;
    let mut out = vec![
        Line::from(Span::styled("sensitivity", theme::section())),
        Line::from(format!(
            "  pruned alone at ratio {}: {} → {} channels, MACs −{macs_pct:.2} %",
            r.ratio, g.channels, g.kept
        )),
        Line::from(format!(
            "  output SQNR {} ({} samples from {}, {})",
            crate::report::fmt_db(g.sqnr_db),
            r.samples,
            r.source,
            r.engine
        )),
    ];
    if let Some(a) = g.agreement {
        out.push(Line::from(format!("  task agreement {a:.3}")));
    }
    out
}

/// One group's row: id, channels, status, reason and importance sparkline.
fn row(
    s: &Session,
    g: usize,
    cols: &Columns,
    importance: &HashMap<usize, Vec<f64>>,
) -> Vec<Span<'static>> {
    let (reason_w, spark_w) = (cols.reason, cols.spark);
    let grp = &s.channels.groups[g];
    let st = &s.group_status[g];
    let ok = st.locks.is_empty() && grp.channels > 1;
    let reason = if let Some(l) = st.locks.first() {
        l.clone()
    } else if grp.channels <= 1 {
        "a single channel".into()
    } else {
        grp.producers.first().cloned().unwrap_or_default()
    };
    let status = if ok {
        Span::styled(format!("{:<8} ", "prunable"), theme::ok())
    } else if !st.tag_locks.is_empty() {
        Span::styled(format!("{:<8} ", "tagged"), theme::skip())
    } else {
        Span::styled(format!("{:<8} ", "locked"), theme::lock())
    };
    let mut spans = vec![
        Span::styled(format!("{:>4} ", g), theme::group()),
        Span::raw(format!("{:>5} ", grp.channels)),
        status,
        Span::styled(
            format!("{:<reason_w$}", fit(&reason, reason_w)),
            if ok { Style::default() } else { theme::dim() },
        ),
    ];
    if spark_w > 0 {
        let sp = match importance.get(&g) {
            Some(v) => theme::sparkline(v, spark_w),
            None => "…".into(),
        };
        spans.push(Span::styled(format!(" {sp}"), theme::group()));
    }
    spans
}
