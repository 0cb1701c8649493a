//! `pare info`: text and JSON reports, counts, params and MACs checked against hand-computed
//! values, and the embedded demo model.

mod common;

use common::pare;

#[test]
fn json_report_has_the_documented_keys_and_exact_counts() {
    let dir = common::tempdir();
    let m = common::resnet_like();
    let p = common::write(dir.path(), "r.onnx", &m);
    let (code, out, err) = pare(&["info", p.to_str().expect("utf8"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let g = m.graph.as_ref().expect("graph");
    assert_eq!(j["node_count"], g.node.len());
    assert_eq!(j["initializer_count"], g.initializer.len());
    assert_eq!(j["op_histogram"]["Conv"], 6);
    assert_eq!(j["op_histogram"]["Add"], 2);
    assert_eq!(j["inputs"][0]["name"], "input");
    assert_eq!(j["inputs"][0]["dtype"], "float32");
    assert_eq!(j["inputs"][0]["shape"], serde_json::json!([1, 3, 32, 32]));
    assert_eq!(j["outputs"][0]["shape"], serde_json::json!([1, 10]));
    // Params: every float initializer element.
    let params: u64 = g.initializer.iter().map(|t| t.numel()).sum();
    assert_eq!(j["params"], params);
    // MACs by hand: conv out_numel * cin/group * k*k, gemm in*out.
    let conv = |oc: u64, hw: u64, ic: u64, k: u64| oc * hw * hw * ic * k * k;
    let macs = conv(8, 16, 3, 3)
        + 2 * conv(8, 16, 8, 3)
        + conv(16, 8, 8, 3)
        + conv(16, 8, 16, 3)
        + conv(16, 8, 8, 1)
        + 16 * 10;
    assert_eq!(j["macs"], macs);
    assert_eq!(j["heaviest"].as_array().expect("list").len(), 7);
}

#[test]
fn symbolic_dims_stay_symbolic_and_pins_resolve_them() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "s.onnx", &common::stereo_if());
    let path = p.to_str().expect("utf8");
    let (code, out, _) = pare(&["info", path, "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["inputs"][0]["shape"][0], "batch");
    assert_eq!(j["inputs"].as_array().expect("list").len(), 2);
    let (code, out, _) = pare(&[
        "info",
        path,
        "--json",
        "--input-shape",
        "left:2x3x16x16",
        "--input-shape",
        "right:2x3x16x16",
    ]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["inputs"][0]["shape"][0], 2);
    // The If squeezes dim 1, which the pinned shapes prove is 1.
    assert_eq!(j["outputs"][0]["shape"], serde_json::json!([2, 16, 16]));
    assert_eq!(j["dynamic_tensors"].as_array().expect("list").len(), 0);
}

#[test]
fn text_report_and_demo_model() {
    let (code, out, err) = pare(&["info"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "embedded demo",
        "inputs",
        "image",
        "logits",
        "confidence",
        "heaviest layers",
        "MACs",
    ] {
        assert!(out.contains(needle), "'{needle}' missing:\n{out}");
    }
    let (code, out2, _) = pare(&[]);
    assert_eq!(code, 0);
    assert!(out2.contains("embedded demo"));
    let (code, v, _) = pare(&["--version"]);
    assert_eq!(code, 0);
    assert!(v.contains(env!("CARGO_PKG_VERSION")));
    let (code, h, _) = pare(&["help"]);
    assert_eq!(code, 0);
    assert!(h.contains("info"));
    let (code, _, _) = pare(&["info", "--no-such-flag"]);
    assert_eq!(code, 2);
}

#[test]
fn committed_demo_asset_matches_its_generator() {
    let built = pare::model::io::encode_model(&pare::demo::build_demo());
    assert!(
        built == pare::demo::DEMO_ONNX,
        "assets/demo.onnx is stale: run `cargo run --example make_demo`"
    );
    // And it has what it promises: strided 1x1 shortcut, ASPP concat, Clip without max, If.
    let m = pare::demo::build_demo();
    let g = m.graph.as_ref().expect("graph");
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
    for op in ["Add", "Concat", "Clip", "If", "Resize", "GlobalAveragePool"] {
        assert!(ops.contains(&op), "demo lacks {op}");
    }
    let clip = g.node.iter().find(|n| n.op_type() == "Clip").expect("clip");
    assert_eq!(clip.input.len(), 2, "Clip must have no max");
    assert!(g.node.iter().any(|n| n.op_type() == "Conv"
        && n.attr_ints("kernel_shape") == Some(&[1, 1][..])
        && n.attr_ints("strides") == Some(&[2, 2][..])));
}

/// Each command's text is its report's one rendering: what the CLI prints is exactly
/// `Report::render_text` of the report the library returns for the same request, and the TUI's
/// job summary is the same text line by line.
#[test]
fn cli_prints_the_library_report_and_the_tui_shows_the_same_text() {
    use pare::jobs::NoProgress;
    use pare::model::{Analysis, InputPins};
    use pare::report::Report;

    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let path = p.to_str().expect("utf8");
    let a = Analysis::open(&p, &InputPins::new()).expect("analysis");

    let (code, out, err) = pare(&["info", path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, pare::model::info::model_info(&a).render_text());

    let (code, out, err) = pare(&["groups", path]);
    assert_eq!(code, 0, "{err}");
    let groups = pare::prune::groups(&a, &pare::tags::Tags::default()).expect("groups");
    assert_eq!(out, groups.render_text());
    assert!(out.contains("prunable"), "{out}");

    let pruned = dir.path().join("p.onnx");
    let (code, out, err) = pare(&[
        "prune",
        path,
        "-o",
        pruned.to_str().expect("utf8"),
        "--no-validate",
    ]);
    assert_eq!(code, 0, "{err}");
    let req = pare::prune::PruneRequest {
        output: Some(dir.path().join("p2.onnx")),
        validate: false,
        ..Default::default()
    };
    let lib = pare::prune::run(&a, &req, &NoProgress).expect("prune");
    let lib_text = lib.render_text().replace("p2.onnx", "p.onnx");
    assert_eq!(out, lib_text);
    assert!(out.contains("params") && out.contains('→'), "{out}");
    let tui = pare::tui::engines::prune(&a, &req, &NoProgress).expect("tui prune");
    assert_eq!(
        tui.summary,
        lib.render_text()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    );
    assert_eq!(tui.outputs, vec![dir.path().join("p2.onnx")]);
}

/// The output is never the input: the one check refuses it in the library, whatever the
/// spelling of the path, before any work is done.
#[test]
fn library_commands_refuse_to_write_over_their_input() {
    use pare::jobs::NoProgress;
    use pare::model::{Analysis, InputPins};

    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let a = Analysis::open(&p, &InputPins::new()).expect("analysis");
    let same = dir.path().join(".").join("r.onnx");
    let req = pare::prune::PruneRequest {
        output: Some(same.clone()),
        ..Default::default()
    };
    let e = pare::prune::run(&a, &req, &NoProgress).unwrap_err();
    assert!(matches!(e, pare::PareError::OutputIsInput { .. }), "{e:?}");
    let req = pare::extract::run::ExtractRequest {
        selector: pare::extract::Selector::Node("conv1".into()),
        output: same,
        data: None,
    };
    let e = pare::extract::run::run(&a, &req, &NoProgress).unwrap_err();
    assert!(matches!(e, pare::PareError::OutputIsInput { .. }), "{e:?}");
}
