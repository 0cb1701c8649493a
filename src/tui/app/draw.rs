//! Composing the screen: the tab bar, the current view (each view draws itself), the command
//! bar built from the focused component's commands, and the search box and overlay on top.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::super::details::{self, NodeCx};
use super::super::jobs::fmt_duration;
use super::super::theme::{self, fit, fit_left};
use super::super::tree::Item;
use super::super::ui::{centered, pane_block};
use super::super::views::jobs::Clock;
use super::super::views::{DrawCx, NodesView};
use super::{App, Pane, View};

impl App {
    /// Draws one frame.
    pub fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        if area.width < 20 || area.height < 6 {
            f.render_widget(Paragraph::new("pare: window too small"), area);
            return;
        }
        let [top, body, bar] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.draw_title(f, top);
        self.areas.graph_boxes.clear();
        self.areas.graph = Rect::default();
        self.areas.details = Rect::default();
        if self.session.is_none() {
            self.draw_loading(f, body);
        } else {
            self.draw_view(f, body);
        }
        self.draw_bar(f, bar);
        if let Some(s) = &self.session {
            self.search.draw(s, f, body);
        }
        if let Some(ov) = &self.overlay {
            let help = self.help_sections();
            ov.draw(f, body, self.session.as_ref(), &self.keys.map, &help);
        }
    }

    fn draw_view(&mut self, f: &mut Frame, body: Rect) {
        if self.view == View::Nodes {
            self.draw_nodes(f, body);
            return;
        }
        if self.view == View::Compare
            && let Some(c) = &mut self.compare
        {
            c.draw(
                f,
                body,
                self.focus,
                &mut self.details,
                &mut self.areas,
                &mut self.page,
            );
            return;
        }
        if self.view == View::Jobs {
            let clock = Clock(self.frozen_clock);
            self.jobs
                .draw(f, body, self.focus, clock, &mut self.areas, &mut self.page);
            return;
        }
        let highlight = self.highlight_group();
        let Some(s) = &self.session else { return };
        let errors = self.compare.as_ref().and_then(|c| c.node_errors(s));
        let mut cx = DrawCx {
            session: s,
            focus: self.focus,
            highlight,
            areas: &mut self.areas,
            page: &mut self.page,
            node_errors: errors.as_ref(),
        };
        match self.view {
            View::Groups => self.groups.draw(
                f,
                body,
                &self.background.importance,
                &mut self.details,
                &mut cx,
            ),
            _ => self.diags.draw(f, body, &mut self.details, &mut cx),
        }
    }

    fn draw_nodes(&mut self, f: &mut Frame, area: Rect) {
        let (list_r, graph_r, det_r) = if area.width >= 150 {
            let [a, b, c] = Layout::horizontal([
                Constraint::Percentage(38),
                Constraint::Percentage(32),
                Constraint::Percentage(30),
            ])
            .areas(area);
            (a, b, c)
        } else {
            let [a, right] =
                Layout::horizontal([Constraint::Percentage(52), Constraint::Percentage(48)])
                    .areas(area);
            let gh = (right.height * 45 / 100).max(5);
            let [b, c] =
                Layout::vertical([Constraint::Length(gh), Constraint::Min(3)]).areas(right);
            (a, b, c)
        };
        // The highlight is asked again after the tree, which may have clamped its cursor.
        for graph in [false, true] {
            let highlight = self.highlight_group();
            let Some(s) = &self.session else { break };
            let errors = self.compare.as_ref().and_then(|c| c.node_errors(s));
            let mut cx = DrawCx {
                session: s,
                focus: self.focus,
                highlight,
                areas: &mut self.areas,
                page: &mut self.page,
                node_errors: errors.as_ref(),
            };
            if graph {
                self.nodes.draw_graph(f, graph_r, &mut cx);
            } else {
                self.nodes.draw_tree(f, list_r, self.search.hits(), &mut cx);
            }
        }
        let lines = self.nodes_details();
        let focused = self.focus == Pane::Details;
        self.details.draw(
            f,
            det_r,
            " Details ".into(),
            lines,
            focused,
            &mut self.areas,
        );
    }

    /// Details of whatever the Nodes view has under its cursor (asking the worker for the
    /// statistics of a node's weights).
    fn nodes_details(&mut self) -> Vec<Line<'static>> {
        let Some(item) = self.current_item() else {
            return vec![Line::from("empty model")];
        };
        let Some(s) = &self.session else {
            return Vec::new();
        };
        match item {
            Item::Scope(k) => details::scope_details(s, k),
            Item::Node(i) => {
                for w in details::node_weights(s, i) {
                    self.background.request_stats(&w);
                }
                let cx = NodeCx {
                    stats: &self.background.stats,
                    groups: NodesView::group_cycle(s, i),
                    highlight: self.highlight_group(),
                };
                details::node_details(s, i, &cx)
            }
        }
    }

    fn draw_title(&mut self, f: &mut Frame, area: Rect) {
        let mut spans = vec![Span::styled(
            " pare ",
            Style::default()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        )];
        let mut x = area.x + 6;
        let label = match &self.session {
            Some(s) => format!(" {} ", fit(&s.label, 28)),
            None => " loading ".to_string(),
        };
        x += label.chars().count() as u16;
        spans.push(Span::styled(label, theme::bold()));
        x = self.draw_tabs(&mut spans, x, area.y);
        if let Some(s) = &self.session {
            let jobs = self.jobs.jobs();
            let mut right = String::new();
            if let Some(j) = jobs.iter().rev().find(|j| j.is_running()) {
                match j.ratio() {
                    Some(r) => right.push_str(&format!(" {} {:.0}% ", j.kind.label(), r * 100.0)),
                    None => right.push_str(&format!(" {} {} ", j.kind.label(), j.phase)),
                }
            }
            let ntags = s.tags.skip.len() + s.tags.lock.len();
            if ntags > 0 || s.tags_dirty {
                right.push_str(&format!(
                    " tags {ntags}{} ",
                    if s.tags_dirty { "*" } else { "" }
                ));
            }
            let used: u16 = x - area.x;
            let pad = area
                .width
                .saturating_sub(used + right.chars().count() as u16);
            spans.push(Span::raw(" ".repeat(pad as usize)));
            spans.push(Span::styled(
                right,
                if s.tags_dirty {
                    theme::skip()
                } else {
                    theme::dim()
                },
            ));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    /// The view tabs with their badges, from column `x`; returns the column after them.
    fn draw_tabs(&mut self, spans: &mut Vec<Span<'static>>, mut x: u16, y: u16) -> u16 {
        self.areas.tabs.clear();
        let n_diag = self
            .session
            .as_ref()
            .map(|s| s.diagnostics.len())
            .unwrap_or(0);
        let jobs = self.jobs.jobs();
        let running = jobs.iter().filter(|j| j.is_running()).count();
        for (k, v) in self.tab_views().iter().enumerate() {
            let badge = match v {
                View::Diagnostics if n_diag > 0 => format!(" {n_diag}"),
                View::Jobs if running > 0 => format!(" ⟳{running}"),
                View::Jobs if !jobs.is_empty() => format!(" {}", jobs.len()),
                _ => String::new(),
            };
            let text = format!(" {} {}{} ", k + 1, v.title(), badge);
            let w = text.chars().count() as u16;
            let style = if *v == self.view {
                Style::default()
                    .fg(Color::Black)
                    .bg(Color::White)
                    .add_modifier(Modifier::BOLD)
            } else {
                theme::dim()
            };
            self.areas.tabs.push((Rect::new(x, y, w, 1), *v));
            spans.push(Span::styled(text, style));
            x += w;
        }
        x
    }

    fn draw_loading(&self, f: &mut Frame, area: Rect) {
        let (title, lines) = match (&self.loading, &self.load_error) {
            (_, Some(e)) => (
                " cannot open ".to_string(),
                vec![
                    Line::from(Span::styled(e.clone(), theme::lock())),
                    Line::from(""),
                    Line::from("q quits"),
                ],
            ),
            (Some(l), None) => {
                let t = self.elapsed(l.started);
                let spin = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
                    [(t.as_millis() / 100) as usize % 10];
                (
                    " opening ".to_string(),
                    vec![
                        Line::from(Span::styled(fit_left(&l.what, 60), theme::bold())),
                        Line::from(""),
                        Line::from(format!("{spin} {}  {}", l.phase, fmt_duration(t))),
                        Line::from(""),
                        Line::from(Span::styled("q or Esc cancels", theme::dim())),
                    ],
                )
            }
            _ => (" pare ".to_string(), vec![Line::from("nothing loaded")]),
        };
        let r = centered(area, 66, 9);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines)
                .block(pane_block(title, true))
                .alignment(Alignment::Center),
            r,
        );
    }

    /// The bottom line: the search prompt, a message, or the focused component's commands
    /// with their keys from the keymap.
    fn draw_bar(&self, f: &mut Frame, area: Rect) {
        if let Some(line) = self.search.bar() {
            f.render_widget(Paragraph::new(line), area);
            return;
        }
        if let Some(m) = &self.message {
            f.render_widget(
                Paragraph::new(Line::from(Span::styled(
                    fit(m, area.width as usize),
                    Style::default().fg(Color::Yellow),
                ))),
                area,
            );
            return;
        }
        if self.session.is_none() {
            f.render_widget(Paragraph::new(Span::styled(" q quit", theme::dim())), area);
            return;
        }
        let ctxs = self.contexts();
        let mut spans = Vec::new();
        let mut used = 0usize;
        for a in self.commands() {
            let Some(k) = self.keys.map.key_for(&ctxs, a) else {
                continue;
            };
            let item_w = k.chars().count() + a.label().chars().count() + 3;
            if used + item_w > area.width as usize {
                break;
            }
            used += item_w;
            spans.push(Span::styled(format!(" {k} "), theme::key()));
            spans.push(Span::raw(format!("{} ", a.label())));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }
}
