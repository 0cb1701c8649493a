//! Python stack traces from PyTorch's `pkg.torch.onnx.stack_trace` metadata, highlighted with
//! syntect (pure-Rust regex engine, no C dependency). Syntaxes load once, on first use.

use std::sync::OnceLock;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use syntect::easy::HighlightLines;
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;

struct Highlighter {
    syntaxes: SyntaxSet,
    theme: Theme,
}

fn highlighter() -> &'static Highlighter {
    static H: OnceLock<Highlighter> = OnceLock::new();
    H.get_or_init(|| {
        let syntaxes = SyntaxSet::load_defaults_newlines();
        let mut themes = ThemeSet::load_defaults();
        let theme = themes
            .themes
            .remove("base16-ocean.dark")
            .or_else(|| themes.themes.into_values().next())
            .unwrap_or_default();
        Highlighter { syntaxes, theme }
    })
}

/// Highlights a stack trace: `File "...", line N, in f` lines in a location style, code lines
/// as Python.
pub fn stack_trace(text: &str) -> Vec<Line<'static>> {
    let h = highlighter();
    let syntax = h
        .syntaxes
        .find_syntax_by_extension("py")
        .unwrap_or_else(|| h.syntaxes.find_syntax_plain_text());
    let mut out = Vec::new();
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with("File \"") {
            out.push(location_line(trimmed));
            continue;
        }
        // Each code line is independent in a trace: highlight it on its own.
        let mut hl = HighlightLines::new(syntax, &h.theme);
        let code = format!("    {}\n", trimmed);
        match hl.highlight_line(&code, &h.syntaxes) {
            Ok(ranges) => {
                let spans: Vec<Span<'static>> = ranges
                    .into_iter()
                    .map(|(st, piece)| {
                        let c = st.foreground;
                        Span::styled(
                            piece.trim_end_matches('\n').to_string(),
                            Style::default().fg(Color::Rgb(c.r, c.g, c.b)),
                        )
                    })
                    .collect();
                out.push(Line::from(spans));
            }
            Err(_) => out.push(Line::from(code.trim_end().to_string())),
        }
    }
    out
}

fn location_line(line: &str) -> Line<'static> {
    // File "path", line N, in func
    let dim = Style::default().fg(Color::DarkGray);
    let path_style = Style::default().fg(Color::Cyan);
    let num_style = Style::default().fg(Color::Yellow);
    let func_style = Style::default()
        .fg(Color::Green)
        .add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled("File ", dim)];
    let rest = &line[5..];
    let (path, after) = match rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((p, a)) => (p.to_string(), a.to_string()),
        None => return Line::from(Span::styled(line.to_string(), dim)),
    };
    // Long site-packages paths: keep the tail, which names the module.
    let shown = if path.chars().count() > 48 {
        let tail: String = path
            .chars()
            .rev()
            .take(47)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        path
    };
    spans.push(Span::styled(shown, path_style));
    let mut parts = after.split(", ");
    let _ = parts.next();
    for p in parts {
        if let Some(n) = p.strip_prefix("line ") {
            spans.push(Span::styled(":", dim));
            spans.push(Span::styled(n.to_string(), num_style));
        } else if let Some(f) = p.strip_prefix("in ") {
            spans.push(Span::styled(" in ", dim));
            spans.push(Span::styled(f.to_string(), func_style));
        }
    }
    Line::from(spans)
}
