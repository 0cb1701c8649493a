//! The application state and its event handling, with no terminal in sight: keys and mouse
//! events go in through [`App::handle_key`] / [`App::handle_mouse`], background results
//! through [`App::tick`], and [`App::draw`] renders the state. Tests drive it directly.
//!
//! `App` is the router of a gitui-style component tree: the views ([`NodesView`],
//! [`GroupsView`], [`DiagnosticsView`], [`JobsView`]), the details pane, the search box and
//! the overlays ([`Overlay`]) each own their state, keys and command lists; the app resolves a
//! key through the keymap for the focused component's contexts and hands the action to it.

mod comparing;
mod draw;
mod finetuning;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

use crate::jobs::{Job, JobEvent};
use crate::model::InputPins;

use super::component::Component;
use super::dialog::{Boundary, ExtractDialog, Prompt, PruneDialog, QuantizeDialog, TextInput};
use super::engines;
use super::jobs::{JobEntry, JobKind, JobOutcome};
use super::keymap::{Action, Ctx, Key, KeyMap, Resolve};
use super::overlay::Reply;
use super::search::{SearchBox, SearchReply};
use super::session::{self, Session};
use super::tree::Item;
use super::views::{Cx, DetailsPane, DiagnosticsView, GroupsView, JobsView, ListPos, NodesView};
use super::worker::{Reply as WorkerReply, Request, TensorStats, Worker};

pub use super::overlay::Overlay;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Nodes,
    Groups,
    Diagnostics,
    Jobs,
    /// Shown once a comparison was asked for (`--compare`, `C` on a job).
    Compare,
}

impl View {
    pub const ALL: [View; 4] = [View::Nodes, View::Groups, View::Diagnostics, View::Jobs];
    pub fn title(self) -> &'static str {
        match self {
            View::Nodes => "Nodes",
            View::Groups => "Groups",
            View::Diagnostics => "Diagnostics",
            View::Jobs => "Jobs",
            View::Compare => "Compare",
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

/// A model being loaded in the background.
struct Loading {
    job: Job<Session>,
    what: String,
    phase: String,
    started: Instant,
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
    /// First list row shown.
    pub list_offset: usize,
}

/// Weight statistics and group importance computed on the worker thread, and what is asked.
#[derive(Default)]
struct Background {
    worker: Option<Worker>,
    stats: HashMap<String, Result<TensorStats, super::worker::StatsError>>,
    stats_pending: HashSet<String>,
    importance: HashMap<usize, Vec<f64>>,
    importance_requested: bool,
}

impl Background {
    fn start(s: &Session) -> Self {
        Background {
            worker: Some(Worker::start(s.analysis.clone(), s.channels.clone())),
            ..Background::default()
        }
    }

    /// Stops the worker (its thread ends when the channel closes).
    fn stop(&mut self) {
        self.worker = None;
    }

    /// Drains the worker's answers. True when there were any.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        if let Some(w) = &self.worker {
            while let Ok(r) = w.rx.try_recv() {
                changed = true;
                match r {
                    WorkerReply::Stats(t, v) => {
                        self.stats_pending.remove(&t);
                        self.stats.insert(t, v);
                    }
                    WorkerReply::Importance(g, v) => {
                        self.importance.insert(g, v);
                    }
                }
            }
        }
        changed
    }

    fn request_stats(&mut self, tensor: &str) {
        if self.stats.contains_key(tensor) || self.stats_pending.contains(tensor) {
            return;
        }
        if let Some(w) = &self.worker {
            self.stats_pending.insert(tensor.to_string());
            w.send(Request::Stats(tensor.to_string()));
        }
    }

    fn request_importance(&mut self, s: &Session) {
        if self.importance_requested {
            return;
        }
        if let Some(w) = &self.worker {
            // Prunable groups first: those are the ones whose ranking matters.
            let mut ids: Vec<usize> = (0..s.channels.groups.len()).collect();
            ids.sort_by_key(|&g| (s.group_status[g].locks.is_empty() as u8 ^ 1, g));
            w.send(Request::Importance(ids));
            self.importance_requested = true;
        }
    }

    fn importance_done(&self, s: Option<&Session>) -> bool {
        !self.importance_requested
            || s.is_none_or(|s| self.importance.len() >= s.channels.groups.len())
    }
}

/// The keymap and the keys of a sequence typed so far (`g g`).
struct Keys {
    map: KeyMap,
    pending: Vec<Key>,
}

impl Keys {
    /// Resolves a key in `ctxs`; a sequence that leads nowhere is retried from its last key.
    fn resolve(&mut self, key: Key, ctxs: &[Ctx]) -> Option<Action> {
        self.pending.push(key);
        match self.map.resolve(ctxs, &self.pending) {
            Resolve::Action(a) => {
                self.pending.clear();
                Some(a)
            }
            Resolve::Pending => None,
            Resolve::None => {
                let retry = self.pending.len() > 1;
                self.pending.clear();
                if retry {
                    return self.resolve(key, ctxs);
                }
                None
            }
        }
    }
}

pub struct App {
    session: Option<Session>,
    loading: Option<Loading>,
    load_error: Option<String>,
    pins: InputPins,
    view: View,
    focus: Pane,
    nodes: NodesView,
    groups: GroupsView,
    diags: DiagnosticsView,
    jobs: JobsView,
    compare: Option<super::compare::CompareView>,
    /// A comparison asked for before the model finished loading.
    compare_pending: Option<PathBuf>,
    details: DetailsPane,
    search: SearchBox,
    overlay: Option<Overlay>,
    keys: Keys,
    background: Background,
    message: Option<String>,
    should_quit: bool,
    /// When set, every elapsed time shows this (deterministic snapshots).
    frozen_clock: Option<Duration>,
    areas: Areas,
    /// Rows of the focused list on screen, for page moves.
    page: usize,
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
            nodes: NodesView::default(),
            groups: GroupsView::default(),
            diags: DiagnosticsView::default(),
            jobs: JobsView::default(),
            compare: None,
            compare_pending: None,
            details: DetailsPane::default(),
            search: SearchBox::default(),
            overlay: None,
            keys: Keys {
                map: keymap,
                pending: Vec::new(),
            },
            background: Background::default(),
            message: None,
            should_quit: false,
            frozen_clock: None,
            areas: Areas::default(),
            page: 10,
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
        self.background = Background::start(&s);
        self.nodes.reset(&s);
        self.groups = GroupsView::default();
        *self.diags.pos_mut() = ListPos::default();
        self.search.clear();
        self.details.reset();
        self.session = Some(s);
    }

    // ---------------------------------------------------------------- accessors

    /// The loaded model, once loading finished.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    pub fn session_mut(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn focus(&self) -> Pane {
        self.focus
    }

    /// The status line message, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    pub fn should_quit(&self) -> bool {
        self.should_quit
    }

    /// The open overlay (dialog, help, prompt), if any.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// Every job started in this session, oldest first.
    pub fn jobs(&self) -> &[JobEntry] {
        self.jobs.jobs()
    }

    /// Row of the Nodes view's tree cursor.
    pub fn tree_cursor(&self) -> usize {
        self.nodes.cursor()
    }

    pub fn set_tree_cursor(&mut self, row: usize) {
        self.nodes.set_cursor(row);
    }

    /// Index of the Diagnostics view's cursor.
    pub fn diagnostic_cursor(&self) -> usize {
        self.diags.cursor()
    }

    pub fn set_diagnostic_cursor(&mut self, k: usize) {
        self.diags.set_cursor(k);
    }

    /// True while a range selection is active.
    pub fn range_active(&self) -> bool {
        self.nodes.range_active()
    }

    /// Screen areas of the last draw (what mouse clicks hit).
    pub fn areas(&self) -> &Areas {
        &self.areas
    }

    /// Shows `t` as every elapsed time (deterministic snapshots).
    pub fn freeze_clock(&mut self, t: Duration) {
        self.frozen_clock = Some(t);
    }

    // ---------------------------------------------------------------- queries

    pub fn elapsed(&self, since: Instant) -> Duration {
        self.frozen_clock.unwrap_or_else(|| since.elapsed())
    }

    /// The tree row under the cursor.
    pub fn current_item(&self) -> Option<Item> {
        self.nodes.current_item(self.session.as_ref()?)
    }

    /// The node the Nodes view is about.
    pub fn selected_node(&self) -> Option<usize> {
        self.nodes.selected_node(self.session.as_ref()?)
    }

    /// Channel groups of a node in the order `c` cycles them: produced groups first.
    pub fn node_group_cycle(&self, node: usize) -> Vec<usize> {
        match &self.session {
            Some(s) => NodesView::group_cycle(s, node),
            None => Vec::new(),
        }
    }

    /// The group highlighted everywhere: the Groups cursor, a pinned group, or the selected
    /// node's current group.
    pub fn highlight_group(&self) -> Option<usize> {
        let s = self.session.as_ref()?;
        if self.view == View::Groups {
            return self.groups.highlight(s);
        }
        self.nodes.highlight_group(s)
    }

    /// Nodes of the range selection (or nothing when no range is active), in execution order.
    pub fn range_nodes(&self) -> Vec<usize> {
        match &self.session {
            Some(s) => self.nodes.range_nodes(s),
            None => Vec::new(),
        }
    }

    /// Keymap contexts of the focused component, most specific first.
    pub fn contexts(&self) -> Vec<Ctx> {
        match (self.view, self.focus) {
            (View::Nodes, Pane::List) => vec![Ctx::Tree, Ctx::List, Ctx::Global],
            (View::Nodes, Pane::Graph) => vec![Ctx::Graph, Ctx::List, Ctx::Global],
            (_, Pane::Details) => vec![Ctx::Details, Ctx::Global],
            (View::Groups, _) => vec![Ctx::Groups, Ctx::List, Ctx::Global],
            (View::Diagnostics, _) => vec![Ctx::Diagnostics, Ctx::List, Ctx::Global],
            (View::Jobs, _) => vec![Ctx::Jobs, Ctx::List, Ctx::Global],
            (View::Compare, _) => vec![Ctx::Compare, Ctx::List, Ctx::Global],
        }
    }

    pub fn panes(&self) -> Vec<Pane> {
        match self.view {
            View::Nodes => vec![Pane::List, Pane::Graph, Pane::Details],
            _ => vec![Pane::List, Pane::Details],
        }
    }

    /// Help sections: the app's own contexts, then every component's, in screen order.
    fn help_sections(&self) -> Vec<(Ctx, &'static str)> {
        let mut v = vec![(Ctx::Global, "everywhere"), (Ctx::List, "lists")];
        let parts: [&dyn Component; 5] = [
            &self.nodes,
            &self.details,
            &self.groups,
            &self.diags,
            &self.jobs,
        ];
        for c in parts {
            v.extend_from_slice(c.contexts());
        }
        if let Some(c) = &self.compare {
            v.extend_from_slice(c.contexts());
        }
        v
    }

    /// The footer's commands: those the focused component offers.
    fn commands(&self) -> Vec<Action> {
        if self.nodes.range_active() {
            return self.nodes.commands(self.focus);
        }
        let c: &dyn Component = match (self.view, self.focus) {
            (_, Pane::Details) => &self.details,
            (View::Nodes, _) => &self.nodes,
            (View::Groups, _) => &self.groups,
            (View::Diagnostics, _) => &self.diags,
            (View::Jobs, _) => &self.jobs,
            (View::Compare, _) => match &self.compare {
                Some(c) => c,
                None => &self.jobs,
            },
        };
        c.commands(self.focus)
    }

    // ------------------------------------------------------------ background

    /// Drains background results. Returns true when something changed on screen.
    pub fn tick(&mut self) -> bool {
        let mut changed = self.tick_loading();
        if self.jobs.poll() {
            changed = true;
            if let Some(r) = self.jobs.take_sensitivity() {
                let n = self.session.as_ref().map_or(0, |s| s.channels.groups.len());
                self.groups.set_sensitivity(Some(r), n);
                self.message = Some("sensitivity measured: o sorts the groups by it".into());
            }
        }
        if self.tick_compare() {
            changed = true;
        }
        if self.background.drain() {
            changed = true;
        }
        changed
    }

    fn tick_loading(&mut self) -> bool {
        let Some(l) = &mut self.loading else {
            return false;
        };
        let mut changed = false;
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
        changed
    }

    /// True while background work the screen is waiting for is outstanding.
    pub fn busy(&self) -> bool {
        self.loading.is_some()
            || !self.background.stats_pending.is_empty()
            || self.jobs.any_running()
    }

    /// Waits (up to `timeout`) until loading, requested statistics and jobs are done — for
    /// tests and captures.
    pub fn settle(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            let importance_done = self.background.importance_done(self.session.as_ref());
            if (!self.busy() && importance_done) || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the worker for a tensor's statistics unless known or pending.
    pub fn request_stats(&mut self, tensor: &str) {
        self.background.request_stats(tensor);
    }

    pub fn request_importance(&mut self) {
        if let Some(s) = &self.session {
            self.background.request_importance(s);
        }
    }

    // ------------------------------------------------------------------ keys

    /// Handles one key press: the search prompt or an overlay take it when open, otherwise
    /// the keymap resolves it for the focused component.
    pub fn handle_key(&mut self, k: KeyEvent) {
        if k.kind == crossterm::event::KeyEventKind::Release {
            return;
        }
        self.message = None;
        let Some(s) = &self.session else {
            if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                || (ctrl(&k) && k.code == KeyCode::Char('c'))
            {
                if let Some(l) = &self.loading {
                    l.job.cancel();
                }
                self.should_quit = true;
            }
            return;
        };
        if self.search.is_open() {
            if self.search.handle(&k, s) == SearchReply::Go {
                self.jump_to_hit();
            }
            return;
        }
        if let Some(ov) = &mut self.overlay {
            let r = ov.handle(&k);
            self.overlay_reply(r);
            return;
        }
        let ctxs = self.contexts();
        if let Some(a) = self.keys.resolve(Key::from_event(&k), &ctxs) {
            self.act(a);
        }
    }

    /// Goes to the search's current match, or says there is none.
    fn jump_to_hit(&mut self) {
        match self.search.current() {
            Ok((node, msg)) => {
                self.view = View::Nodes;
                self.focus = Pane::List;
                self.reveal(node);
                self.message = Some(msg);
            }
            Err(msg) => self.message = Some(msg),
        }
    }

    /// Moves the tree cursor to a node, opening its scopes.
    pub fn reveal(&mut self, node: usize) {
        if let Some(s) = &mut self.session
            && self.nodes.reveal(s, node)
        {
            self.details.reset();
        }
    }

    /// Does what a key in an overlay asked for.
    fn overlay_reply(&mut self, r: Reply) {
        match r {
            Reply::Stay => return,
            Reply::Quit => {
                self.should_quit = true;
                return;
            }
            _ => {}
        }
        self.overlay = None;
        match r {
            Reply::SaveAndQuit => {
                if self.save_tags(None) {
                    self.should_quit = true;
                }
            }
            Reply::SaveTagsTo(path) => {
                self.save_tags(Some(&path));
            }
            Reply::Sensitivity(data) => self.start_sensitivity(&data),
            Reply::Finetune(student, text) => self.start_finetune(&student, &text),
            Reply::Prune(d) => self.start_prune(&d),
            Reply::Quantize(d) => self.start_quantize(&d),
            Reply::Extract(d) => {
                self.nodes.end_range();
                self.start_extract(&d);
            }
            Reply::Stay | Reply::Quit | Reply::Close => {}
        }
    }

    // --------------------------------------------------------------- actions

    fn list_len(&self) -> usize {
        let Some(s) = &self.session else { return 0 };
        match self.view {
            View::Nodes => s.tree.rows.len(),
            View::Groups => s.channels.groups.len(),
            View::Diagnostics => s.diagnostics.len(),
            View::Jobs => self.jobs.jobs().len(),
            View::Compare => self.compare.as_ref().map_or(0, |c| c.len()),
        }
    }

    /// The cursor of the current view's list.
    fn list_pos_mut(&mut self) -> &mut ListPos {
        match self.view {
            View::Nodes => self.nodes.pos_mut(),
            View::Groups => self.groups.pos_mut(),
            View::Diagnostics => self.diags.pos_mut(),
            View::Jobs => self.jobs.pos_mut(),
            View::Compare => match &mut self.compare {
                Some(c) => c.pos_mut(),
                None => self.jobs.pos_mut(),
            },
        }
    }

    fn move_list(&mut self, a: Action) {
        let page = self.page.max(2);
        if self.focus == Pane::Details {
            self.details.apply(a, page);
            return;
        }
        if self.view == View::Nodes && self.focus == Pane::Graph {
            self.nodes.move_graph(a);
            return;
        }
        let len = self.list_len();
        if len == 0 {
            return;
        }
        if self.view == View::Nodes {
            self.nodes.move_tree(a, len, page);
        } else {
            self.list_pos_mut().apply(a, len, page);
        }
        self.details.reset();
    }

    /// Runs an action (what a key is bound to): the app's own actions here, the rest routed
    /// to the component that offers them.
    pub fn act(&mut self, a: Action) {
        if self.session.is_none() {
            if a == Action::Quit {
                self.should_quit = true;
            }
            return;
        }
        if self.act_app(a) {
            return;
        }
        match a {
            Action::Down
            | Action::Up
            | Action::Top
            | Action::Bottom
            | Action::HalfDown
            | Action::HalfUp
            | Action::PageDown
            | Action::PageUp => self.move_list(a),
            Action::Extract => self.open_extract(),
            Action::Jump if self.view != View::Nodes => self.jump(),
            Action::ApplyFix => self.apply_fix(),
            Action::CancelJob => {
                self.jobs.cancel_current();
            }
            Action::OpenResult => self.open_result(),
            Action::Sensitivity if self.view == View::Groups => {
                self.overlay = Some(Overlay::Sensitivity(Prompt {
                    title: "Sensitivity samples: a folder or file (empty: 16 random)".into(),
                    input: TextInput::new(""),
                }));
            }
            Action::SortGroups if self.view == View::Groups => {
                let n = self.session.as_ref().map_or(0, |s| s.channels.groups.len());
                if !self.groups.toggle_sort(n) {
                    self.message = Some("no sensitivity yet: S measures it".into());
                }
            }
            Action::CompareOriginal => self.compare_job_output(),
            Action::Finetune => self.ask_finetune(),
            _ => self.route(a),
        }
    }

    /// Hands an action to the Nodes or Diagnostics view with what they may change.
    fn route(&mut self, a: Action) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let cx = Cx {
            session,
            message: &mut self.message,
            focus: &mut self.focus,
            details: &mut self.details,
        };
        match a {
            Action::CycleTarget | Action::RerunLint => self.diags.act(a, cx),
            _ => self.nodes.act(a, cx),
        };
    }

    /// The app-wide actions: quitting, help, views, focus, search, tags and the dialogs.
    /// False when `a` is not one of them.
    fn act_app(&mut self, a: Action) -> bool {
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
                let views = self.tab_views();
                let i = views.iter().position(|v| *v == self.view).unwrap_or(0);
                let n = views.len();
                let j = if a == Action::NextView {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.set_view(views[j]);
            }
            Action::FocusNext | Action::FocusPrev => self.cycle_focus(a == Action::FocusNext),
            Action::Search => self.search.open(),
            Action::SearchNext | Action::SearchPrev => {
                if self.search.step(a == Action::SearchNext) {
                    self.jump_to_hit();
                } else {
                    self.message = Some("no search yet: press / to search".into());
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
            Action::DetailsDown => self.details.scroll_by(3),
            Action::DetailsUp => self.details.scroll_by(-3),
            _ => return false,
        }
        true
    }

    fn cycle_focus(&mut self, forward: bool) {
        let panes = self.panes();
        let i = panes.iter().position(|p| *p == self.focus).unwrap_or(0);
        let n = panes.len();
        self.focus = panes[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }];
        if self.focus == Pane::Graph {
            self.nodes.reset_graph_cursor();
        }
    }

    fn set_view(&mut self, v: View) {
        if v == View::Groups {
            self.request_importance();
            if let Some(g) = self.nodes.pinned_group().or_else(|| self.highlight_group()) {
                self.groups.set_cursor(g);
            }
        }
        self.view = v;
        self.focus = Pane::List;
        self.details.reset();
    }

    /// Esc: ends a range, cancels the selected running job, returns focus to the list,
    /// unpins the group, forgets the search — the first that applies.
    fn back(&mut self) {
        if self.nodes.range_active() {
            self.nodes.end_range();
        } else if self.view == View::Jobs && self.jobs.current().is_some_and(|j| j.is_running()) {
            self.jobs.cancel_current();
        } else if self.focus != Pane::List {
            self.focus = Pane::List;
        } else if self.nodes.pinned_group().is_some() {
            self.nodes.pin_group(None);
        } else {
            self.search.clear();
        }
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

    /// Jump in the Groups, Diagnostics and Jobs views: to the group's first node, the
    /// finding's node, the job's result.
    fn jump(&mut self) {
        match self.view {
            View::Nodes => {}
            View::Groups => {
                let g = self.groups.cursor();
                let first = self
                    .session
                    .as_ref()
                    .and_then(|s| s.group_nodes.get(g)?.first().copied());
                self.nodes.pin_group(Some(g));
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
                    .and_then(|s| self.diags.current(s)?.node);
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
            View::Compare => self.jump_to_compared(),
        }
    }

    fn apply_fix(&mut self) {
        let Some(s) = &self.session else { return };
        let Some(d) = self.diags.current(s).cloned() else {
            return;
        };
        if let (false, Some(r)) = (d.fixable, d.remedy) {
            self.apply_remedy(r);
            return;
        }
        if !d.fixable {
            self.message = Some("no automatic fix for this finding".into());
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

    /// Runs a finding's measured remedy (`pare convert`) as a job.
    fn apply_remedy(&mut self, r: crate::lint::Remedy) {
        let Some(s) = &self.session else { return };
        let crate::lint::Remedy::Convert { precision } = r;
        let out = self.default_output(precision.suffix());
        if let Err(e) = self.check_not_input(&out) {
            self.message = Some(e.to_string());
            return;
        }
        let req = engines::convert_request(precision, &out);
        let cmd = format!(
            "pare convert {} -o {} --precision {}",
            self.model_arg(),
            out.display(),
            precision.suffix()
        );
        let a = s.analysis.clone();
        self.push_job(JobEntry::spawn(
            JobKind::Convert,
            format!("convert {}", precision.suffix()),
            cmd,
            move |p| engines::convert(&a, &req, p),
        ));
    }

    /// Adds a job and shows the Jobs view.
    pub fn push_job(&mut self, j: JobEntry) {
        self.jobs.push(j);
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

    pub(super) fn check_not_input(&self, out: &Path) -> crate::Result<()> {
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

    fn start_sensitivity(&mut self, data: &str) {
        let Some(s) = &self.session else { return };
        let req = match engines::sensitivity_request(data, s.tags.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.message = Some(e.to_string());
                return;
            }
        };
        let calib = match data.trim() {
            "" => "random".to_string(),
            d => d.to_string(),
        };
        let cmd = format!(
            "pare groups {} --sensitivity --ratio {} --calib {calib}",
            self.model_arg(),
            req.ratio
        );
        let a = s.analysis.clone();
        self.push_job(JobEntry::spawn(
            JobKind::Sensitivity,
            "group sensitivity".into(),
            cmd,
            move |p| engines::sensitivity(&a, &req, p),
        ));
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
        let Some(j) = self.jobs.current() else {
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
        self.background.stop();
        self.start_load(Some(out), None);
    }

    // ----------------------------------------------------------------- mouse

    pub fn handle_mouse(&mut self, m: MouseEvent) {
        if self.session.is_none() || self.overlay.is_some() || self.search.is_open() {
            return;
        }
        let inside = |r: Rect| {
            m.column >= r.x && m.column < r.x + r.width && m.row >= r.y && m.row < r.y + r.height
        };
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let down = m.kind == MouseEventKind::ScrollDown;
                if inside(self.areas.details) {
                    self.details.scroll_by(if down { 3 } else { -3 });
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
                    self.nodes.reset_graph_cursor();
                    return;
                }
                if inside(self.areas.list) {
                    self.focus = Pane::List;
                    self.click_list(m.row);
                } else if inside(self.areas.graph) {
                    self.focus = Pane::Graph;
                } else if inside(self.areas.details) {
                    self.focus = Pane::Details;
                }
            }
            _ => {}
        }
    }

    /// A click on list row `y`: selects it; a second click on a scope toggles it.
    fn click_list(&mut self, y: u16) {
        // One border row above the first list row.
        let row = (y - self.areas.list.y) as usize;
        if row < 1 {
            return;
        }
        let idx = self.areas.list_offset + row - 1;
        if idx >= self.list_len() {
            return;
        }
        let pos = self.list_pos_mut();
        let again = pos.cursor == idx;
        pos.cursor = idx;
        self.details.reset();
        if again && self.view == View::Nodes {
            self.route(Action::Toggle);
        }
    }
}
