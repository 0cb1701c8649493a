//! `pare finetune` and `pare prune --finetune` (feature `torch`) on small fixtures: the
//! distillation loss falls, the written model runs on tract (or onnxruntime) and matches the trained student,
//! and the prune report carries the `finetune` object.
#![cfg(feature = "torch")]

mod common;

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

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn distillation_lowers_the_loss_and_the_written_model_runs_outside_libtorch() {
    let dir = common::tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    npy_samples(&data, 24);
    let teacher = common::resnet_like();
    let t = common::write(dir.path(), "teacher.onnx", &teacher);
    let s = common::write(dir.path(), "student.onnx", &perturbed(&teacher));
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
