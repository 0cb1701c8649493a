//! `pare import-weights`: a PyTorch state_dict onto an ONNX export that renamed its weights
//! and folded BatchNorm. Fixtures in tests/data/torch were made once by make.py (torch 2.13):
//! the ONNX file's own initializers are the reference the import must reproduce, after the
//! test overwrites them with zeros.

mod common;

use std::path::{Path, PathBuf};

use common::pare;
use pare::model::load_model;
use pare::model::tensor::{f32_tensor, to_f32};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name)
}

/// The fixture model with every float initializer zeroed, so only an import can restore it.
fn zeroed(dir: &Path) -> PathBuf {
    let mut m = load_model(&fixture("tiny.onnx")).expect("fixture");
    let g = m.proto.graph.as_mut().expect("graph");
    for t in g.initializer.iter_mut() {
        let n = to_f32(t).expect("float").len();
        *t = f32_tensor(t.name(), &t.dims.clone(), &vec![0.0; n]);
    }
    common::write(dir, "zeroed.onnx", &m.proto)
}

/// Largest relative difference between the reference model's initializers and `got`'s.
fn worst_rel(got: &Path) -> f32 {
    let want = load_model(&fixture("tiny.onnx")).expect("fixture");
    let got = load_model(got).expect("output");
    let gi = &got.proto.graph.as_ref().expect("graph").initializer;
    let mut worst = 0f32;
    for w in &want.proto.graph.as_ref().expect("graph").initializer {
        let g = gi
            .iter()
            .find(|t| t.name() == w.name())
            .expect("same names");
        assert_eq!(g.dims, w.dims, "{}", w.name());
        let (a, b) = (to_f32(w).expect("f32"), to_f32(g).expect("f32"));
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs() / scale);
        }
    }
    worst
}

fn import(dir: &Path, ckpt: &str, extra: &[&str]) -> (i32, String, String, PathBuf) {
    let model = zeroed(dir);
    let out = dir.join(format!("{ckpt}.onnx"));
    let ck = fixture(ckpt);
    let mut args = vec![
        "import-weights",
        model.to_str().expect("utf8"),
        "--from",
        ck.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let (code, so, se) = pare(&args);
    (code, so, se, out)
}

#[test]
fn every_format_restores_the_exported_weights_with_batchnorm_folded() {
    let dir = common::tempdir();
    for ckpt in [
        "tiny_zip.pt",
        "tiny_legacy.pt",
        "tiny_module.pt",
        "tiny.safetensors",
    ] {
        let (code, out, err, written) = import(dir.path(), ckpt, &[]);
        assert_eq!(code, 0, "{ckpt}: {out}{err}");
        let worst = worst_rel(&written);
        assert!(worst < 1e-5, "{ckpt}: relative difference {worst}");
        assert!(
            out.contains("2 convs with BatchNorm folded"),
            "{ckpt}: {out}"
        );
        assert!(out.contains("onnx::PRelu_33"), "{out}");
    }
}

#[test]
fn json_report_lists_matched_and_renamed_pairs() {
    let dir = common::tempdir();
    let (code, out, err, _) = import(dir.path(), "tiny_module.pt", &["--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    // fc.* match by name once `module.` is dropped; the renamed conv weights match by place.
    assert_eq!(j["matched"].as_array().expect("list").len(), 2);
    assert_eq!(j["renamed"].as_array().expect("list").len(), 5);
    assert_eq!(j["renamed"][0]["onnx"], "onnx::Conv_28");
    assert_eq!(j["renamed"][0]["checkpoint"], "features.0.weight");
    assert_eq!(j["renamed"][0]["how"], "fold-bn:features.1");
    assert_eq!(j["skipped"].as_array().expect("list").len(), 2);
    assert_eq!(j["written"], true);
}

#[test]
fn a_removed_key_fails_naming_it_and_writes_nothing() {
    let dir = common::tempdir();
    let (code, out, err, written) = import(dir.path(), "tiny_removed.pt", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("features.4.running_var"), "{err}");
    assert!(
        out.contains("MISSING from checkpoint features.4.running_var"),
        "{out}"
    );
    assert!(!written.exists());
    // --partial writes the model anyway (exit 0), and the report still shows the gap.
    let (code, out, _, written) = import(dir.path(), "tiny_removed.pt", &["--partial"]);
    assert_eq!(code, 0);
    assert!(out.contains("PARTIAL"), "{out}");
    assert!(written.exists());
}

#[test]
fn a_changed_shape_fails_naming_both_tensors() {
    let dir = common::tempdir();
    let (code, out, err, written) = import(dir.path(), "tiny_shape.pt", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("fc.weight [3, 4] vs fc.weight [2, 4]"),
        "{err}"
    );
    assert!(out.contains("SHAPE MISMATCH"), "{out}");
    assert!(!written.exists());
}

#[test]
fn not_a_checkpoint_is_bad_input() {
    let dir = common::tempdir();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"hello, not a pickle").expect("write");
    let model = fixture("tiny.onnx");
    let out = dir.path().join("o.onnx");
    let (code, _, err) = pare(&[
        "import-weights",
        model.to_str().expect("utf8"),
        "--from",
        junk.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("junk.pt") && err.contains("not a PyTorch checkpoint"),
        "{err}"
    );
    // A truncated legacy pickle: an error naming the file, never a panic.
    let bytes = std::fs::read(fixture("tiny_legacy.pt")).expect("fixture");
    std::fs::write(&junk, &bytes[..bytes.len() / 2]).expect("write");
    let (code, _, err) = pare(&[
        "import-weights",
        model.to_str().expect("utf8"),
        "--from",
        junk.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.pt"), "{err}");
}

#[cfg(not(feature = "torch"))]
#[test]
fn finetune_without_the_feature_says_how_to_enable_it() {
    let (code, _, err) = pare(&[
        "finetune",
        "s.onnx",
        "--teacher",
        "t.onnx",
        "--data",
        "d",
        "-o",
        "o.onnx",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--features torch"), "{err}");
}
