//! The real terminal: raw mode, alternate screen, mouse capture, a panic hook that puts the
//! terminal back before the panic message prints, and the event loop.

use std::io::{self, Write};
use std::sync::Once;
use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use super::app::App;
use super::ui;

/// Puts the terminal back: leaves the alternate screen, disables mouse capture and raw mode,
/// shows the cursor. Safe to call more than once; never panics.
pub fn restore() {
    let mut out = io::stdout();
    let _ = execute!(
        out,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Installs (once per process) a panic hook that restores the terminal and then runs the
/// previous hook, so the panic message lands on a usable terminal.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only the UI thread owns the terminal; job threads' panics become failed jobs.
            if std::thread::current().name() == Some("main") {
                restore();
            }
            previous(info);
        }));
    });
}

/// Restores the terminal when dropped: covers early returns and errors.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the app on the real terminal until it quits.
pub fn run(mut app: App) -> io::Result<()> {
    install_panic_hook();
    enable_raw_mode()?;
    let _guard = Guard;
    // Clear with crossterm directly: ratatui's `clear` asks the terminal for the cursor
    // position, which a terminal that does not answer would turn into a startup error.
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let panic_after_draw = std::env::var_os("PARE_TUI_TEST_PANIC").is_some();
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|f| ui::draw(&mut app, f))?;
            dirty = false;
            if panic_after_draw {
                panic!("PARE_TUI_TEST_PANIC: deliberate panic after the first frame");
            }
        }
        if app.should_quit() {
            break;
        }
        // Poll fast while something runs in the background, slowly otherwise.
        let timeout = if app.busy() {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(250)
        };
        if event::poll(timeout)? {
            match event::read()? {
                Event::Key(k) => {
                    app.handle_key(k);
                    dirty = true;
                }
                Event::Mouse(m) => {
                    app.handle_mouse(m);
                    dirty = true;
                }
                Event::Resize(_, _) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
            // Drain whatever else is queued before drawing (fast key repeat, wheel bursts).
            while event::poll(Duration::ZERO)? {
                match event::read()? {
                    Event::Key(k) => app.handle_key(k),
                    Event::Mouse(m) => app.handle_mouse(m),
                    Event::Resize(_, _) => terminal.autoresize()?,
                    _ => {}
                }
                if app.should_quit() {
                    break;
                }
            }
        }
        if app.tick() {
            dirty = true;
        }
        // Spinners and elapsed times move while background work runs.
        if app.busy() {
            dirty = true;
        }
    }
    drop(terminal);
    Ok(())
}
