//! Which engine ran, as `pare quantize` reports it: with no `--engine` flag onnxruntime when
//! python3 can import it (its package ships the library pare loads), tract when nothing
//! provides the library. Each case runs pare with an environment of its own: no virtualenv,
//! no PARE_ORT_LIB, a PATH whose only `python3` is the one the case chooses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `pare quantize` on the psp fixture with `PATH=bin`, run from `dir`; its stdout.
fn quantize(dir: &Path, bin: &Path, extra: &[&str]) -> String {
    let model = common::write(dir, "psp.onnx", &common::psp());
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .current_dir(dir)
        .env("PATH", bin)
        .env_remove("VIRTUAL_ENV")
        .env_remove("PARE_ORT_LIB")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("PARE_PYTHON")
        .env_remove("PARE_ENGINE")
        .args(["quantize", model.to_str().expect("utf-8 path"), "-o"])
        .arg(dir.join("q.onnx"))
        .args(["--calib", "random", "--samples", "4"])
        .args(extra)
        .output()
        .expect("pare runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pare quantize: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// [`quantize`] with `--json`: the report.
fn quantize_json(dir: &Path, bin: &Path) -> serde_json::Value {
    let stdout = quantize(dir, bin, &["--json"]);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A folder whose `python3` runs `python` (or holds no python3 at all).
fn bin_dir(root: &Path, python: Option<&Path>) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    if let Some(py) = python {
        let p = bin.join("python3");
        std::fs::write(&p, format!("#!/bin/sh\nexec '{}' \"$@\"\n", py.display()))
            .expect("python3 wrapper");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
    bin
}

#[test]
fn quantize_reports_tract_when_no_onnxruntime_library_is_found() {
    let d = common::tempdir();
    let bin = bin_dir(d.path(), None);
    let r = quantize_json(d.path(), &bin);
    assert_eq!(r["engine"], "tract", "{r:#}");
    let text = quantize(d.path(), &bin, &[]);
    assert!(text.contains("engine      tract"), "{text}");
}

/// With onnxruntime importable by python3, `--engine auto` (the default) runs on it.
#[cfg(feature = "ort")]
#[test]
fn quantize_reports_onnxruntime_when_python3_imports_it() {
    let py = common::python("engine");
    let d = common::tempdir();
    let bin = bin_dir(d.path(), Some(&py));
    let r = quantize_json(d.path(), &bin);
    assert_eq!(r["engine"], "onnxruntime", "{r:#}");
    let text = quantize(d.path(), &bin, &[]);
    assert!(text.contains("engine      onnxruntime"), "{text}");
}

/// Without the `ort` feature there is no onnxruntime, whatever Python provides.
#[cfg(not(feature = "ort"))]
#[test]
fn quantize_reports_tract_without_the_ort_feature() {
    let d = common::tempdir();
    let py = common::python("engine");
    let bin = bin_dir(d.path(), Some(&py));
    let r = quantize_json(d.path(), &bin);
    assert_eq!(r["engine"], "tract", "{r:#}");
}
