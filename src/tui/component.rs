//! What the views and dialogs have in common, gitui-style: each owns its state and its key
//! handling and says which commands it offers. The footer and the help overlay are built from
//! those lists, so a command shows up in both by being offered once, where it is handled.

use ratatui::text::{Line, Span};

use super::app::Pane;
use super::keymap::{Action, Ctx};
use super::theme;

/// A view or pane of the main screen.
pub trait Component {
    /// The keymap contexts this component answers to, each with its help section title, in
    /// the order the help overlay lists them.
    fn contexts(&self) -> &'static [(Ctx, &'static str)];
    /// The commands the footer offers while this component has the focus (`focus` is the
    /// focused pane), most used first; keys come from the keymap.
    fn commands(&self, focus: Pane) -> Vec<Action>;
}

/// A command a dialog offers under a fixed key (dialog keys are not remappable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub key: &'static str,
    pub label: &'static str,
}

pub const fn hint(key: &'static str, label: &'static str) -> Hint {
    Hint { key, label }
}

/// Hints as key caps, the way dialogs show them: ` ⏎   run  ` ` Esc   close`.
pub fn hint_line(hints: &[Hint]) -> Line<'static> {
    let mut spans = Vec::new();
    for (k, h) in hints.iter().enumerate() {
        spans.push(Span::styled(format!(" {} ", h.key), theme::key()));
        let sep = if k + 1 < hints.len() { "  " } else { "" };
        spans.push(Span::raw(format!(" {}{sep}", h.label)));
    }
    Line::from(spans)
}

/// Hints as plain text joined by ` · `, the way prompts and titles show them.
pub fn hint_text(hints: &[Hint]) -> String {
    hints
        .iter()
        .map(|h| format!("{} {}", h.key, h.label))
        .collect::<Vec<_>>()
        .join(" · ")
}
