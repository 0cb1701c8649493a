//! Keys as data: every action the TUI knows, its description, and the bindings per context,
//! read from `assets/keymap.toml` (embedded) and optionally overridden by a user file.

use std::collections::BTreeMap;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::error::{PareError, Result};

/// The default keymap, embedded.
pub const DEFAULT_KEYMAP: &str = include_str!("../../assets/keymap.toml");

macro_rules! actions {
    ($($variant:ident => $name:literal, $label:literal, $desc:literal;)*) => {
        /// Everything a key can do.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action { $($variant),* }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];
            /// The name used in keymap files.
            pub fn name(self) -> &'static str {
                match self { $(Action::$variant => $name),* }
            }
            /// A one-word label for the command bar.
            pub fn label(self) -> &'static str {
                match self { $(Action::$variant => $label),* }
            }
            /// A sentence for the help overlay.
            pub fn desc(self) -> &'static str {
                match self { $(Action::$variant => $desc),* }
            }
            pub fn from_name(s: &str) -> Option<Action> {
                match s { $($name => Some(Action::$variant),)* _ => None }
            }
        }
    };
}

actions! {
    Quit => "quit", "quit", "Quit (asks first when tags are unsaved)";
    Help => "help", "help", "Show or hide this help";
    Back => "back", "close", "Close a dialog, cancel a search or range, cancel the selected job";
    ViewNodes => "view_nodes", "nodes", "Nodes view: scope tree, neighbourhood graph, details";
    ViewGroups => "view_groups", "groups", "Groups view: channel groups, status and importance";
    ViewDiagnostics => "view_diagnostics", "diagnostics", "Diagnostics view: lint and analysis findings";
    ViewJobs => "view_jobs", "jobs", "Jobs view: progress, live log, per-layer SQNR, summaries";
    NextView => "next_view", "next view", "Next view";
    PrevView => "prev_view", "prev view", "Previous view";
    FocusNext => "focus_next", "pane", "Focus the next pane";
    FocusPrev => "focus_prev", "pane back", "Focus the previous pane";
    Search => "search", "search", "Fuzzy search over node names, op types and tensor names";
    SearchNext => "search_next", "next match", "Next search match";
    SearchPrev => "search_prev", "prev match", "Previous search match";
    SaveTags => "save_tags", "save tags", "Save skip/lock tags (atomic write)";
    Prune => "prune", "prune", "Open the prune dialog";
    Quantize => "quantize", "quantize", "Open the quantize dialog";
    DetailsDown => "details_down", "details down", "Scroll the details pane down";
    DetailsUp => "details_up", "details up", "Scroll the details pane up";
    Down => "down", "down", "Move down";
    Up => "up", "up", "Move up";
    Top => "top", "top", "Go to the first row";
    Bottom => "bottom", "bottom", "Go to the last row";
    HalfDown => "half_down", "½ page down", "Half a page down";
    HalfUp => "half_up", "½ page up", "Half a page up";
    PageDown => "page_down", "page down", "A page down";
    PageUp => "page_up", "page up", "A page up";
    Toggle => "toggle", "expand", "Expand or collapse a scope";
    Expand => "expand", "expand", "Expand a scope";
    Collapse => "collapse", "collapse", "Collapse a scope, or go to the parent scope";
    ExpandAll => "expand_all", "expand all", "Expand everything below the cursor";
    CollapseAll => "collapse_all", "collapse all", "Collapse every scope";
    Skip => "skip", "skip", "Tag the layer (scope, range) skip: never a pruning target";
    Lock => "lock", "lock", "Tag the layer (scope, range) lock: its channels never change";
    Untag => "untag", "untag", "Remove the tag";
    Range => "range", "range", "Start or end a range selection";
    Extract => "extract", "extract", "Extract the selected range (or node) as a standalone model";
    CycleGroup => "cycle_group", "group", "Highlight the next channel group of this node";
    MoreHops => "more_hops", "hops+", "Show one more hop in the graph";
    FewerHops => "fewer_hops", "hops-", "Show one hop less in the graph";
    Jump => "jump", "go to", "Go to the node";
    ApplyFix => "apply_fix", "fix", "Apply the automatic fix (runs as a job)";
    CycleTarget => "cycle_target", "target", "Lint for the next deployment target";
    RerunLint => "rerun_lint", "re-lint", "Run the lint again";
    CancelJob => "cancel_job", "cancel", "Cancel the selected job";
    OpenResult => "open_result", "open", "Open the job's output model";
    Sensitivity => "sensitivity", "sensitivity", "Measure each prunable group's sensitivity (a job: the group pruned alone, output SQNR)";
    SortGroups => "sort_groups", "sort", "Sort the groups by sensitivity (most sensitive first), or back by id";
    CompareOriginal => "compare_original", "compare", "Compare the job's output model with the original (Compare view)";
    Finetune => "finetune", "fine-tune", "Fine-tune the job's output model by distillation from the original (a job with a loss chart; needs the torch feature)";
}

/// Where a binding applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ctx {
    Global,
    List,
    Tree,
    Graph,
    Details,
    Groups,
    Diagnostics,
    Jobs,
    Compare,
}

impl Ctx {
    pub const ALL: &'static [Ctx] = &[
        Ctx::Global,
        Ctx::List,
        Ctx::Tree,
        Ctx::Graph,
        Ctx::Details,
        Ctx::Groups,
        Ctx::Diagnostics,
        Ctx::Jobs,
        Ctx::Compare,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Ctx::Global => "global",
            Ctx::List => "list",
            Ctx::Tree => "tree",
            Ctx::Graph => "graph",
            Ctx::Details => "details",
            Ctx::Groups => "groups",
            Ctx::Diagnostics => "diagnostics",
            Ctx::Jobs => "jobs",
            Ctx::Compare => "compare",
        }
    }
    pub fn from_name(s: &str) -> Option<Ctx> {
        Ctx::ALL.iter().copied().find(|c| c.name() == s)
    }
}

/// One key press, normalised (a character never carries SHIFT: `G` is `G`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Key {
    pub fn new(code: KeyCode, mods: KeyModifiers) -> Self {
        let mut mods = mods & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match code {
            KeyCode::Char(c) => {
                mods.remove(KeyModifiers::SHIFT);
                if mods.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            KeyCode::BackTab => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, mods }
    }

    pub fn from_event(e: &KeyEvent) -> Self {
        Key::new(e.code, e.modifiers)
    }

    /// Parses `j`, `G`, `ctrl-d`, `enter`, `f1`, `space`.
    pub fn parse(s: &str) -> Option<Key> {
        let mut mods = KeyModifiers::NONE;
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.len() > 5 && lower.starts_with("ctrl-") {
                mods |= KeyModifiers::CONTROL;
                rest = &rest[5..];
            } else if rest.len() > 4 && lower.starts_with("alt-") {
                mods |= KeyModifiers::ALT;
                rest = &rest[4..];
            } else if rest.len() > 6 && lower.starts_with("shift-") {
                mods |= KeyModifiers::SHIFT;
                rest = &rest[6..];
            } else {
                break;
            }
        }
        let code = match rest.to_ascii_lowercase().as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "space" => KeyCode::Char(' '),
            "backspace" => KeyCode::Backspace,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "pgup" | "pageup" => KeyCode::PageUp,
            "pgdn" | "pagedown" => KeyCode::PageDown,
            "delete" | "del" => KeyCode::Delete,
            f if f.len() >= 2 && f.starts_with('f') && f[1..].parse::<u8>().is_ok() => {
                KeyCode::F(f[1..].parse().ok()?)
            }
            _ => {
                let mut chars = rest.chars();
                let c = chars.next()?;
                if chars.next().is_some() {
                    return None;
                }
                KeyCode::Char(c)
            }
        };
        Some(Key::new(code, mods))
    }

    /// Short display form for the command bar and help: `j`, `^d`, `⏎`, `Esc`.
    pub fn display(&self) -> String {
        let base = match self.code {
            KeyCode::Enter => "⏎".to_string(),
            KeyCode::Esc => "Esc".to_string(),
            KeyCode::Tab => "Tab".to_string(),
            KeyCode::BackTab => "S-Tab".to_string(),
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Backspace => "BS".to_string(),
            KeyCode::Up => "↑".to_string(),
            KeyCode::Down => "↓".to_string(),
            KeyCode::Left => "←".to_string(),
            KeyCode::Right => "→".to_string(),
            KeyCode::Home => "Home".to_string(),
            KeyCode::End => "End".to_string(),
            KeyCode::PageUp => "PgUp".to_string(),
            KeyCode::PageDown => "PgDn".to_string(),
            KeyCode::Delete => "Del".to_string(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::Char(c) => c.to_string(),
            _ => "?".to_string(),
        };
        let mut s = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            s.push('^');
        }
        if self.mods.contains(KeyModifiers::ALT) {
            s.push_str("M-");
        }
        if self.mods.contains(KeyModifiers::SHIFT) {
            s.push_str("S-");
        }
        s.push_str(&base);
        s
    }
}

/// A key sequence (usually one key; `g g` is two).
pub type Seq = Vec<Key>;

fn parse_seq(s: &str) -> Option<Seq> {
    let keys: Option<Vec<Key>> = s.split_whitespace().map(Key::parse).collect();
    keys.filter(|k| !k.is_empty())
}

pub fn seq_display(seq: &Seq) -> String {
    seq.iter().map(Key::display).collect::<Vec<_>>().join("")
}

/// The outcome of feeding one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    Action(Action),
    /// The key starts a longer sequence: wait for the next key.
    Pending,
    None,
}

/// Bindings per context, in file order.
#[derive(Clone, Debug, Default)]
pub struct KeyMap {
    pub bindings: BTreeMap<Ctx, Vec<(Action, Vec<Seq>)>>,
}

impl KeyMap {
    /// The embedded default keymap.
    pub fn default_map() -> Self {
        Self::parse(DEFAULT_KEYMAP).expect("the embedded keymap parses")
    }

    /// Parses a keymap file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| PareError::Usage(format!("keymap: not valid TOML: {}", e.message())))?;
        let mut km = KeyMap::default();
        for (section, value) in &table {
            let ctx = Ctx::from_name(section).ok_or_else(|| {
                PareError::Usage(format!(
                    "keymap: unknown section [{section}] (sections: {})",
                    Ctx::ALL
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            let entries = value
                .as_table()
                .ok_or_else(|| PareError::Usage(format!("keymap: [{section}] must be a table")))?;
            let list = km.bindings.entry(ctx).or_default();
            for (action, keys) in entries {
                let a = Action::from_name(action).ok_or_else(|| {
                    PareError::Usage(format!("keymap: [{section}] unknown action '{action}'"))
                })?;
                let keys = match keys {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(v) => v
                        .iter()
                        .map(|k| k.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            PareError::Usage(format!(
                                "keymap: [{section}] {action}: keys must be strings"
                            ))
                        })?,
                    _ => {
                        return Err(PareError::Usage(format!(
                            "keymap: [{section}] {action}: expected a list of keys"
                        )));
                    }
                };
                let mut seqs = Vec::new();
                for k in &keys {
                    seqs.push(parse_seq(k).ok_or_else(|| {
                        PareError::Usage(format!(
                            "keymap: [{section}] {action}: cannot read key '{k}'"
                        ))
                    })?);
                }
                list.retain(|(x, _)| *x != a);
                list.push((a, seqs));
            }
        }
        for list in km.bindings.values_mut() {
            list.sort_by_key(|(a, _)| *a);
        }
        Ok(km)
    }

    /// Replaces each action listed in `other` (per context), keeping the rest.
    pub fn merge(&mut self, other: KeyMap) {
        for (ctx, list) in other.bindings {
            let mine = self.bindings.entry(ctx).or_default();
            for (a, seqs) in list {
                match mine.iter_mut().find(|(x, _)| *x == a) {
                    Some(slot) => slot.1 = seqs,
                    None => mine.push((a, seqs)),
                }
            }
        }
    }

    /// Default keymap plus the user's file (`path`, else `$PARE_KEYMAP`, else
    /// `~/.config/pare/keymap.toml` when it exists).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut km = Self::default_map();
        let user = match path {
            Some(p) => Some(p.to_path_buf()),
            None => std::env::var_os("PARE_KEYMAP")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    let base = std::env::var_os("XDG_CONFIG_HOME")
                        .map(std::path::PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| Path::new(&h).join(".config"))
                        })?;
                    let p = base.join("pare").join("keymap.toml");
                    p.exists().then_some(p)
                }),
        };
        if let Some(p) = user {
            let text = std::fs::read_to_string(&p).map_err(|source| PareError::Io {
                path: p.clone(),
                source,
            })?;
            km.merge(
                Self::parse(&text)
                    .map_err(|e| PareError::Usage(format!("{}: {e}", p.display())))?,
            );
        }
        Ok(km)
    }

    /// Resolves `pending` + `key` within `ctxs` (in priority order).
    pub fn resolve(&self, ctxs: &[Ctx], seq: &[Key]) -> Resolve {
        let mut exact = None;
        let mut longer = false;
        for ctx in ctxs {
            for (a, seqs) in self.bindings.get(ctx).into_iter().flatten() {
                for s in seqs {
                    if s.as_slice() == seq {
                        if exact.is_none() {
                            exact = Some(*a);
                        }
                    } else if s.len() > seq.len() && s.starts_with(seq) {
                        longer = true;
                    }
                }
            }
            if exact.is_some() {
                break;
            }
        }
        match (exact, longer) {
            (Some(a), _) => Resolve::Action(a),
            (None, true) => Resolve::Pending,
            (None, false) => Resolve::None,
        }
    }

    /// The first key sequence bound to `action` in any of `ctxs`, for display.
    pub fn key_for(&self, ctxs: &[Ctx], action: Action) -> Option<String> {
        ctxs.iter().find_map(|c| {
            self.bindings
                .get(c)?
                .iter()
                .find(|(a, _)| *a == action)
                .and_then(|(_, s)| s.first())
                .map(seq_display)
        })
    }

    /// All key sequences of `action` in `ctx`, for the help overlay.
    pub fn keys_of(&self, ctx: Ctx, action: Action) -> Vec<String> {
        self.bindings
            .get(&ctx)
            .into_iter()
            .flatten()
            .filter(|(a, _)| *a == action)
            .flat_map(|(_, s)| s.iter().map(seq_display))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_and_resolves() {
        let km = KeyMap::default_map();
        let j = Key::parse("j").unwrap();
        assert_eq!(
            km.resolve(&[Ctx::Tree, Ctx::List, Ctx::Global], &[j]),
            Resolve::Action(Action::Down)
        );
        let g = Key::parse("g").unwrap();
        assert_eq!(km.resolve(&[Ctx::List], &[g]), Resolve::Pending);
        assert_eq!(
            km.resolve(&[Ctx::List], &[g, g]),
            Resolve::Action(Action::Top)
        );
        // Terminals cannot tell ctrl-shift-d from ctrl-d: both fold to ctrl-d.
        let cd = Key::new(
            KeyCode::Char('D'),
            KeyModifiers::CONTROL | KeyModifiers::SHIFT,
        );
        assert_eq!(
            km.resolve(&[Ctx::List], &[cd]),
            Resolve::Action(Action::HalfDown)
        );
        let ad = Key::new(KeyCode::Char('d'), KeyModifiers::ALT);
        assert_eq!(km.resolve(&[Ctx::List], &[ad]), Resolve::None);
        let cd = Key::new(KeyCode::Char('d'), KeyModifiers::CONTROL);
        assert_eq!(
            km.resolve(&[Ctx::List], &[cd]),
            Resolve::Action(Action::HalfDown)
        );
        let big_g = Key::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(
            km.resolve(&[Ctx::List], &[big_g]),
            Resolve::Action(Action::Bottom)
        );
    }

    #[test]
    fn user_file_overrides_one_action() {
        let mut km = KeyMap::default_map();
        km.merge(KeyMap::parse("[tree]\nskip = [\"S\"]\n").unwrap());
        assert_eq!(
            km.resolve(&[Ctx::Tree], &[Key::parse("S").unwrap()]),
            Resolve::Action(Action::Skip)
        );
        assert_eq!(
            km.resolve(&[Ctx::Tree], &[Key::parse("s").unwrap()]),
            Resolve::None
        );
        assert_eq!(
            km.resolve(&[Ctx::Tree], &[Key::parse("l").unwrap()]),
            Resolve::Action(Action::Lock)
        );
        assert!(KeyMap::parse("[tree]\nfly = [\"z\"]\n").is_err());
    }
}
