//! Subgraph extraction, splitting and reduction on committed fixtures (no Python needed; the
//! onnx/onnxruntime side is in tests/extract_interop.rs).
//!
//! The core property: for every node and for random node ranges of every fixture, the piece
//! is a valid model, and running it on the boundary inputs computed from the full model
//! reproduces the boundary outputs computed from the full model.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pare::extract::data::{
    self, BoundaryData, Evaluator, boundary_data, host_to_tensor, load_samples, read_npy,
    read_tensor_file, tensor_to_host, write_npy,
};
use pare::extract::reduce::{FnOracle, ReduceOptions, piece_from_nodes, reduce};
use pare::extract::split::{check_split, split};
use pare::extract::{Piece, Selector, const_only_nodes, extract, extract_selection, resolve};
use pare::jobs::{JobEvent, NoProgress, RecordProgress};
use pare::model::io::{SaveOptions, load_model, save_model};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, DataType, InputPins};
use pare::rng::Rng;
use pare::runtime::{HostData, HostTensor, max_abs_diff};

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

fn sample(a: &Analysis, seed: u64) -> Vec<HostTensor> {
    load_samples(a, &[], 1, seed)
        .expect("samples")
        .sets
        .remove(0)
}

/// Fixtures tract can run (data_if only through If inlining).
fn runnable_fixtures() -> Vec<(&'static str, ModelProto)> {
    let mut v = common::prune_fixtures();
    v.push(("stereo_if", common::stereo_if()));
    v.push(("data_if", common::data_if()));
    v
}

/// The piece reloads as a sound model, and running it on the boundary inputs reproduces the
/// boundary outputs of the full model.
fn assert_piece_reproduces(name: &str, what: &str, a: &Analysis, piece: &Piece) {
    let bytes = pare::model::io::encode_model(&piece.model.proto);
    let reloaded = pare::model::io::load_model_bytes(bytes.into(), Path::new("piece.onnx"))
        .unwrap_or_else(|e| panic!("{name} {what}: piece does not reload: {e}"));
    let pa = Analysis::new(reloaded, &InputPins::new())
        .unwrap_or_else(|e| panic!("{name} {what}: piece is unsound: {e}"));
    assert_eq!(pa.index.inputs, piece.inputs, "{name} {what}: graph inputs");
    assert_eq!(
        pa.index.outputs, piece.outputs,
        "{name} {what}: graph outputs"
    );
    let bd = boundary_data(a, piece, &sample(a, 3));
    assert!(
        bd.complete(),
        "{name} {what}: boundary data incomplete: {:?}",
        bd.problems
    );
    let feeds: Vec<HostTensor> = bd
        .inputs
        .iter()
        .map(|t| t.clone().expect("complete"))
        .collect();
    let mut r = Evaluator::new(&pa, &feeds);
    r.compute(&piece.outputs)
        .unwrap_or_else(|e| panic!("{name} {what}: piece does not run in tract: {e}"));
    for (o, want) in piece.outputs.iter().zip(&bd.outputs) {
        let got = r.get(o).expect("computed");
        let d = max_abs_diff(got, want.as_ref().expect("complete"));
        assert!(
            d.is_some_and(|d| d <= 1e-5),
            "{name} {what}: output {o} differs: {d:?}"
        );
    }
}

#[test]
fn every_single_node_of_every_fixture_reproduces_its_boundary_data() {
    for (name, m) in runnable_fixtures() {
        let a = analysis(m);
        let consts = const_only_nodes(&a);
        for (i, node) in a.graph().node.iter().enumerate() {
            let (_, piece) = extract_selection(&a, &Selector::Node(node.name().to_string()))
                .unwrap_or_else(|e| panic!("{name} node {}: {e}", node.name()));
            // Exactly the node, plus the constants it reads.
            assert!(piece.nodes.contains(&i));
            assert!(
                piece.nodes.iter().all(|&k| k == i || consts[k]),
                "{name} {}: extra nodes {:?}",
                node.name(),
                piece.nodes
            );
            assert_piece_reproduces(name, node.name(), &a, &piece);
        }
    }
}

/// `count` random (from, to) pairs with `to` downstream of `from`.
fn random_ranges(a: &Analysis, count: usize, seed: u64) -> Vec<(String, String)> {
    let consts = const_only_nodes(a);
    let nodes: Vec<usize> = (0..a.graph().node.len()).filter(|&i| !consts[i]).collect();
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let f = nodes[rng.below(nodes.len() as u64) as usize];
            let mut down: Vec<usize> = a.index.reachable(&[f], true).into_iter().collect();
            down.sort_unstable();
            let t = down[rng.below(down.len() as u64) as usize];
            (
                a.graph().node[f].name().to_string(),
                a.graph().node[t].name().to_string(),
            )
        })
        .collect()
}

#[test]
fn twenty_random_ranges_of_every_fixture_reproduce_their_boundary_data() {
    for (name, m) in runnable_fixtures() {
        let a = analysis(m);
        for (from, to) in random_ranges(&a, 20, 42) {
            let sel = Selector::Range {
                from: from.clone(),
                to: to.clone(),
            };
            let (b, piece) =
                extract_selection(&a, &sel).unwrap_or_else(|e| panic!("{name} {from}..{to}: {e}"));
            // Every kept non-constant node lies on a path from `from` to `to`.
            let f = a
                .graph()
                .node
                .iter()
                .position(|n| n.name() == from)
                .expect("from");
            let t = a
                .graph()
                .node
                .iter()
                .position(|n| n.name() == to)
                .expect("to");
            let consts = const_only_nodes(&a);
            for &k in &piece.nodes {
                assert!(
                    consts[k]
                        || (a.index.is_reachable(f, k) || k == f)
                            && (a.index.is_reachable(k, t) || k == t)
                );
            }
            assert_eq!(b.outputs, a.graph().node[t].output);
            assert_piece_reproduces(name, &format!("{from}..{to}"), &a, &piece);
        }
    }
}

#[test]
fn tensor_selection_takes_the_minimal_node_set() {
    let a = analysis(common::resnet_like());
    let g = a.graph();
    // From the stem ReLU to the logits: everything after the stem, nothing before it.
    let stem = g
        .node
        .iter()
        .find(|n| n.op_type() == "Relu")
        .expect("relu")
        .output[0]
        .clone();
    let p = extract(&a, std::slice::from_ref(&stem), &["logits".to_string()]).expect("extract");
    let stem_node = a.index.producer[&stem];
    assert!(p.nodes.iter().all(|&k| a.index.is_reachable(stem_node, k)));
    assert_eq!(
        p.nodes.len(),
        g.node.len() - 3,
        "all but conv, bn, relu of the stem"
    );
    assert_eq!(p.inputs, vec![stem.clone()]);
    // Outputs alone: from the model inputs they need.
    let b = resolve(
        &a,
        &Selector::Tensors {
            inputs: vec![],
            outputs: vec![stem.clone()],
        },
    )
    .expect("resolve");
    assert_eq!(b.inputs, vec!["input".to_string()]);
    // Inputs alone: to the model outputs that depend on them.
    let b = resolve(
        &a,
        &Selector::Tensors {
            inputs: vec![stem],
            outputs: vec![],
        },
    )
    .expect("resolve");
    assert_eq!(b.outputs, vec!["logits".to_string()]);
}

#[test]
fn constant_producers_are_pulled_in_and_weights_stay_initializers() {
    let a = analysis(common::flatten_view());
    let g = a.graph();
    let (k, reshape) = g
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| {
            n.op_type() == "Reshape"
                && a.index
                    .producer
                    .get(&n.input[1])
                    .is_some_and(|&p| g.node[p].op_type() == "Constant")
        })
        .expect("reshape fed by a Constant");
    let (_, p) =
        extract_selection(&a, &Selector::Node(reshape.name().to_string())).expect("extract");
    assert_eq!(
        p.inputs,
        vec![reshape.input[0].clone()],
        "the shape is not an input"
    );
    assert_eq!(p.nodes.len(), 2);
    assert!(p.nodes.contains(&k));
    let conv = g.node.iter().find(|n| n.op_type() == "Conv").expect("conv");
    let (_, p) = extract_selection(&a, &Selector::Node(conv.name().to_string())).expect("extract");
    assert_eq!(p.inputs.len(), 1);
    assert_eq!(p.initializers, conv.input.len() - 1);
    let pg = p.graph();
    assert_eq!(pg.initializer.len(), conv.input.len() - 1);
    assert_eq!(pg.input.len(), 1, "weights are initializers, not inputs");
}

#[test]
fn if_bodies_bring_their_outer_scope_reads_as_inputs() {
    let a = analysis(common::stereo_if());
    let (_, p) = extract_selection(&a, &Selector::Node("/If".into())).expect("extract");
    assert_eq!(p.nodes.len(), 1);
    let m = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "ReduceMean")
        .expect("mean")
        .output[0]
        .clone();
    assert!(
        p.inputs.contains(&m),
        "outer-scope read {m} must be an input: {:?}",
        p.inputs
    );
    assert_eq!(
        p.inputs.len(),
        2,
        "condition and the outer-scope tensor: {:?}",
        p.inputs
    );
    // Types come from pare's shape inference: the condition is a bool.
    let types = p.input_types();
    let cond = types.iter().find(|(n, _, _)| *n != m).expect("cond");
    assert_eq!(cond.1, Some(DataType::BOOL));
    assert_piece_reproduces("stereo_if", "/If", &a, &p);

    // Outer-scope initializers of a data-dependent If stay initializers.
    let a = analysis(common::data_if());
    let (_, p) = extract_selection(&a, &Selector::Node("/If".into())).expect("extract");
    assert!(p.graph().initializer.iter().any(|t| t.name() == "scale"));
    assert_eq!(p.inputs.len(), 2);
    assert_piece_reproduces("data_if", "/If", &a, &p);
}

#[test]
fn data_dependent_if_runs_by_inlining_the_branch_taken() {
    let a = analysis(common::data_if());
    let s = sample(&a, 0);
    let mut r = Evaluator::new(&a, &s);
    r.compute(&["prob".to_string()])
        .expect("runs with the branch inlined");
    assert!(
        r.log
            .iter()
            .any(|l| l.contains("If '/If'") && l.contains("inline")),
        "{:?}",
        r.log
    );
    assert_eq!(
        r.get("prob").expect("prob").shape,
        vec![1, 8, 8],
        "then branch: squeezed"
    );
}

#[test]
fn loop_bodies_keep_outer_reads_and_their_weights() {
    let a = analysis(common::loop_outer());
    let (_, p) = extract_selection(&a, &Selector::Node("/Loop".into())).expect("extract");
    assert_eq!(p.nodes.len(), 1);
    let act = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Relu")
        .expect("relu")
        .output[0]
        .clone();
    assert_eq!(p.inputs, vec![act]);
    let inits: BTreeSet<&str> = p.graph().initializer.iter().map(|t| t.name()).collect();
    assert_eq!(inits, ["gain", "trips"].into_iter().collect());
    Analysis::new(p.model.clone(), &InputPins::new()).expect("sound");
}

#[test]
fn local_functions_called_are_kept_and_others_dropped() {
    let a = analysis(common::local_function());
    let (_, p) = extract_selection(&a, &Selector::Node("/act/Swish".into())).expect("extract");
    let names: BTreeSet<&str> = p.model.proto.functions.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        ["Gate", "Swish"].into_iter().collect(),
        "Swish and the Gate it calls"
    );
    let conv = a.graph().node[0].name().to_string();
    let (_, p) = extract_selection(&a, &Selector::Node(conv)).expect("extract");
    assert!(p.model.proto.functions.is_empty());
}

#[test]
fn errors_name_the_problem() {
    let a = analysis(common::stereo_if());
    let err = |sel: Selector| {
        extract_selection(&a, &sel)
            .expect_err("should fail")
            .to_string()
    };
    let e = err(Selector::Node("/Iff".into()));
    assert!(
        e.contains("no node named '/Iff'") && e.contains("'/If'"),
        "{e}"
    );
    let e = err(Selector::Tensors {
        inputs: vec![],
        outputs: vec!["disparty".into()],
    });
    assert!(e.contains("'disparity'"), "{e}");
    // The right branch is needed but not supplied: named.
    let l = a
        .graph()
        .node
        .iter()
        .find(|n| n.input[0] == "left")
        .expect("left conv")
        .output[0]
        .clone();
    let e = err(Selector::Tensors {
        inputs: vec![l],
        outputs: vec!["disparity".into()],
    });
    assert!(
        e.contains("'right'") && e.contains("cannot be computed"),
        "{e}"
    );
    assert!(
        !e.contains("'left'"),
        "left is supplied through its conv: {e}"
    );
    let right_conv = a
        .graph()
        .node
        .iter()
        .find(|n| n.input[0] == "right")
        .expect("right conv")
        .output[0]
        .clone();
    assert!(
        e.contains(&format!("through '{right_conv}'")),
        "names where the missing branch joins: {e}"
    );
    let e = err(Selector::Tensors {
        inputs: vec!["disparity".into()],
        outputs: vec!["disparity".into()],
    });
    assert!(e.contains("both an input and an output"), "{e}");
    let e = err(Selector::Tensors {
        inputs: vec!["left".into(), "right".into()],
        outputs: vec!["dim_index".into()],
    });
    assert!(e.contains("initializer"), "{e}");
    // Names inside the If body point at the If.
    let e = err(Selector::Tensors {
        inputs: vec![],
        outputs: vec!["sq".into()],
    });
    assert!(e.contains("inside the body of If '/If'"), "{e}");
    let e = err(Selector::Node("/Squeeze".into()));
    assert!(e.contains("/If"), "{e}");
    // A range the wrong way round.
    let g = a.graph();
    let e = err(Selector::Range {
        from: "/If".into(),
        to: g.node[0].name().into(),
    });
    assert!(e.contains("swap"), "{e}");
}

// ---- CLI ----------------------------------------------------------------------------------

fn pare(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .output()
        .expect("run pare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn assert_bad(args: &[&str], needles: &[&str]) {
    let (code, _, err) = pare(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // One error line, last (reduce logs its tries above it).
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "{err}");
    if args[0] != "reduce" {
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    for n in needles {
        assert!(errors[0].contains(n), "'{n}' missing from: {err}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn cli_errors_are_one_line_with_exit_2() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "stereo.onnx", &common::stereo_if());
    let out = dir.path().join("out.onnx");
    let (m, o) = (s(&m), s(&out));
    assert_bad(&["extract", m, "--node", "/Iff", "-o", o], &["'/If'"]);
    assert_bad(
        &["extract", m, "--outputs", "disparty", "-o", o],
        &["'disparity'"],
    );
    assert_bad(
        &[
            "extract",
            m,
            "--inputs",
            "disparity",
            "--outputs",
            "disparity",
            "-o",
            o,
        ],
        &["both"],
    );
    assert_bad(&["extract", m, "--node", "/If", "-o", m], &["is the input"]);
    assert_bad(
        &[
            "extract", m, "--node", "/If", "--from", "/If", "--to", "/If", "-o", o,
        ],
        &["exactly one selector"],
    );
    assert_bad(&["extract", m, "-o", o], &["exactly one selector"]);
    assert_bad(&["extract", m, "--from", "/If", "-o", o], &["--to"]);
    assert_bad(
        &[
            "split",
            m,
            "--at",
            "left",
            "-o",
            o,
            s(&dir.path().join("t.onnx")),
        ],
        &["model input"],
    );
    assert_bad(
        &["reduce", m, "--check", "true {}", "-o", o],
        &["does not fail on the original"],
    );
    assert!(!out.exists(), "nothing written on errors");
}

#[test]
fn cli_prints_an_equivalent_command_that_reproduces_the_piece() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "resnet.onnx", &common::resnet_like());
    let a = analysis(common::resnet_like());
    let g = a.graph();
    let from = g.node[3].name().to_string();
    let to = g.node[9].name().to_string();
    let out = dir.path().join("range.onnx");
    let (code, stdout, err) = pare(&[
        "extract",
        s(&m),
        "--from",
        &from,
        "--to",
        &to,
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let cmd = stdout
        .lines()
        .find_map(|l| l.strip_prefix("equivalent: "))
        .expect("equivalent line")
        .to_string();
    let out2 = dir.path().join("again.onnx");
    let cmd = cmd
        .replacen("pare ", &format!("{} ", env!("CARGO_BIN_EXE_pare")), 1)
        .replace(s(&out), s(&out2));
    let st = Command::new("sh").arg("-c").arg(&cmd).output().expect("sh");
    assert!(
        st.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        std::fs::read(&out).expect("a"),
        std::fs::read(&out2).expect("b"),
        "same piece: {cmd}"
    );
}

fn read_pb(p: &Path) -> (String, HostTensor) {
    let (name, h) = read_tensor_file(p).expect("tensor file");
    (name.unwrap_or_default(), h)
}

#[test]
fn cli_with_data_writes_onnx_test_data_layout() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "seg.onnx", &common::seg_head());
    let out = dir.path().join("piece").join("cat.onnx");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    let a = analysis(common::seg_head());
    let name = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Concat")
        .expect("concat")
        .name()
        .to_string();
    let (code, stdout, err) = pare(&[
        "extract",
        s(&m),
        "--node",
        &name,
        "-o",
        s(&out),
        "--with-data",
        "--samples",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("test_data_set_0..1"), "{stdout}");
    for k in 0..2 {
        let tds = out.parent().expect("p").join(format!("test_data_set_{k}"));
        let (n0, i0) = read_pb(&tds.join("input_0.pb"));
        let (_, i1) = read_pb(&tds.join("input_1.pb"));
        let (_, o0) = read_pb(&tds.join("output_0.pb"));
        assert!(!n0.is_empty());
        assert_eq!(i0.shape, vec![1, 4, 8, 8]);
        assert_eq!(i1.shape, vec![1, 4, 8, 8]);
        assert_eq!(o0.shape, vec![1, 8, 8, 8]);
        let (a0, b0) = (i0.to_f64(), o0.to_f64());
        assert_eq!(
            &b0[..256],
            &a0[..],
            "concat output starts with its first input"
        );
    }
    let s0 = read_pb(&out.parent().expect("p").join("test_data_set_0/input_0.pb")).1;
    let s1 = read_pb(&out.parent().expect("p").join("test_data_set_1/input_0.pb")).1;
    assert_ne!(s0, s1, "two samples differ");
}

#[test]
fn cli_input_data_from_npy_pb_named_and_directories() {
    let dir = common::tempdir();
    let d = dir.path();
    let m = common::write(d, "stereo.onnx", &common::stereo_if());
    let mut rng = Rng::new(9);
    let mk =
        |rng: &mut Rng| HostTensor::random(DataType::FLOAT, &[2, 3, 16, 16], rng).expect("random");
    let (left, right) = (mk(&mut rng), mk(&mut rng));
    std::fs::write(d.join("left.npy"), write_npy(&left)).expect("w");
    let pb = host_to_tensor("right", &right, None).expect("pb");
    std::fs::write(d.join("right.pb"), prost::Message::encode_to_vec(&pb)).expect("w");
    let out = d.join("o1").join("piece.onnx");
    std::fs::create_dir_all(out.parent().expect("p")).expect("mkdir");
    let left_conv = analysis(common::stereo_if()).graph().node[0]
        .name()
        .to_string();
    // Named, out of order; batch 2 (the model's batch is symbolic).
    let (code, _, err) = pare(&[
        "extract",
        s(&m),
        "--node",
        &left_conv,
        "-o",
        s(&out),
        "--input-data",
        &format!("right={}", s(&d.join("right.pb"))),
        "--input-data",
        &format!("left={}", s(&d.join("left.npy"))),
    ]);
    assert_eq!(code, 0, "{err}");
    let tds = out.parent().expect("p").join("test_data_set_0");
    assert_eq!(
        read_pb(&tds.join("input_0.pb")).1,
        left,
        "the conv's input is the left image, bit for bit"
    );
    // A directory in ONNX's layout is one sample: write one and read it back positionally.
    let sample_dir = d.join("sample");
    std::fs::create_dir_all(&sample_dir).expect("mkdir");
    std::fs::write(
        sample_dir.join("input_0.pb"),
        prost::Message::encode_to_vec(&host_to_tensor("left", &left, None).expect("t")),
    )
    .expect("w");
    std::fs::write(
        sample_dir.join("input_1.pb"),
        prost::Message::encode_to_vec(&pb),
    )
    .expect("w");
    let out2 = d.join("o2").join("piece.onnx");
    std::fs::create_dir_all(out2.parent().expect("p")).expect("mkdir");
    let (code, _, err) = pare(&[
        "extract",
        s(&m),
        "--node",
        "/If",
        "-o",
        s(&out2),
        "--input-data",
        s(&sample_dir),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out_if) = read_pb(
        &out2
            .parent()
            .expect("p")
            .join("test_data_set_0/output_0.pb"),
    );
    assert_eq!(out_if.shape, vec![2, 16, 16]);
    // Wrong shapes and unknown names are bad input.
    let small = HostTensor::random(DataType::FLOAT, &[1, 3, 8, 8], &mut rng).expect("r");
    std::fs::write(d.join("small.npy"), write_npy(&small)).expect("w");
    assert_bad(
        &[
            "extract",
            s(&m),
            "--node",
            "/If",
            "-o",
            s(&out2),
            "--input-data",
            s(&d.join("small.npy")),
            "--input-data",
            s(&d.join("right.pb")),
        ],
        &["small.npy", "'left'", "declares"],
    );
    assert_bad(
        &[
            "extract",
            s(&m),
            "--node",
            "/If",
            "-o",
            s(&out2),
            "--input-data",
            &format!("lefft={}", s(&d.join("left.npy"))),
        ],
        &["'lefft'", "'left'"],
    );
    assert_bad(
        &[
            "extract",
            s(&m),
            "--node",
            "/If",
            "-o",
            s(&out2),
            "--input-data",
            s(&d.join("left.npy")),
        ],
        &["right"],
    );
}

#[test]
fn npy_and_tensor_conversions_round_trip() {
    let mut rng = Rng::new(1);
    let tensors = vec![
        HostTensor::random(DataType::FLOAT, &[2, 3, 4], &mut rng).expect("f32"),
        HostTensor::random(DataType::DOUBLE, &[5], &mut rng).expect("f64"),
        HostTensor::random(DataType::INT64, &[3, 2], &mut rng).expect("i64"),
        HostTensor::random(DataType::INT32, &[7], &mut rng).expect("i32"),
        HostTensor::random(DataType::INT8, &[2, 2], &mut rng).expect("i8"),
        HostTensor::random(DataType::UINT8, &[3], &mut rng).expect("u8"),
        HostTensor::random(DataType::BOOL, &[4], &mut rng).expect("bool"),
        HostTensor {
            shape: vec![],
            data: HostData::F32(vec![1.5]),
        },
    ];
    for t in &tensors {
        let back = read_npy(&write_npy(t), Path::new("t.npy")).expect("npy");
        assert_eq!(&back, t);
        let pb = host_to_tensor("t", t, None).expect("pb");
        assert_eq!(&tensor_to_host(&pb).expect("host"), t);
    }
    // Fortran order and big endian, as numpy writes them.
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
    let header = format!(
        "{header}{}\n",
        " ".repeat(64 - (10 + header.len() + 1) % 64)
    );
    f.extend_from_slice(&(header.len() as u16).to_le_bytes());
    f.extend_from_slice(header.as_bytes());
    for v in [1i32, 4, 2, 5, 3, 6] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    let h = read_npy(&f, Path::new("f.npy")).expect("fortran");
    assert_eq!(
        h,
        HostTensor {
            shape: vec![2, 3],
            data: HostData::I32(vec![1, 2, 3, 4, 5, 6])
        }
    );
    // float16 written from float32 data.
    let t = HostTensor::f32(vec![4], vec![1.0, -2.5, 65504.0, 1e-8]);
    let pb = host_to_tensor("h", &t, Some(DataType::FLOAT16)).expect("f16");
    assert_eq!(pb.raw_data.as_ref().expect("raw").len(), 8);
    let back = tensor_to_host(&pb).expect("back");
    assert_eq!(back.to_f64()[..3], [1.0, -2.5, 65504.0]);
    assert!(data::f32_to_f16(f32::NAN) & 0x7c00 == 0x7c00);
}

#[test]
fn external_data_stays_external() {
    let dir = common::tempdir();
    let m = common::model(common::resnet_like());
    let src = dir.path().join("ext.onnx");
    save_model(
        &m,
        &src,
        &SaveOptions {
            external_threshold: Some(1024),
        },
    )
    .expect("save");
    let a = Analysis::open(&src, &InputPins::new()).expect("open");
    // A conv whose weight (over 1 KiB) was external in the source.
    let conv = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Conv" && a.model.external_tensors.contains(&n.input[1]))
        .expect("conv with external weight")
        .name()
        .to_string();
    let (_, p) = extract_selection(&a, &Selector::Node(conv)).expect("extract");
    let out = dir.path().join("piece.onnx");
    save_model(&p.model, &out, &SaveOptions::default()).expect("save piece");
    assert!(
        dir.path().join("piece.onnx.data").exists(),
        "weights written as external data"
    );
    let back = load_model(&out).expect("reload");
    assert_eq!(
        back.proto.graph.as_ref().expect("g").initializer.len(),
        p.initializers
    );
    assert_piece_reproduces("ext", "conv", &a, &p);
}

// ---- split ----------------------------------------------------------------------------------

#[test]
fn split_head_then_tail_equals_the_model() {
    for (name, m) in runnable_fixtures() {
        let a = analysis(m);
        let consts = const_only_nodes(&a);
        let g = a.graph();
        // Cut at the first output of a few nodes spread over the graph.
        let candidates: Vec<usize> = a
            .index
            .topo
            .iter()
            .copied()
            .filter(|&i| !consts[i])
            .collect();
        for frac in [0.25, 0.5, 0.75] {
            let i =
                candidates[((candidates.len() as f64 * frac) as usize).min(candidates.len() - 1)];
            let t = g.node[i].output[0].clone();
            if a.index.outputs.contains(&t) {
                continue;
            }
            let sp = match split(&a, std::slice::from_ref(&t)) {
                Ok(sp) => sp,
                Err(e) if e.to_string().contains("TAIL would be empty") => continue,
                Err(e) => panic!("{name} at {t}: {e}"),
            };
            for p in [&sp.head, &sp.tail] {
                Analysis::new(p.model.clone(), &InputPins::new())
                    .unwrap_or_else(|e| panic!("{name} at {t}: unsound half: {e}"));
            }
            let c = check_split(&a, &sp, &sample(&a, 5))
                .unwrap_or_else(|e| panic!("{name} at {t}: {e}"));
            assert!(c.max_abs_diff <= 1e-5, "{name} at {t}: {:?}", c.outputs);
        }
    }
}

#[test]
fn split_passes_tensors_that_bypass_the_cut() {
    let a = analysis(common::resnet_like());
    let g = a.graph();
    // Cut inside the first residual block: its shortcut bypasses the cut.
    let add = g.node.iter().find(|n| n.op_type() == "Add").expect("add");
    let inner = add.input[0].clone();
    let sp = split(&a, std::slice::from_ref(&inner)).expect("split");
    assert_eq!(sp.bypass, vec![add.input[1].clone()]);
    assert!(sp.tail.inputs.contains(&add.input[1]));
    let head_nodes: BTreeSet<usize> = sp.head.nodes.iter().copied().collect();
    assert!(
        sp.tail.nodes.iter().all(|k| !head_nodes.contains(k)),
        "no node computed twice"
    );
    assert_eq!(
        check_split(&a, &sp, &sample(&a, 1))
            .expect("check")
            .max_abs_diff,
        0.0
    );
    // A cut on one branch of a two-input model: TAIL reads the other input directly.
    let a = analysis(common::stereo_if());
    let l = a
        .graph()
        .node
        .iter()
        .find(|n| n.input[0] == "left")
        .expect("left conv")
        .output[0]
        .clone();
    let sp = split(&a, &[l]).expect("split");
    assert_eq!(sp.tail_model_inputs, vec!["right".to_string()]);
    assert_eq!(
        check_split(&a, &sp, &sample(&a, 1))
            .expect("check")
            .max_abs_diff,
        0.0
    );
    // Cutting after every output leaves nothing for TAIL.
    let e = split(&a, &["disparity".to_string()])
        .expect_err("empty tail")
        .to_string();
    assert!(e.contains("TAIL would be empty"), "{e}");
}

#[test]
fn cli_split_writes_and_verifies() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "psp.onnx", &common::psp());
    let a = analysis(common::psp());
    let cat = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Concat")
        .expect("concat")
        .output[0]
        .clone();
    let (h, t) = (dir.path().join("head.onnx"), dir.path().join("tail.onnx"));
    let (code, stdout, err) = pare(&["split", s(&m), "--at", &cat, "-o", s(&h), s(&t)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("verified: HEAD then TAIL equals the model"),
        "{stdout}"
    );
    assert!(h.exists() && t.exists());
}

// ---- reduce ---------------------------------------------------------------------------------

fn contains_if(p: &Path) -> bool {
    load_model(p)
        .expect("candidate loads")
        .proto
        .graph
        .expect("g")
        .node
        .iter()
        .any(|n| n.op_type() == "If")
}

#[test]
fn reduce_finds_the_if_with_a_library_check_and_reports_progress() {
    let dir = common::tempdir();
    let path = common::write(dir.path(), "stereo.onnx", &common::stereo_if());
    let a = Analysis::open(&path, &InputPins::new()).expect("open");
    let opts = ReduceOptions {
        max_tries: 200,
        work_dir: dir.path().join("work"),
        keep_candidates: false,
        samples: None,
    };
    let rec = RecordProgress::default();
    let r = reduce(&a, &FnOracle(contains_if), &opts, &rec).expect("reduce");
    assert!(r.piece.nodes.len() <= 3, "{:?}", r.piece.nodes);
    assert!(r.piece.graph().node.iter().any(|n| n.op_type() == "If"));
    assert!(r.minimal);
    assert!(r.tries.len() <= 200);
    let ev = rec.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, JobEvent::Phase { name, .. } if name == "reducing"))
    );
    assert!(ev.iter().filter(|e| matches!(e, JobEvent::Log(_))).count() >= r.tries.len());
    assert!(ev.iter().any(|e| matches!(e, JobEvent::Finished { .. })));
    // A bound on tries is respected and reported.
    let opts = ReduceOptions {
        max_tries: 3,
        ..opts
    };
    let r = reduce(&a, &FnOracle(contains_if), &opts, &NoProgress).expect("reduce");
    assert_eq!(r.tries.len(), 3);
    assert!(!r.minimal && r.stop_reason.is_some());
    assert!(
        r.piece.graph().node.iter().any(|n| n.op_type() == "If"),
        "the best so far still fails"
    );
}

#[test]
fn reduce_cli_with_a_shell_check_returns_at_most_three_nodes_with_the_if() {
    let dir = common::tempdir();
    let path = common::write(dir.path(), "stereo.onnx", &common::stereo_if());
    let out = dir.path().join("min.onnx");
    // Fails (exit 1) whenever the candidate contains an If, judged by pare's own op histogram.
    let check = format!(
        "! {} info {{}} --json | grep -q '\"If\"'",
        env!("CARGO_BIN_EXE_pare")
    );
    let (code, stdout, err) = pare(&[
        "reduce",
        s(&path),
        "--check",
        &check,
        "-o",
        s(&out),
        "--with-data",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("reduced"), "{stdout}");
    let m = load_model(&out).expect("min loads");
    let g = m.proto.graph.expect("graph");
    assert!(g.node.len() <= 3, "{} nodes", g.node.len());
    assert!(g.node.iter().any(|n| n.op_type() == "If"));
    let log = std::fs::read_to_string(dir.path().join("min.log.txt")).expect("log");
    assert!(
        log.contains("FAILS") && log.contains("passes") && log.contains("result:"),
        "{log}"
    );
    assert!(
        dir.path().join("test_data_set_0/input_0.pb").exists(),
        "boundary data for the result"
    );
}

#[test]
fn reduce_candidates_are_valid_models_with_real_boundary_data() {
    let dir = common::tempdir();
    let path = common::write(dir.path(), "data_if.onnx", &common::data_if());
    let a = Analysis::open(&path, &InputPins::new()).expect("open");
    let consts = const_only_nodes(&a);
    // Any subset of nodes makes a sound model.
    let mut rng = Rng::new(4);
    for _ in 0..30 {
        let set: BTreeSet<usize> = (0..a.graph().node.len())
            .filter(|&i| !consts[i] && rng.below(2) == 0)
            .collect();
        if set.is_empty() {
            continue;
        }
        let p = piece_from_nodes(&a, &consts, &set).expect("candidate");
        Analysis::new(p.model.clone(), &InputPins::new()).expect("sound candidate");
        let bd: BoundaryData = boundary_data(&a, &p, &sample(&a, 0));
        assert!(bd.complete(), "{:?}", bd.problems);
    }
    // With samples, the check sees test data next to every candidate.
    let samples = load_samples(&a, &[], 2, 0).expect("samples");
    let opts = ReduceOptions {
        max_tries: 100,
        work_dir: dir.path().join("w"),
        keep_candidates: false,
        samples: Some(samples),
    };
    let check = |p: &Path| {
        let d = p.parent().expect("dir");
        assert!(d.join("test_data_set_1").is_dir(), "data for both samples");
        contains_if(p)
    };
    let r = reduce(&a, &FnOracle(check), &opts, &NoProgress).expect("reduce");
    assert_eq!(r.piece.nodes.len(), 1);
    assert_eq!(r.data.len(), 2);
    assert!(r.data.iter().all(BoundaryData::complete));
}

#[test]
fn every_piece_of_a_model_with_unknown_types_still_gets_typed_boundaries() {
    // A custom op pare's inference cannot type: its output is declared with a guess and a note.
    let a = analysis(common::custom_op());
    let node = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_domain() == "com.acme")
        .expect("custom")
        .name()
        .to_string();
    let (_, p) = extract_selection(&a, &Selector::Node(node)).expect("extract");
    let (_, dt, _) = &p.output_types()[0];
    assert_eq!(*dt, Some(DataType::FLOAT));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("unknown to pare's shape inference")),
        "{:?}",
        p.notes
    );
}

/// Runs `piece` alone in onnxruntime on the inputs stored in `bd`: its outputs, in the piece's
/// output order.
#[cfg(feature = "ort")]
fn piece_in_onnxruntime(
    piece: &Piece,
    bd: &pare::extract::data::BoundaryData,
) -> Result<Vec<HostTensor>, String> {
    use pare::runtime::{EngineKind, InputSpec, Runner};
    let feeds: Vec<HostTensor> = bd.inputs.iter().flatten().cloned().collect();
    let specs: Vec<InputSpec> = piece
        .inputs
        .iter()
        .zip(&feeds)
        .map(|(n, h)| InputSpec {
            name: n.clone(),
            dtype: h.dtype(),
            shape: h.shape.clone(),
        })
        .collect();
    let engine = Runner::new(EngineKind::OnnxRuntime, &piece.model.proto, &specs)
        .map_err(|e| e.to_string())?;
    assert_eq!(engine.engine(), EngineKind::OnnxRuntime);
    let mut got = engine.run(&feeds).map_err(|e| e.to_string())?;
    let names = engine.output_names();
    piece
        .outputs
        .iter()
        .map(|o| {
            let k = names
                .iter()
                .position(|n| n == o)
                .ok_or(format!("no output {o}"))?;
            Ok(std::mem::replace(
                &mut got[k],
                HostTensor::f32(vec![], vec![]),
            ))
        })
        .collect()
}

/// With `--engine ort` the stored outputs are what onnxruntime gives on the source model: the
/// piece run alone in onnxruntime reproduces them, and they agree with tract's float64
/// reference to float32 rounding.
#[cfg(feature = "ort")]
#[test]
fn onnxruntime_boundary_data_is_reproduced_by_the_piece_in_onnxruntime() {
    use pare::extract::data::boundary_with;
    use pare::runtime::EngineKind;
    if !common::with_onnxruntime(
        "onnxruntime_boundary_data_is_reproduced_by_the_piece_in_onnxruntime",
    ) {
        return; // ran in a child process that loads the library
    }
    for (name, m) in runnable_fixtures() {
        let a = analysis(m);
        for (from, to) in random_ranges(&a, 6, 7) {
            let what = format!("{name} {from}..{to}");
            let sel = Selector::Range { from, to };
            let (_, piece) = extract_selection(&a, &sel).unwrap_or_else(|e| panic!("{what}: {e}"));
            let s = sample(&a, 5);
            let mut r = Evaluator::new(&a, &s).on(EngineKind::OnnxRuntime);
            let bd = boundary_with(&mut r, &piece);
            assert!(bd.complete(), "{what}: {:?}", bd.problems);
            let reference = boundary_data(&a, &piece, &s);
            let got = piece_in_onnxruntime(&piece, &bd).unwrap_or_else(|e| panic!("{what}: {e}"));
            for (((o, stored), exact), got) in piece
                .outputs
                .iter()
                .zip(&bd.outputs)
                .zip(&reference.outputs)
                .zip(&got)
            {
                let stored = stored.as_ref().expect("complete");
                let exact = exact.as_ref().expect("complete");
                let scale = exact.to_f64().iter().fold(1f64, |m, x| m.max(x.abs()));
                let own = max_abs_diff(got, stored).expect("same shape");
                assert!(own <= 1e-5 * scale, "{what}: {o}: piece vs stored {own}");
                let d = max_abs_diff(stored, exact).expect("same shape");
                assert!(d <= 1e-5 * scale, "{what}: {o}: onnxruntime vs float64 {d}");
            }
        }
    }
    common::ran_against_onnxruntime(
        "onnxruntime_boundary_data_is_reproduced_by_the_piece_in_onnxruntime",
    );
}

/// Basic residual blocks with folded batch norms (the shape of an exported ResNet-18), wide
/// enough for onnxruntime's blocked (NCHWc) convolutions, which fold a residual `Add` into
/// the `Conv` before it when the skip tensor is in that layout too.
#[cfg(feature = "ort")]
fn folded_basic_blocks() -> ModelProto {
    use pare::model::builder::{D, GraphBuilder};
    let mut b = GraphBuilder::new("basic_blocks").with_seed(18);
    b.input("input", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    b.scope = "/stem".into();
    let x = b.conv("input", 3, 32, 3, 1, 1, 1);
    let mut x = b.relu(&x);
    for blk in 0..4 {
        b.scope = format!("/layer/{blk}");
        let y = b.conv(&x, 32, 32, 3, 1, 1, 1);
        let y = b.relu(&y);
        let y = b.conv(&y, 32, 32, 3, 1, 1, 1);
        let s = b.add(&y, &x);
        x = b.relu(&s);
    }
    b.node_named("/head/output", "Identity", &[&x], &["features"], vec![]);
    b.output("features", &[D::N(1), D::N(32), D::N(32), D::N(32)]);
    b.model()
}

/// A piece that starts inside a residual block: its skip input is a graph input, so
/// onnxruntime cannot fold that block's `Add` into the `Conv` as it does in the whole model.
/// The `--engine ort` reference is computed with that cut visible to the optimizer, so the
/// piece run alone reproduces it bit for bit.
#[cfg(feature = "ort")]
#[test]
fn onnxruntime_boundary_data_is_computed_with_the_fusions_the_piece_gets() {
    use pare::extract::data::boundary_with;
    use pare::runtime::EngineKind;
    if !common::with_onnxruntime(
        "onnxruntime_boundary_data_is_computed_with_the_fusions_the_piece_gets",
    ) {
        return; // ran in a child process that loads the library
    }
    let a = analysis(folded_basic_blocks());
    let conv = |k: usize| {
        a.graph()
            .node
            .iter()
            .filter(|n| n.op_type() == "Conv")
            .nth(k)
            .expect("conv")
            .name()
            .to_string()
    };
    let sel = Selector::Range {
        from: conv(2),
        to: "/head/output".into(),
    };
    let (_, piece) = extract_selection(&a, &sel).expect("extract");
    assert_eq!(piece.inputs.len(), 2, "{:?}", piece.inputs);
    let mut worst = 0f64;
    for seed in 0..4 {
        let s = sample(&a, seed);
        let mut r = Evaluator::new(&a, &s).on(EngineKind::OnnxRuntime);
        let bd = boundary_with(&mut r, &piece);
        assert!(bd.complete(), "{:?}", bd.problems);
        assert_eq!(r.engine(), EngineKind::OnnxRuntime, "{:?}", bd.log);
        assert_eq!(bd.engine, EngineKind::OnnxRuntime);
        let got = piece_in_onnxruntime(&piece, &bd).expect("piece in onnxruntime");
        let stored = bd.outputs[0].as_ref().expect("complete");
        worst = worst.max(max_abs_diff(&got[0], stored).expect("same shape"));
        // The stored inputs are the whole model's own tensors, not recomputed at the cut.
        let mut whole = Evaluator::new(&a, &s).on(EngineKind::OnnxRuntime);
        whole.compute(&piece.inputs).expect("whole model");
        for (t, h) in piece.inputs.iter().zip(&bd.inputs) {
            let d = max_abs_diff(whole.get(t).expect("computed"), h.as_ref().expect("input"));
            assert_eq!(d, Some(0.0), "{t}");
        }
    }
    assert_eq!(worst, 0.0, "piece in onnxruntime vs stored outputs");
    common::ran_against_onnxruntime(
        "onnxruntime_boundary_data_is_computed_with_the_fusions_the_piece_gets",
    );
}
