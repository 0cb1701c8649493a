//! What every command shares: its report is `Serialize` (the `--json` output) and has one text
//! rendering, printed by the CLI and shown by the TUI, so the two faces never drift apart.

use std::path::Path;

use serde::Serialize;

use crate::error::{PareError, Result};

/// A command's result. `render_text` is the only human rendering of it.
pub trait Report: Serialize {
    /// The text the CLI prints and the TUI's job view shows, one line per row.
    fn render_text(&self) -> String;

    /// Pretty JSON (what `--json` prints).
    fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| PareError::Runtime(format!("encoding JSON: {e}")))
    }
}

/// Refuses an output path that is the input model (pare never modifies its input), and an
/// empty one. Every command that writes a model calls this before doing any work.
pub fn check_output(input: Option<&Path>, output: &Path) -> Result<()> {
    if output.as_os_str().is_empty() {
        return Err(PareError::Usage("give an output path".into()));
    }
    let Some(input) = input else { return Ok(()) };
    let same = input == output || crate::model::io::same_file(input, output);
    if same {
        return Err(PareError::OutputIsInput {
            path: output.to_path_buf(),
        });
    }
    Ok(())
}

/// SQNR for people: `exact` above 300 dB (bit-identical), `-` when not measured.
pub fn fmt_db(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 300.0 => "exact".into(),
        Some(v) => format!("{v:.1} dB"),
        None => "-".into(),
    }
}

/// Percentage removed going from `before` to `after` (0 when there was nothing).
pub fn reduction_pct(before: u64, after: u64) -> f64 {
    if before == 0 {
        0.0
    } else {
        100.0 * (1.0 - after as f64 / before as f64)
    }
}

/// Cuts `s` to `n` characters, ending in `…` when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_equal_to_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        std::fs::write(&p, b"x").unwrap();
        let e = check_output(Some(&p), &p).unwrap_err();
        assert!(matches!(e, PareError::OutputIsInput { .. }), "{e}");
        let e = check_output(Some(&p), &dir.path().join(".").join("m.onnx")).unwrap_err();
        assert!(matches!(e, PareError::OutputIsInput { .. }), "{e}");
        assert!(check_output(Some(&p), &dir.path().join("o.onnx")).is_ok());
        assert!(check_output(None, Path::new("")).is_err());
    }

    #[test]
    fn db_and_pct() {
        assert_eq!(fmt_db(Some(400.0)), "exact");
        assert_eq!(fmt_db(Some(31.25)), "31.2 dB");
        assert_eq!(fmt_db(None), "-");
        assert_eq!(reduction_pct(0, 0), 0.0);
        assert_eq!(reduction_pct(200, 50), 75.0);
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
