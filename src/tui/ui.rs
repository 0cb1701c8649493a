//! Drawing: the whole screen from [`App`] state. Only what is visible is formatted, so frame
//! time does not depend on model size.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Gauge, Paragraph, Wrap};

use crate::model::info::human;
use crate::tags::Tag;

use super::app::{App, Overlay, Pane, View};
use super::details;
use super::dialog::{self, criterion_name};
use super::engines;
use super::graph::{Cell, GKind};
use super::jobs::{JobStatus, fmt_duration};
use super::keymap::{Action, Ctx};
use super::theme::{self, fit, fit_left};
use super::tree::{Item, ScopeKind};

/// Draws one frame.
pub fn draw(app: &mut App, f: &mut Frame) {
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
    draw_title(app, f, top);
    app.areas.graph_boxes.clear();
    app.areas.graph = Rect::default();
    app.areas.details = Rect::default();
    if app.session.is_none() {
        draw_loading(app, f, body);
    } else {
        match app.view {
            View::Nodes => draw_nodes(app, f, body),
            View::Groups => draw_groups(app, f, body),
            View::Diagnostics => draw_diagnostics(app, f, body),
            View::Jobs => draw_jobs(app, f, body),
        }
    }
    draw_bar(app, f, bar);
    if app.search.is_some() {
        draw_search(app, f, body);
    }
    if app.overlay.is_some() {
        draw_overlay(app, f, body);
    }
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme::border(focused))
        .title(Span::styled(
            title,
            if focused {
                theme::accent().add_modifier(Modifier::BOLD)
            } else {
                theme::dim()
            },
        ))
}

fn draw_title(app: &mut App, f: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled(
        " pare ",
        Style::default()
            .fg(Color::Black)
            .bg(Color::Cyan)
            .add_modifier(Modifier::BOLD),
    )];
    let mut x = area.x + 6;
    let label = match &app.session {
        Some(s) => format!(" {} ", fit(&s.label, 28)),
        None => " loading ".to_string(),
    };
    x += label.chars().count() as u16;
    spans.push(Span::styled(label, theme::bold()));
    app.areas.tabs.clear();
    let n_diag = app
        .session
        .as_ref()
        .map(|s| s.diagnostics.len())
        .unwrap_or(0);
    let running = app.jobs.iter().filter(|j| j.is_running()).count();
    for (k, v) in View::ALL.iter().enumerate() {
        let badge = match v {
            View::Diagnostics if n_diag > 0 => format!(" {n_diag}"),
            View::Jobs if running > 0 => format!(" ⟳{running}"),
            View::Jobs if !app.jobs.is_empty() => format!(" {}", app.jobs.len()),
            _ => String::new(),
        };
        let text = format!(" {} {}{} ", k + 1, v.title(), badge);
        let w = text.chars().count() as u16;
        let style = if *v == app.view {
            Style::default()
                .fg(Color::Black)
                .bg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            theme::dim()
        };
        app.areas.tabs.push((Rect::new(x, area.y, w, 1), *v));
        spans.push(Span::styled(text, style));
        x += w;
    }
    if let Some(s) = &app.session {
        let mut right = String::new();
        if let Some(j) = app.jobs.iter().rev().find(|j| j.is_running()) {
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

fn draw_loading(app: &App, f: &mut Frame, area: Rect) {
    let (title, lines) = match (&app.loading, &app.load_error) {
        (_, Some(e)) => (
            " cannot open ".to_string(),
            vec![
                Line::from(Span::styled(e.clone(), theme::lock())),
                Line::from(""),
                Line::from("q quits"),
            ],
        ),
        (Some(l), None) => {
            let t = app.elapsed(l.started);
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

// ------------------------------------------------------------------ Nodes

fn draw_nodes(app: &mut App, f: &mut Frame, area: Rect) {
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
        let [b, c] = Layout::vertical([Constraint::Length(gh), Constraint::Min(3)]).areas(right);
        (a, b, c)
    };
    draw_tree(app, f, list_r);
    draw_graph(app, f, graph_r);
    let lines = details::nodes_details(app);
    draw_details(app, f, det_r, " Details ".into(), lines);
}

fn draw_tree(app: &mut App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Pane::List;
    let hl = app.highlight_group();
    let range = app.range_rows();
    let Some(s) = &app.session else { return };
    let title = match &app.range_anchor {
        Some(_) => format!(
            " Nodes {} · range {} nodes ",
            s.nodes.len(),
            app.range_nodes().len()
        ),
        None => format!(" Nodes {} ", s.nodes.len()),
    };
    let block = pane_block(title, focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    app.areas.list = area;
    let h = inner.height as usize;
    app.page = h;
    app.tree.clamp(s.tree.rows.len());
    app.tree.scroll_into_view(h);
    app.areas.list_offset = app.tree.offset;
    let w = inner.width as usize;
    let show_shape = w >= 62;
    let show_params = w >= 50;
    let op_w = 11usize;
    let shape_w = if show_shape { 16 } else { 0 };
    let params_w = if show_params { 7 } else { 0 };
    let marks_w = 3usize;
    let name_w = w.saturating_sub(op_w + shape_w + params_w + marks_w);
    let hl_nodes: &[usize] = hl
        .and_then(|g| s.group_nodes.get(g))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let hit_nodes: std::collections::HashSet<usize> = app.hits.iter().map(|h| h.node).collect();
    let mut lines = Vec::with_capacity(h);
    for (k, row) in s.tree.rows.iter().enumerate().skip(app.tree.offset).take(h) {
        let indent = "  ".repeat((row.depth as usize).min(10));
        let mut spans: Vec<Span> = Vec::new();
        match row.item {
            Item::Scope(sc) => {
                let scope = &s.tree.scopes[sc];
                let arrow = if scope.expanded { "▾ " } else { "▸ " };
                let label_style = match scope.kind {
                    ScopeKind::Chunk | ScopeKind::Constants => theme::dim(),
                    _ => theme::bold(),
                };
                let count = format!(" {} nodes", scope.count);
                let tag = scope.pattern.as_ref().and_then(|p| {
                    if s.tags.lock.contains(p) {
                        Some(Tag::Lock)
                    } else if s.tags.skip.contains(p) {
                        Some(Tag::Skip)
                    } else {
                        None
                    }
                });
                let room =
                    w.saturating_sub(indent.chars().count() + 2 + count.chars().count() + marks_w);
                let label = fit(&scope.label, room);
                let used =
                    indent.chars().count() + 2 + label.chars().count() + count.chars().count();
                spans.push(Span::raw(indent));
                spans.push(Span::styled(arrow, theme::accent()));
                spans.push(Span::styled(label, label_style));
                spans.push(Span::styled(count, theme::dim()));
                let mut pad = w.saturating_sub(used + marks_w);
                if let Some(class) = &scope.class {
                    let c = class.rsplit('.').next().unwrap_or(class);
                    let c = fit(&format!(" {c}"), pad);
                    pad -= c.chars().count();
                    spans.push(Span::styled(c, theme::dim()));
                }
                spans.push(Span::raw(" ".repeat(pad)));
                spans.push(match tag {
                    Some(Tag::Skip) => Span::styled(" S ", theme::skip()),
                    Some(Tag::Lock) => Span::styled(" L ", theme::lock()),
                    None => Span::raw("   "),
                });
            }
            Item::Node(i) => {
                let n = &s.nodes[i];
                let name_room = name_w.saturating_sub(indent.chars().count() + 2);
                let in_group = hl_nodes.binary_search(&i).is_ok();
                let bullet = if in_group {
                    Span::styled("● ", theme::group())
                } else {
                    Span::styled("· ", theme::dim())
                };
                let name_style = if hit_nodes.contains(&i) {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                };
                spans.push(Span::raw(indent.clone()));
                spans.push(bullet);
                let full = match &s.tree.lifted[i] {
                    Some(l) => format!("{l}/{}", n.leaf),
                    None => n.leaf.clone(),
                };
                let label = fit(&full, name_room);
                let pad = name_room.saturating_sub(label.chars().count());
                spans.push(Span::styled(label, name_style));
                spans.push(Span::raw(" ".repeat(pad)));
                spans.push(Span::styled(
                    format!("{:<op_w$}", fit(&n.op, op_w - 1)),
                    theme::op(),
                ));
                if show_shape {
                    spans.push(Span::styled(
                        format!("{:<shape_w$}", fit(&n.out_shape, shape_w - 1)),
                        theme::dim(),
                    ));
                }
                if show_params {
                    let p = if n.params > 0 {
                        human(n.params)
                    } else {
                        String::new()
                    };
                    spans.push(Span::styled(format!("{:>6} ", p), theme::dim()));
                }
                spans.push(match s.tagged.get(&i) {
                    Some(Tag::Skip) => Span::styled("S", theme::skip()),
                    Some(Tag::Lock) => Span::styled("L", theme::lock()),
                    None => Span::raw(" "),
                });
                let diag = s
                    .node_diags
                    .get(&i)
                    .and_then(|v| v.iter().map(|&k| s.diagnostics[k].severity).min());
                spans.push(match diag {
                    Some(sev) => Span::styled("!", details::severity_style(sev)),
                    None => Span::raw(" "),
                });
                spans.push(Span::raw(" "));
            }
        }
        let mut line = Line::from(spans);
        if let Some((lo, hi)) = range
            && k >= lo
            && k <= hi
        {
            line = line.style(theme::range());
        }
        if k == app.tree.cursor {
            line = line.style(theme::cursor(focused));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_graph(app: &mut App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Pane::Graph;
    let hops = app.hops;
    let block = pane_block(format!(" Graph ±{hops} "), focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    app.areas.graph = area;
    let Some(sel) = app.selected_node() else {
        let msg = Paragraph::new(vec![
            Line::from(""),
            Line::from(Span::styled(
                "select a node to see its neighbourhood",
                theme::dim(),
            )),
        ])
        .alignment(Alignment::Center);
        f.render_widget(msg, inner);
        return;
    };
    let hl = app.highlight_group();
    let hl_nodes: Vec<usize> = hl
        .and_then(|g| app.session.as_ref()?.group_nodes.get(g).cloned())
        .unwrap_or_default();
    let compact = inner.height < 16;
    let width = inner.width;
    let graph_cursor = app.graph_cursor;
    let Some(view) = app.graph_view(sel, width, compact) else {
        return;
    };
    let cursor = if graph_cursor < view.order.len() {
        graph_cursor
    } else {
        view.order.iter().position(|&n| n == sel).unwrap_or(0)
    };
    let cursor_node = view.order.get(cursor).copied();
    // Centre the selected box vertically.
    let sel_y = view.selected.map(|k| view.box_y[k]).unwrap_or(0) as i32;
    let focus_y = if focused {
        cursor_node
            .and_then(|n| view.nodes.iter().position(|g| g.kind == GKind::Node(n)))
            .map(|k| view.box_y[k] as i32)
            .unwrap_or(sel_y)
    } else {
        sel_y
    };
    let h = inner.height as i32;
    let mut top = (focus_y + view.box_h as i32 / 2 - h / 2).max(0);
    top = top.min((view.height as i32 - h).max(0));
    let mut lines = Vec::new();
    let mut boxes = Vec::new();
    for y in top..(top + h).min(view.height as i32) {
        let mut spans: Vec<Span> = Vec::new();
        let row = &view.chars[y as usize];
        let cells = &view.cells[y as usize];
        let mut run = String::new();
        let mut run_style = Style::default();
        for x in 0..view.width as usize {
            let style = match cells[x] {
                Cell::Empty => Style::default(),
                Cell::Line => theme::dim(),
                Cell::Label => Style::default().fg(Color::Gray),
                Cell::Box(k) => {
                    let g = &view.nodes[k];
                    let mut st = match &g.kind {
                        GKind::Node(n) if *n == sel => Style::default()
                            .fg(Color::Yellow)
                            .add_modifier(Modifier::BOLD),
                        GKind::Node(n) if hl_nodes.binary_search(n).is_ok() => theme::group(),
                        GKind::Node(_) => Style::default().fg(Color::White),
                        GKind::Input(_) => theme::ok(),
                        GKind::Output(_) => Style::default().fg(Color::LightRed),
                        _ => theme::dim(),
                    };
                    if focused && matches!(g.kind, GKind::Node(n) if Some(n) == cursor_node) {
                        st = st.add_modifier(Modifier::REVERSED);
                    }
                    st
                }
            };
            if style != run_style && !run.is_empty() {
                spans.push(Span::styled(std::mem::take(&mut run), run_style));
            }
            run_style = style;
            run.push(row[x]);
        }
        if !run.is_empty() {
            spans.push(Span::styled(run, run_style));
        }
        lines.push(Line::from(spans));
    }
    for (k, g) in view.nodes.iter().enumerate() {
        if let GKind::Node(n) = g.kind {
            let y = view.box_y[k] as i32 - top;
            if y >= 0 && y < h && g.w > 0 {
                boxes.push((
                    Rect::new(
                        inner.x + g.x,
                        inner.y + y as u16,
                        g.w,
                        view.box_h.min((h - y) as u16),
                    ),
                    n,
                ));
            }
        }
    }
    app.graph_cursor = cursor;
    app.areas.graph_boxes = boxes;
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_details(
    app: &mut App,
    f: &mut Frame,
    area: Rect,
    title: String,
    lines: Vec<Line<'static>>,
) {
    let focused = app.focus == Pane::Details;
    let block = pane_block(title, focused);
    let inner = block.inner(area);
    app.areas.details = area;
    let max_scroll = (lines.len() as u16).saturating_sub(inner.height.max(1));
    if app.details_scroll > max_scroll {
        app.details_scroll = max_scroll;
    }
    let more = lines.len() as u16 > inner.height + app.details_scroll;
    let block = if more || app.details_scroll > 0 {
        block.title_bottom(
            Line::from(Span::styled(
                format!(" {}/{} J/K ", app.details_scroll + 1, max_scroll + 1),
                theme::dim(),
            ))
            .right_aligned(),
        )
    } else {
        block
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.details_scroll, 0)),
        area,
    );
}

// ----------------------------------------------------------------- Groups

fn draw_groups(app: &mut App, f: &mut Frame, area: Rect) {
    let [list_r, det_r] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let focused = app.focus == Pane::List;
    let Some(s) = &app.session else { return };
    let n = s.channels.groups.len();
    let prunable = (0..n)
        .filter(|&g| s.group_status[g].locks.is_empty() && s.channels.groups[g].channels > 1)
        .count();
    let by_tags = s
        .group_status
        .iter()
        .filter(|g| !g.tag_locks.is_empty())
        .count();
    let mut title = format!(" Groups {n} · {prunable} prunable ");
    if by_tags > 0 {
        title.push_str(&format!("· {by_tags} locked by tags "));
    }
    let block = pane_block(title, focused);
    let inner = block.inner(list_r);
    f.render_widget(block, list_r);
    app.areas.list = list_r;
    let h = inner.height.saturating_sub(1) as usize;
    app.page = h;
    app.groups.clamp(n);
    app.groups.scroll_into_view(h);
    app.areas.list_offset = app.groups.offset;
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
    for g in (0..n).skip(app.groups.offset).take(h) {
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
            let sp = match app.importance.get(&g) {
                Some(v) => theme::sparkline(v, spark_w),
                None => "…".into(),
            };
            spans.push(Span::styled(format!(" {sp}"), theme::group()));
        }
        let mut line = Line::from(spans);
        if g == app.groups.cursor {
            line = line.style(theme::cursor(focused));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), inner);
    let g = app.groups.cursor;
    let lines = details::group_details(s, g, app.importance.get(&g));
    draw_details(app, f, det_r, format!(" Group #{g} "), lines);
}

// ------------------------------------------------------------ Diagnostics

fn draw_diagnostics(app: &mut App, f: &mut Frame, area: Rect) {
    let [list_r, det_r] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let focused = app.focus == Pane::List;
    let Some(s) = &app.session else { return };
    let block = pane_block(format!(" Diagnostics · target {} ", s.lint_target), focused);
    let inner = block.inner(list_r);
    f.render_widget(block, list_r);
    app.areas.list = list_r;
    let h = inner.height.saturating_sub(1) as usize;
    app.page = h;
    app.diags.clamp(s.diagnostics.len());
    app.diags.scroll_into_view(h);
    app.areas.list_offset = app.diags.offset;
    let w = inner.width as usize;
    let mut lines = vec![Line::from(Span::styled(
        fit(&s.lint_status, w),
        if engines::lint_available() {
            theme::dim()
        } else {
            theme::skip()
        },
    ))];
    if s.diagnostics.is_empty() {
        lines.push(Line::from(Span::styled("no findings", theme::dim())));
    }
    for (k, d) in s
        .diagnostics
        .iter()
        .enumerate()
        .skip(app.diags.offset)
        .take(h)
    {
        let node = d
            .node
            .map(|n| s.nodes[n].name.clone())
            .unwrap_or_else(|| "(model)".into());
        let sev = Span::styled(
            format!("{:<5} ", d.severity.label()),
            details::severity_style(d.severity),
        );
        let rule = Span::styled(format!("{:<8} ", fit(&d.rule, 8)), theme::bold());
        let rest = w.saturating_sub(15);
        let text = fit(
            &format!("{}  {}", fit_left(&node, rest / 2), d.message),
            rest,
        );
        let mut line = Line::from(vec![sev, rule, Span::raw(text)]);
        if k == app.diags.cursor {
            line = line.style(theme::cursor(focused));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), inner);
    let lines = match s.diagnostics.get(app.diags.cursor) {
        Some(d) => details::diagnostic_lines(d, s),
        None => vec![Line::from(Span::styled(
            "Lint findings, shape-inference notes and channel-analysis notes appear here.",
            theme::dim(),
        ))],
    };
    draw_details(app, f, det_r, " Finding ".into(), lines);
}

// -------------------------------------------------------------------- Jobs

fn draw_jobs(app: &mut App, f: &mut Frame, area: Rect) {
    let list_h = (app.jobs.len() as u16 + 2)
        .min(area.height / 3 + 1)
        .max(3)
        .min(area.height);
    let [list_r, det_r] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(4)]).areas(area);
    let focused = app.focus == Pane::List;
    let block = pane_block(format!(" Jobs {} ", app.jobs.len()), focused);
    let inner = block.inner(list_r);
    f.render_widget(block, list_r);
    app.areas.list = list_r;
    let h = inner.height as usize;
    app.page = h;
    app.jobs_pos.clamp(app.jobs.len());
    app.jobs_pos.scroll_into_view(h);
    app.areas.list_offset = app.jobs_pos.offset;
    let mut lines = Vec::new();
    if app.jobs.is_empty() {
        lines.push(Line::from(Span::styled(
            "no jobs yet — p prunes, Q quantizes, x extracts (from the Nodes view)",
            theme::dim(),
        )));
    }
    for (k, j) in app
        .jobs
        .iter()
        .enumerate()
        .skip(app.jobs_pos.offset)
        .take(h)
    {
        let (st, style) = match &j.status {
            JobStatus::Running => (
                format!("{:>3.0}%", j.ratio().unwrap_or(0.0) * 100.0),
                theme::accent(),
            ),
            JobStatus::Finished => ("done".to_string(), theme::ok()),
            JobStatus::Failed(_) => ("fail".to_string(), theme::lock()),
            JobStatus::Cancelled => ("stop".to_string(), theme::skip()),
        };
        let t = match (app.frozen_clock, j.ended) {
            (Some(c), _) => c,
            (None, Some(e)) => e - j.started,
            (None, None) => j.started.elapsed(),
        };
        let mut line = Line::from(vec![
            Span::styled(format!(" {st:<5}"), style),
            Span::styled(format!("{:<9}", j.kind.label()), theme::bold()),
            Span::raw(fit(&j.title, (inner.width as usize).saturating_sub(24))),
            Span::styled(format!("  {}", fmt_duration(t)), theme::dim()),
        ]);
        if k == app.jobs_pos.cursor {
            line = line.style(theme::cursor(focused));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), inner);
    draw_job_detail(app, f, det_r);
}

fn draw_job_detail(app: &mut App, f: &mut Frame, area: Rect) {
    let focused = app.focus == Pane::Details;
    app.areas.details = area;
    let Some(j) = app.jobs.get(app.jobs_pos.cursor) else {
        f.render_widget(pane_block(" Job ".into(), focused), area);
        return;
    };
    let block = pane_block(format!(" {} ", j.title), focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let has_layers = !j.layers.is_empty() || j.kind == super::jobs::JobKind::Quantize;
    let summary_h = j
        .outcome
        .as_ref()
        .map(|o| o.summary.len() as u16 + 1)
        .unwrap_or(0);
    let layers_h = if has_layers {
        (j.layers.len() as u16 + 1).clamp(2, inner.height / 2)
    } else {
        0
    };
    let [cmd_r, gauge_r, sum_r, layers_r, log_r] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(summary_h),
        Constraint::Length(layers_h),
        Constraint::Min(1),
    ])
    .areas(inner);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("$ ", theme::dim()),
            Span::styled(j.command.clone(), theme::dim()),
        ])),
        cmd_r,
    );
    let phase_t = app.elapsed(j.phase_started);
    let label = match &j.status {
        JobStatus::Running => {
            let mut l = match j.total {
                Some(t) => format!("{} {}/{}", j.phase, j.done, t),
                None => format!("{} …", j.phase),
            };
            if let Some(eta) = j.eta(phase_t) {
                l.push_str(&format!("  ETA {}", fmt_duration(eta)));
            }
            l
        }
        JobStatus::Finished => "finished".to_string(),
        JobStatus::Failed(e) => format!("failed: {e}"),
        JobStatus::Cancelled => "cancelled".to_string(),
    };
    let ratio = match &j.status {
        JobStatus::Running => j.ratio().unwrap_or(0.0),
        JobStatus::Finished => 1.0,
        _ => j.ratio().unwrap_or(0.0),
    };
    let gauge_style = match &j.status {
        JobStatus::Failed(_) => theme::lock(),
        JobStatus::Cancelled => theme::skip(),
        JobStatus::Finished => theme::ok(),
        JobStatus::Running => theme::accent(),
    };
    let [g1, g2] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(gauge_r);
    f.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(fit(&label, g1.width as usize))
            .gauge_style(gauge_style)
            .use_unicode(true),
        g1,
    );
    if !j.message.is_empty() && j.is_running() {
        f.render_widget(
            Paragraph::new(Span::styled(
                fit(&j.message, g2.width as usize),
                theme::dim(),
            )),
            g2,
        );
    }
    if let Some(o) = &j.outcome {
        let mut lines: Vec<Line> = o.summary.iter().map(|l| Line::from(l.clone())).collect();
        if !o.outputs.is_empty() {
            lines.push(Line::from(Span::styled("o opens the result", theme::dim())));
        }
        f.render_widget(Paragraph::new(lines), sum_r);
    }
    if has_layers {
        let mut lines = vec![Line::from(Span::styled(
            "per-layer SQNR (dB, higher is better)",
            theme::section(),
        ))];
        if j.layers.is_empty() {
            lines.push(Line::from(Span::styled(
                "  waiting for calibration…",
                theme::dim(),
            )));
        }
        let name_w = (layers_r.width as usize / 3).max(10);
        let bar_w = (layers_r.width as usize).saturating_sub(name_w + 9);
        let vmax = j.layers.iter().map(|l| l.value).fold(40.0f64, f64::max);
        for l in j
            .layers
            .iter()
            .rev()
            .take(layers_r.height.saturating_sub(1) as usize)
            .rev()
        {
            let n = ((l.value.max(0.0) / vmax) * bar_w as f64).round() as usize;
            let color = if l.value < 20.0 {
                Color::Red
            } else if l.value < 30.0 {
                Color::Yellow
            } else {
                Color::Green
            };
            lines.push(Line::from(vec![
                Span::raw(format!("{:<name_w$} ", fit_left(&l.node, name_w))),
                Span::styled("█".repeat(n.min(bar_w)), Style::default().fg(color)),
                Span::raw(" ".repeat(bar_w.saturating_sub(n))),
                Span::styled(format!(" {:>5.1}", l.value), theme::bold()),
            ]));
        }
        f.render_widget(Paragraph::new(lines), layers_r);
    }
    let lh = log_r.height as usize;
    let log: Vec<Line> = j
        .log
        .iter()
        .rev()
        .take(lh)
        .rev()
        .map(|l| {
            let style = if l.starts_with('✗') {
                theme::lock()
            } else if l.starts_with('✓') {
                theme::ok()
            } else if l.starts_with('▸') {
                theme::accent()
            } else {
                theme::dim()
            };
            Line::from(Span::styled(l.clone(), style))
        })
        .collect();
    f.render_widget(Paragraph::new(log), log_r);
}

// -------------------------------------------------------------- bottom bar

fn bar_actions(app: &App) -> Vec<Action> {
    use Action::*;
    if app.range_anchor.is_some() {
        return vec![Down, Skip, Lock, Untag, Extract, Back];
    }
    match (app.view, app.focus) {
        (View::Nodes, Pane::List) => vec![
            Down, Toggle, Search, Skip, Lock, Untag, Range, Extract, SaveTags, Prune, Quantize,
            FocusNext, Help, Quit,
        ],
        (View::Nodes, Pane::Graph) => vec![Down, Jump, MoreHops, FewerHops, FocusNext, Help, Quit],
        (_, Pane::Details) => vec![Down, FocusNext, Back, Help, Quit],
        (View::Groups, _) => vec![Down, Jump, Prune, Search, Help, Quit],
        (View::Diagnostics, _) => vec![Down, Jump, ApplyFix, CycleTarget, RerunLint, Help, Quit],
        (View::Jobs, _) => vec![Down, CancelJob, OpenResult, Help, Quit],
    }
}

fn draw_bar(app: &App, f: &mut Frame, area: Rect) {
    if let Some(si) = &app.search {
        let line = Line::from(vec![
            Span::styled("/", theme::accent()),
            Span::raw(si.input.text.clone()),
            Span::styled("█", theme::accent()),
            Span::styled(
                format!(
                    "  {} match(es) · ↑↓ choose · ⏎ go · Esc cancel",
                    si.hits.len()
                ),
                theme::dim(),
            ),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    if let Some(m) = &app.message {
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                fit(m, area.width as usize),
                Style::default().fg(Color::Yellow),
            ))),
            area,
        );
        return;
    }
    if app.session.is_none() {
        f.render_widget(Paragraph::new(Span::styled(" q quit", theme::dim())), area);
        return;
    }
    let ctxs = app.contexts();
    let mut spans = Vec::new();
    let mut used = 0usize;
    for a in bar_actions(app) {
        let Some(k) = app.keymap.key_for(&ctxs, a) else {
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

// ---------------------------------------------------------------- overlays

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_search(app: &App, f: &mut Frame, body: Rect) {
    let (Some(si), Some(s)) = (&app.search, &app.session) else {
        return;
    };
    if si.hits.is_empty() {
        return;
    }
    let n = si.hits.len().min(8) as u16;
    let w = body.width.min(90);
    let r = Rect::new(body.x, body.y + body.height.saturating_sub(n + 2), w, n + 2);
    f.render_widget(Clear, r);
    let start = si.sel.saturating_sub(7);
    let inner_w = w.saturating_sub(2) as usize;
    let lines: Vec<Line> = si
        .hits
        .iter()
        .enumerate()
        .skip(start)
        .take(8)
        .map(|(k, h)| {
            let node = &s.nodes[h.node];
            let field = match h.field {
                super::search::Field::Name => String::new(),
                super::search::Field::Op => String::new(),
                super::search::Field::Tensor => format!("  tensor {}", h.text),
            };
            let mut line = Line::from(vec![
                Span::styled(format!("{:<12}", fit(&node.op, 11)), theme::op()),
                Span::raw(fit_left(
                    &node.name,
                    inner_w.saturating_sub(12 + field.chars().count()),
                )),
                Span::styled(field, theme::tensor()),
            ]);
            if k == si.sel {
                line = line.style(theme::cursor(true));
            }
            line
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(pane_block(format!(" {} matches ", si.hits.len()), true)),
        r,
    );
}

fn field_line(label: &str, value: String, active: bool, hint: &str) -> Line<'static> {
    let marker = if active { "▶ " } else { "  " };
    let vstyle = if active {
        Style::default().fg(Color::Black).bg(Color::Cyan)
    } else {
        theme::bold()
    };
    Line::from(vec![
        Span::styled(marker.to_string(), theme::accent()),
        Span::styled(format!("{label:<14}"), theme::dim()),
        Span::styled(value, vstyle),
        Span::styled(format!("  {hint}"), theme::dim()),
    ])
}

fn text_value(t: &dialog::TextInput, active: bool, w: usize) -> String {
    let s = fit_left(&t.text, w);
    if active { format!("{s}▏") } else { s }
}

fn draw_overlay(app: &mut App, f: &mut Frame, body: Rect) {
    let Some(ov) = &app.overlay else { return };
    match ov {
        Overlay::Help { scroll } => draw_help(app, f, body, *scroll),
        Overlay::ConfirmQuit => {
            let r = centered(body, 52, 7);
            f.render_widget(Clear, r);
            let lines = vec![
                Line::from("Your tag changes are not saved."),
                Line::from(""),
                Line::from(vec![
                    Span::styled(" w ", theme::key()),
                    Span::raw(" save and quit  "),
                    Span::styled(" q ", theme::key()),
                    Span::raw(" quit anyway  "),
                    Span::styled(" Esc ", theme::key()),
                    Span::raw(" stay"),
                ]),
            ];
            f.render_widget(
                Paragraph::new(lines)
                    .block(pane_block(" Quit? ".into(), true))
                    .alignment(Alignment::Center),
                r,
            );
        }
        Overlay::SaveAs(p) => {
            let r = centered(body, 70.min(body.width), 5);
            f.render_widget(Clear, r);
            let w = r.width.saturating_sub(4) as usize;
            let lines = vec![
                Line::from(Span::styled(text_value(&p.input, true, w), theme::bold())),
                Line::from(Span::styled(
                    "⏎ save (atomic write) · Esc cancel",
                    theme::dim(),
                )),
            ];
            f.render_widget(
                Paragraph::new(lines).block(pane_block(format!(" {} ", p.title), true)),
                r,
            );
        }
        Overlay::Prune(d) => {
            let Some(s) = &app.session else { return };
            let r = centered(body, 76, 16);
            f.render_widget(Clear, r);
            let w = r.width.saturating_sub(22) as usize;
            let n = s.channels.groups.len();
            let prunable = (0..n)
                .filter(|&g| {
                    s.group_status[g].locks.is_empty() && s.channels.groups[g].channels > 1
                })
                .count();
            let tagged = s
                .group_status
                .iter()
                .filter(|g| !g.tag_locks.is_empty())
                .count();
            let tags_arg = if s.tags.is_empty() {
                None
            } else {
                Some(
                    s.tags_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "<unsaved tags>".into()),
                )
            };
            let model = s
                .analysis
                .model
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<demo>".into());
            let mut lines = vec![
                field_line(
                    "ratio",
                    format!("{:.0}%", d.ratio * 100.0),
                    d.field == 0,
                    "←/→ ±5%",
                ),
                field_line(
                    "criterion",
                    criterion_name(d.criterion).to_string(),
                    d.field == 1,
                    "l1 l2 fpgm bn-scale random",
                ),
                field_line(
                    "round_to",
                    d.round_to.to_string(),
                    d.field == 2,
                    "kept channels are multiples",
                ),
                field_line(
                    "global",
                    if d.global { "yes" } else { "no" }.into(),
                    d.field == 3,
                    "rank across groups",
                ),
                field_line(
                    "validate",
                    if d.validate { "yes" } else { "no" }.into(),
                    d.field == 4,
                    "compare with tract",
                ),
                field_line(
                    "output",
                    text_value(&d.output, d.field == 5, w),
                    d.field == 5,
                    "",
                ),
                Line::from(""),
                Line::from(vec![
                    Span::styled("  groups  ", theme::dim()),
                    Span::styled(format!("{prunable} prunable"), theme::ok()),
                    Span::raw(format!(" of {n}")),
                    Span::styled(
                        if tagged > 0 {
                            format!(", {tagged} locked by your tags")
                        } else {
                            String::new()
                        },
                        theme::skip(),
                    ),
                ]),
                Line::from(Span::styled(
                    format!(
                        "  $ {}",
                        fit(
                            &d.command(&model, tags_arg.as_deref()),
                            r.width as usize - 6
                        )
                    ),
                    theme::dim(),
                )),
                Line::from(""),
                Line::from(vec![
                    Span::styled(" ⏎ ", theme::key()),
                    Span::raw(" run as a job  "),
                    Span::styled(" Tab ", theme::key()),
                    Span::raw(" next field  "),
                    Span::styled(" Esc ", theme::key()),
                    Span::raw(" close"),
                ]),
            ];
            if s.tag_error.is_some() {
                lines.insert(
                    7,
                    Line::from(Span::styled(
                        format!("  tags: {}", s.tag_error.clone().unwrap_or_default()),
                        theme::lock(),
                    )),
                );
            }
            f.render_widget(
                Paragraph::new(lines)
                    .block(pane_block(" Prune ".into(), true))
                    .wrap(Wrap { trim: false }),
                r,
            );
        }
        Overlay::Quantize(d) => {
            let r = centered(body, 76, 16);
            f.render_widget(Clear, r);
            let w = r.width.saturating_sub(22) as usize;
            let model = app
                .session
                .as_ref()
                .and_then(|s| {
                    s.analysis
                        .model
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                })
                .unwrap_or_else(|| "<demo>".into());
            let mut lines = vec![
                field_line(
                    "calibration",
                    if d.calib_images {
                        "image folder"
                    } else {
                        "random inputs"
                    }
                    .into(),
                    d.field == 0,
                    "←/→ switch",
                ),
                field_line(
                    "images",
                    text_value(&d.images, d.field == 1, w),
                    d.field == 1,
                    "",
                ),
                field_line("samples", d.samples.to_string(), d.field == 2, "←/→"),
                field_line(
                    "method",
                    engines::QUANT_METHODS[d.method].name().to_string(),
                    d.field == 3,
                    "mse entropy percentile minmax",
                ),
                field_line(
                    "format",
                    if d.ort_format {
                        "ort (UINT8 activations)"
                    } else {
                        "trt (symmetric INT8)"
                    }
                    .into(),
                    d.field == 4,
                    "←/→ switch",
                ),
                field_line(
                    "output",
                    text_value(&d.output, d.field == 5, w),
                    d.field == 5,
                    "",
                ),
                Line::from(""),
                Line::from(Span::styled(
                    format!(
                        "  $ {}",
                        fit(&d.request().command_line(&model), r.width as usize - 6)
                    ),
                    theme::dim(),
                )),
                Line::from(""),
            ];
            if engines::quant_available() {
                lines.push(Line::from(vec![
                    Span::styled(" ⏎ ", theme::key()),
                    Span::raw(" run as a job (per-layer SQNR live)  "),
                    Span::styled(" Esc ", theme::key()),
                    Span::raw(" close"),
                ]));
            } else {
                lines.push(Line::from(Span::styled(
                    format!("  {}", engines::QUANT_MISSING),
                    theme::skip(),
                )));
                lines.push(Line::from(vec![
                    Span::styled(" Esc ", theme::key()),
                    Span::raw(" close"),
                ]));
            }
            f.render_widget(
                Paragraph::new(lines)
                    .block(pane_block(" Quantize (INT8) ".into(), true))
                    .wrap(Wrap { trim: false }),
                r,
            );
        }
        Overlay::Extract(d) => {
            let h = (d.inputs.len() + d.outputs.len()) as u16 + 14;
            let r = centered(body, 90, h);
            f.render_widget(Clear, r);
            let iw = r.width.saturating_sub(4) as usize;
            let model = app
                .session
                .as_ref()
                .and_then(|s| {
                    s.analysis
                        .model
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                })
                .unwrap_or_else(|| "<demo>".into());
            let pins = app
                .session
                .as_ref()
                .map(|s| s.analysis.pins.clone())
                .unwrap_or_default();
            let bline = |b: &dialog::Boundary, style: Style| {
                Line::from(vec![
                    Span::styled(format!("  {} ", fit(&b.name, iw / 2)), style),
                    Span::raw(format!("{} {}", b.dtype, b.shape)),
                ])
            };
            let mut lines = vec![Line::from(vec![
                Span::styled(format!("{} nodes ", d.nodes.len()), theme::bold()),
                Span::styled(
                    format!(
                        "{} … {}",
                        fit_left(&d.first, iw / 3),
                        fit_left(&d.last, iw / 3)
                    ),
                    theme::dim(),
                ),
            ])];
            lines.push(Line::from(Span::styled("inputs", theme::section())));
            lines.extend(d.inputs.iter().map(|b| bline(b, theme::ok())));
            lines.push(Line::from(Span::styled("outputs", theme::section())));
            lines.extend(
                d.outputs
                    .iter()
                    .map(|b| bline(b, Style::default().fg(Color::LightRed))),
            );
            lines.push(Line::from(""));
            lines.push(field_line(
                "output",
                text_value(&d.output, d.field == 0, iw.saturating_sub(18)),
                d.field == 0,
                "",
            ));
            lines.push(field_line(
                "boundary data",
                if d.with_data { "yes" } else { "no" }.into(),
                d.field == 1,
                "real inputs for the cut",
            ));
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!(
                    "$ {}",
                    d.request()
                        .command_line(std::path::Path::new(&model), &pins)
                ),
                theme::dim(),
            )));
            lines.push(Line::from(""));
            if engines::extract_available() {
                lines.push(Line::from(vec![
                    Span::styled(" ⏎ ", theme::key()),
                    Span::raw(" extract (job)  "),
                    Span::styled(" Esc ", theme::key()),
                    Span::raw(" close"),
                ]));
            } else {
                lines.push(Line::from(Span::styled(
                    engines::EXTRACT_MISSING,
                    theme::skip(),
                )));
            }
            f.render_widget(
                Paragraph::new(lines)
                    .block(pane_block(" Extract subgraph ".into(), true))
                    .wrap(Wrap { trim: false }),
                r,
            );
        }
    }
}

fn draw_help(app: &App, f: &mut Frame, body: Rect, scroll: u16) {
    let r = centered(body, 84, body.height.saturating_sub(2).max(10));
    f.render_widget(Clear, r);
    let mut lines = Vec::new();
    let sections: [(Ctx, &str); 8] = [
        (Ctx::Global, "everywhere"),
        (Ctx::List, "lists"),
        (Ctx::Tree, "node tree"),
        (Ctx::Graph, "graph pane"),
        (Ctx::Details, "details pane"),
        (Ctx::Groups, "groups view"),
        (Ctx::Diagnostics, "diagnostics view"),
        (Ctx::Jobs, "jobs view"),
    ];
    for (ctx, title) in sections {
        let Some(list) = app.keymap.bindings.get(&ctx) else {
            continue;
        };
        lines.push(Line::from(Span::styled(
            format!("{title} [{}]", ctx.name()),
            theme::section(),
        )));
        for (a, _) in list {
            let keys = app.keymap.keys_of(ctx, *a).join(" ");
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<14}", fit(&keys, 13)), theme::accent()),
                Span::raw(a.desc().to_string()),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "mouse: click selects (twice expands), wheel scrolls",
        theme::dim(),
    )));
    lines.push(Line::from(Span::styled(
        "keys are configurable: ~/.config/pare/keymap.toml, $PARE_KEYMAP or --keymap (same format as assets/keymap.toml)",
        theme::dim(),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .block(pane_block(" Help · j/k scroll · Esc closes ".into(), true))
            .scroll((scroll, 0)),
        r,
    );
}
