//! TUI actions that run other commands as jobs: the Groups view's sensitivity column (measured
//! by a job, then sortable), the Diagnostics view's measured remedy (`pare convert` for a model
//! that would build an FP32 engine on TensorRT 11) and the quantize dialog's precision field.

mod common;
mod tui_support;

use std::time::Duration;

use pare::lint::Remedy;
use pare::tui::View;
use pare::tui::jobs::{JobKind, JobStatus};
use tui_support::*;

/// A plain FP32 conv model in a temp folder, opened in the TUI (outputs land next to it).
fn conv_app() -> (tempfile::TempDir, pare::tui::App) {
    let dir = common::tempdir();
    let path = common::write(dir.path(), "net.onnx", &common::resnet_like());
    let app = app_for(Some(&path), None);
    (dir, app)
}

#[test]
fn groups_sensitivity_job_fills_the_column_and_sorts() {
    let (_dir, mut app) = conv_app();
    press(&mut app, "2");
    assert_eq!(app.view(), View::Groups);
    let before = render(&mut app, 120, 30);
    assert!(!before.contains("out SQNR"), "{before}");
    press(&mut app, "o");
    assert!(
        render(&mut app, 120, 30).contains("no sensitivity yet"),
        "sorting before measuring says why"
    );
    press(&mut app, "S enter");
    assert_eq!(app.view(), View::Jobs);
    app.settle(Duration::from_secs(120));
    let j = &app.jobs()[0];
    assert_eq!(j.kind, JobKind::Sensitivity);
    assert_eq!(j.status, JobStatus::Finished, "{:?}", j.log);
    let summary = j.outcome.as_ref().unwrap().summary.join("\n");
    assert!(summary.contains("sensitivity of"), "{summary}");

    press(&mut app, "2");
    let screen = render(&mut app, 120, 30);
    assert!(screen.contains("out SQNR"), "{screen}");
    assert!(screen.contains(" dB"), "{screen}");

    // The report ranks the most sensitive group first; sorted, the first row is that group.
    let ranked: Vec<usize> = summary
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(ranked.len() >= 2, "{summary}");
    press(&mut app, "o g g");
    let screen = render(&mut app, 120, 30);
    assert!(screen.contains("most sensitive first"), "{screen}");
    assert_eq!(app.highlight_group(), Some(ranked[0]));
    press(&mut app, "j");
    assert_eq!(app.highlight_group(), Some(ranked[1]));
    // Back to id order; the cursor stays on its group.
    press(&mut app, "o");
    assert_eq!(app.highlight_group(), Some(ranked[1]));
    assert!(!render(&mut app, 120, 30).contains("most sensitive first"));
}

#[test]
fn sensitivity_with_a_missing_folder_says_so_and_starts_nothing() {
    let (dir, mut app) = conv_app();
    press(&mut app, "2 S");
    type_text(&mut app, &dir.path().join("nope").display().to_string());
    press(&mut app, "enter");
    assert!(app.jobs().is_empty());
    let screen = render(&mut app, 120, 30);
    assert!(screen.contains("no such sample folder"), "{screen}");
}

#[test]
fn fp32_engine_finding_runs_convert_as_a_job() {
    let (dir, mut app) = conv_app();
    let s = app.session().unwrap();
    let k = s
        .diagnostics
        .iter()
        .position(|d| d.remedy.is_some())
        .expect("an FP32-only model gets the TensorRT 11 FP32-engine note with a remedy");
    assert!(matches!(
        s.diagnostics[k].remedy,
        Some(Remedy::Convert { .. })
    ));
    assert!(
        !s.diagnostics[k].fixable,
        "convert is measured, not a proven rewrite"
    );
    press(&mut app, "3");
    for _ in 0..k {
        press(&mut app, "j");
    }
    let screen = render(&mut app, 140, 40);
    assert!(screen.contains("pare convert --precision fp16"), "{screen}");
    press(&mut app, "a");
    assert_eq!(app.view(), View::Jobs);
    app.settle(Duration::from_secs(120));
    let j = &app.jobs()[0];
    assert_eq!(j.kind, JobKind::Convert);
    assert_eq!(j.status, JobStatus::Finished, "{:?}", j.log);
    let out = dir.path().join("net_fp16.onnx");
    assert!(out.exists(), "{:?}", j.outcome);
    assert!(j.command.contains("--precision fp16"), "{}", j.command);
    // The written model is FP16 inside and still runs.
    let m = pare::model::load_model(&out).expect("converted model loads");
    let fp16 = m
        .proto
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.data_type() == pare::model::DataType::FLOAT16.0)
        .count();
    assert!(fp16 > 0, "no FP16 initializer in the converted model");
}

#[test]
fn quantize_dialog_offers_the_precision() {
    let (_dir, mut app) = conv_app();
    press(&mut app, "Q");
    let screen = render(&mut app, 120, 36);
    assert!(screen.contains("precision"), "{screen}");
    assert!(
        !screen.contains("--precision"),
        "FP32 is the default: {screen}"
    );
    press(&mut app, "tab tab tab tab tab right");
    let screen = render(&mut app, 120, 36);
    assert!(screen.contains("INT8 + FP16"), "{screen}");
    press(&mut app, "enter");
    assert_eq!(app.view(), View::Jobs);
    let j = &app.jobs()[0];
    assert_eq!(j.kind, JobKind::Quantize);
    assert!(j.command.contains("--precision fp16"), "{}", j.command);
    app.settle(Duration::from_secs(120));
}

/// A finished prune job whose output is `out`, as the Jobs view shows it.
fn finished_prune(app: &mut pare::tui::App, out: std::path::PathBuf) {
    app.spawn_job(JobKind::Prune, "prune 50%", "pare prune", move |_| {
        Ok(pare::tui::jobs::JobOutcome {
            summary: vec!["done".into()],
            outputs: vec![out],
            ..Default::default()
        })
    });
    app.settle(Duration::from_secs(10));
}

#[test]
fn finetune_key_on_a_finished_job_asks_or_says_how_to_enable_it() {
    let (dir, mut app) = conv_app();
    // Not on a running or missing job.
    press(&mut app, "4");
    press(&mut app, "T");
    assert!(
        app.message()
            .is_some_and(|m| m.contains("finished prune or quantize")),
        "{:?}",
        app.message()
    );
    let student = common::write(dir.path(), "pruned.onnx", &common::resnet_like());
    finished_prune(&mut app, student);
    press(&mut app, "T");
    let screen = render(&mut app, 140, 36);
    if cfg!(feature = "torch") {
        assert!(screen.contains("Fine-tune"), "{screen}");
        assert!(screen.contains("pruned.onnx"), "{screen}");
    } else {
        assert!(
            app.message().is_some_and(|m| m.contains("`torch` feature")),
            "{:?}",
            app.message()
        );
        assert!(!screen.contains("STEPS (default"), "{screen}");
    }
}

#[test]
fn finetune_job_draws_its_loss_chart_with_the_agreement() {
    let (_dir, mut app) = conv_app();
    app.spawn_job(
        JobKind::Finetune,
        "finetune 30 steps",
        "pare finetune",
        |p| {
            use pare::jobs::{JobEvent, Progress};
            p.phase("training", Some(30));
            for step in 1..=30u64 {
                let agreement = match step {
                    10 => Some(0.25),
                    30 => Some(0.75),
                    _ => None,
                };
                p.step(step, "");
                p.event(JobEvent::Training {
                    step,
                    loss: 3.0 / step as f64,
                    agreement,
                });
            }
            Ok(pare::tui::jobs::JobOutcome::default())
        },
    );
    app.settle(Duration::from_secs(10));
    let j = &app.jobs()[0];
    assert_eq!(j.training.len(), 30);
    assert!(
        j.log
            .iter()
            .any(|l| l.contains("step 30: loss 0.1000, agreement 0.750"))
    );
    let screen = render(&mut app, 140, 40);
    assert!(screen.contains("agreement 0.250 → 0.750"), "{screen}");
    assert!(screen.contains("step"), "{screen}");
    // The chart's y axis runs to the largest loss (3.0 at step 1).
    assert!(screen.contains("3.000"), "{screen}");
}

#[test]
fn finetune_prompt_reads_steps_and_folder() {
    let dir = common::tempdir();
    let s = dir.path().join("p.onnx");
    let t = dir.path().join("t.onnx");
    let data = dir.path().to_string_lossy().into_owned();
    let a = pare::tui::engines::finetune_ask(&format!("300 {data}"), &s, &t).expect("ask");
    assert_eq!(a.steps, 300);
    assert_eq!(a.output, dir.path().join("p_ft.onnx"));
    assert!(a.command_line().contains("--steps 300 --eval-every 30"));
    let a = pare::tui::engines::finetune_ask(&data, &s, &t).expect("folder only");
    assert_eq!(a.steps, pare::tui::engines::FINETUNE_STEPS);
    for bad in ["300", "", "0 .", "12 /no/such/folder"] {
        let e = pare::tui::engines::finetune_ask(bad, &s, &t).expect_err(bad);
        assert!(!e.to_string().is_empty());
    }
}
