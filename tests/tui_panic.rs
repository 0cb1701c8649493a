//! The terminal is restored when the TUI panics: run the real binary on a pseudo-terminal
//! (util-linux `script`) with a deliberate panic after the first frame.

use std::process::Command;

#[test]
fn panic_restores_the_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_pare");
    let out = Command::new("script")
        .args(["-qec", &format!("{bin} tui"), "/dev/null"])
        .env("PARE_TUI_TEST_PANIC", "1")
        .env("TERM", "xterm-256color")
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let enter = text
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    let leave = enter
        + text[enter..]
            .find("\x1b[?1049l")
            .expect("left the alternate screen");
    let msg = text
        .find("deliberate panic")
        .expect("panic message printed");
    assert!(
        enter < leave && leave < msg,
        "the terminal is restored before the panic message prints"
    );
    assert!(!out.status.success());
}

#[test]
fn no_arguments_without_a_terminal_prints_info() {
    let out = Command::new(env!("CARGO_BIN_EXE_pare")).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("model"), "{text}");
}
