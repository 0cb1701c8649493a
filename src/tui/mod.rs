//! The terminal UI: explore nodes and channel groups, tag layers, extract subgraphs and run
//! prune/quantize/fix jobs with live progress.
//!
//! State and event handling ([`app::App`], routing to the [`views`] and [`overlay`]s, each of
//! which owns its state, keys and commands) are driven by [`app::App::handle_key`];
//! [`ui::draw`] renders them onto any ratatui backend (the tests use `TestBackend`); only
//! [`term`] touches the real terminal.

pub mod app;
pub mod compare;
pub mod component;
pub mod details;
pub mod dialog;
pub mod engines;
pub mod graph;
pub mod highlight;
pub mod jobs;
pub mod keymap;
pub mod overlay;
pub mod search;
pub mod session;
pub mod term;
pub mod theme;
pub mod tree;
pub mod ui;
pub mod views;
pub mod worker;

pub use app::{App, Pane, View};
pub use keymap::KeyMap;
pub use session::Session;
