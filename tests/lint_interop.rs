//! Interop: models written by `pare fix` pass the Python `onnx` checker, run in onnxruntime
//! with the original's outputs, and tract's outputs on the fixed model equal onnxruntime's on
//! the original (the acceptance test of the If fold: tract refuses the original). Needs a
//! Python with onnx, onnxruntime and numpy (`common::python` finds or creates it); fails
//! without one. Set `PARE_DEV_MODELS` to a directory holding the dev corpus
//! (pat_a_stereo.onnx, …) to include it.

mod common;
mod lint_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use lint_support::*;
use pare::jobs::NoProgress;
use pare::lint::fix::reference::random_inputs;
use pare::lint::fix::{FixOptions, fix_model, verification_inputs, write_fixed};
use pare::model::builder::attr_ints;
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::runtime::{HostData, HostTensor, Runner};

fn python() -> PathBuf {
    common::python("lint interop")
}

fn raw(path: &Path, t: &HostTensor) {
    let HostData::F32(v) = &t.data else {
        panic!("float tensors only")
    };
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write raw");
}

struct Case {
    name: String,
    original: PathBuf,
    pins: Vec<(String, Vec<i64>)>,
    absent: Vec<&'static str>,
}

/// Fixes `c`, writes the fixed model, runs it in tract, and returns the JSON case entry.
fn prepare(dir: &Path, c: &Case) -> serde_json::Value {
    let mut pins = InputPins::new();
    for (n, d) in &c.pins {
        pins.insert(n.clone(), d.clone());
    }
    let a = Analysis::open(&c.original, &pins).expect("open");
    let mut o = fix_model(&a, &FixOptions::default(), &NoProgress).expect("fix");
    assert!(o.changed(), "{}: nothing fixed", c.name);
    let fixed = dir.join(format!("{}_fixed.onnx", c.name));
    write_fixed(&mut o, &c.original, &fixed, false)
        .unwrap_or_else(|e| panic!("{}: {e}: {:#?}", c.name, o.verification));
    // tract on the fixed model, with the inputs verification used.
    let (specs, _) = verification_inputs(&a).expect("specs");
    let inputs = random_inputs(&specs, 42).expect("inputs");
    let fixed_model = pare::model::load_model(&fixed).expect("reload");
    let engine = Runner::tract(&fixed_model.proto, &specs)
        .unwrap_or_else(|e| panic!("{}: tract refuses the fixed model: {e}", c.name));
    let outs = engine.run(&inputs).expect("tract run");
    let mut ins_j = Vec::new();
    for (s, t) in specs.iter().zip(&inputs) {
        let p = dir.join(format!("{}_in_{}.bin", c.name, ins_j.len()));
        raw(&p, t);
        ins_j.push(serde_json::json!({"name": s.name, "shape": t.shape, "file": p}));
    }
    let mut outs_j = Vec::new();
    for t in &outs {
        let p = dir.join(format!("{}_out_{}.bin", c.name, outs_j.len()));
        raw(&p, t);
        outs_j.push(serde_json::json!({"shape": t.shape, "file": p}));
    }
    serde_json::json!({
        "name": c.name, "original": c.original, "fixed": fixed, "absent_ops": c.absent,
        "inputs": ins_j, "outputs": outs_j,
    })
}

fn case(
    dir: &Path,
    name: &str,
    m: &ModelProto,
    pins: &[(&str, &[i64])],
    absent: &[&'static str],
) -> Case {
    Case {
        name: name.into(),
        original: write(dir, &format!("{name}.onnx"), m),
        pins: pins
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect(),
        absent: absent.to_vec(),
    }
}

#[test]
fn fixed_models_pass_the_checker_and_match_onnxruntime() {
    let py = python();
    let dir = tempdir();
    let d = dir.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut cases = vec![
        case(
            d,
            "squeeze_if_dynamic",
            &squeeze_if(true),
            &[("x", &[2, 3, 12, 20])],
            &["If"],
        ),
        case(d, "squeeze_if_static", &squeeze_if(false), &[], &["If"]),
        case(
            d,
            "shape_resize_pinned",
            &shape_resize(true),
            &[("x", &[1, 3, 6, 10])],
            &["Shape", "Concat"],
        ),
        case(d, "clamp", &clamp(), &[], &[]),
        case(d, "deconv3d_q3", &deconv3d_q3(), &[], &[]),
        case(
            d,
            "deconv2d_extend",
            &deconv(
                2,
                vec![
                    attr_ints("pads", &[0, 0, 0, 0]),
                    attr_ints("output_padding", &[1, 1]),
                ],
                true,
                3,
                2,
            ),
            &[],
            &[],
        ),
        case(
            d,
            "deconv2d_asym",
            &deconv(2, vec![attr_ints("pads", &[2, 0, 0, 1])], true, 2, 3),
            &[],
            &[],
        ),
        case(
            d,
            "resize_scales",
            &resize_scales(&[1.0, 1.0, 2.0, 2.0], 5),
            &[],
            &[],
        ),
        case(
            d,
            "gather_const_negative",
            &gather_const_negative(),
            &[],
            &[],
        ),
        Case {
            name: "stereo_squeeze".into(),
            original: data.join("stereo_squeeze.onnx"),
            pins: vec![
                ("left".into(), vec![1, 3, 32, 48]),
                ("right".into(), vec![1, 3, 32, 48]),
            ],
            absent: vec!["If"],
        },
        Case {
            name: "clamp_min".into(),
            original: data.join("clamp_min.onnx"),
            pins: vec![],
            absent: vec![],
        },
    ];
    if let Some(dev) = std::env::var_os("PARE_DEV_MODELS").map(PathBuf::from) {
        for (file, pins, absent) in [
            ("pat_a_stereo.onnx", vec![], vec!["If"]),
            (
                "pat_b_dynsqueeze.onnx",
                vec![("img".to_string(), vec![1, 3, 64, 64])],
                vec!["If"],
            ),
            (
                "pat_b_dynsqueeze.onnx",
                vec![("img".to_string(), vec![2, 3, 144, 160])],
                vec!["If"],
            ),
            ("pat_c_clampmin.onnx", vec![], vec![]),
        ] {
            let p = dev.join(file);
            if p.exists() {
                let name = format!("dev_{}_{}", file.trim_end_matches(".onnx"), cases.len());
                cases.push(Case {
                    name,
                    original: p,
                    pins,
                    absent,
                });
            }
        }
    }
    let entries: Vec<serde_json::Value> = cases.iter().map(|c| prepare(d, c)).collect();
    let manifest = d.join("cases.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&entries).expect("json"),
    )
    .expect("write manifest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lint_check.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&manifest)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{} passed, 0 failed", entries.len())),
        "{text}"
    );
    common::ran_against_onnxruntime("fixed_models_pass_the_checker_and_match_onnxruntime");
}
