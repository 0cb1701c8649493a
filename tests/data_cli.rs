//! The shared data flags (`--data`, aliases `--calib`/`--input-data`, `--samples`, `--seed`,
//! image preprocessing) reach every command that runs a model: quantize, prune validation and
//! fix verification read the same files, and a bad file is exit 2 naming it.

mod common;

use common::pare;
mod lint_support;

use std::path::Path;

use pare::data::write_npy;
use pare::model::DataType;
use pare::rng::Rng;
use pare::runtime::HostTensor;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn npy(path: &Path, shape: &[usize], seed: u64) {
    let t = HostTensor::random(DataType::FLOAT, shape, &mut Rng::new(seed)).expect("random");
    std::fs::write(path, write_npy(&t)).expect("write npy");
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).expect("one JSON object")
}

#[test]
fn quantize_reads_images_through_data_and_its_aliases() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).expect("mkdir");
    for k in 0..3u8 {
        image::RgbImage::from_pixel(40, 36, image::Rgb([40 * k, 200, 7]))
            .save(imgs.join(format!("{k}.png")))
            .expect("png");
    }
    for flag in ["--data", "--calib"] {
        let out = dir.path().join("q.onnx");
        let (code, stdout, err) = pare(&[
            "quantize",
            s(&m),
            "-o",
            s(&out),
            flag,
            s(&imgs),
            "--samples",
            "2",
            "--bgr",
            "--no-layer-diagnostics",
            "--json",
        ]);
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(
            json(&stdout)["samples"],
            2,
            "{flag}: --samples caps the images"
        );
    }
    let (code, _, err) = pare(&["quantize", s(&m), "-o", s(&dir.path().join("x.onnx"))]);
    assert_eq!(code, 2, "--data is required for calibration");
    assert!(err.contains("--data"), "{err}");
}

#[test]
fn prune_validates_on_the_given_sample() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "r.onnx", &common::resnet_like());
    npy(&dir.path().join("good.npy"), &[1, 3, 32, 32], 1);
    npy(&dir.path().join("bad.npy"), &[1, 3, 30, 32], 1);
    let out = dir.path().join("p.onnx");
    let (code, stdout, err) = pare(&[
        "prune",
        s(&m),
        "-o",
        s(&out),
        "--json",
        "--data",
        s(&dir.path().join("good.npy")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&stdout)["validated"], true, "{stdout}");
    let (code, _, err) = pare(&[
        "prune",
        s(&m),
        "-o",
        s(&out),
        "--data",
        s(&dir.path().join("bad.npy")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.npy") && err.contains("dim 2 is 30, not 32"),
        "{err}"
    );
}

#[test]
fn fix_verifies_on_every_given_sample() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "c.onnx", &lint_support::clamp());
    let data = dir.path().join("samples");
    std::fs::create_dir(&data).expect("mkdir");
    for k in 0..3 {
        npy(&data.join(format!("{k}.npy")), &[1, 3, 8, 8], k);
    }
    let run = |extra: &[&str]| {
        let mut args = vec!["fix", s(&m), "--dry-run", "--json"];
        args.extend_from_slice(extra);
        let (code, stdout, err) = pare(&args);
        assert_eq!(code, 0, "{err}");
        json(&stdout)["verification"].clone()
    };
    let v = run(&["--data", s(&data), "--samples", "3"]);
    assert_eq!(v["status"], "passed", "{v}");
    assert_eq!(v["seeds"], serde_json::json!([0, 1, 2]), "three data sets");
    let v = run(&["--seed", "5"]);
    assert_eq!(
        v["seeds"],
        serde_json::json!([5, 6]),
        "two random sets by default"
    );
    npy(&dir.path().join("wrong.npy"), &[1, 4, 8, 8], 0);
    let (code, _, err) = pare(&[
        "fix",
        s(&m),
        "--dry-run",
        "--input-data",
        s(&dir.path().join("wrong.npy")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wrong.npy") && err.contains("'x'"), "{err}");
}
