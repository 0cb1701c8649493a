//! The newcomer walk of docs/walkthrough.md, on the shared dev model pat_a_stereo.onnx:
//! checks every step the document claims, and with PARE_WALKTHROUGH=FILE writes the screen
//! captures the document shows. Skipped when the shared models are not next to the repo.

mod tui_support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use pare::tui::View;
use pare::tui::jobs::JobStatus;
use pare::tui::session::Severity;
use tui_support::*;

const W: u16 = 110;
const H: u16 = 32;

fn model() -> Option<PathBuf> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/dev/pat_a_stereo.onnx");
    p.exists().then_some(p)
}

#[test]
fn newcomer_walk_on_the_stereo_model() {
    let Some(path) = model() else {
        eprintln!("skipped: ../shared/models/dev/pat_a_stereo.onnx not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut doc = String::new();
    let mut cap = |title: &str, screen: String| {
        let _ = writeln!(
            doc,
            "### {title}\n\n```text\n{}```\n",
            screen.replace(dir.path().to_str().unwrap(), "/tmp/walk")
        );
    };
    // Work on a copy: the app writes fixed/extracted/pruned files next to the model.
    let path = {
        let copy = dir.path().join("pat_a_stereo.onnx");
        std::fs::copy(&path, &copy).unwrap();
        copy
    };
    let mut app = app_for(Some(&path), None);
    cap("1. open", render(&mut app, W, H));

    // 2. Find the If by searching.
    press(&mut app, "/ I f");
    cap("2. search for If", render(&mut app, W, H));
    press(&mut app, "enter");
    let sel = app.selected_node().expect("a node is selected");
    assert_eq!(app.session().unwrap().nodes[sel].op, "If");
    cap(
        "2b. the If, its neighbourhood and details",
        render(&mut app, W, H),
    );
    // The Diagnostics view opens on the default target, TensorRT 11 (as `pare lint`); `t`
    // cycles to TensorRT 7.1, which cannot import the If.
    press(&mut app, "3");
    {
        let s = app.session().unwrap();
        assert!(s.lint_status.contains("tensorrt-11"), "{}", s.lint_status);
    }
    press(&mut app, "t");
    let if_id = sel;
    let (pos, rule) = {
        let s = app.session().unwrap();
        assert!(s.lint_status.contains("tensorrt-7.1"), "{}", s.lint_status);
        let pos = s
            .diagnostics
            .iter()
            .position(|d| d.node == Some(if_id) && d.severity == Severity::Error)
            .expect("lint reports the If as an error for TensorRT 7.1");
        let d = &s.diagnostics[pos];
        assert!(d.fixable, "{d:?}");
        assert!(d.explanation.contains("squeeze"), "{d:?}");
        (pos, d.rule.clone())
    };
    app.set_diagnostic_cursor(pos);
    cap(
        "3. diagnostics for tensorrt-7.1: the If, why, and the fix",
        render(&mut app, W, H),
    );
    // 3b. Apply the automatic fix: verified against the original, then written.
    press(&mut app, "a");
    app.settle(Duration::from_secs(300));
    let j = app.jobs().last().unwrap();
    assert_eq!(j.status, JobStatus::Finished, "{:?}", j.log);
    let fixed = dir.path().join("pat_a_stereo_fixed.onnx");
    let fixed_model = pare::model::load_model(&fixed).expect("fixed model loads");
    assert!(
        fixed_model
            .proto
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .all(|n| n.op_type() != "If"),
        "fix {rule} removed the If"
    );
    cap("3b. fix job: verified and written", render(&mut app, W, H));
    press(&mut app, "1");

    // 4. Tag two convs skip and see which groups that locks.
    press(&mut app, "/ f e a t u r e . 2 . 0 / C o n v enter s");
    let m1 = app.message().map(str::to_string).unwrap_or_default();
    press(&mut app, "/ f e a t u r e . 2 . 0 _ 1 / C o n v enter s");
    let m2 = app.message().map(str::to_string).unwrap_or_default();
    assert!(
        m1.starts_with("skip") && m2.starts_with("skip"),
        "{m1} / {m2}"
    );
    cap(
        "4. second conv tagged skip (status line says what it locked)",
        render(&mut app, W, H),
    );
    press(&mut app, "2");
    let tagged = app
        .session()
        .unwrap()
        .group_status
        .iter()
        .filter(|g| !g.tag_locks.is_empty())
        .count();
    assert!(tagged >= 1, "skip tags lock at least one group");
    cap("4b. groups view: locked by tags", render(&mut app, W, H));
    press(&mut app, "1");

    // 5. Extract the failing subgraph (the If and the Shape→Gather→Equal chain deciding it).
    press(&mut app, "/ S h a p e enter");
    let shape = app.selected_node().unwrap();
    press(&mut app, "v");
    let if_row = {
        let s = app.session_mut().unwrap();
        let id = s.nodes.iter().position(|n| n.op == "If").unwrap();
        s.tree.reveal(id).unwrap()
    };
    app.set_tree_cursor(if_row);
    press(&mut app, "x");
    assert!(app.range_nodes().contains(&shape));
    let out = dir.path().join("if_piece.onnx");
    press(&mut app, "ctrl-u");
    type_text(&mut app, &out.display().to_string());
    cap(
        "5. extract dialog: boundary tensors and the equivalent command",
        render(&mut app, W, H),
    );
    press(&mut app, "enter");
    app.settle(Duration::from_secs(120));
    assert_eq!(
        app.jobs()[0].status,
        JobStatus::Finished,
        "{:?}",
        app.jobs()[0].log
    );
    assert!(out.exists());
    assert!(dir.path().join("test_data_set_0/input_0.pb").exists());
    cap("5b. extract job summary", render(&mut app, W, H));

    // 6. Prune at 50% and watch it progress.
    press(&mut app, "1 p tab tab tab tab tab ctrl-u");
    let pruned = dir.path().join("stereo_pruned.onnx");
    type_text(&mut app, &pruned.display().to_string());
    cap("6. prune dialog", render(&mut app, W, H));
    press(&mut app, "enter");
    assert_eq!(app.view(), View::Jobs);
    app.settle(Duration::from_secs(300));
    let j = app.jobs().last().unwrap();
    assert!(matches!(
        j.status,
        JobStatus::Finished | JobStatus::Failed(_)
    ));
    cap("6b. prune job finished", render(&mut app, W, H));

    // 7. Quantize with 4 random calibration samples and watch the per-layer SQNR.
    press(&mut app, "1 Q tab tab left left left tab tab tab ctrl-u");
    let quant = dir.path().join("stereo_int8.onnx");
    type_text(&mut app, &quant.display().to_string());
    cap("7. quantize dialog", render(&mut app, W, H));
    press(&mut app, "enter");
    assert_eq!(app.view(), View::Jobs);
    app.settle(Duration::from_secs(300));
    let j = app.jobs().last().unwrap();
    assert_eq!(j.status, JobStatus::Finished, "{:?}", j.log);
    assert!(quant.exists());
    let measured: Vec<_> = j
        .layers
        .iter()
        .filter(|l| l.label == pare::jobs::LayerLabel::SqnrDb)
        .collect();
    assert!(
        measured.len() >= 10
            && measured
                .iter()
                .all(|l| l.value.is_finite() && l.value > 10.0),
        "per-layer SQNR arrives for the quantized convs: {:?}",
        j.layers
    );
    cap("7b. quantize job: per-layer SQNR", render(&mut app, W, H));

    if let Some(f) = std::env::var_os("PARE_WALKTHROUGH") {
        std::fs::write(f, doc).unwrap();
    }
}
