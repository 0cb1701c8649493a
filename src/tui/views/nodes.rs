//! The Nodes view: the scope tree on the left, the neighbourhood graph of the selected node,
//! and its details. It owns the tree cursor, the graph cursor and hop count, the range
//! selection and which channel group of the node is highlighted.

use ratatui::Frame;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::model::info::human;
use crate::tags::Tag;

use super::super::app::Pane;
use super::super::component::Component;
use super::super::details;
use super::super::graph::{self, Cell, GKind, GraphView};
use super::super::keymap::{Action, Ctx};
use super::super::search::Hit;
use super::super::session::Session;
use super::super::theme::{self, fit};
use super::super::tree::{Item, ScopeKind};
use super::super::ui::pane_block;
use super::{Cx, DrawCx, ListPos};

/// Node, hops, width and compactness of a cached layout.
type GraphKey = (usize, usize, u16, bool);

pub struct NodesView {
    tree: ListPos,
    /// Index into the graph's display order; `usize::MAX` means "the selected node".
    graph_cursor: usize,
    hops: usize,
    range_anchor: Option<Item>,
    pinned_group: Option<usize>,
    group_pick: usize,
    graph_cache: Option<(GraphKey, GraphView)>,
}

impl Default for NodesView {
    fn default() -> Self {
        NodesView {
            tree: ListPos::default(),
            graph_cursor: 0,
            hops: 2,
            range_anchor: None,
            pinned_group: None,
            group_pick: 0,
            graph_cache: None,
        }
    }
}

impl Component for NodesView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Tree, "node tree"), (Ctx::Graph, "graph pane")]
    }
    fn commands(&self, focus: Pane) -> Vec<Action> {
        use Action::*;
        if self.range_anchor.is_some() {
            return vec![Down, Skip, Lock, Untag, Extract, Back];
        }
        match focus {
            Pane::Graph => vec![Down, Jump, MoreHops, FewerHops, FocusNext, Help, Quit],
            _ => vec![
                Down, Toggle, Search, Skip, Lock, Untag, Range, Extract, SaveTags, Prune, Quantize,
                FocusNext, Help, Quit,
            ],
        }
    }
}

impl NodesView {
    /// Forgets everything about the previous model; starts on the first real node.
    pub fn reset(&mut self, s: &Session) {
        // Hops, the graph cursor and the group pick carry over, as before components.
        *self = NodesView {
            hops: self.hops,
            graph_cursor: self.graph_cursor,
            group_pick: self.group_pick,
            ..NodesView::default()
        };
        if let Some(first) = s
            .tree
            .rows
            .iter()
            .position(|r| matches!(r.item, Item::Node(_)))
            && first < 12
        {
            self.tree.cursor = first;
        }
    }

    pub fn cursor(&self) -> usize {
        self.tree.cursor
    }

    pub fn set_cursor(&mut self, row: usize) {
        self.tree.cursor = row;
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.tree
    }

    /// The tree row under the cursor.
    pub fn current_item(&self, s: &Session) -> Option<Item> {
        s.tree.rows.get(self.tree.cursor).map(|r| r.item)
    }

    /// The node the view is about.
    pub fn selected_node(&self, s: &Session) -> Option<usize> {
        match self.current_item(s)? {
            Item::Node(i) => Some(i),
            Item::Scope(_) => None,
        }
    }

    /// Channel groups of a node in the order `c` cycles them: produced groups first.
    pub fn group_cycle(s: &Session, node: usize) -> Vec<usize> {
        let mut v = s.produced[node].clone();
        for &g in &s.node_groups[node] {
            if !v.contains(&g) {
                v.push(g);
            }
        }
        v
    }

    /// The pinned group, or the selected node's current group.
    pub fn highlight_group(&self, s: &Session) -> Option<usize> {
        if let Some(g) = self.pinned_group {
            return Some(g);
        }
        let cyc = Self::group_cycle(s, self.selected_node(s)?);
        if cyc.is_empty() {
            None
        } else {
            Some(cyc[self.group_pick % cyc.len()])
        }
    }

    pub fn pinned_group(&self) -> Option<usize> {
        self.pinned_group
    }

    /// Pins a group (from the Groups view) or unpins.
    pub fn pin_group(&mut self, g: Option<usize>) {
        self.pinned_group = g;
    }

    pub fn range_active(&self) -> bool {
        self.range_anchor.is_some()
    }

    pub fn end_range(&mut self) {
        self.range_anchor = None;
    }

    /// Nodes of the range selection (or nothing when no range is active), in execution order.
    pub fn range_nodes(&self, s: &Session) -> Vec<usize> {
        let Some(anchor) = self.range_anchor else {
            return Vec::new();
        };
        let Some(a) = s.tree.rows.iter().position(|r| r.item == anchor) else {
            return Vec::new();
        };
        let (lo, hi) = (a.min(self.tree.cursor), a.max(self.tree.cursor));
        let mut out = Vec::new();
        for r in &s.tree.rows[lo..=hi.min(s.tree.rows.len().saturating_sub(1))] {
            match r.item {
                Item::Node(i) => out.push(i),
                Item::Scope(k) if !s.tree.scopes[k].expanded => out.extend(s.tree.nodes_under(k)),
                Item::Scope(_) => {}
            }
        }
        out.sort_by_key(|&i| s.nodes[i].topo);
        out.dedup();
        out
    }

    /// Row range of the range selection, for drawing.
    fn range_rows(&self, s: &Session) -> Option<(usize, usize)> {
        let a = s
            .tree
            .rows
            .iter()
            .position(|r| Some(r.item) == self.range_anchor)?;
        Some((a.min(self.tree.cursor), a.max(self.tree.cursor)))
    }

    /// Moves the tree cursor to a node, opening its scopes. True when it moved.
    pub fn reveal(&mut self, s: &mut Session, node: usize) -> bool {
        match s.tree.reveal(node) {
            Some(row) => {
                self.tree.cursor = row;
                self.group_pick = 0;
                true
            }
            None => false,
        }
    }

    /// The graph node under the graph cursor (after the last draw).
    pub fn graph_target(&self) -> Option<usize> {
        self.graph_cache
            .as_ref()
            .and_then(|(_, v)| v.order.get(self.graph_cursor).copied())
    }

    /// Puts the graph cursor back on the selected node.
    pub fn reset_graph_cursor(&mut self) {
        self.graph_cursor = usize::MAX;
    }

    /// Moves the tree cursor for a list action.
    pub fn move_tree(&mut self, a: Action, len: usize, page: usize) {
        self.tree.apply(a, len, page);
        self.group_pick = 0;
        self.graph_cursor = usize::MAX;
    }

    /// Moves the graph cursor for a list action.
    pub fn move_graph(&mut self, a: Action) {
        let n = self
            .graph_cache
            .as_ref()
            .map(|(_, v)| v.order.len())
            .unwrap_or(0);
        if n == 0 {
            return;
        }
        self.graph_cursor = match a {
            Action::Down => (self.graph_cursor + 1).min(n - 1),
            Action::Up => self.graph_cursor.saturating_sub(1),
            Action::Top => 0,
            Action::Bottom => n - 1,
            _ => self.graph_cursor,
        };
    }

    /// Handles the actions of the tree and graph contexts; false when `a` is not one.
    pub fn act(&mut self, a: Action, cx: Cx) -> bool {
        match a {
            Action::Toggle | Action::Expand | Action::Collapse => self.toggle(a, cx),
            Action::ExpandAll | Action::CollapseAll => self.expand_all(a, cx.session),
            Action::Skip => self.tag(Some(Tag::Skip), cx),
            Action::Lock => self.tag(Some(Tag::Lock), cx),
            Action::Untag => self.tag(None, cx),
            Action::Range => {
                if self.range_anchor.is_some() {
                    self.range_anchor = None;
                } else {
                    self.range_anchor = self.current_item(cx.session);
                    *cx.message =
                        Some("range: move to extend, s/l/u tag it, x extracts it, Esc ends".into());
                }
            }
            Action::CycleGroup => {
                self.pinned_group = None;
                self.group_pick = self.group_pick.wrapping_add(1);
                let s = &*cx.session;
                if let (Some(n), Some(g)) = (self.selected_node(s), self.highlight_group(s)) {
                    let total = Self::group_cycle(s, n).len();
                    *cx.message = Some(format!(
                        "highlighting group #{g} ({} of {total} for this node)",
                        self.group_pick % total.max(1) + 1
                    ));
                }
            }
            Action::MoreHops => self.hops = (self.hops + 1).min(6),
            Action::FewerHops => self.hops = self.hops.saturating_sub(1).max(1),
            Action::Jump => {
                if *cx.focus == Pane::Graph
                    && let Some(n) = self.graph_target()
                {
                    if self.reveal(cx.session, n) {
                        cx.details.reset();
                    }
                    self.graph_cursor = usize::MAX;
                }
            }
            _ => return false,
        }
        true
    }

    fn expand_all(&mut self, a: Action, s: &mut Session) {
        let item = self.current_item(s);
        if a == Action::CollapseAll {
            s.tree.set_expanded_below(0, false);
            // Keep the cursor on the top-level scope that held it.
            self.tree.clamp(s.tree.rows.len());
        } else {
            let scope = match item {
                Some(Item::Scope(k)) => k,
                _ => 0,
            };
            s.tree.scopes[scope].expanded = true;
            s.tree.set_expanded_below(scope, true);
        }
        if let Some(it) = item
            && let Some(r) = s.tree.rows.iter().position(|r| r.item == it)
        {
            self.tree.cursor = r;
        }
    }

    /// Collapses scope `p` and puts the cursor on it.
    fn collapse_to(&mut self, s: &mut Session, p: usize) {
        s.tree.scopes[p].expanded = false;
        s.tree.refresh();
        if let Some(r) = s.tree.rows.iter().position(|r| r.item == Item::Scope(p)) {
            self.tree.cursor = r;
        }
    }

    fn toggle(&mut self, a: Action, cx: Cx) {
        let s = cx.session;
        let Some(item) = self.current_item(s) else {
            return;
        };
        match item {
            Item::Scope(k) => {
                let open = s.tree.scopes[k].expanded;
                match a {
                    Action::Toggle => s.tree.scopes[k].expanded = !open,
                    Action::Expand => s.tree.scopes[k].expanded = true,
                    Action::Collapse if open => s.tree.scopes[k].expanded = false,
                    Action::Collapse => {
                        if let Some(p) = s.tree.scopes[k].parent.filter(|p| *p != 0) {
                            self.collapse_to(s, p);
                            return;
                        }
                    }
                    _ => {}
                }
                s.tree.refresh();
            }
            Item::Node(i) => {
                if a == Action::Collapse {
                    let p = s.tree.node_scope[i];
                    if p != 0 {
                        self.collapse_to(s, p);
                    }
                } else if a == Action::Toggle {
                    *cx.focus = Pane::Graph;
                    self.graph_cursor = usize::MAX;
                }
            }
        }
    }

    fn tag(&mut self, tag: Option<Tag>, cx: Cx) {
        let range = self.range_nodes(cx.session);
        let item = self.current_item(cx.session);
        let s = cx.session;
        let msg = if !range.is_empty() {
            self.range_anchor = None;
            s.set_tags(&range, tag)
        } else {
            match item {
                Some(Item::Node(i)) => s.set_tags(&[i], tag),
                Some(Item::Scope(k)) => match (&s.tree.scopes[k].pattern, s.tree.scopes[k].kind) {
                    (Some(p), ScopeKind::Named) => {
                        let p = p.clone();
                        s.set_pattern(&p, tag)
                    }
                    _ => {
                        let nodes = s.tree.nodes_under(k);
                        s.set_tags(&nodes, tag)
                    }
                },
                None => return,
            }
        };
        *cx.message = Some(msg);
    }

    // ------------------------------------------------------------------ drawing

    /// Draws the tree into `area`; `hits` are the last search's matches (shown in yellow).
    pub fn draw_tree(&mut self, f: &mut Frame, area: Rect, hits: &[Hit], cx: &mut DrawCx) {
        let s = cx.session;
        let focused = cx.focus == Pane::List;
        let range = self.range_rows(s);
        let title = match &self.range_anchor {
            Some(_) => format!(
                " Nodes {} · range {} nodes ",
                s.nodes.len(),
                self.range_nodes(s).len()
            ),
            None => format!(" Nodes {} ", s.nodes.len()),
        };
        let title = match cx.node_errors {
            Some(e) => format!(
                "{title}· diff SQNR: red < 10 dB, yellow < {:.0} dB, green exact ",
                e.threshold
            ),
            None => title,
        };
        let block = pane_block(title, focused);
        let inner = block.inner(area);
        f.render_widget(block, area);
        let h = inner.height as usize;
        *cx.page = h;
        self.tree.layout(s.tree.rows.len(), h, area, cx.areas);
        let cols = Columns::new(inner.width as usize);
        let rc = RowCx {
            s,
            cols,
            hl_nodes: cx
                .highlight
                .and_then(|g| s.group_nodes.get(g))
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            hit_nodes: hits.iter().map(|h| h.node).collect(),
            errors: cx.node_errors,
        };
        let mut lines = Vec::with_capacity(h);
        for (k, row) in s
            .tree
            .rows
            .iter()
            .enumerate()
            .skip(self.tree.offset)
            .take(h)
        {
            let indent = "  ".repeat((row.depth as usize).min(10));
            let spans = match row.item {
                Item::Scope(sc) => rc.scope_row(sc, indent),
                Item::Node(i) => rc.node_row(i, indent),
            };
            let mut line = Line::from(spans);
            if let Some((lo, hi)) = range
                && k >= lo
                && k <= hi
            {
                line = line.style(theme::range());
            }
            if k == self.tree.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
    }

    /// The neighbourhood layout of `node`, cached across frames.
    fn graph_view(&mut self, s: &Session, node: usize, width: u16, compact: bool) -> &GraphView {
        let key = (node, self.hops, width, compact);
        if self.graph_cache.as_ref().is_some_and(|(k, _)| *k != key) {
            self.graph_cache = None;
        }
        let (_, v) = self
            .graph_cache
            .get_or_insert_with(|| (key, graph::layout(s, node, key.1, width, compact)));
        v
    }

    /// Draws the neighbourhood graph of the selected node into `area`.
    pub fn draw_graph(&mut self, f: &mut Frame, area: Rect, cx: &mut DrawCx) {
        let s = cx.session;
        let focused = cx.focus == Pane::Graph;
        let block = pane_block(format!(" Graph ±{} ", self.hops), focused);
        let inner = block.inner(area);
        f.render_widget(block, area);
        cx.areas.graph = area;
        let Some(sel) = self.selected_node(s) else {
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
        let hl_nodes: Vec<usize> = cx
            .highlight
            .and_then(|g| s.group_nodes.get(g).cloned())
            .unwrap_or_default();
        let graph_cursor = self.graph_cursor;
        let view = self.graph_view(s, sel, inner.width, inner.height < 16);
        let cursor = if graph_cursor < view.order.len() {
            graph_cursor
        } else {
            view.order.iter().position(|&n| n == sel).unwrap_or(0)
        };
        let cursor_node = view.order.get(cursor).copied();
        let top = graph_top(view, cursor_node, focused, inner.height);
        let paint = Paint {
            view,
            sel,
            hl_nodes: &hl_nodes,
            cursor_node: cursor_node.filter(|_| focused),
            errors: cx.node_errors,
        };
        let h = inner.height as i32;
        let lines: Vec<Line> = (top..(top + h).min(view.height as i32))
            .map(|y| paint.row(y as usize))
            .collect();
        cx.areas.graph_boxes = graph_boxes(view, inner, top);
        f.render_widget(Paragraph::new(lines), inner);
        self.graph_cursor = cursor;
    }
}

/// The first canvas row shown: the focused (or selected) box centred vertically.
fn graph_top(view: &GraphView, cursor_node: Option<usize>, focused: bool, height: u16) -> i32 {
    let sel_y = view.selected.map(|k| view.box_y[k]).unwrap_or(0) as i32;
    let focus_y = if focused {
        cursor_node
            .and_then(|n| view.nodes.iter().position(|g| g.kind == GKind::Node(n)))
            .map(|k| view.box_y[k] as i32)
            .unwrap_or(sel_y)
    } else {
        sel_y
    };
    let h = height as i32;
    let top = (focus_y + view.box_h as i32 / 2 - h / 2).max(0);
    top.min((view.height as i32 - h).max(0))
}

/// Screen rectangles of the node boxes shown, for mouse clicks.
fn graph_boxes(view: &GraphView, inner: Rect, top: i32) -> Vec<(Rect, usize)> {
    let h = inner.height as i32;
    let mut boxes = Vec::new();
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
    boxes
}

/// Styles canvas cells of the graph.
struct Paint<'a> {
    view: &'a GraphView,
    sel: usize,
    hl_nodes: &'a [usize],
    /// The graph cursor's node while the graph has the focus.
    cursor_node: Option<usize>,
    /// A finished comparison's per-node error: boxes take its colour.
    errors: Option<&'a super::NodeErrors>,
}

impl Paint<'_> {
    fn style(&self, cell: Cell) -> Style {
        match cell {
            Cell::Empty => Style::default(),
            Cell::Line => theme::dim(),
            Cell::Label => Style::default().fg(Color::Gray),
            Cell::Box(k) => {
                let g = &self.view.nodes[k];
                let st = match &g.kind {
                    GKind::Node(n) if *n == self.sel => Style::default()
                        .fg(Color::Yellow)
                        .add_modifier(Modifier::BOLD),
                    GKind::Node(n) if self.hl_nodes.binary_search(n).is_ok() => theme::group(),
                    GKind::Node(n) => match self.errors.and_then(|e| Some((*e.sqnr.get(n)?, e))) {
                        Some((db, e)) => crate::tui::compare::error_style(Some(db), e.threshold),
                        None => Style::default().fg(Color::White),
                    },
                    GKind::Input(_) => theme::ok(),
                    GKind::Output(_) => Style::default().fg(Color::LightRed),
                    _ => theme::dim(),
                };
                if matches!(g.kind, GKind::Node(n) if Some(n) == self.cursor_node) {
                    st.add_modifier(Modifier::REVERSED)
                } else {
                    st
                }
            }
        }
    }

    /// One canvas row as runs of equally styled characters.
    fn row(&self, y: usize) -> Line<'static> {
        let mut spans: Vec<Span> = Vec::new();
        let row = &self.view.chars[y];
        let cells = &self.view.cells[y];
        let mut run = String::new();
        let mut run_style = Style::default();
        for x in 0..self.view.width as usize {
            let style = self.style(cells[x]);
            if style != run_style && !run.is_empty() {
                spans.push(Span::styled(std::mem::take(&mut run), run_style));
            }
            run_style = style;
            run.push(row[x]);
        }
        if !run.is_empty() {
            spans.push(Span::styled(run, run_style));
        }
        Line::from(spans)
    }
}

/// Column widths of the tree: what fits shows, narrow panes drop shapes, then params.
#[derive(Clone, Copy)]
struct Columns {
    w: usize,
    op: usize,
    shape: usize,
    params: usize,
    marks: usize,
    name: usize,
}

impl Columns {
    fn new(w: usize) -> Self {
        let op = 11usize;
        let shape = if w >= 62 { 16 } else { 0 };
        let params = if w >= 50 { 7 } else { 0 };
        let marks = 3usize;
        Columns {
            w,
            op,
            shape,
            params,
            marks,
            name: w.saturating_sub(op + shape + params + marks),
        }
    }
}

/// What tree rows are drawn with.
struct RowCx<'a> {
    s: &'a Session,
    cols: Columns,
    hl_nodes: &'a [usize],
    hit_nodes: std::collections::HashSet<usize>,
    /// A finished comparison's per-node error: node names take its colour.
    errors: Option<&'a super::NodeErrors>,
}

impl RowCx<'_> {
    fn scope_row(&self, sc: usize, indent: String) -> Vec<Span<'static>> {
        let s = self.s;
        let (w, marks_w) = (self.cols.w, self.cols.marks);
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
        let room = w.saturating_sub(indent.chars().count() + 2 + count.chars().count() + marks_w);
        let label = fit(&scope.label, room);
        let used = indent.chars().count() + 2 + label.chars().count() + count.chars().count();
        let mut spans = vec![
            Span::raw(indent),
            Span::styled(arrow, theme::accent()),
            Span::styled(label, label_style),
            Span::styled(count, theme::dim()),
        ];
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
        spans
    }

    fn node_row(&self, i: usize, indent: String) -> Vec<Span<'static>> {
        let s = self.s;
        let c = self.cols;
        let n = &s.nodes[i];
        let name_room = c.name.saturating_sub(indent.chars().count() + 2);
        let bullet = if self.hl_nodes.binary_search(&i).is_ok() {
            Span::styled("● ", theme::group())
        } else {
            Span::styled("· ", theme::dim())
        };
        let error = self
            .errors
            .and_then(|e| Some((*e.sqnr.get(&i)?, e.threshold)));
        let name_style = match error {
            _ if self.hit_nodes.contains(&i) => Style::default().fg(Color::Yellow),
            Some((db, threshold)) => crate::tui::compare::error_style(Some(db), threshold),
            None => Style::default(),
        };
        let full = match &s.tree.lifted[i] {
            Some(l) => format!("{l}/{}", n.leaf),
            None => n.leaf.clone(),
        };
        let label = fit(&full, name_room);
        let pad = name_room.saturating_sub(label.chars().count());
        let op_w = c.op;
        let mut spans = vec![
            Span::raw(indent),
            bullet,
            Span::styled(label, name_style),
            Span::raw(" ".repeat(pad)),
            Span::styled(format!("{:<op_w$}", fit(&n.op, op_w - 1)), theme::op()),
        ];
        if c.shape > 0 {
            let shape_w = c.shape;
            spans.push(Span::styled(
                format!("{:<shape_w$}", fit(&n.out_shape, shape_w - 1)),
                theme::dim(),
            ));
        }
        if c.params > 0 {
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
        spans
    }
}
