//! Colours and small text helpers shared by the views.

use ratatui::style::{Color, Modifier, Style};

pub fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}
pub fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}
pub fn section() -> Style {
    Style::default()
        .fg(Color::Cyan)
        .add_modifier(Modifier::BOLD)
}
pub fn op() -> Style {
    Style::default().fg(Color::LightBlue)
}
pub fn tensor() -> Style {
    Style::default().fg(Color::LightCyan)
}
pub fn skip() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}
pub fn lock() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}
pub fn ok() -> Style {
    Style::default().fg(Color::Green)
}
pub fn group() -> Style {
    Style::default().fg(Color::Magenta)
}
pub fn accent() -> Style {
    Style::default().fg(Color::Cyan)
}
pub fn key() -> Style {
    Style::default().fg(Color::Black).bg(Color::Cyan)
}
pub fn cursor(focused: bool) -> Style {
    if focused {
        Style::default()
            .bg(Color::Rgb(50, 60, 90))
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default().bg(Color::Rgb(40, 40, 48))
    }
}
pub fn range() -> Style {
    Style::default().bg(Color::Rgb(70, 50, 20))
}
pub fn border(focused: bool) -> Style {
    if focused {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default().fg(Color::DarkGray)
    }
}

/// Bars `▁▂▃▄▅▆▇█` for values (already in display order), resampled to `width`.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let max = values.iter().cloned().fold(0.0, f64::max);
    let n = values.len();
    let w = width.min(n);
    (0..w)
        .map(|k| {
            let lo = k * n / w;
            let hi = ((k + 1) * n / w).max(lo + 1);
            let v = values[lo..hi].iter().sum::<f64>() / (hi - lo) as f64;
            let r = if max > 0.0 { v / max } else { 0.0 };
            BARS[((r * 7.0).round() as usize).min(7)]
        })
        .collect()
}

/// Cuts `s` to `n` display columns with an ellipsis.
pub fn fit(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// Keeps the end of `s` (paths, long names) within `n` columns.
pub fn fit_left(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let t: String = s.chars().skip(len - (n - 1)).collect();
        format!("…{t}")
    }
}
