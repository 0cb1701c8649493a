//! The application state and its event handling, with no terminal in sight: keys and mouse
//! events go in through [`App::handle_key`] / [`App::handle_mouse`], background results
//! through [`App::tick`], and [`super::ui::draw`] renders the state. Tests drive it directly.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

use crate::jobs::{Job, JobEvent};
use crate::model::InputPins;
use crate::tags::Tag;

use super::dialog::{
    Boundary, ExtractDialog, Outcome, Prompt, PruneDialog, QuantizeDialog, TextInput,
};
use super::engines;
use super::graph::{self, GraphView};
use super::jobs::{JobEntry, JobKind, JobOutcome};
use super::keymap::{Action, Ctx, Key, KeyMap, Resolve};
use super::search::{self, Hit};
use super::session::{self, Session};
use super::tree::{Item, ScopeKind};
use super::worker::{Reply, Request, TensorStats, Worker};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Nodes,
    Groups,
    Diagnostics,
    Jobs,
}

impl View {
    pub const ALL: [View; 4] = [View::Nodes, View::Groups, View::Diagnostics, View::Jobs];
    pub fn title(self) -> &'static str {
        match self {
            View::Nodes => "Nodes",
            View::Groups => "Groups",
            View::Diagnostics => "Diagnostics",
            View::Jobs => "Jobs",
        }
    }
}

/// Focusable panes. Outside the Nodes view, `List` is the left list and `Details` the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    List,
    Graph,
    Details,
}

pub enum Overlay {
    Help { scroll: u16 },
    Prune(PruneDialog),
    Quantize(QuantizeDialog),
    Extract(ExtractDialog),
    SaveAs(Prompt),
    ConfirmQuit,
}

/// The `/` prompt while it is open.
pub struct SearchInput {
    pub input: TextInput,
    pub hits: Vec<Hit>,
    pub sel: usize,
}

/// A model being loaded in the background.
pub struct Loading {
    pub job: Job<Session>,
    pub what: String,
    pub phase: String,
    pub started: Instant,
}

/// Screen areas from the last draw, for mouse hit-testing.
#[derive(Clone, Debug, Default)]
pub struct Areas {
    pub tabs: Vec<(Rect, View)>,
    pub list: Rect,
    pub graph: Rect,
    pub details: Rect,
    /// Graph boxes on screen and their nodes.
    pub graph_boxes: Vec<(Rect, usize)>,
    /// First list row shown and the list's top y.
    pub list_offset: usize,
}

/// Scroll state of a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListPos {
    pub cursor: usize,
    pub offset: usize,
}

impl ListPos {
    pub fn clamp(&mut self, len: usize) {
        if len == 0 {
            self.cursor = 0;
        } else if self.cursor >= len {
            self.cursor = len - 1;
        }
    }
    /// Keeps the cursor visible in `height` rows.
    pub fn scroll_into_view(&mut self, height: usize) {
        let h = height.max(1);
        if self.cursor < self.offset {
            self.offset = self.cursor;
        } else if self.cursor >= self.offset + h {
            self.offset = self.cursor + 1 - h;
        }
    }
}

pub struct App {
    pub session: Option<Session>,
    pub loading: Option<Loading>,
    pub load_error: Option<String>,
    pub pins: InputPins,
    pub view: View,
    pub focus: Pane,
    pub tree: ListPos,
    pub graph_cursor: usize,
    pub hops: usize,
    pub details_scroll: u16,
    pub groups: ListPos,
    pub diags: ListPos,
    pub jobs_pos: ListPos,
    pub jobs: Vec<JobEntry>,
    pub overlay: Option<Overlay>,
    pub search: Option<SearchInput>,
    pub hits: Vec<Hit>,
    pub hit_index: usize,
    pub last_query: String,
    pub range_anchor: Option<Item>,
    pub pinned_group: Option<usize>,
    pub group_pick: usize,
    pub message: Option<String>,
    pub keymap: KeyMap,
    pending: Vec<Key>,
    pub should_quit: bool,
    worker: Option<Worker>,
    pub stats: HashMap<String, Result<TensorStats, super::worker::StatsError>>,
    stats_pending: HashSet<String>,
    pub importance: HashMap<usize, Vec<f64>>,
    importance_requested: bool,
    /// When set, every elapsed time shows this (deterministic snapshots).
    pub frozen_clock: Option<Duration>,
    pub areas: Areas,
    /// Rows of the focused list on screen, for page moves.
    pub page: usize,
    /// Cached neighbourhood layout: (node, hops, width, compact).
    pub graph_cache: Option<((usize, usize, u16, bool), GraphView)>,
}

fn ctrl(k: &KeyEvent) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL)
}

impl App {
    fn blank(keymap: KeyMap) -> Self {
        App {
            session: None,
            loading: None,
            load_error: None,
            pins: InputPins::new(),
            view: View::Nodes,
            focus: Pane::List,
            tree: ListPos::default(),
            graph_cursor: 0,
            hops: 2,
            details_scroll: 0,
            groups: ListPos::default(),
            diags: ListPos::default(),
            jobs_pos: ListPos::default(),
            jobs: Vec::new(),
            overlay: None,
            search: None,
            hits: Vec::new(),
            hit_index: 0,
            last_query: String::new(),
            range_anchor: None,
            pinned_group: None,
            group_pick: 0,
            message: None,
            keymap,
            pending: Vec::new(),
            should_quit: false,
            worker: None,
            stats: HashMap::new(),
            stats_pending: HashSet::new(),
            importance: HashMap::new(),
            importance_requested: false,
            frozen_clock: None,
            areas: Areas::default(),
            page: 10,
            graph_cache: None,
        }
    }

    /// An app over an already loaded session.
    pub fn new(session: Session, keymap: KeyMap) -> Self {
        let mut app = Self::blank(keymap);
        app.install(session);
        app
    }

    /// An app that loads `path` (or the demo) in the background, showing progress meanwhile.
    pub fn loading(
        path: Option<PathBuf>,
        pins: InputPins,
        tags: Option<PathBuf>,
        keymap: KeyMap,
    ) -> Self {
        let mut app = Self::blank(keymap);
        app.pins = pins;
        app.start_load(path, tags);
        app
    }

    fn start_load(&mut self, path: Option<PathBuf>, tags: Option<PathBuf>) {
        let what = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded demo model".into());
        let pins = self.pins.clone();
        let job = Job::spawn(move |p| session::load(path.as_deref(), &pins, tags.as_deref(), p));
        self.loading = Some(Loading {
            job,
            what,
            phase: "starting".into(),
            started: Instant::now(),
        });
        self.load_error = None;
    }

    fn install(&mut self, s: Session) {
        self.worker = Some(Worker::start(s.analysis.clone(), s.channels.clone()));
        self.stats.clear();
        self.stats_pending.clear();
        self.importance.clear();
        self.importance_requested = false;
        self.tree = ListPos::default();
        self.groups = ListPos::default();
        self.diags = ListPos::default();
        self.hits.clear();
        self.range_anchor = None;
        self.pinned_group = None;
        self.graph_cache = None;
        self.details_scroll = 0;
        // Start on the first real node rather than a scope header.
        if let Some(first) = s
            .tree
            .rows
            .iter()
            .position(|r| matches!(r.item, Item::Node(_)))
            && first < 12
        {
            self.tree.cursor = first;
        }
        self.session = Some(s);
    }

    // ---------------------------------------------------------------- queries

    pub fn elapsed(&self, since: Instant) -> Duration {
        self.frozen_clock.unwrap_or_else(|| since.elapsed())
    }

    /// The tree row under the cursor.
    pub fn current_item(&self) -> Option<Item> {
        let s = self.session.as_ref()?;
        s.tree.rows.get(self.tree.cursor).map(|r| r.item)
    }

    /// The node the Nodes view is about.
    pub fn selected_node(&self) -> Option<usize> {
        match self.current_item()? {
            Item::Node(i) => Some(i),
            Item::Scope(_) => None,
        }
    }

    /// Channel groups of a node in the order `c` cycles them: produced groups first.
    pub fn node_group_cycle(&self, node: usize) -> Vec<usize> {
        let Some(s) = &self.session else {
            return Vec::new();
        };
        let mut v = s.produced[node].clone();
        for &g in &s.node_groups[node] {
            if !v.contains(&g) {
                v.push(g);
            }
        }
        v
    }

    /// The group highlighted everywhere: the Groups cursor, a pinned group, or the selected
    /// node's current group.
    pub fn highlight_group(&self) -> Option<usize> {
        let s = self.session.as_ref()?;
        if self.view == View::Groups {
            return (self.groups.cursor < s.channels.groups.len()).then_some(self.groups.cursor);
        }
        if let Some(g) = self.pinned_group {
            return Some(g);
        }
        let n = self.selected_node()?;
        let cyc = self.node_group_cycle(n);
        if cyc.is_empty() {
            None
        } else {
            Some(cyc[self.group_pick % cyc.len()])
        }
    }

    /// Nodes of the range selection (or nothing when no range is active), in execution order.
    pub fn range_nodes(&self) -> Vec<usize> {
        let (Some(s), Some(anchor)) = (&self.session, self.range_anchor) else {
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
    pub fn range_rows(&self) -> Option<(usize, usize)> {
        let s = self.session.as_ref()?;
        let a = s
            .tree
            .rows
            .iter()
            .position(|r| Some(r.item) == self.range_anchor)?;
        Some((a.min(self.tree.cursor), a.max(self.tree.cursor)))
    }

    pub fn contexts(&self) -> Vec<Ctx> {
        match (self.view, self.focus) {
            (View::Nodes, Pane::List) => vec![Ctx::Tree, Ctx::List, Ctx::Global],
            (View::Nodes, Pane::Graph) => vec![Ctx::Graph, Ctx::List, Ctx::Global],
            (_, Pane::Details) => vec![Ctx::Details, Ctx::Global],
            (View::Groups, _) => vec![Ctx::Groups, Ctx::List, Ctx::Global],
            (View::Diagnostics, _) => vec![Ctx::Diagnostics, Ctx::List, Ctx::Global],
            (View::Jobs, _) => vec![Ctx::Jobs, Ctx::List, Ctx::Global],
        }
    }

    pub fn panes(&self) -> Vec<Pane> {
        match self.view {
            View::Nodes => vec![Pane::List, Pane::Graph, Pane::Details],
            _ => vec![Pane::List, Pane::Details],
        }
    }

    /// The neighbourhood layout of `node`, cached across frames.
    pub fn graph_view(&mut self, node: usize, width: u16, compact: bool) -> Option<&GraphView> {
        let key = (node, self.hops, width, compact);
        if self.graph_cache.as_ref().is_none_or(|(k, _)| *k != key) {
            let s = self.session.as_ref()?;
            let v = graph::layout(s, node, self.hops, width, compact);
            self.graph_cache = Some((key, v));
        }
        self.graph_cache.as_ref().map(|(_, v)| v)
    }

    // ------------------------------------------------------------ background

    /// Drains background results. Returns true when something changed on screen.
    pub fn tick(&mut self) -> bool {
        let mut changed = false;
        if let Some(l) = &mut self.loading {
            while let Ok(e) = l.job.events.try_recv() {
                if let JobEvent::Phase { name, .. } = e {
                    l.phase = name;
                }
                changed = true;
            }
            if l.job.is_finished() {
                if let Some(l) = self.loading.take() {
                    match l.job.join() {
                        Ok(s) => {
                            self.install(s);
                            self.view = View::Nodes;
                            self.focus = Pane::List;
                        }
                        Err(e) => self.load_error = Some(format!("cannot open {}: {e}", l.what)),
                    }
                }
                changed = true;
            }
        }
        for j in &mut self.jobs {
            if j.poll() {
                changed = true;
            }
        }
        if let Some(w) = &self.worker {
            while let Ok(r) = w.rx.try_recv() {
                changed = true;
                match r {
                    Reply::Stats(t, v) => {
                        self.stats_pending.remove(&t);
                        self.stats.insert(t, v);
                    }
                    Reply::Importance(g, v) => {
                        self.importance.insert(g, v);
                    }
                }
            }
        }
        changed
    }

    /// True while background work the screen is waiting for is outstanding.
    pub fn busy(&self) -> bool {
        self.loading.is_some()
            || !self.stats_pending.is_empty()
            || self.jobs.iter().any(|j| j.is_running())
    }

    /// Waits (up to `timeout`) until loading, requested statistics and jobs are done — for
    /// tests and captures.
    pub fn settle(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            let importance_done = !self.importance_requested
                || self
                    .session
                    .as_ref()
                    .is_none_or(|s| self.importance.len() >= s.channels.groups.len());
            if (!self.busy() && importance_done) || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the worker for a tensor's statistics unless known or pending.
    pub fn request_stats(&mut self, tensor: &str) {
        if self.stats.contains_key(tensor) || self.stats_pending.contains(tensor) {
            return;
        }
        if let Some(w) = &self.worker {
            self.stats_pending.insert(tensor.to_string());
            w.send(Request::Stats(tensor.to_string()));
        }
    }

    pub fn request_importance(&mut self) {
        if self.importance_requested {
            return;
        }
        if let (Some(w), Some(s)) = (&self.worker, &self.session) {
            // Prunable groups first: those are the ones whose ranking matters.
            let mut ids: Vec<usize> = (0..s.channels.groups.len()).collect();
            ids.sort_by_key(|&g| (s.group_status[g].locks.is_empty() as u8 ^ 1, g));
            w.send(Request::Importance(ids));
            self.importance_requested = true;
        }
    }

    // ------------------------------------------------------------------ keys

    /// Handles one key press.
    pub fn handle_key(&mut self, k: KeyEvent) {
        if k.kind == crossterm::event::KeyEventKind::Release {
            return;
        }
        self.message = None;
        if self.session.is_none() {
            if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                || (ctrl(&k) && k.code == KeyCode::Char('c'))
            {
                if let Some(l) = &self.loading {
                    l.job.cancel();
                }
                self.should_quit = true;
            }
            return;
        }
        if self.search.is_some() {
            self.search_key(&k);
            return;
        }
        if self.overlay.is_some() {
            self.overlay_key(&k);
            return;
        }
        let key = Key::from_event(&k);
        self.pending.push(key);
        let ctxs = self.contexts();
        match self.keymap.resolve(&ctxs, &self.pending) {
            Resolve::Action(a) => {
                self.pending.clear();
                self.act(a);
            }
            Resolve::Pending => {}
            Resolve::None => {
                let retry = self.pending.len() > 1;
                self.pending.clear();
                if retry {
                    self.pending.push(key);
                    match self.keymap.resolve(&ctxs, &self.pending) {
                        Resolve::Action(a) => {
                            self.pending.clear();
                            self.act(a);
                        }
                        Resolve::Pending => {}
                        Resolve::None => self.pending.clear(),
                    }
                }
            }
        }
    }

    fn search_key(&mut self, k: &KeyEvent) {
        let Some(si) = &mut self.search else { return };
        match k.code {
            KeyCode::Esc => self.search = None,
            KeyCode::Enter => {
                let si = self.search.take().expect("search is open");
                self.last_query = si.input.text.clone();
                self.hits = si.hits;
                self.hit_index = si.sel.min(self.hits.len().saturating_sub(1));
                if self.hits.is_empty() {
                    self.message = Some(format!("no match for '{}'", self.last_query));
                } else {
                    self.jump_to_hit();
                }
            }
            KeyCode::Down | KeyCode::Tab => {
                if !si.hits.is_empty() {
                    si.sel = (si.sel + 1) % si.hits.len();
                }
            }
            KeyCode::Char('n') if ctrl(k) => {
                if !si.hits.is_empty() {
                    si.sel = (si.sel + 1) % si.hits.len();
                }
            }
            KeyCode::Up | KeyCode::BackTab => {
                if !si.hits.is_empty() {
                    si.sel = (si.sel + si.hits.len() - 1) % si.hits.len();
                }
            }
            KeyCode::Char('p') if ctrl(k) => {
                if !si.hits.is_empty() {
                    si.sel = (si.sel + si.hits.len() - 1) % si.hits.len();
                }
            }
            _ => {
                if si.input.handle(k) {
                    if let Some(s) = &self.session {
                        si.hits = search::search(s, &si.input.text);
                    }
                    si.sel = 0;
                }
            }
        }
    }

    fn jump_to_hit(&mut self) {
        if let Some(h) = self.hits.get(self.hit_index) {
            let node = h.node;
            self.view = View::Nodes;
            self.focus = Pane::List;
            self.reveal(node);
            self.message = Some(format!(
                "match {}/{} for '{}' (n/N for more)",
                self.hit_index + 1,
                self.hits.len(),
                self.last_query
            ));
        }
    }

    /// Moves the tree cursor to a node, opening its scopes.
    pub fn reveal(&mut self, node: usize) {
        if let Some(s) = &mut self.session
            && let Some(row) = s.tree.reveal(node)
        {
            self.tree.cursor = row;
            self.group_pick = 0;
            self.details_scroll = 0;
        }
    }

    fn overlay_key(&mut self, k: &KeyEvent) {
        let Some(ov) = &mut self.overlay else { return };
        match ov {
            Overlay::Help { scroll } => match k.code {
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::F(1) => {
                    self.overlay = None
                }
                KeyCode::Char('j') | KeyCode::Down => *scroll = scroll.saturating_add(1),
                KeyCode::Char('k') | KeyCode::Up => *scroll = scroll.saturating_sub(1),
                KeyCode::Char('d') if ctrl(k) => *scroll = scroll.saturating_add(10),
                KeyCode::Char('u') if ctrl(k) => *scroll = scroll.saturating_sub(10),
                KeyCode::PageDown => *scroll = scroll.saturating_add(10),
                KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
                _ => {}
            },
            Overlay::ConfirmQuit => match k.code {
                KeyCode::Char('w') => {
                    self.overlay = None;
                    if self.save_tags(None) {
                        self.should_quit = true;
                    }
                }
                KeyCode::Char('q') | KeyCode::Char('y') | KeyCode::Char('Q') => {
                    self.should_quit = true
                }
                KeyCode::Char('c') if ctrl(k) => self.should_quit = true,
                KeyCode::Esc | KeyCode::Char('n') => self.overlay = None,
                _ => {}
            },
            Overlay::SaveAs(p) => match p.handle(k) {
                Outcome::Close => self.overlay = None,
                Outcome::Submit => {
                    let path = PathBuf::from(p.input.text.trim());
                    self.overlay = None;
                    self.save_tags(Some(&path));
                }
                Outcome::Stay => {}
            },
            Overlay::Prune(d) => match d.handle(k) {
                Outcome::Close => self.overlay = None,
                Outcome::Submit => {
                    let d = d.clone();
                    self.overlay = None;
                    self.start_prune(&d);
                }
                Outcome::Stay => {}
            },
            Overlay::Quantize(d) => match d.handle(k) {
                Outcome::Close => self.overlay = None,
                Outcome::Submit => {
                    if engines::quant_available() {
                        let d = d.clone();
                        self.overlay = None;
                        self.start_quantize(&d);
                    } else {
                        self.message = Some(engines::QUANT_MISSING.to_string());
                    }
                }
                Outcome::Stay => {}
            },
            Overlay::Extract(d) => match d.handle(k) {
                Outcome::Close => self.overlay = None,
                Outcome::Submit => {
                    if engines::extract_available() {
                        let d = d.clone();
                        self.overlay = None;
                        self.range_anchor = None;
                        self.start_extract(&d);
                    } else {
                        self.message = Some(engines::EXTRACT_MISSING.to_string());
                    }
                }
                Outcome::Stay => {}
            },
        }
    }

    // --------------------------------------------------------------- actions

    fn list_len(&self) -> usize {
        let Some(s) = &self.session else { return 0 };
        match self.view {
            View::Nodes => s.tree.rows.len(),
            View::Groups => s.channels.groups.len(),
            View::Diagnostics => s.diagnostics.len(),
            View::Jobs => self.jobs.len(),
        }
    }

    fn move_list(&mut self, a: Action) {
        let page = self.page.max(2);
        if self.focus == Pane::Details {
            self.details_scroll = match a {
                Action::Down => self.details_scroll.saturating_add(1),
                Action::Up => self.details_scroll.saturating_sub(1),
                Action::Top => 0,
                Action::Bottom => u16::MAX / 2,
                Action::HalfDown | Action::PageDown => {
                    self.details_scroll.saturating_add(page as u16 / 2)
                }
                Action::HalfUp | Action::PageUp => {
                    self.details_scroll.saturating_sub(page as u16 / 2)
                }
                _ => self.details_scroll,
            };
            return;
        }
        if self.view == View::Nodes && self.focus == Pane::Graph {
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
            return;
        }
        let len = self.list_len();
        let pos = match self.view {
            View::Nodes => &mut self.tree,
            View::Groups => &mut self.groups,
            View::Diagnostics => &mut self.diags,
            View::Jobs => &mut self.jobs_pos,
        };
        if len == 0 {
            return;
        }
        pos.cursor = match a {
            Action::Down => (pos.cursor + 1).min(len - 1),
            Action::Up => pos.cursor.saturating_sub(1),
            Action::Top => 0,
            Action::Bottom => len - 1,
            Action::HalfDown => (pos.cursor + page / 2).min(len - 1),
            Action::HalfUp => pos.cursor.saturating_sub(page / 2),
            Action::PageDown => (pos.cursor + page).min(len - 1),
            Action::PageUp => pos.cursor.saturating_sub(page),
            _ => pos.cursor,
        };
        if self.view == View::Nodes {
            self.group_pick = 0;
            self.details_scroll = 0;
            self.graph_cursor = usize::MAX;
        }
        if self.view != View::Nodes {
            self.details_scroll = 0;
        }
    }

    /// Runs an action (what a key is bound to).
    pub fn act(&mut self, a: Action) {
        if self.session.is_none() {
            if a == Action::Quit {
                self.should_quit = true;
            }
            return;
        }
        match a {
            Action::Quit => {
                if self.session.as_ref().is_some_and(|s| s.tags_dirty) {
                    self.overlay = Some(Overlay::ConfirmQuit);
                } else {
                    self.should_quit = true;
                }
            }
            Action::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Action::Back => self.back(),
            Action::ViewNodes => self.set_view(View::Nodes),
            Action::ViewGroups => self.set_view(View::Groups),
            Action::ViewDiagnostics => self.set_view(View::Diagnostics),
            Action::ViewJobs => self.set_view(View::Jobs),
            Action::NextView | Action::PrevView => {
                let i = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
                let n = View::ALL.len();
                let j = if a == Action::NextView {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.set_view(View::ALL[j]);
            }
            Action::FocusNext | Action::FocusPrev => {
                let panes = self.panes();
                let i = panes.iter().position(|p| *p == self.focus).unwrap_or(0);
                let n = panes.len();
                self.focus = panes[if a == Action::FocusNext {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }];
                if self.focus == Pane::Graph {
                    self.graph_cursor = usize::MAX;
                }
            }
            Action::Search => {
                self.search = Some(SearchInput {
                    input: TextInput::default(),
                    hits: Vec::new(),
                    sel: 0,
                })
            }
            Action::SearchNext | Action::SearchPrev => {
                if self.hits.is_empty() {
                    self.message = Some("no search yet: press / to search".into());
                } else {
                    let n = self.hits.len();
                    self.hit_index = if a == Action::SearchNext {
                        (self.hit_index + 1) % n
                    } else {
                        (self.hit_index + n - 1) % n
                    };
                    self.jump_to_hit();
                }
            }
            Action::SaveTags => {
                self.save_tags(None);
            }
            Action::Prune => {
                let out = self.default_output("pruned");
                self.overlay = Some(Overlay::Prune(PruneDialog::new(out)));
            }
            Action::Quantize => {
                let out = self.default_output("int8");
                self.overlay = Some(Overlay::Quantize(QuantizeDialog::new(out)));
            }
            Action::DetailsDown => self.details_scroll = self.details_scroll.saturating_add(3),
            Action::DetailsUp => self.details_scroll = self.details_scroll.saturating_sub(3),
            Action::Down
            | Action::Up
            | Action::Top
            | Action::Bottom
            | Action::HalfDown
            | Action::HalfUp
            | Action::PageDown
            | Action::PageUp => self.move_list(a),
            Action::Toggle | Action::Expand | Action::Collapse => self.tree_toggle(a),
            Action::ExpandAll | Action::CollapseAll => {
                let item = self.current_item();
                if let Some(s) = &mut self.session {
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
            }
            Action::Skip => self.tag(Some(Tag::Skip)),
            Action::Lock => self.tag(Some(Tag::Lock)),
            Action::Untag => self.tag(None),
            Action::Range => {
                if self.range_anchor.is_some() {
                    self.range_anchor = None;
                } else {
                    self.range_anchor = self.current_item();
                    self.message =
                        Some("range: move to extend, s/l/u tag it, x extracts it, Esc ends".into());
                }
            }
            Action::Extract => self.open_extract(),
            Action::CycleGroup => {
                self.pinned_group = None;
                self.group_pick = self.group_pick.wrapping_add(1);
                if let (Some(n), Some(g)) = (self.selected_node(), self.highlight_group()) {
                    let total = self.node_group_cycle(n).len();
                    self.message = Some(format!(
                        "highlighting group #{g} ({} of {total} for this node)",
                        self.group_pick % total.max(1) + 1
                    ));
                }
            }
            Action::MoreHops => self.hops = (self.hops + 1).min(6),
            Action::FewerHops => self.hops = self.hops.saturating_sub(1).max(1),
            Action::Jump => self.jump(),
            Action::ApplyFix => self.apply_fix(),
            Action::CycleTarget => {
                if let Some(s) = &mut self.session {
                    s.lint_target = engines::next_target(s.lint_target);
                    s.refresh_diagnostics();
                    self.diags.clamp(s.diagnostics.len());
                    self.message = Some(s.lint_status.clone());
                }
            }
            Action::RerunLint => {
                if let Some(s) = &mut self.session {
                    s.refresh_diagnostics();
                    self.diags.clamp(s.diagnostics.len());
                    self.message = Some(s.lint_status.clone());
                }
            }
            Action::CancelJob => {
                if let Some(j) = self.jobs.get_mut(self.jobs_pos.cursor)
                    && j.is_running()
                {
                    j.cancel();
                }
            }
            Action::OpenResult => self.open_result(),
        }
    }

    fn set_view(&mut self, v: View) {
        if v == View::Groups {
            self.request_importance();
            if let Some(g) = self.pinned_group.or_else(|| self.highlight_group()) {
                self.groups.cursor = g;
            }
        }
        self.view = v;
        self.focus = Pane::List;
        self.details_scroll = 0;
    }

    fn back(&mut self) {
        if self.range_anchor.is_some() {
            self.range_anchor = None;
        } else if self.view == View::Jobs
            && self
                .jobs
                .get(self.jobs_pos.cursor)
                .is_some_and(|j| j.is_running())
        {
            if let Some(j) = self.jobs.get_mut(self.jobs_pos.cursor) {
                j.cancel();
            }
        } else if self.focus != Pane::List {
            self.focus = Pane::List;
        } else if self.pinned_group.is_some() {
            self.pinned_group = None;
        } else if !self.hits.is_empty() {
            self.hits.clear();
        }
    }

    fn tree_toggle(&mut self, a: Action) {
        let Some(item) = self.current_item() else {
            return;
        };
        let Some(s) = &mut self.session else { return };
        match item {
            Item::Scope(k) => {
                let open = s.tree.scopes[k].expanded;
                match a {
                    Action::Toggle => s.tree.scopes[k].expanded = !open,
                    Action::Expand => s.tree.scopes[k].expanded = true,
                    Action::Collapse if open => s.tree.scopes[k].expanded = false,
                    Action::Collapse => {
                        if let Some(p) = s.tree.scopes[k].parent.filter(|p| *p != 0) {
                            s.tree.scopes[p].expanded = false;
                            s.tree.refresh();
                            if let Some(r) =
                                s.tree.rows.iter().position(|r| r.item == Item::Scope(p))
                            {
                                self.tree.cursor = r;
                            }
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
                        s.tree.scopes[p].expanded = false;
                        s.tree.refresh();
                        if let Some(r) = s.tree.rows.iter().position(|r| r.item == Item::Scope(p)) {
                            self.tree.cursor = r;
                        }
                    }
                } else if a == Action::Toggle {
                    self.focus = Pane::Graph;
                    self.graph_cursor = usize::MAX;
                }
            }
        }
    }

    fn tag(&mut self, tag: Option<Tag>) {
        let range = self.range_nodes();
        let item = self.current_item();
        let Some(s) = &mut self.session else { return };
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
        self.message = Some(msg);
    }

    /// Saves tags to `path`, the remembered path, or asks for one. True when saved.
    pub fn save_tags(&mut self, path: Option<&Path>) -> bool {
        let Some(s) = &mut self.session else {
            return false;
        };
        let target = path.map(Path::to_path_buf).or_else(|| s.tags_path.clone());
        match target {
            None => {
                let def = s.default_tags_path();
                self.overlay = Some(Overlay::SaveAs(Prompt {
                    title: "Save tags to".into(),
                    input: TextInput::new(&def.display().to_string()),
                }));
                false
            }
            Some(p) => match s.save_tags(&p) {
                Ok(()) => {
                    self.message = Some(format!(
                        "saved {} skip, {} lock tag(s) to {}",
                        s.tags.skip.len(),
                        s.tags.lock.len(),
                        p.display()
                    ));
                    true
                }
                Err(e) => {
                    self.message = Some(format!("cannot save tags: {e}"));
                    false
                }
            },
        }
    }

    fn default_output(&self, suffix: &str) -> PathBuf {
        let Some(s) = &self.session else {
            return PathBuf::from(format!("model_{suffix}.onnx"));
        };
        match &s.analysis.model.path {
            Some(p) => {
                let stem = p
                    .file_stem()
                    .map(|x| x.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.with_file_name(format!("{stem}_{suffix}.onnx"))
            }
            None => PathBuf::from(format!("pare-demo_{suffix}.onnx")),
        }
    }

    fn model_arg(&self) -> String {
        self.session
            .as_ref()
            .and_then(|s| {
                s.analysis
                    .model
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
            })
            .unwrap_or_else(|| "<demo>".into())
    }

    fn open_extract(&mut self) {
        let mut nodes = self.range_nodes();
        if nodes.is_empty() {
            match self.current_item() {
                Some(Item::Node(i)) => nodes.push(i),
                Some(Item::Scope(k)) => {
                    if let Some(s) = &self.session {
                        nodes = s.tree.nodes_under(k);
                        nodes.sort_by_key(|&i| s.nodes[i].topo);
                    }
                }
                None => return,
            }
        }
        let Some(s) = &self.session else { return };
        let (ins, outs) = s.boundary(&nodes);
        let desc = |names: Vec<String>| -> Vec<Boundary> {
            names
                .into_iter()
                .map(|n| {
                    let (dtype, shape) = s.tensor_desc(&n);
                    Boundary {
                        name: n,
                        dtype,
                        shape,
                    }
                })
                .collect()
        };
        let first = nodes
            .first()
            .map(|&i| s.nodes[i].name.clone())
            .unwrap_or_default();
        let last = nodes
            .last()
            .map(|&i| s.nodes[i].name.clone())
            .unwrap_or_default();
        let out = self.default_output("sub");
        self.overlay = Some(Overlay::Extract(ExtractDialog {
            nodes,
            first,
            last,
            inputs: desc(ins),
            outputs: desc(outs),
            field: 0,
            with_data: true,
            output: TextInput::new(&out.display().to_string()),
        }));
    }

    fn jump(&mut self) {
        match self.view {
            View::Nodes => {
                if self.focus == Pane::Graph {
                    let target = self
                        .graph_cache
                        .as_ref()
                        .and_then(|(_, v)| v.order.get(self.graph_cursor).copied());
                    if let Some(n) = target {
                        self.reveal(n);
                        self.graph_cursor = usize::MAX;
                    }
                }
            }
            View::Groups => {
                let g = self.groups.cursor;
                let first = self
                    .session
                    .as_ref()
                    .and_then(|s| s.group_nodes.get(g)?.first().copied());
                self.pinned_group = Some(g);
                self.view = View::Nodes;
                self.focus = Pane::List;
                if let Some(n) = first {
                    self.reveal(n);
                }
                self.message = Some(format!(
                    "group #{g} highlighted (● in the tree and graph); Esc clears"
                ));
            }
            View::Diagnostics => {
                let node = self
                    .session
                    .as_ref()
                    .and_then(|s| s.diagnostics.get(self.diags.cursor)?.node);
                match node {
                    Some(n) => {
                        self.view = View::Nodes;
                        self.focus = Pane::List;
                        self.reveal(n);
                    }
                    None => self.message = Some("this finding is about the whole model".into()),
                }
            }
            View::Jobs => self.open_result(),
        }
    }

    fn apply_fix(&mut self) {
        let Some(s) = &self.session else { return };
        let Some(d) = s.diagnostics.get(self.diags.cursor).cloned() else {
            return;
        };
        if !d.fixable {
            self.message = Some("no automatic fix for this finding".into());
            return;
        }
        if !engines::lint_available() {
            self.message = Some(engines::LINT_MISSING.into());
            return;
        }
        let a = s.analysis.clone();
        let node = d.node.map(|n| s.nodes[n].name.clone()).unwrap_or_default();
        let out = self.default_output("fixed");
        let req = engines::fix_request(s.lint_target, &d.rule, &out);
        let cmd = req.command_line(&self.model_arg());
        let rule = d.rule.clone();
        self.push_job(JobEntry::spawn(
            JobKind::Fix,
            format!("fix {rule} at {node}"),
            cmd,
            move |p| engines::apply_fix(&a, &req, &node, p),
        ));
    }

    /// Adds a job and shows the Jobs view.
    pub fn push_job(&mut self, j: JobEntry) {
        self.jobs.push(j);
        self.jobs_pos.cursor = self.jobs.len() - 1;
        self.view = View::Jobs;
        self.focus = Pane::List;
    }

    /// Runs `work` as a job (tests inject progress this way).
    pub fn spawn_job<F>(&mut self, kind: JobKind, title: &str, command: &str, work: F)
    where
        F: FnOnce(&crate::jobs::ChannelProgress) -> crate::Result<JobOutcome> + Send + 'static,
    {
        self.push_job(JobEntry::spawn(
            kind,
            title.to_string(),
            command.to_string(),
            work,
        ));
    }

    fn check_not_input(&self, out: &Path) -> crate::Result<()> {
        let input = self
            .session
            .as_ref()
            .and_then(|s| s.analysis.model.path.as_deref());
        crate::report::check_output(input, out)
    }

    fn start_prune(&mut self, d: &PruneDialog) {
        let Some(s) = &self.session else { return };
        let out = PathBuf::from(d.output.text.trim());
        if let Err(e) = self.check_not_input(&out) {
            self.message = Some(e.to_string());
            return;
        }
        let req = d.request(s.tags.clone());
        let tags_arg =
            if s.tags.skip.is_empty() && s.tags.lock.is_empty() && s.tags.ratio.is_empty() {
                None
            } else {
                s.tags_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or_else(|| Some("<unsaved tags>".into()))
            };
        let cmd = req.command_line(&self.model_arg(), tags_arg.as_deref());
        let a = s.analysis.clone();
        let title = format!("prune {:.0}% {}", d.ratio * 100.0, d.criterion.name());
        self.push_job(JobEntry::spawn(JobKind::Prune, title, cmd, move |p| {
            engines::prune(&a, &req, p)
        }));
    }

    fn start_quantize(&mut self, d: &QuantizeDialog) {
        let Some(s) = &self.session else { return };
        let req = d.request();
        if let Err(e) = self.check_not_input(&req.output) {
            self.message = Some(e.to_string());
            return;
        }
        let cmd = req.command_line(&self.model_arg());
        let a = s.analysis.clone();
        let title = format!(
            "quantize {} {} samples",
            req.options.calib.method.name(),
            req.options.samples
        );
        self.push_job(JobEntry::spawn(JobKind::Quantize, title, cmd, move |p| {
            engines::quantize(&a, &req, p)
        }));
    }

    fn start_extract(&mut self, d: &ExtractDialog) {
        let Some(s) = &self.session else { return };
        let req = d.request();
        if let Err(e) = self.check_not_input(&req.output) {
            self.message = Some(e.to_string());
            return;
        }
        let cmd = req.command_line(Path::new(&self.model_arg()), &s.analysis.pins);
        let a = s.analysis.clone();
        let title = format!("extract {} nodes", d.nodes.len());
        self.push_job(JobEntry::spawn(JobKind::Extract, title, cmd, move |p| {
            engines::extract(&a, &req, p)
        }));
    }

    fn open_result(&mut self) {
        let Some(j) = self.jobs.get(self.jobs_pos.cursor) else {
            return;
        };
        let Some(out) = j.outcome.as_ref().and_then(|o| {
            o.outputs
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "onnx"))
                .cloned()
        }) else {
            self.message = Some("this job has no model to open (yet)".into());
            return;
        };
        if self.session.as_ref().is_some_and(|s| s.tags_dirty) {
            self.message = Some("save or drop your tag changes first (w saves)".into());
            return;
        }
        self.session = None;
        self.worker = None;
        self.start_load(Some(out), None);
    }

    // ----------------------------------------------------------------- mouse

    pub fn handle_mouse(&mut self, m: MouseEvent) {
        if self.session.is_none() || self.overlay.is_some() || self.search.is_some() {
            return;
        }
        let inside = |r: Rect| {
            m.column >= r.x && m.column < r.x + r.width && m.row >= r.y && m.row < r.y + r.height
        };
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let down = m.kind == MouseEventKind::ScrollDown;
                if inside(self.areas.details) {
                    self.details_scroll = if down {
                        self.details_scroll.saturating_add(3)
                    } else {
                        self.details_scroll.saturating_sub(3)
                    };
                } else if inside(self.areas.list) {
                    let prev = self.focus;
                    self.focus = Pane::List;
                    for _ in 0..3 {
                        self.move_list(if down { Action::Down } else { Action::Up });
                    }
                    self.focus = prev;
                }
            }
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some((_, v)) = self.areas.tabs.iter().find(|(r, _)| inside(*r)) {
                    let v = *v;
                    self.set_view(v);
                    return;
                }
                if let Some(&(_, n)) = self.areas.graph_boxes.iter().find(|(r, _)| inside(*r)) {
                    self.reveal(n);
                    self.focus = Pane::Graph;
                    self.graph_cursor = usize::MAX;
                    return;
                }
                if inside(self.areas.list) {
                    self.focus = Pane::List;
                    // One border row above the first list row.
                    let row = (m.row - self.areas.list.y) as usize;
                    if row >= 1 {
                        let idx = self.areas.list_offset + row - 1;
                        if idx < self.list_len() {
                            let pos = match self.view {
                                View::Nodes => &mut self.tree,
                                View::Groups => &mut self.groups,
                                View::Diagnostics => &mut self.diags,
                                View::Jobs => &mut self.jobs_pos,
                            };
                            let again = pos.cursor == idx;
                            pos.cursor = idx;
                            self.details_scroll = 0;
                            if again && self.view == View::Nodes {
                                self.tree_toggle(Action::Toggle);
                            }
                        }
                    }
                } else if inside(self.areas.graph) {
                    self.focus = Pane::Graph;
                } else if inside(self.areas.details) {
                    self.focus = Pane::Details;
                }
            }
            _ => {}
        }
    }
}
