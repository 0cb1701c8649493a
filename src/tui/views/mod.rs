//! The four views of the main screen and the details pane they share. Each view owns its
//! list position and other state, handles the actions of its keymap contexts, offers its
//! commands to the footer and help, and draws itself; [`super::app::App`] routes to them.

pub mod diagnostics;
pub mod groups;
pub mod jobs;
pub mod nodes;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::app::{Areas, Pane};
use super::component::Component;
use super::keymap::{Action, Ctx};
use super::session::Session;
use super::theme;
use super::ui::pane_block;

pub use diagnostics::DiagnosticsView;
pub use groups::GroupsView;
pub use jobs::JobsView;
pub use nodes::NodesView;

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
    /// Moves the cursor for a list action over `len` rows, `page` rows on screen.
    pub fn apply(&mut self, a: Action, len: usize, page: usize) {
        if len == 0 {
            return;
        }
        self.cursor = match a {
            Action::Down => (self.cursor + 1).min(len - 1),
            Action::Up => self.cursor.saturating_sub(1),
            Action::Top => 0,
            Action::Bottom => len - 1,
            Action::HalfDown => (self.cursor + page / 2).min(len - 1),
            Action::HalfUp => self.cursor.saturating_sub(page / 2),
            Action::PageDown => (self.cursor + page).min(len - 1),
            Action::PageUp => self.cursor.saturating_sub(page),
            _ => self.cursor,
        };
    }
    /// Clamps, scrolls the cursor into `height` rows and records where the list is drawn.
    pub fn layout(&mut self, len: usize, height: usize, area: Rect, areas: &mut Areas) {
        self.clamp(len);
        self.scroll_into_view(height);
        areas.list = area;
        areas.list_offset = self.offset;
    }
}

/// What a view needs from the rest of the app to handle an action.
pub struct Cx<'a> {
    pub session: &'a mut Session,
    pub message: &'a mut Option<String>,
    pub focus: &'a mut Pane,
    pub details: &'a mut DetailsPane,
}

/// What a view needs from the rest of the app to draw itself.
pub struct DrawCx<'a> {
    pub session: &'a Session,
    pub focus: Pane,
    /// The channel group highlighted everywhere.
    pub highlight: Option<usize>,
    pub areas: &'a mut Areas,
    /// Rows of the focused list on screen, for page moves.
    pub page: &'a mut usize,
    /// The finished comparison's error per node, when there is one (the Nodes view colours
    /// node names by it).
    pub node_errors: Option<&'a NodeErrors>,
}

/// Worst SQNR (dB) of each node's compared outputs, by session node index, and the
/// comparison's threshold: what the Nodes view colours by after `pare tui A --compare B`.
#[derive(Debug, Default)]
pub struct NodeErrors {
    pub sqnr: std::collections::HashMap<usize, f64>,
    pub threshold: f64,
}

/// The right-hand (or lower) pane with details of whatever the list cursor is on.
#[derive(Debug, Default)]
pub struct DetailsPane {
    scroll: u16,
}

impl Component for DetailsPane {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Details, "details pane")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        vec![Down, FocusNext, Back, Help, Quit]
    }
}

impl DetailsPane {
    pub fn reset(&mut self) {
        self.scroll = 0;
    }
    pub fn scroll_by(&mut self, delta: i32) {
        self.scroll = if delta >= 0 {
            self.scroll.saturating_add(delta as u16)
        } else {
            self.scroll.saturating_sub(delta.unsigned_abs() as u16)
        };
    }
    /// Scrolls for a list action while the pane has the focus.
    pub fn apply(&mut self, a: Action, page: usize) {
        self.scroll = match a {
            Action::Down => self.scroll.saturating_add(1),
            Action::Up => self.scroll.saturating_sub(1),
            Action::Top => 0,
            Action::Bottom => u16::MAX / 2,
            Action::HalfDown | Action::PageDown => self.scroll.saturating_add(page as u16 / 2),
            Action::HalfUp | Action::PageUp => self.scroll.saturating_sub(page as u16 / 2),
            _ => self.scroll,
        };
    }

    /// Draws `lines` with a scroll position marker when they do not fit.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        title: String,
        lines: Vec<Line<'static>>,
        focused: bool,
        areas: &mut Areas,
    ) {
        let block = pane_block(title, focused);
        let inner = block.inner(area);
        areas.details = area;
        let max_scroll = (lines.len() as u16).saturating_sub(inner.height.max(1));
        if self.scroll > max_scroll {
            self.scroll = max_scroll;
        }
        let more = lines.len() as u16 > inner.height + self.scroll;
        let block = if more || self.scroll > 0 {
            block.title_bottom(
                Line::from(Span::styled(
                    format!(" {}/{} J/K ", self.scroll + 1, max_scroll + 1),
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
                .scroll((self.scroll, 0)),
            area,
        );
    }
}
