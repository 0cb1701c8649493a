//! `pare diff`: structure mapping (names, topology, Q/DQ wrappers, folds, bodies) and the
//! per-tensor numeric comparison, on small models built here.

mod common;

use common::pare;
use pare::diff::{self, DiffData, DiffRequest};
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_g, attr_i};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::runtime::EngineChoice;

fn analysis(p: ModelProto) -> Analysis {
    Analysis::new(common::model(p), &InputPins::new()).expect("analysis")
}

fn tract_request() -> DiffRequest {
    DiffRequest {
        data: Some(DiffData {
            engine: EngineChoice::Tract,
            samples: 2,
            ..Default::default()
        }),
        chunk: 3,
        ..Default::default()
    }
}

/// Four convs with ReLUs; `perturb` adds noise to the weights of conv `perturb`.
fn chain(perturb: Option<usize>) -> ModelProto {
    let mut b = GraphBuilder::new("chain");
    b.input("x", &[D::N(1), D::N(3), D::N(12), D::N(12)]);
    let mut x = "x".to_string();
    let mut cin = 3;
    for k in 0..4 {
        x = b.conv(&x, cin, 8, 3, 1, 1, 1);
        if perturb == Some(k) {
            let w = b.nodes.last().expect("conv").input[1].clone();
            let t = b
                .initializers
                .iter_mut()
                .find(|t| t.name() == w)
                .expect("weight");
            let mut v = pare::model::tensor::to_f32(t).expect("f32");
            for (i, e) in v.iter_mut().enumerate() {
                *e += if i % 2 == 0 { 0.3 } else { -0.3 };
            }
            *t = pare::model::tensor::f32_tensor(&w, &t.dims.clone(), &v);
        }
        x = b.relu(&x);
        cin = 8;
    }
    b.node_named("/out", "Identity", &[&x], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(8), D::N(12), D::N(12)]);
    b.model()
}

#[test]
fn the_perturbed_layer_is_the_first_divergence() {
    let a = analysis(chain(None));
    let b = analysis(chain(Some(2)));
    let r = diff::run(&a, &b, &tract_request(), &NoProgress).expect("diff");
    assert!(
        r.same_structure(),
        "{}",
        pare::report::Report::render_text(&r)
    );
    let d = r.first_divergence.as_ref().expect("a divergence");
    let conv = a
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .nth(2)
        .expect("conv 2");
    assert_eq!(
        d.name,
        conv.output[0],
        "{}",
        pare::report::Report::render_text(&r)
    );
    assert!(d.sqnr_db.is_some_and(|s| s < 30.0));
    // Everything before it is exact; the worst tensor comes first.
    for t in &r.tensors {
        if t.order
            < r.tensors
                .iter()
                .find(|t| t.name == d.name)
                .expect("t")
                .order
        {
            assert!(t.sqnr_db.is_some_and(|s| s >= 300.0), "{t:?}");
        }
    }
    let s: Vec<f64> = r.tensors.iter().filter_map(|t| t.sqnr_db).collect();
    assert!(s.windows(2).all(|w| w[0] <= w[1]), "worst first: {s:?}");
    assert_eq!(r.outputs.len(), 1);
    assert!(r.fails_below(30.0));
}

#[test]
fn a_model_against_itself_is_exact_everywhere() {
    let a = analysis(common::resnet_like());
    let b = analysis(common::resnet_like());
    let r = diff::run(&a, &b, &tract_request(), &NoProgress).expect("diff");
    assert!(r.same_structure());
    assert!(r.structure.changed_groups.is_empty() && r.structure.scopes.is_empty());
    assert_eq!(r.structure.matched, r.structure.nodes_a);
    assert!(r.tensors.len() >= 8);
    for t in &r.tensors {
        assert!(t.sqnr_db.is_some_and(|s| s >= 300.0), "{t:?}");
        assert_eq!(t.max_abs, Some(0.0));
    }
    assert!(r.first_divergence.is_none());
    assert!(!r.fails_below(100.0));
    let text = pare::report::Report::render_text(&r);
    assert!(
        text.contains("structure  no changes") && text.contains("every tensor exact"),
        "{text}"
    );
}

#[test]
fn unnamed_nodes_match_by_topology() {
    let mut p = chain(None);
    let a = analysis(p.clone());
    for n in &mut p.graph.as_mut().expect("graph").node {
        n.name = None;
    }
    let b = analysis(p);
    let r = diff::run(
        &a,
        &b,
        &DiffRequest {
            data: None,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("diff");
    assert_eq!(r.structure.matched, r.structure.nodes_a);
    assert!(r.structure.added.is_empty() && r.structure.removed.is_empty());
    assert!(r.structure.changed.iter().all(|c| {
        c.changes
            .iter()
            .all(|x| matches!(x, diff::structure::Change::Renamed { .. }))
    }));
}

#[test]
fn a_folded_batchnorm_is_shown_as_folded() {
    let mut b = GraphBuilder::new("bn");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let c = b.conv("x", 3, 4, 3, 1, 1, 1);
    let n = b.batchnorm(&c, 4);
    b.node_named("/relu", "Relu", &[&n], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let a = b.model();
    let mut f = a.clone();
    let g = f.graph.as_mut().expect("graph");
    g.node.retain(|n| n.op_type() != "BatchNormalization");
    let relu = g
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .expect("relu");
    relu.input[0] = c.clone();
    let r = diff::run(
        &analysis(a),
        &analysis(f),
        &DiffRequest {
            data: None,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("diff");
    assert!(r.structure.removed.is_empty(), "{:?}", r.structure.removed);
    assert_eq!(r.structure.folded.len(), 1);
    assert_eq!(r.structure.folded[0].op, "BatchNormalization");
    assert_eq!(
        r.structure.folded[0].kind,
        diff::structure::FoldKind::Folded
    );
}

/// A model with an `If` whose then-branch has a `Mul` by a constant.
fn with_if(scale: f32) -> ModelProto {
    let mut b = GraphBuilder::new("if");
    b.input("x", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    let c = b.conv("x", 2, 2, 1, 1, 0, 1);
    let one = b.init_f32("one", &[], &[1.0]);
    let m = b.op("ReduceMean", &[&c], vec![attr_i("keepdims", 0)]);
    let cond = b.op("Greater", &[&m, &one], vec![]);
    let mut t = GraphBuilder::new("then");
    let s = t.init_f32("s", &[], &[scale]);
    t.node_named("/then/Mul", "Mul", &[&c, &s], &["t_out"], vec![]);
    t.node_named("/then/Relu", "Relu", &["t_out"], &["t_relu"], vec![]);
    t.output("t_relu", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    let mut e = GraphBuilder::new("else");
    e.node_named("/else/Identity", "Identity", &[&c], &["e_out"], vec![]);
    e.output("e_out", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", t.graph()),
            attr_g("else_branch", e.graph()),
        ],
    );
    b.output("y", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    b.model()
}

#[test]
fn if_bodies_are_compared_node_by_node() {
    let same = diff::run(
        &analysis(with_if(2.0)),
        &analysis(with_if(2.0)),
        &DiffRequest {
            data: None,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("diff");
    assert!(same.same_structure());
    assert!(same.structure.nodes_a > 6, "body nodes are counted");
    // Drop the Relu of the then-branch and change the else-branch's op.
    let mut p = with_if(2.0);
    let g = p.graph.as_mut().expect("graph");
    let iff = g.node.iter_mut().find(|n| n.op_type() == "If").expect("if");
    for a in &mut iff.attribute {
        let then = a.name() == "then_branch";
        let Some(body) = a.g.as_mut() else { continue };
        if then {
            body.node.retain(|n| n.op_type() != "Relu");
            body.output[0].name = Some("t_out".into());
        } else {
            body.node[0].op_type = Some("Neg".into());
        }
    }
    let r = diff::run(
        &analysis(with_if(2.0)),
        &analysis(p),
        &DiffRequest {
            data: None,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("diff");
    assert!(
        r.structure
            .removed
            .iter()
            .any(|n| n.op == "Relu" && n.scope == "/If/then_branch"),
        "{:?}",
        r.structure
    );
    let c = r
        .structure
        .changed
        .iter()
        .find(|c| c.scope == "/If/else_branch")
        .expect("else change");
    assert!(
        matches!(&c.changes[0], diff::structure::Change::Op { before, after } if before == "Identity" && after == "Neg")
    );
}

#[test]
fn an_inlined_if_is_shown_as_inlined() {
    // B: the If replaced by its then-branch nodes (what a fix of a constant condition does).
    let a = with_if(2.0);
    let mut p = a.clone();
    let g = p.graph.as_mut().expect("graph");
    let k = g.node.iter().position(|n| n.op_type() == "If").expect("if");
    let iff = g.node.remove(k);
    let then = iff
        .attribute
        .iter()
        .find(|a| a.name() == "then_branch")
        .and_then(|a| a.g.clone())
        .expect("then");
    g.initializer.extend(then.initializer.clone());
    let mut nodes = then.node.clone();
    nodes.last_mut().expect("relu").output[0] = "y".into();
    g.node.extend(nodes);
    let r = diff::run(
        &analysis(a),
        &analysis(p),
        &DiffRequest {
            data: None,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("diff");
    assert!(
        r.structure
            .folded
            .iter()
            .any(|f| f.op == "If" && f.kind == diff::structure::FoldKind::Inlined),
        "{:?}",
        r.structure
    );
    assert!(r.structure.added.is_empty(), "{:?}", r.structure.added);
}

#[test]
fn cli_diff_of_a_pruned_model_lists_groups_and_compares_kept_channels() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let out = dir.path().join("r.pruned.onnx");
    let (code, _, err) = pare(&[
        "prune",
        p.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--ratio",
        "0.5",
        "--round-to",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = pare(&[
        "diff",
        p.to_str().expect("utf8"),
        out.to_str().expect("utf8"),
        "--engine",
        "tract",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let groups = j["changed_groups"].as_array().expect("changed_groups");
    assert!(!groups.is_empty(), "{stdout}");
    for g in groups {
        assert!(g["before"].as_i64() > g["after"].as_i64(), "{g}");
        assert!(!g["members"].as_array().expect("members").is_empty());
    }
    assert!(j["outputs"][0]["sqnr_db"].as_f64().is_some(), "{stdout}");
    let tensors = j["tensors"].as_array().expect("tensors");
    assert!(
        tensors
            .iter()
            .any(|t| t["note"].as_str().is_some_and(|n| n.starts_with("kept"))),
        "pruned tensors are compared on their kept channels: {stdout}"
    );
    assert!(
        tensors.iter().all(|t| !t["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("not comparable"))),
        "{stdout}"
    );
    for k in ["added", "removed", "changed", "first_divergence"] {
        assert!(j.get(k).is_some(), "key {k}");
    }
}

/// resnet_like quantized by the CLI (4 random samples, small layers too, plus `extra`), and
/// `pare diff --json` of the two on tract: the temp dir, both paths and the parsed report.
fn quantize_and_diff(
    extra: &[&str],
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    serde_json::Value,
    String,
) {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let out = dir.path().join("r.int8.onnx");
    let mut args = vec![
        "quantize",
        p.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--calib",
        "random",
        "--samples",
        "4",
        "--quantize-small",
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = pare(&args);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = pare(&[
        "diff",
        p.to_str().expect("utf8"),
        out.to_str().expect("utf8"),
        "--engine",
        "tract",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    (dir, p, out, j, stdout)
}

#[test]
fn cli_diff_of_a_quantized_model_ranks_tensors_and_wraps_qdq() {
    // Q/DQ only: centering adds Pads and rewrites the ReLUs (the next test).
    let (_dir, p, out, j, stdout) = quantize_and_diff(&["--no-center"]);
    assert!(j["qdq_nodes"].as_u64().is_some_and(|n| n > 0));
    assert!(
        j["added"].as_array().expect("added").is_empty(),
        "Q/DQ are wrappers: {stdout}"
    );
    assert!(
        j["removed"].as_array().expect("removed").is_empty(),
        "{stdout}"
    );
    let changed = j["changed"].as_array().expect("changed");
    assert!(changed.iter().any(|c| {
        c["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .any(|x| x["kind"] == "quantized")
    }));
    let t: Vec<f64> = j["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .filter_map(|t| t["sqnr_db"].as_f64())
        .collect();
    assert!(t.len() >= 8 && t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    assert!(t[0] < 300.0, "quantization changes numbers");
    // --fail-below: an impossible floor fails with exit 1, a loose one passes.
    let args = |db: &'static str| {
        vec![
            "diff".to_string(),
            p.display().to_string(),
            out.display().to_string(),
            "--engine".into(),
            "tract".into(),
            format!("--fail-below={db}"),
        ]
    };
    let run = |v: Vec<String>| pare(&v.iter().map(String::as_str).collect::<Vec<_>>()).0;
    assert_eq!(run(args("250")), 1);
    assert_eq!(run(args("-50")), 0);
}

/// A default `--format trt` quantization centers the ReLU outputs: diff names what that added
/// (Pads before padded convs) and what it rewrote (ReLU → Clip), nothing else.
#[test]
fn cli_diff_shows_what_centering_added() {
    let (_dir, _, _, j, stdout) = quantize_and_diff(&[]);
    let added = j["added"].as_array().expect("added");
    assert!(added.iter().any(|a| a["op"] == "Pad"), "{stdout}");
    assert!(
        added.iter().all(|a| a["op"] == "Pad"),
        "centering adds Pads only: {stdout}"
    );
    let changed = j["changed"].as_array().expect("changed");
    assert!(
        changed.iter().any(|c| c["op"] == "Clip"
            && c["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .any(|x| x["kind"] == "op" && x["before"] == "Relu")),
        "{stdout}"
    );
}

#[test]
fn cli_bad_input_names_the_file() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"not a model").expect("write");
    let (code, _, err) = pare(&[
        "diff",
        p.to_str().expect("utf8"),
        bad.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.onnx"), "{err}");
}
