//! The prune report's text on models whose sizes it cannot count.

mod common;

#[test]
fn symbolic_sizes_report_unknown_macs_not_zero() {
    let dir = common::tempdir();
    let model = common::write(dir.path(), "dyn.onnx", &common::dynamic_hw());
    let out = dir.path().join("p.onnx");
    let (code, stdout, err) = common::pare(&[
        "prune",
        model.to_str().expect("path"),
        "--ratio",
        "0.25",
        "--round-to",
        "1",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(code == 0 || code == 1, "{err}");
    assert!(
        stdout.contains("MACs       unknown (symbolic input sizes"),
        "{stdout}"
    );
    assert!(!stdout.contains("MACs       0 → 0"), "{stdout}");
}
