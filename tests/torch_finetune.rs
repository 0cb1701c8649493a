//! `pare finetune` and `pare prune --finetune` (feature `torch`) on small fixtures: the
//! distillation loss falls, the written model runs on tract (or onnxruntime) and matches the trained student,
//! and the prune report carries the `finetune` object.
#![cfg(feature = "torch")]

mod common;
mod tui_support;

use std::path::Path;

use pare::model::proto::ModelProto;
use pare::rng::Rng;

/// `n` seeded .npy samples of shape 1×3×32×32 in `dir`.
fn npy_samples(dir: &Path, n: usize) {
    let mut rng = Rng::new(11);
    for k in 0..n {
        let v: Vec<f32> = (0..3 * 32 * 32).map(|_| rng.normal()).collect();
        pare::data::write_npy_f32(&dir.join(format!("{k:03}.npy")), &[1, 3, 32, 32], &v)
            .expect("write npy");
    }
}

/// The teacher with every conv weight scaled by a seeded factor in [0.6, 1.4]: a student that
/// starts visibly off.
fn perturbed(m: &ModelProto) -> ModelProto {
    let mut m = m.clone();
    let mut rng = Rng::new(3);
    if let Some(g) = m.graph.as_mut() {
        for t in g
            .initializer
            .iter_mut()
            .filter(|t| t.name().ends_with(".weight"))
        {
            let v = pare::model::tensor::to_f32(t).expect("f32");
            let v: Vec<f32> = v
                .iter()
                .map(|x| x * (0.6 + 0.8 * rng.uniform()) as f32)
                .collect();
            *t = pare::model::tensor::f32_tensor(t.name(), &t.dims.clone(), &v);
        }
    }
    m
}

/// `n` samples in `dir/data`, the teacher and a perturbed student written beside them.
fn setup(dir: &Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, n);
    let teacher = common::resnet_like();
    let t = common::write(dir, "teacher.onnx", &teacher);
    let s = common::write(dir, "student.onnx", &perturbed(&teacher));
    (data, t, s)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn distillation_lowers_the_loss_and_the_written_model_runs_outside_libtorch() {
    let dir = common::tempdir();
    let (data, t, s) = setup(dir.path(), 24);
    let out = dir.path().join("tuned.onnx");
    let (code, stdout, err) = common::pare(&[
        "finetune",
        s.to_str().expect("utf8"),
        "--teacher",
        t.to_str().expect("utf8"),
        "--data",
        data.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--steps",
        "40",
        "--batch",
        "4",
        "--lr",
        "0.003",
        "--loss",
        "mse",
        "--eval-samples",
        "8",
        "--eval-every",
        "20",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&stdout);
    let (first, last) = (
        r["loss_first"].as_f64().expect("loss_first"),
        r["loss_last"].as_f64().expect("loss_last"),
    );
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    assert_eq!(r["steps"], 40);
    assert_eq!(r["eval_samples"], 8);
    assert_eq!(r["eval_disjoint"], true);
    let engine = r["written"]["engine"].as_str().expect("engine");
    assert!(engine == "tract" || engine == "onnxruntime", "{r}");
    assert!(
        r["written"]["max_rel_diff"].as_f64().expect("diff") < 1e-4,
        "{r}"
    );
    let curve = r["curve"].as_array().expect("curve");
    assert_eq!(curve.len(), 41, "step 0 plus one point per step");
    assert!(curve[20]["agreement"].is_number() && curve[19]["agreement"].is_null());
    // Same graph, new weights; the student file is untouched.
    let tuned = pare::model::load_model(&out).expect("load").proto;
    let student = pare::model::load_model(&s).expect("load").proto;
    let (tg, sg) = (tuned.graph.expect("g"), student.graph.expect("g"));
    assert_eq!(tg.node, sg.node);
    assert_ne!(tg.initializer, sg.initializer);
}

#[test]
fn prune_with_finetune_reports_the_finetune_object() {
    let dir = common::tempdir();
    let data = dir.path().join("calib");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, 8);
    let m = common::write(dir.path(), "m.onnx", &common::resnet_like());
    let out = dir.path().join("p.onnx");
    let (code, stdout, err) = common::pare(&[
        "prune",
        m.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--ratio",
        "0.5",
        "--calib",
        data.to_str().expect("utf8"),
        "--finetune",
        "5",
        "--finetune-batch",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&stdout);
    let f = &r["finetune"];
    assert_eq!(f["steps"], 5, "{r}");
    for k in [
        "seconds",
        "loss_first",
        "loss_last",
        "fidelity_before",
        "fidelity_after",
    ] {
        assert!(f[k].is_number(), "{k}: {f}");
    }
    assert!(out.exists());
    assert!(
        !dir.path().join("p.onnx.finetune.tmp.onnx").exists(),
        "temporary file left behind"
    );
}

/// QAT on a model with dynamic height and width, from calibration crops stored as .npy at
/// the size the model runs at (what `pare quantize --calib` takes): the tensors are not
/// pinned to the doubled load size images get, so this trains instead of refusing them.
#[test]
fn quantize_finetune_takes_npy_crops_on_a_dynamic_size_model() {
    let dir = common::tempdir();
    let data = dir.path().join("calib");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, 8);
    let m = common::write(dir.path(), "m.onnx", &common::dynamic_hw());
    let out = dir.path().join("q.onnx");
    let (code, stdout, err) = common::pare(&[
        "quantize",
        m.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--calib",
        data.to_str().expect("utf8"),
        "--finetune",
        "3",
        "--finetune-batch",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = &json(&stdout)["finetune"];
    assert_eq!(f["steps"], 3);
    // QAT: the written model is judged against the untrained student's own runtime gap.
    assert!(f["written"]["baseline_rel_diff"].is_number(), "{f}");
    assert!(out.exists());
}

#[test]
fn finetune_without_calibration_data_is_refused_before_pruning() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "m.onnx", &common::resnet_like());
    let out = dir.path().join("p.onnx");
    let (code, _, err) = common::pare(&[
        "prune",
        m.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--finetune",
        "5",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--calib"), "{err}");
    assert!(!out.exists());
}

/// The TUI's fine-tuning job: `T` on a finished prune job, steps and folder typed into the
/// prompt; the job trains from the open model (the teacher), writes `NAME_ft.onnx` and its
/// view draws the loss chart from the training events. Cancelling stops it without output.
#[test]
fn tui_finetune_job_trains_and_charts_the_loss() {
    use pare::tui::jobs::{JobKind, JobOutcome, JobStatus};
    use std::time::Duration;
    let dir = common::tempdir();
    let (data, t, s) = setup(dir.path(), 24);
    let mut app = tui_support::app_for(Some(&t), None);
    let out = s.clone();
    app.spawn_job(JobKind::Prune, "prune", "pare prune", move |_| {
        Ok(JobOutcome {
            outputs: vec![out],
            ..Default::default()
        })
    });
    app.settle(Duration::from_secs(10));
    tui_support::press(&mut app, "T");
    for _ in 0..8 {
        tui_support::press(&mut app, "backspace");
    }
    tui_support::type_text(&mut app, &format!("20 {}", data.display()));
    tui_support::press(&mut app, "enter");
    app.settle(Duration::from_secs(300));
    let j = app.jobs().last().expect("job");
    assert_eq!(j.kind, JobKind::Finetune);
    assert_eq!(j.status, JobStatus::Finished, "{:?}", j.log);
    assert_eq!(j.training.len(), 20);
    assert!(j.training.last().and_then(|p| p.agreement).is_some());
    assert!(j.command.contains("--teacher") && j.command.contains("--steps 20"));
    let written = dir.path().join("student_ft.onnx");
    assert!(written.exists());
    pare::model::load_model(&written).expect("the fine-tuned model loads");
    let screen = tui_support::render(&mut app, 140, 40);
    assert!(screen.contains("loss · agreement"), "{screen}");
}

/// Library progress: a "training" phase of `steps` and one training event per step.
#[test]
fn finetune_reports_each_step_to_its_progress_sink() {
    use pare::jobs::{JobEvent, RecordProgress};
    use pare::torch::finetune::{FinetuneRequest, Loss, finetune};
    let dir = common::tempdir();
    let (data, t, s) = setup(dir.path(), 12);
    let req = FinetuneRequest {
        student: s,
        teacher: t,
        output: dir.path().join("out.onnx"),
        data: pare::data::DataSource::Path(data),
        preprocess: pare::data::Preprocess::default(),
        samples: 12,
        crop: None,
        steps: 6,
        batch: 2,
        lr: 1e-3,
        loss: Loss::Mse,
        device: tch::Device::Cpu,
        eval_samples: 4,
        seed: 0,
        eval_every: 3,
        eval_data: None,
        max_seconds: None,
        features: pare::torch::finetune::Features::Auto,
    };
    let rec = RecordProgress::default();
    finetune(&req, &rec).expect("finetune");
    let ev = rec.events();
    assert!(ev.contains(&JobEvent::Phase {
        name: "training".into(),
        total: Some(6)
    }));
    let steps: Vec<(u64, bool)> = ev
        .iter()
        .filter_map(|e| match e {
            JobEvent::Training {
                step, agreement, ..
            } => Some((*step, agreement.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (1, false),
            (2, false),
            (3, true),
            (4, false),
            (5, false),
            (6, true)
        ]
    );
}

/// `--features auto` on a pruned student: it matches conv/Add outputs whose shape the pruning
/// kept (the channel-group boundaries), never a pruned tensor or a graph output, and training
/// on them lowers the loss; `--features none` matches nothing.
#[test]
fn feature_distillation_taps_the_tensors_pruning_kept() {
    use pare::jobs::NoProgress;
    use pare::torch::finetune::{Features, FinetuneRequest, Loss, finetune};
    let dir = common::tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, 12);
    let teacher = common::resnet_like();
    let (ta, _, _, pruned) = common::prune_at(&teacher, 0.5);
    let t = common::write(dir.path(), "teacher.onnx", &teacher);
    let s = common::write(dir.path(), "pruned.onnx", &pruned);
    let pa = pare::model::Analysis::new(
        common::model(pruned.clone()),
        &pare::model::InputPins::new(),
    )
    .expect("analysis");
    let run = |features| {
        let req = FinetuneRequest {
            student: s.clone(),
            teacher: t.clone(),
            output: dir.path().join("out.onnx"),
            data: pare::data::DataSource::Path(data.clone()),
            preprocess: pare::data::Preprocess::default(),
            samples: 12,
            crop: None,
            steps: 30,
            batch: 4,
            lr: 3e-3,
            loss: Loss::Mse,
            device: tch::Device::Cpu,
            eval_samples: 4,
            seed: 0,
            eval_every: 0,
            eval_data: None,
            max_seconds: None,
            features,
        };
        finetune(&req, &NoProgress).expect("finetune")
    };
    let r = run(Features::Auto);
    let g = pruned.graph.as_ref().expect("graph");
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name()).collect();
    let mut kept = 0;
    let mut changed = 0;
    for n in g
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "Conv" | "Add"))
    {
        let name = n.output[0].as_str();
        let same = pa.shapes.static_shape(name) == ta.shapes.static_shape(name);
        let tapped = r.feature_taps.iter().any(|x| x == name);
        assert!(
            !tapped || (same && !outputs.contains(&name)),
            "{name} is tapped though pruning changed it or it is an output: {:?}",
            r.feature_taps
        );
        if same { kept += 1 } else { changed += 1 }
    }
    assert!(
        kept > 0 && changed > 0,
        "the fixture must prune some tensors and keep others"
    );
    assert!(!r.feature_taps.is_empty(), "some kept boundary is matched");
    assert!(
        r.loss_last < r.loss_first,
        "{} -> {}",
        r.loss_first,
        r.loss_last
    );
    assert!(run(Features::None).feature_taps.is_empty());
}

/// A tensor that keeps its name but not its meaning (channels rescaled, as quantization's
/// equalization does) is not matched; the same tensor unchanged is.
#[test]
fn feature_distillation_skips_a_rescaled_tensor() {
    use pare::jobs::NoProgress;
    use pare::torch::finetune::{Features, FinetuneRequest, Loss, finetune};
    let dir = common::tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, 8);
    let teacher = common::resnet_like();
    let first_conv = teacher.graph.as_ref().expect("graph").node[0].output[0].clone();
    let rescaled = common::resnet_like_with_conv_weights(|w| w.iter().map(|x| x * 10.0).collect());
    let t = common::write(dir.path(), "teacher.onnx", &teacher);
    let taps = |student: &pare::model::proto::ModelProto| {
        let s = common::write(dir.path(), "student.onnx", student);
        let req = FinetuneRequest {
            student: s,
            teacher: t.clone(),
            output: dir.path().join("out.onnx"),
            data: pare::data::DataSource::Path(data.clone()),
            preprocess: pare::data::Preprocess::default(),
            samples: 8,
            crop: None,
            steps: 1,
            batch: 2,
            lr: 1e-4,
            loss: Loss::Mse,
            device: tch::Device::Cpu,
            eval_samples: 2,
            seed: 0,
            eval_every: 0,
            eval_data: None,
            max_seconds: None,
            features: Features::Auto,
        };
        finetune(&req, &NoProgress).expect("finetune").feature_taps
    };
    assert!(taps(&teacher).contains(&first_conv));
    assert!(!taps(&rescaled).contains(&first_conv));
}
