//! The Groups view: every channel group with its status, lock reason and importance.

use std::collections::HashMap;

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
    pos: ListPos,
}

impl Component for GroupsView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Groups, "groups view")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        vec![Down, Jump, Prune, Search, Help, Quit]
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
    pub fn cursor(&self) -> usize {
        self.pos.cursor
    }

    pub fn set_cursor(&mut self, g: usize) {
        self.pos.cursor = g;
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.pos
    }

    /// The highlighted group: the one under the cursor.
    pub fn highlight(&self, s: &Session) -> Option<usize> {
        (self.pos.cursor < s.channels.groups.len()).then_some(self.pos.cursor)
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
        let (prunable, by_tags) = counts(s);
        let mut title = format!(" Groups {n} · {prunable} prunable ");
        if by_tags > 0 {
            title.push_str(&format!("· {by_tags} locked by tags "));
        }
        let block = pane_block(title, focused);
        let inner = block.inner(list_r);
        f.render_widget(block, list_r);
        let h = inner.height.saturating_sub(1) as usize;
        *cx.page = h;
        self.pos.layout(n, h, list_r, cx.areas);
        let w = inner.width as usize;
        let spark_w = if w >= 60 { 12 } else { 0 };
        let reason_w = w.saturating_sub(5 + 6 + 9 + spark_w + 1);
        let mut lines = vec![Line::from(Span::styled(
            format!(
                "{:>4} {:>5} {:<8} {:<reason_w$}{}",
                "id",
                "chans",
                "status",
                "why / producers",
                if spark_w > 0 { " importance" } else { "" }
            ),
            theme::dim().add_modifier(Modifier::UNDERLINED),
        ))];
        for g in (0..n).skip(self.pos.offset).take(h) {
            let mut line = Line::from(row(s, g, reason_w, spark_w, importance));
            if g == self.pos.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
        let g = self.pos.cursor;
        let lines = details::group_details(s, g, importance.get(&g));
        let focused = cx.focus == Pane::Details;
        details_pane.draw(f, det_r, format!(" Group #{g} "), lines, focused, cx.areas);
    }
}

/// One group's row: id, channels, status, reason and importance sparkline.
fn row(
    s: &Session,
    g: usize,
    reason_w: usize,
    spark_w: usize,
    importance: &HashMap<usize, Vec<f64>>,
) -> Vec<Span<'static>> {
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
