//! Every kind of bad input gets one clear line on stderr and exit code 2 — never a panic,
//! never a hang.

mod common;

use std::path::Path;
use std::process::Command;

use pare::model::io::{SaveOptions, load_model, save_model};

fn pare_info(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .arg("info")
        .arg(path)
        .output()
        .expect("run pare");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), err)
}

fn assert_clean(path: &Path, needles: &[&str]) {
    let (code, err) = pare_info(path);
    assert_eq!(code, 2, "exit code for {}: {err}", path.display());
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(
            err.to_lowercase().contains(&n.to_lowercase()),
            "'{n}' missing from: {err}"
        );
    }
}

#[test]
fn missing_file_and_directory() {
    let dir = common::tempdir();
    assert_clean(
        &dir.path().join("nope.onnx"),
        &["nope.onnx", "no such file"],
    );
    assert_clean(dir.path(), &["directory"]);
}

#[test]
fn empty_truncated_random_png_zip_pickle() {
    let dir = common::tempdir();
    let d = dir.path();
    std::fs::write(d.join("empty.onnx"), b"").expect("w");
    assert_clean(&d.join("empty.onnx"), &["empty.onnx", "empty"]);

    let good = pare::model::io::encode_model(&common::resnet_like());
    for frac in [3, 2] {
        let p = d.join(format!("trunc{frac}.onnx"));
        std::fs::write(&p, &good[..good.len() / frac]).expect("w");
        assert_clean(&p, &[&format!("trunc{frac}.onnx")]);
    }
    let mut rng = pare::rng::Rng::new(1);
    let random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(d.join("rand.onnx"), &random).expect("w");
    assert_clean(&d.join("rand.onnx"), &["rand.onnx"]);

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&random[..512]);
    std::fs::write(d.join("img.onnx"), &png).expect("w");
    assert_clean(&d.join("img.onnx"), &["PNG"]);

    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&random[..512]);
    std::fs::write(d.join("model.pt"), &zip).expect("w");
    assert_clean(&d.join("model.pt"), &["TorchScript", "torch.onnx.export"]);

    std::fs::write(d.join("ckpt.pth"), [0x80u8, 0x02, 0x7d, 0x71]).expect("w");
    assert_clean(&d.join("ckpt.pth"), &["pickle"]);
}

#[test]
fn missing_external_data_file_is_named() {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "in.onnx", &common::resnet_like());
    let m = load_model(&src).expect("load");
    let out = dir.path().join("big.onnx");
    save_model(
        &m,
        &out,
        &SaveOptions {
            external_threshold: Some(64),
        },
    )
    .expect("save");
    std::fs::remove_file(dir.path().join("big.onnx.data")).expect("rm");
    assert_clean(&out, &["big.onnx.data", "missing"]);
}

fn graph_case(
    dir: &Path,
    name: &str,
    nodes: Vec<pare::model::proto::NodeProto>,
) -> std::path::PathBuf {
    let mut b = pare::model::builder::GraphBuilder::new("g");
    b.input(
        "x",
        &[pare::model::builder::D::N(1), pare::model::builder::D::N(2)],
    );
    b.output(
        "y",
        &[pare::model::builder::D::N(1), pare::model::builder::D::N(2)],
    );
    let mut m = b.model();
    m.graph.as_mut().expect("graph").node = nodes;
    common::write(dir, name, &m)
}

fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> pare::model::proto::NodeProto {
    pare::model::proto::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn dangling_duplicate_and_cyclic_graphs() {
    let dir = common::tempdir();
    let d = dir.path();
    let p = graph_case(
        d,
        "dangling.onnx",
        vec![node("a", "Add", &["x", "ghost"], &["y"])],
    );
    assert_clean(&p, &["'ghost'", "'a'"]);
    let p = graph_case(
        d,
        "dup.onnx",
        vec![
            node("a", "Relu", &["x"], &["y"]),
            node("b", "Sigmoid", &["x"], &["y"]),
        ],
    );
    assert_clean(&p, &["'y'", "twice"]);
    let p = graph_case(
        d,
        "cycle.onnx",
        vec![
            node("a", "Add", &["x", "t2"], &["t1"]),
            node("b", "Relu", &["t1"], &["t2"]),
            node("c", "Identity", &["t1"], &["y"]),
        ],
    );
    assert_clean(&p, &["cycl", "'a'", "'b'"]);
}

#[test]
fn bad_input_shape_flag_is_usage_error() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::seg_head());
    for spec in ["image", "image:1xAx3", "nosuch:1x3x16x16"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pare"))
            .args(["info", "--input-shape", spec])
            .arg(&p)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains("input") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn external_data_through_a_symlink_leaving_the_folder_is_refused() {
    let outside = common::tempdir();
    let dir = common::tempdir();
    let src = common::write(outside.path(), "in.onnx", &common::resnet_like());
    let m = load_model(&src).expect("load");
    let out = outside.path().join("big.onnx");
    save_model(
        &m,
        &out,
        &SaveOptions {
            external_threshold: Some(64),
        },
    )
    .expect("save");
    // The model sits in `dir`; its data file name is a link to the file in `outside`.
    let model = dir.path().join("big.onnx");
    std::fs::copy(&out, &model).expect("copy");
    std::os::unix::fs::symlink(
        outside.path().join("big.onnx.data"),
        dir.path().join("big.onnx.data"),
    )
    .expect("symlink");
    assert_clean(&model, &["big.onnx.data", "outside the model's directory"]);
    // The same data file, really inside the folder, loads.
    std::fs::remove_file(dir.path().join("big.onnx.data")).expect("rm");
    std::fs::copy(
        outside.path().join("big.onnx.data"),
        dir.path().join("big.onnx.data"),
    )
    .expect("copy");
    assert!(load_model(&model).is_ok());
}

/// resnet_like with NaN and Inf planted in one conv weight.
fn nan_model(dir: &Path) -> std::path::PathBuf {
    let m = common::resnet_like_with_conv_weights(|mut v| {
        v[0] = f32::NAN;
        v[3] = f32::NAN;
        v[5] = f32::INFINITY;
        v
    });
    common::write(dir, "nan.onnx", &m)
}

#[test]
fn nan_weights_are_named_and_never_panic() {
    let dir = common::tempdir();
    let p = nan_model(dir.path());
    let m = load_model(&p).expect("load");
    let name = m
        .proto
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.dims.len() == 4)
        .unwrap()
        .name()
        .to_string();
    let path = p.to_str().unwrap();
    let (rc, out, err) = common::pare(&["info", path]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains(&name) && out.contains("2 NaN and 1 Inf"),
        "{out}"
    );
    let (rc, out, _) = common::pare(&["lint", path]);
    assert_eq!(rc, 1, "a NaN weight is an error finding: {out}");
    assert!(out.contains("G13") && out.contains(&name), "{out}");
    // Analysis and pruning rank the NaN channels deterministically: two runs, same plan.
    let (rc, g1, err) = common::pare(&["groups", path, "--json"]);
    assert_eq!(rc, 0, "{err}");
    let (_, g2, _) = common::pare(&["groups", path, "--json"]);
    assert_eq!(g1, g2);
    let args = ["prune", path, "--ratio", "0.5", "--dry-run", "--json"];
    let (rc1, p1, e1) = common::pare(&args);
    let (rc2, p2, _) = common::pare(&args);
    assert!(rc1 == 0 || rc1 == 2, "no panic: rc {rc1} {e1}");
    assert!(!e1.contains("panicked"), "{e1}");
    assert_eq!((rc1, strip_times(&p1)), (rc2, strip_times(&p2)));
}

/// The JSON without its timings, for comparing two runs.
fn strip_times(s: &str) -> String {
    s.lines()
        .filter(|l| !l.contains("seconds") && !l.contains("_ms"))
        .collect::<Vec<_>>()
        .join("\n")
}
