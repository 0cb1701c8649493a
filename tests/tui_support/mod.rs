//! Helpers for the TUI tests: build an app, press keys, render to text on TestBackend.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use crossterm::event::{KeyEvent, KeyEventKind, KeyEventState};
use pare::jobs::NoProgress;
use pare::model::InputPins;
use pare::tui::keymap::Key;
use pare::tui::{App, KeyMap, session, ui};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// The app over the embedded demo model, with a frozen clock for stable snapshots.
pub fn demo_app() -> App {
    app_for(None, None)
}

pub fn app_for(model: Option<&Path>, tags: Option<&Path>) -> App {
    let s = session::load(model, &InputPins::new(), tags, &NoProgress).expect("model loads");
    let mut app = App::new(s, KeyMap::default_map());
    app.freeze_clock(Duration::from_millis(2500));
    app
}

/// Presses keys written as in the keymap file, space-separated: `"j j g g ctrl-d / I f enter"`.
/// `space` is the space bar.
pub fn press(app: &mut App, keys: &str) {
    for k in keys.split_whitespace() {
        let key = Key::parse(k).unwrap_or_else(|| panic!("bad key {k}"));
        app.handle_key(KeyEvent {
            code: key.code,
            modifiers: key.mods,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        });
    }
}

/// Types text into a prompt character by character.
pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle_key(KeyEvent::from(crossterm::event::KeyCode::Char(c)));
    }
}

/// Renders the whole screen (after letting background work settle) as text.
pub fn render(app: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| ui::draw(app, f)).expect("draw");
    app.settle(Duration::from_secs(20));
    t.draw(|f| ui::draw(app, f)).expect("draw");
    buffer_text(t.backend().buffer())
}

pub fn buffer_text(b: &ratatui::buffer::Buffer) -> String {
    let mut out = String::new();
    for y in 0..b.area.height {
        let mut line = String::new();
        for x in 0..b.area.width {
            line.push_str(b[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
