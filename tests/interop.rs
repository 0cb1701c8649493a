//! Interop suite: models pare writes must satisfy the Python `onnx` checker and run in
//! onnxruntime. Needs a Python with onnx, onnxruntime and numpy, which `common::python` finds
//! or creates under the target directory; without one the tests fail, never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pare::model::io::{SaveOptions, load_model, save_model};

fn python() -> PathBuf {
    common::python("interop")
}

fn committed_models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "onnx"));
    v.sort();
    v
}

#[test]
fn resaved_models_match_originals_in_onnx_and_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let mut originals = committed_models();
    assert!(
        originals.len() >= 3,
        "tests/data should hold the committed PyTorch exports"
    );
    for (name, m) in [
        ("resnet_like.onnx", common::resnet_like()),
        ("seg_head.onnx", common::seg_head()),
        ("demo.onnx", pare::demo::build_demo()),
    ] {
        originals.push(common::write(dir.path(), name, &m));
    }
    let mut args = Vec::new();
    for (k, orig) in originals.iter().enumerate() {
        let m = load_model(orig).expect("load");
        let inline = dir.path().join(format!("rt{k}.onnx"));
        save_model(&m, &inline, &SaveOptions::default()).expect("save");
        let ext = dir.path().join(format!("rt{k}_ext.onnx"));
        save_model(
            &m,
            &ext,
            &SaveOptions {
                external_threshold: Some(1024),
            },
        )
        .expect("save ext");
        for saved in [inline, ext] {
            args.push(orig.clone());
            args.push(saved);
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/roundtrip_check.py");
    let out = Command::new(py)
        .arg(script)
        .args(&args)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{} passed, 0 failed", args.len() / 2)),
        "{text}"
    );
    common::ran_against_onnxruntime("resaved_models_match_originals_in_onnx_and_onnxruntime");
}

/// Runs `tests/interop/check_models.py` on (original, new) pairs.
pub fn check_pairs(py: &Path, pairs: &[(PathBuf, PathBuf)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_models.py");
    let args: Vec<&PathBuf> = pairs.iter().flat_map(|(a, b)| [a, b]).collect();
    let out = Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{} passed, 0 failed", pairs.len())),
        "{text}"
    );
}

#[test]
fn pruned_models_pass_the_onnx_checker_and_run_in_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let mut pairs = Vec::new();
    let mut models: Vec<(String, pare::model::proto::ModelProto)> = common::all_prune_fixtures()
        .into_iter()
        .map(|(n, m)| (n.to_string(), m))
        .collect();
    models.push(("demo".into(), pare::demo::build_demo()));
    for p in committed_models() {
        let m = load_model(&p).expect("load").proto;
        models.push((
            p.file_stem().expect("stem").to_string_lossy().into_owned(),
            m,
        ));
    }
    for (name, m) in models {
        let orig = common::write(dir.path(), &format!("{name}.onnx"), &m);
        // Committed exports may have dynamic dims: pin them like the checker feeds them.
        let a0 =
            pare::model::Analysis::open(&orig, &pare::model::InputPins::new()).expect("analysis");
        let mut pins = pare::model::InputPins::new();
        for i in &a0.index.inputs {
            if let Some(s) = a0.shapes.shape(i)
                && s.iter().any(|d| d.known().is_none())
            {
                let dims = s
                    .iter()
                    .enumerate()
                    .map(|(k, d)| d.known().unwrap_or(if k == 0 { 1 } else { 64 }))
                    .collect();
                pins.insert(i.clone(), dims);
            }
        }
        let a = pare::model::Analysis::open(&orig, &pins).expect("pinned analysis");
        let pruned = pare::prune::prune(
            &a,
            &pare::prune::PruneOptions::default(),
            &pare::jobs::NoProgress,
        )
        .expect("prune");
        let out = dir.path().join(format!("{name}_pruned.onnx"));
        pare::prune::write(&pruned, &out).expect("write");
        pairs.push((orig, out));
    }
    check_pairs(&py, &pairs);
    common::ran_against_onnxruntime("pruned_models_pass_the_onnx_checker_and_run_in_onnxruntime");
}
