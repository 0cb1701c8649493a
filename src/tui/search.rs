//! Fuzzy search over node names, op types and tensor names.

use super::session::Session;

/// What a hit matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    Op,
    Tensor,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub node: usize,
    pub score: i64,
    pub field: Field,
    /// The matched text (a tensor name when `field` is Tensor).
    pub text: String,
}

const EXACT: i64 = 10_000;
const SUBSTRING: i64 = 5_000;

/// Scores `cand` against a lower-case `query`: subsequence match with bonuses for exact,
/// prefix, substring, consecutive and word-boundary matches. `None` when not a subsequence.
pub fn fuzzy_score(query: &str, cand: &str) -> Option<i64> {
    if query.is_empty() {
        return None;
    }
    let c = cand.to_lowercase();
    if c == query {
        return Some(EXACT);
    }
    let mut score: i64 = 0;
    if let Some(pos) = c.find(query) {
        // Any contiguous match outranks any scattered one.
        score += SUBSTRING - (pos as i64).min(100);
        let before = c[..pos].chars().last();
        if before.is_none_or(|b| matches!(b, '/' | '.' | '_' | ':' | '-')) {
            score += 100;
        }
        return Some(score - c.len() as i64 / 4);
    }
    let cc: Vec<char> = c.chars().collect();
    let mut ci = 0;
    let mut prev_match: Option<usize> = None;
    for q in query.chars() {
        let mut found = None;
        while ci < cc.len() {
            if cc[ci] == q {
                found = Some(ci);
                ci += 1;
                break;
            }
            ci += 1;
        }
        let at = found?;
        score += 10;
        if prev_match == Some(at.wrapping_sub(1)) {
            score += 15;
        }
        if at == 0 || matches!(cc[at - 1], '/' | '.' | '_' | ':' | '-') {
            score += 20;
        }
        prev_match = Some(at);
    }
    Some(score - cc.len() as i64 / 4)
}

/// Every node matching `query`, best first (ties in execution order).
pub fn search(s: &Session, query: &str) -> Vec<Hit> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return Vec::new();
    }
    let g = s.graph();
    let mut hits = Vec::new();
    for (i, n) in s.nodes.iter().enumerate() {
        let mut best: Option<Hit> = None;
        let mut consider = |score: Option<i64>, field: Field, text: &str| {
            if let Some(sc) = score
                && best.as_ref().is_none_or(|b| sc > b.score)
            {
                best = Some(Hit {
                    node: i,
                    score: sc,
                    field,
                    text: text.to_string(),
                });
            }
        };
        // An exact op name ("If", "conv") ranks above names that merely contain it.
        let op_score =
            fuzzy_score(&q, &n.op).map(|v| if v >= EXACT { EXACT + 2_000 } else { v - 40 });
        consider(op_score, Field::Op, &n.op);
        consider(fuzzy_score(&q, &n.name), Field::Name, &n.name);
        for t in g.node[i].output.iter().chain(g.node[i].input.iter()) {
            if t.is_empty() || s.analysis.index.initializers.contains_key(t) {
                continue;
            }
            consider(fuzzy_score(&q, t).map(|v| v - 30), Field::Tensor, t);
        }
        if let Some(h) = best {
            hits.push(h);
        }
    }
    hits.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(s.nodes[a.node].topo.cmp(&s.nodes[b.node].topo))
    });
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_rank_sensibly() {
        assert_eq!(fuzzy_score("if", "If"), Some(EXACT));
        let exact_sub =
            fuzzy_score("feature.2.0/conv", "/feature/feature.2/feature.2.0/Conv").unwrap();
        let scattered =
            fuzzy_score("feature.2.0/conv", "/feature/feature.2/feature.2.0_1/Conv").unwrap();
        assert!(exact_sub > scattered);
        let sub = fuzzy_score("conv", "/layer1/conv1/Conv").unwrap();
        let fuzzy = fuzzy_score("cnv", "/layer1/conv1/Conv").unwrap();
        assert!(sub > fuzzy);
        assert!(fuzzy_score("xyz", "/layer1/conv1").is_none());
    }
}

// ------------------------------------------------------------------ the component

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::component::{Hint, hint, hint_text};
use super::dialog::TextInput;
use super::theme::{self, fit, fit_left};
use super::ui::pane_block;

const PROMPT_HINTS: &[Hint] = &[hint("↑↓", "choose"), hint("⏎", "go"), hint("Esc", "cancel")];

/// The `/` prompt while it is open.
#[derive(Debug, Default)]
struct Prompt {
    input: TextInput,
    hits: Vec<Hit>,
    sel: usize,
}

/// Search: the open prompt, and the matches of the last search that `n`/`N` walk.
#[derive(Debug, Default)]
pub struct SearchBox {
    prompt: Option<Prompt>,
    hits: Vec<Hit>,
    index: usize,
    last_query: String,
}

/// What a key in the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum SearchReply {
    Stay,
    /// The prompt closed on Enter: go to the current match (or say there is none).
    Go,
}

impl SearchBox {
    pub fn is_open(&self) -> bool {
        self.prompt.is_some()
    }

    pub fn open(&mut self) {
        self.prompt = Some(Prompt::default());
    }

    /// Matches of the last search (highlighted in the tree).
    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    /// Forgets the last search; false when there was none.
    pub fn clear(&mut self) -> bool {
        let had = !self.hits.is_empty();
        self.hits.clear();
        had
    }

    /// Handles a key while the prompt is open.
    pub fn handle(&mut self, k: &KeyEvent, s: &Session) -> SearchReply {
        let Some(p) = &mut self.prompt else {
            return SearchReply::Stay;
        };
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let step = match k.code {
            KeyCode::Down | KeyCode::Tab => Some(1),
            KeyCode::Char('n') if ctrl => Some(1),
            KeyCode::Up | KeyCode::BackTab => Some(-1),
            KeyCode::Char('p') if ctrl => Some(-1),
            _ => None,
        };
        let n = p.hits.len();
        match (k.code, step) {
            (KeyCode::Esc, _) => self.prompt = None,
            (KeyCode::Enter, _) => {
                if let Some(p) = self.prompt.take() {
                    self.last_query = p.input.text;
                    self.hits = p.hits;
                    self.index = p.sel.min(self.hits.len().saturating_sub(1));
                }
                return SearchReply::Go;
            }
            (_, Some(d)) => {
                if n > 0 {
                    p.sel = (p.sel as i64 + d).rem_euclid(n as i64) as usize;
                }
            }
            (_, None) => {
                if p.input.handle(k) {
                    p.hits = search(s, &p.input.text);
                    p.sel = 0;
                }
            }
        }
        SearchReply::Stay
    }

    /// Steps to the next (or previous) match; false when there was no search yet.
    pub fn step(&mut self, forward: bool) -> bool {
        let n = self.hits.len();
        if n == 0 {
            return false;
        }
        self.index = if forward {
            (self.index + 1) % n
        } else {
            (self.index + n - 1) % n
        };
        true
    }

    /// The current match's node and the status line saying where it is, or the "no match"
    /// message.
    pub fn current(&self) -> Result<(usize, String), String> {
        match self.hits.get(self.index) {
            Some(h) => Ok((
                h.node,
                format!(
                    "match {}/{} for '{}' (n/N for more)",
                    self.index + 1,
                    self.hits.len(),
                    self.last_query
                ),
            )),
            None => Err(format!("no match for '{}'", self.last_query)),
        }
    }

    /// The command bar while the prompt is open.
    pub fn bar(&self) -> Option<Line<'static>> {
        let p = self.prompt.as_ref()?;
        Some(Line::from(vec![
            Span::styled("/", theme::accent()),
            Span::raw(p.input.text.clone()),
            Span::styled("█", theme::accent()),
            Span::styled(
                format!("  {} match(es) · {}", p.hits.len(), hint_text(PROMPT_HINTS)),
                theme::dim(),
            ),
        ]))
    }

    /// The match list above the command bar while the prompt is open.
    pub fn draw(&self, s: &Session, f: &mut Frame, body: Rect) {
        let Some(p) = &self.prompt else { return };
        if p.hits.is_empty() {
            return;
        }
        let n = p.hits.len().min(8) as u16;
        let w = body.width.min(90);
        let r = Rect::new(body.x, body.y + body.height.saturating_sub(n + 2), w, n + 2);
        f.render_widget(Clear, r);
        let start = p.sel.saturating_sub(7);
        let inner_w = w.saturating_sub(2) as usize;
        let lines: Vec<Line> = p
            .hits
            .iter()
            .enumerate()
            .skip(start)
            .take(8)
            .map(|(k, h)| {
                let node = &s.nodes[h.node];
                let field = match h.field {
                    Field::Name | Field::Op => String::new(),
                    Field::Tensor => format!("  tensor {}", h.text),
                };
                let mut line = Line::from(vec![
                    Span::styled(format!("{:<12}", fit(&node.op, 11)), theme::op()),
                    Span::raw(fit_left(
                        &node.name,
                        inner_w.saturating_sub(12 + field.chars().count()),
                    )),
                    Span::styled(field, theme::tensor()),
                ]);
                if k == p.sel {
                    line = line.style(theme::cursor(true));
                }
                line
            })
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(pane_block(format!(" {} matches ", p.hits.len()), true)),
            r,
        );
    }
}
