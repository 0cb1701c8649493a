//! `pare lint` and `pare fix` from the command line: exit codes, JSON, text, files.

mod lint_support;

use std::process::Command;

use lint_support::*;

fn pare(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .output()
        .expect("run pare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lint_exit_codes_follow_errors_per_target() {
    let dir = tempdir();
    let p = write(dir.path(), "if.onnx", &squeeze_if(true));
    let p = p.to_str().expect("utf8");
    let (code, out, _) = pare(&["lint", p, "--target", "tensorrt-7.1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("L7") && out.contains("/If") && out.contains("source fix:"),
        "{out}"
    );
    assert!(out.contains("not deployable on TensorRT 7.1"), "{out}");
    let (code, out, _) = pare(&["lint", p, "--target", "tensorrt-8.6"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning L7"), "{out}");
    let (code, _, _) = pare(&["lint", p]);
    assert_eq!(code, 0, "default target tensorrt-10");
    let (code, _, _) = pare(&["lint", p, "--target", "tract"]);
    assert_eq!(code, 1, "tract refuses the rank-changing If");
}

#[test]
fn lint_json_is_a_list_with_the_documented_keys() {
    let dir = tempdir();
    let p = write(dir.path(), "c.onnx", &clamp());
    let (code, out, err) = pare(&[
        "lint",
        p.to_str().expect("utf8"),
        "--target",
        "tensorrt-7.1",
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    let list = j.as_array().expect("array");
    let clip: Vec<&serde_json::Value> = list.iter().filter(|d| d["rule"] == "L11").collect();
    assert_eq!(clip.len(), 2);
    for k in [
        "rule",
        "severity",
        "nodes",
        "message",
        "seed_case",
        "fixable",
    ] {
        assert!(clip[0].get(k).is_some(), "{k}");
    }
    assert_eq!(clip[0]["severity"], "error");
    assert_eq!(clip[0]["seed_case"], "Q5");
    assert_eq!(clip[0]["fixable"], true);
    assert_eq!(clip[0]["fix"], "clip-bounds");
}

#[test]
fn lint_usage_errors_exit_2() {
    let dir = tempdir();
    let p = write(dir.path(), "c.onnx", &clean(17));
    let p = p.to_str().expect("utf8");
    assert_eq!(pare(&["lint", p, "--target", "openvino"]).0, 2);
    assert_eq!(pare(&["lint", p, "--rule", "L99"]).0, 2);
    assert_eq!(pare(&["lint", "/nonexistent.onnx"]).0, 2);
    assert_eq!(pare(&["lint", p, "--input-shape", "nope:1x2"]).0, 2);
    let (code, out, _) = pare(&["lint", "--list-rules"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("L19") && out.contains("G12") && out.contains("pare fix: fold-if"),
        "{out}"
    );
}

#[test]
fn lint_pinned_input_mismatch_is_an_error() {
    let dir = tempdir();
    let p = write(dir.path(), "c.onnx", &clean(17));
    let (code, out, _) = pare(&[
        "lint",
        p.to_str().expect("utf8"),
        "--input-shape",
        "x:1x3x8x9",
        "--brief",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("G4") && out.contains("dim 3: declared 8, given 9"),
        "{out}"
    );
}

#[test]
fn fix_writes_a_verified_model_and_reports_what_changed() {
    let dir = tempdir();
    let p = write(dir.path(), "if.onnx", &squeeze_if(true));
    let out = dir.path().join("fixed.onnx");
    let (code, text, err) = pare(&[
        "fix",
        p.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--input-shape",
        "x:1x3x16x16",
        "--target",
        "tensorrt-7.1",
    ]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("fold-if") && text.contains("verified") && text.contains("wrote"),
        "{text}"
    );
    assert!(
        text.contains("remaining  TensorRT 7.1: 1 error(s)"),
        "{text}"
    );
    let m = pare::model::load_model(&out).expect("written model loads");
    assert!(
        m.proto
            .graph
            .as_ref()
            .expect("g")
            .node
            .iter()
            .all(|n| n.op_type() != "If")
    );
    // The fixed model lints clean of L7 on 7.1.
    let (_, lint_out, _) = pare(&[
        "lint",
        out.to_str().expect("utf8"),
        "--target",
        "tensorrt-7.1",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&lint_out).expect("json");
    assert!(
        j.as_array()
            .expect("list")
            .iter()
            .all(|d| d["rule"] != "L7")
    );
}

#[test]
fn fix_json_and_dry_run() {
    let dir = tempdir();
    let p = write(dir.path(), "c.onnx", &clamp());
    let (code, text, err) = pare(&[
        "fix",
        p.to_str().expect("utf8"),
        "--dry-run",
        "--json",
        "--rule",
        "L11",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(j["verification"]["status"], "passed");
    assert_eq!(j["fixes_applied"], serde_json::json!(["clip-bounds"]));
    assert!(j["written"].is_null());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "dry run writes nothing"
    );
}

#[test]
fn fix_refuses_bad_usage() {
    let dir = tempdir();
    let p = write(dir.path(), "c.onnx", &clamp());
    let ps = p.to_str().expect("utf8");
    assert_eq!(pare(&["fix", ps]).0, 2, "needs -o");
    assert_eq!(pare(&["fix", ps, "-o", ps]).0, 2, "never the input");
    assert_eq!(
        pare(&["fix", ps, "-o", "/tmp/x.onnx", "--rule", "L13"]).0,
        2,
        "no automatic fix for L13"
    );
    let before = std::fs::read(&p).expect("read");
    assert_eq!(
        before,
        pare::model::io::encode_model(&clamp()),
        "input untouched"
    );
}
