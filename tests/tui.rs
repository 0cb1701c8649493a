//! Snapshots of the whole TUI on ratatui's TestBackend: every view and dialog, at a roomy
//! size and at 80x24. Run `cargo insta review` (or INSTA_UPDATE=always) after an intended
//! change; CI (CI=true) fails on any difference.

mod tui_support;

use std::sync::mpsc;
use std::time::Duration;

use pare::jobs::{JobEvent, Progress};
use pare::tui::View;
use pare::tui::jobs::{JobKind, JobOutcome};
use tui_support::*;

fn snap(name: &str, text: String) {
    insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn nodes_view() {
    let mut app = demo_app();
    snap("nodes_120x36", render(&mut app, 120, 36));
}

#[test]
fn nodes_view_80x24_is_usable() {
    let mut app = demo_app();
    press(&mut app, "j j j j j");
    snap("nodes_80x24", render(&mut app, 80, 24));
}

#[test]
fn nodes_view_wide_three_columns() {
    let mut app = demo_app();
    press(&mut app, "/ I f enter");
    snap("nodes_160x40_if", render(&mut app, 160, 40));
}

#[test]
fn graph_pane_focused() {
    let mut app = demo_app();
    press(&mut app, "/ a d d _ 1 8 enter f j");
    snap("graph_focused", render(&mut app, 120, 40));
}

#[test]
fn groups_view() {
    let mut app = demo_app();
    press(&mut app, "2 j j j");
    snap("groups", render(&mut app, 120, 30));
}

#[test]
fn diagnostics_view() {
    let mut app = demo_app();
    press(&mut app, "3");
    snap("diagnostics", render(&mut app, 100, 20));
}

#[test]
fn help_overlay() {
    let mut app = demo_app();
    press(&mut app, "?");
    snap("help", render(&mut app, 100, 40));
}

#[test]
fn search_dropdown() {
    let mut app = demo_app();
    press(&mut app, "/ c o n v");
    snap("search", render(&mut app, 100, 30));
}

#[test]
fn prune_dialog() {
    let mut app = demo_app();
    press(&mut app, "p right tab right");
    snap("prune_dialog", render(&mut app, 100, 30));
}

#[test]
fn quantize_dialog() {
    let mut app = demo_app();
    press(&mut app, "Q");
    snap("quantize_dialog", render(&mut app, 100, 30));
}

#[test]
fn extract_dialog_for_a_range() {
    let mut app = demo_app();
    press(&mut app, "/ c o n v _ 4 enter v j j j x");
    snap("extract_dialog", render(&mut app, 100, 32));
}

#[test]
fn quit_confirmation_when_tags_are_unsaved() {
    let mut app = demo_app();
    press(&mut app, "s q");
    assert!(!app.should_quit());
    snap("confirm_quit", render(&mut app, 80, 24));
    press(&mut app, "esc");
    assert!(app.overlay().is_none() && !app.should_quit());
}

#[test]
fn job_with_injected_progress() {
    let mut app = demo_app();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    app.spawn_job(
        JobKind::Quantize,
        "quantize minmax 8 samples",
        "pare quantize <demo> -o q.onnx",
        move |p| {
            p.phase("calibrating", Some(8));
            p.step(3, "sample 3/8");
            p.log("calibration set: 8 random samples");
            for (node, v) in [
                ("/stem/conv_1/Conv", 41.5),
                ("/layer1/0/conv_4/Conv", 33.2),
                ("/aspp/Conv_23", 17.9),
            ] {
                p.event(JobEvent::Layer {
                    node: node.into(),
                    value: v,
                    label: pare::jobs::LayerLabel::SqnrDb,
                });
            }
            ready_tx.send(()).ok();
            go_rx.recv().ok();
            p.phase("writing", None);
            p.event(JobEvent::Finished {
                summary: "output SQNR 31.4 dB".into(),
            });
            Ok(JobOutcome {
                summary: vec!["output SQNR 31.4 dB".into(), "wrote q.onnx".into()],
                outputs: vec![],
                sensitivity: None,
            })
        },
    );
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("job started");
    std::thread::sleep(Duration::from_millis(50));
    app.tick();
    assert_eq!(app.view(), View::Jobs);
    // The job is parked mid-way: render without settling.
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 26)).unwrap();
    t.draw(|f| pare::tui::ui::draw(&mut app, f)).unwrap();
    snap("job_running", buffer_text(t.backend().buffer()));
    go_tx.send(()).unwrap();
    app.settle(Duration::from_secs(10));
    snap("job_finished", render(&mut app, 100, 26));
}

#[test]
fn any_size_draws_without_panicking() {
    let mut app = demo_app();
    for (w, h) in [(20, 6), (30, 8), (60, 15), (80, 24), (200, 60), (19, 5)] {
        for keys in ["1", "2", "3", "4", "1 ?", "esc p", "esc"] {
            press(&mut app, keys);
            let _ = render(&mut app, w, h);
        }
    }
}
