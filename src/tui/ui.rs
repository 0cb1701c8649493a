//! Drawing: the whole screen from [`App`] state (each view, pane and overlay draws itself;
//! see [`App::draw`]), and the widgets they share. Only what is visible is formatted, so
//! frame time does not depend on model size.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::Span;
use ratatui::widgets::{Block, BorderType, Borders};

use super::app::App;
use super::theme;

/// Draws one frame.
pub fn draw(app: &mut App, f: &mut Frame) {
    app.draw(f);
}

/// A rounded pane border with its title, accented when the pane has the focus.
pub fn pane_block(title: String, focused: bool) -> Block<'static> {
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

/// A `w`×`h` rectangle centred in `area` (clipped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
