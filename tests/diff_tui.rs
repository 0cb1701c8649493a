//! The TUI's Compare view: `--compare` runs the comparison as a job and shows it; `C` on a
//! finished job compares its output with the original; a snapshot of the view.

mod common;
mod tui_support;

use std::path::PathBuf;
use std::time::Duration;

use pare::diff::structure::{Change, NodeChange};
use pare::diff::{DiffRequest, Divergence};
use pare::jobs::NoProgress;
use pare::model::{Analysis, InputPins};
use pare::tui::View;
use pare::tui::compare::CompareView;
use pare::tui::jobs::{JobKind, JobOutcome, JobStatus};
use tui_support::*;

fn snap(name: &str, text: String) {
    insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(name, text);
    });
}

fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = common::tempdir();
    let a = common::write(dir.path(), "a.onnx", &common::resnet_like());
    let b = common::write(dir.path(), "b.onnx", &common::resnet_like());
    (dir, a, b)
}

#[test]
fn compare_runs_as_a_job_and_fills_the_view() {
    let (_dir, a, b) = files();
    let mut app = app_for(Some(&a), None);
    app.compare_with(b.clone());
    assert_eq!(app.view(), View::Compare);
    assert_eq!(app.jobs()[0].kind, JobKind::Compare);
    app.settle(Duration::from_secs(60));
    assert_eq!(
        app.jobs()[0].status,
        JobStatus::Finished,
        "{:?}",
        app.jobs()[0].log
    );
    app.tick();
    let r = app.compare_view().and_then(|c| c.report()).expect("report");
    assert!(r.same_structure());
    assert!(!r.tensors.is_empty());
    assert!(
        r.tensors
            .iter()
            .all(|t| t.sqnr_db.is_some_and(|s| s >= 300.0))
    );
    let screen = render(&mut app, 120, 30);
    assert!(
        screen.contains("Compare") && screen.contains("exact"),
        "{screen}"
    );
    // Enter goes to the tensor's node in the Nodes view.
    let node = app
        .compare_view()
        .and_then(|c| c.current())
        .expect("row")
        .node
        .clone();
    press(&mut app, "enter");
    assert_eq!(app.view(), View::Nodes);
    let id = app.session().expect("session").by_name[&node];
    assert_eq!(app.selected_node(), Some(id));
    // The Compare tab stays reachable.
    press(&mut app, "tab");
    assert!(app.tab_views().contains(&View::Compare));
}

#[test]
fn a_finished_job_offers_compare_with_the_original() {
    let (_dir, a, b) = files();
    let mut app = app_for(Some(&a), None);
    let out = b.clone();
    app.spawn_job(JobKind::Prune, "prune 50%", "pare prune", move |_| {
        Ok(JobOutcome {
            summary: vec!["done".into()],
            outputs: vec![out],
            ..Default::default()
        })
    });
    app.settle(Duration::from_secs(10));
    press(&mut app, "C");
    assert_eq!(app.view(), View::Compare);
    app.settle(Duration::from_secs(60));
    app.tick();
    assert!(app.compare_view().and_then(|c| c.report()).is_some());
    assert_eq!(app.compare_view().expect("view").b, b);
}

#[test]
fn compare_view_snapshot() {
    let (_dir, a, b) = files();
    let ma = Analysis::open(&a, &InputPins::new()).expect("a");
    let mb = Analysis::open(&b, &InputPins::new()).expect("b");
    let req = DiffRequest {
        data: Some(pare::diff::DiffData {
            engine: pare::runtime::EngineChoice::Tract,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut r = pare::diff::run(&ma, &mb, &req, &NoProgress).expect("diff");
    // Fixed numbers and one structural change, so the snapshot shows every colour band and
    // the side-by-side rows whatever the engine computes.
    r.a = "a.onnx".into();
    r.b = "b.onnx".into();
    for (t, v) in r.tensors.iter_mut().zip([4.2, 21.5, 33.0]) {
        t.sqnr_db = Some(v);
        t.cosine = Some(0.99);
        t.max_abs = Some(0.125);
    }
    let first = r.tensors[0].clone();
    r.first_divergence = Some(Divergence {
        name: first.name.clone(),
        node: first.node.clone(),
        sqnr_db: first.sqnr_db,
    });
    r.structure.changed.push(NodeChange {
        name: first.node.clone(),
        op: first.op.clone(),
        scope: String::new(),
        changes: vec![
            Change::WeightShape {
                input: 1,
                before: vec![8, 8, 3, 3],
                after: vec![4, 8, 3, 3],
            },
            Change::Quantized,
        ],
    });
    let mut app = app_for(Some(&a), None);
    app.show_compare(CompareView::with_report(PathBuf::from("b.onnx"), r));
    snap("compare_view", render(&mut app, 120, 30));
}

#[test]
fn nodes_view_colours_names_by_the_comparison() {
    let dir = common::tempdir();
    let a = common::write(dir.path(), "a.onnx", &common::resnet_like());
    // B: the same model with one conv's weights scrambled (its output diverges badly).
    let m = common::resnet_like_with_conv_weights(|w| w.iter().rev().map(|x| -3.0 * x).collect());
    let b = common::write(dir.path(), "b.onnx", &m);
    let mut app = app_for(Some(&a), None);
    app.compare_with(b);
    app.settle(Duration::from_secs(60));
    app.tick();
    let worst = app
        .compare_view()
        .and_then(|c| c.report())
        .and_then(|r| r.tensors.first().cloned())
        .expect("a compared tensor");
    assert!(worst.sqnr_db.is_some_and(|db| db < 10.0), "{worst:?}");
    press(&mut app, "1");
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(140, 40)).unwrap();
    term.draw(|f| pare::tui::ui::draw(&mut app, f)).unwrap();
    let buf = term.backend().buffer().clone();
    let text = buffer_text(&buf);
    assert!(text.contains("diff SQNR: red < 10 dB"), "{text}");
    // The worst node's name is drawn red in the tree.
    let leaf = worst
        .node
        .rsplit('/')
        .next()
        .unwrap_or(&worst.node)
        .to_string();
    let (y, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(&leaf))
        .unwrap_or_else(|| panic!("{leaf} not in the tree:\n{text}"));
    let x = line[..line.find(&leaf).unwrap()].chars().count() as u16;
    assert_eq!(
        buf[(x, y as u16)].fg,
        ratatui::style::Color::Red,
        "{leaf} at {x},{y}"
    );
    // Its box in the neighbourhood graph too, once a neighbour is selected.
    let id = app.session().unwrap().by_name[&worst.node];
    let next = app.session().unwrap().nodes.len().min(id + 1);
    app.reveal(next.min(app.session().unwrap().nodes.len() - 1));
    term.draw(|f| pare::tui::ui::draw(&mut app, f)).unwrap();
    let buf = term.backend().buffer().clone();
    let red_in_graph = (0..buf.area.height).any(|y| {
        (buf.area.width / 2..buf.area.width)
            .any(|x| buf[(x, y)].fg == ratatui::style::Color::Red && buf[(x, y)].symbol() != " ")
    });
    assert!(red_in_graph, "{}", buffer_text(&buf));
}
