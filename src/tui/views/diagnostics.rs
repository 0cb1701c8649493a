//! The Diagnostics view: lint findings for the chosen target plus shape-inference and
//! channel-analysis notes, with the explanation and fix of the one under the cursor.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::Pane;
use super::super::component::Component;
use super::super::details;
use super::super::engines;
use super::super::keymap::{Action, Ctx};
use super::super::session::{Finding, Session};
use super::super::theme::{self, fit, fit_left};
use super::super::ui::pane_block;
use super::{Cx, DetailsPane, DrawCx, ListPos};

#[derive(Debug, Default)]
pub struct DiagnosticsView {
    pos: ListPos,
}

impl Component for DiagnosticsView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Diagnostics, "diagnostics view")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        vec![Down, Jump, ApplyFix, CycleTarget, RerunLint, Help, Quit]
    }
}

impl DiagnosticsView {
    pub fn cursor(&self) -> usize {
        self.pos.cursor
    }

    pub fn set_cursor(&mut self, k: usize) {
        self.pos.cursor = k;
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.pos
    }

    /// The finding under the cursor.
    pub fn current<'s>(&self, s: &'s Session) -> Option<&'s Finding> {
        s.diagnostics.get(self.pos.cursor)
    }

    /// Handles the lint actions (next target, lint again); false for any other action.
    pub fn act(&mut self, a: Action, cx: Cx) -> bool {
        let s = cx.session;
        match a {
            Action::CycleTarget => {
                s.lint_target = engines::next_target(s.lint_target);
            }
            Action::RerunLint => {}
            _ => return false,
        }
        s.refresh_diagnostics();
        self.pos.clamp(s.diagnostics.len());
        *cx.message = Some(s.lint_status.clone());
        true
    }

    /// Draws the findings and the details of the one under the cursor.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        details_pane: &mut DetailsPane,
        cx: &mut DrawCx,
    ) {
        let [list_r, det_r] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let s = cx.session;
        let focused = cx.focus == Pane::List;
        let block = pane_block(format!(" Diagnostics · target {} ", s.lint_target), focused);
        let inner = block.inner(list_r);
        f.render_widget(block, list_r);
        let h = inner.height.saturating_sub(1) as usize;
        *cx.page = h;
        self.pos.layout(s.diagnostics.len(), h, list_r, cx.areas);
        let w = inner.width as usize;
        let mut lines = vec![Line::from(Span::styled(
            fit(&s.lint_status, w),
            theme::dim(),
        ))];
        if s.diagnostics.is_empty() {
            lines.push(Line::from(Span::styled("no findings", theme::dim())));
        }
        for (k, d) in s
            .diagnostics
            .iter()
            .enumerate()
            .skip(self.pos.offset)
            .take(h)
        {
            let mut line = row(s, d, w);
            if k == self.pos.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
        let lines = match s.diagnostics.get(self.pos.cursor) {
            Some(d) => details::diagnostic_lines(d, s),
            None => vec![Line::from(Span::styled(
                "Lint findings, shape-inference notes and channel-analysis notes appear here.",
                theme::dim(),
            ))],
        };
        let focused = cx.focus == Pane::Details;
        details_pane.draw(f, det_r, " Finding ".into(), lines, focused, cx.areas);
    }
}

/// One finding's row: severity, rule, node and message.
fn row(s: &Session, d: &Finding, w: usize) -> Line<'static> {
    let node = d
        .node
        .map(|n| s.nodes[n].name.clone())
        .unwrap_or_else(|| "(model)".into());
    let sev = Span::styled(
        format!("{:<5} ", details::severity_label(d.severity)),
        details::severity_style(d.severity),
    );
    let rule = Span::styled(format!("{:<8} ", fit(&d.rule, 8)), theme::bold());
    let rest = w.saturating_sub(15);
    let text = fit(
        &format!("{}  {}", fit_left(&node, rest / 2), d.text()),
        rest,
    );
    Line::from(vec![sev, rule, Span::raw(text)])
}
