//! Interop for extraction: pieces `pare extract --with-data` writes pass
//! `onnx.checker.check_model(full_check=True)`, run in onnxruntime and reproduce the stored
//! boundary outputs; `pare split` halves compose to the original in onnxruntime; `pare reduce`
//! works with a Python check. Needs a Python with onnx, onnxruntime and numpy
//! (`common::python` finds or creates it); without one the tests fail, never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pare::extract::const_only_nodes;
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::rng::Rng;

fn python() -> PathBuf {
    common::python("extract interop")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/extract_check.py")
}

fn pare(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .output()
        .expect("run pare");
    assert!(
        out.status.success(),
        "pare {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_script(py: &Path, args: &[String]) {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

fn fixtures() -> Vec<(&'static str, ModelProto)> {
    let mut v = common::prune_fixtures();
    v.push(("stereo_if", common::stereo_if()));
    v.push(("data_if", common::data_if()));
    v
}

/// Selectors: every node, then 20 random ranges.
fn selections(m: &ModelProto, seed: u64) -> Vec<Vec<String>> {
    let a = Analysis::new(common::model(m.clone()), &InputPins::new()).expect("analysis");
    let g = a.graph();
    let mut v: Vec<Vec<String>> = g
        .node
        .iter()
        .map(|n| vec!["--node".into(), n.name().to_string()])
        .collect();
    let consts = const_only_nodes(&a);
    let nodes: Vec<usize> = (0..g.node.len()).filter(|&i| !consts[i]).collect();
    let mut rng = Rng::new(seed);
    for _ in 0..20 {
        let f = nodes[rng.below(nodes.len() as u64) as usize];
        let mut down: Vec<usize> = a.index.reachable(&[f], true).into_iter().collect();
        down.sort_unstable();
        let t = down[rng.below(down.len() as u64) as usize];
        v.push(vec![
            "--from".into(),
            g.node[f].name().into(),
            "--to".into(),
            g.node[t].name().into(),
        ]);
    }
    v
}

#[test]
fn every_node_and_random_ranges_pass_onnx_checker_and_onnxruntime_with_their_data() {
    let py = python();
    let dir = common::tempdir();
    let mut dirs = Vec::new();
    for (name, m) in fixtures() {
        let model = common::write(dir.path(), &format!("{name}.onnx"), &m);
        for (k, sel) in selections(&m, 7).into_iter().enumerate() {
            let d = dir.path().join(format!("{name}_{k}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            let out = d.join("sub.onnx");
            let mut args: Vec<String> = vec!["extract".into(), s(&model)];
            args.extend(sel);
            args.extend(["-o".into(), s(&out), "--with-data".into()]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            pare(&refs);
            dirs.push(s(&d));
        }
    }
    assert!(dirs.len() > 250, "{} pieces", dirs.len());
    let mut args = vec!["pieces".to_string(), "1e-5".to_string()];
    args.extend(dirs);
    run_script(&py, &args);
    common::ran_against_onnxruntime(
        "every_node_and_random_ranges_pass_onnx_checker_and_onnxruntime_with_their_data",
    );
}

#[test]
fn loop_and_local_function_pieces_pass_onnx_checker_and_run_in_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let mut files = Vec::new();
    for (name, m) in [
        ("loop_outer", common::loop_outer()),
        ("local_function", common::local_function()),
    ] {
        let model = common::write(dir.path(), &format!("{name}.onnx"), &m);
        for (k, sel) in selections(&m, 3).into_iter().enumerate() {
            let out = dir.path().join(format!("{name}_{k}.onnx"));
            let mut args: Vec<String> = vec!["extract".into(), s(&model)];
            args.extend(sel);
            args.extend(["-o".into(), s(&out)]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            pare(&refs);
            files.push(s(&out));
        }
    }
    let mut args = vec!["run".to_string()];
    args.extend(files);
    run_script(&py, &args);
    common::ran_against_onnxruntime(
        "loop_and_local_function_pieces_pass_onnx_checker_and_run_in_onnxruntime",
    );
}

#[test]
fn split_halves_compose_to_the_original_in_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let mut args = vec!["split".to_string(), "1e-5".to_string()];
    for (name, m) in fixtures() {
        let model = common::write(dir.path(), &format!("{name}.onnx"), &m);
        let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
        let consts = const_only_nodes(&a);
        let order: Vec<usize> = a
            .index
            .topo
            .iter()
            .copied()
            .filter(|&i| !consts[i])
            .collect();
        for (k, frac) in [0.3, 0.6].iter().enumerate() {
            let i = order[(order.len() as f64 * frac) as usize];
            let at = a.graph().node[i].output[0].clone();
            if a.index.outputs.contains(&at) {
                continue;
            }
            let (h, t) = (
                dir.path().join(format!("{name}_{k}_head.onnx")),
                dir.path().join(format!("{name}_{k}_tail.onnx")),
            );
            pare(&["split", &s(&model), "--at", &at, "-o", &s(&h), &s(&t)]);
            args.extend([s(&model), s(&h), s(&t)]);
        }
    }
    run_script(&py, &args);
    common::ran_against_onnxruntime("split_halves_compose_to_the_original_in_onnxruntime");
}

#[test]
fn reduce_with_a_python_check_keeps_the_if() {
    let py = python();
    let dir = common::tempdir();
    let model = common::write(dir.path(), "stereo.onnx", &common::stereo_if());
    let out = dir.path().join("min.onnx");
    let check = format!(
        "{} -c \"import onnx, sys; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); sys.exit(1 if any(n.op_type == 'If' for n in m.graph.node) else 0)\" {{}}",
        py.display()
    );
    pare(&[
        "reduce",
        &s(&model),
        "--check",
        &check,
        "-o",
        &s(&out),
        "--max-tries",
        "60",
    ]);
    let m = pare::model::io::load_model(&out).expect("min");
    let g = m.proto.graph.expect("graph");
    assert!(
        g.node.len() <= 3 && g.node.iter().any(|n| n.op_type() == "If"),
        "{} nodes",
        g.node.len()
    );
    run_script(&py, &["run".to_string(), s(&out)]);
    common::ran_against_onnxruntime("reduce_with_a_python_check_keeps_the_if");
}
