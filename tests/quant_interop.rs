//! Quantized models against the reference tools: every QDQ model pare writes passes
//! `onnx.checker` (full check), runs in onnxruntime, and onnxruntime measures the same output
//! SQNR pare's report claims (on the same inputs). TensorRT-format models carry only int8 zero
//! points of 0. Needs a Python with onnx, onnxruntime and numpy (`common::python` finds or
//! creates it); fails without one.

mod common;

use std::path::PathBuf;
use std::process::Command;

use pare::data::{self, DataSource as CalibSource, Preprocess};
use pare::jobs::NoProgress;
use pare::model::io::{SaveOptions, save_model};
use pare::model::{Analysis, InputPins};
use pare::quant::{Format, QuantOptions, quantize};

fn python() -> PathBuf {
    common::python("quant interop")
}

/// argv: FLOAT QUANT FORMAT CLAIMED_DB NPY... (one .npy per input per sample, in order,
/// grouped by sample; the input count comes from the model).
const CHECK: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
fl, qm, fmt, claimed = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
files = sys.argv[5:]
m = onnx.load(qm)
onnx.checker.check_model(m, full_check=True)
inits = {t.name: t for t in m.graph.initializer}
for n in m.graph.node:
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        zp = onnx.numpy_helper.to_array(inits[n.input[2]])
        if fmt == "trt":
            assert zp.dtype == np.int8 and (zp == 0).all(), (n.name, zp)
        s = onnx.numpy_helper.to_array(inits[n.input[1]])
        assert (s > 0).all(), (n.name, "non-positive scale")
f = ort.InferenceSession(fl, providers=["CPUExecutionProvider"])
q = ort.InferenceSession(qm, providers=["CPUExecutionProvider"])
names = [i.name for i in f.get_inputs()]
sig = noise = 0.0
for k in range(0, len(files), len(names)):
    feed = {n: np.load(p) for n, p in zip(names, files[k:k + len(names)])}
    for a, b in zip(f.run(None, feed), q.run(None, feed)):
        if np.issubdtype(a.dtype, np.floating):
            a, b = a.astype(np.float64), b.astype(np.float64)
            assert np.isfinite(b).all()
            sig += (a * a).sum(); noise += ((a - b) ** 2).sum()
got = 10 * np.log10(sig / max(noise, 1e-30))
print(f"onnxruntime SQNR {got:.2f} dB, pare claimed {claimed:.2f} dB")
assert abs(got - claimed) < 1.0, "SQNR disagrees"
print("ok")
"#;

#[test]
fn quantized_models_pass_the_onnx_checker_and_match_in_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let mut pins = InputPins::new();
    pins.insert("image".to_string(), vec![1, 3, 24, 32]);
    let fixtures = [
        ("resnet_like", common::resnet_like(), InputPins::new()),
        ("aspp", common::aspp(), InputPins::new()),
        ("psp", common::psp(), InputPins::new()),
        ("same_pad_dw_se", common::same_pad_dw_se(), InputPins::new()),
        ("stereo3d", common::stereo3d(), InputPins::new()),
        ("matmul_block", common::matmul_block(), InputPins::new()),
        ("flatten_view", common::flatten_view(), InputPins::new()),
        ("dynamic_hw", common::dynamic_hw(), pins),
    ];
    let mut failures = Vec::new();
    for (name, m, pins) in fixtures {
        let a = Analysis::new(common::model(m.clone()), &pins).expect("analysis");
        let float = common::write(dir.path(), &format!("{name}.onnx"), &m);
        for format in [Format::Trt, Format::Ort] {
            let o = QuantOptions {
                samples: 6,
                eval_samples: 6,
                quantize_small: true,
                format,
                ..Default::default()
            };
            let q = quantize(&a, &o, &NoProgress).unwrap_or_else(|e| panic!("{name}: {e}"));
            let tag = if format == Format::Trt { "trt" } else { "ort" };
            let out = dir.path().join(format!("{name}.{tag}.onnx"));
            save_model(&common::model(q.model), &out, &SaveOptions::default()).expect("save");
            // The same inputs the report was measured on.
            let decls =
                data::input_decls(m.graph.as_ref().expect("graph"), &a.pins).expect("decls");
            let set = data::SampleSet::open(
                decls,
                &CalibSource::Random { seed: 0 },
                6,
                Preprocess::default(),
            )
            .expect("set");
            let mut files = Vec::new();
            for k in 0..6 {
                for (j, t) in set.load(k).expect("sample").tensors.iter().enumerate() {
                    let p = dir.path().join(format!("{name}_{k}_{j}.npy"));
                    let v: Vec<f32> = t.to_f64().into_iter().map(|x| x as f32).collect();
                    data::write_npy_f32(&p, &t.shape, &v).expect("npy");
                    files.push(p);
                }
            }
            let claimed = q.report.output_sqnr_db.expect("sqnr");
            let r = Command::new(&py)
                .args(["-c", CHECK])
                .arg(&float)
                .arg(&out)
                .arg(tag)
                .arg(format!("{claimed}"))
                .args(&files)
                .output()
                .expect("python");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            );
            if !r.status.success() {
                failures.push(format!("{name} ({tag}): {text}"));
            } else {
                eprintln!("{name} ({tag}): {}", text.lines().next().unwrap_or(""));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    common::ran_against_onnxruntime(
        "quantized_models_pass_the_onnx_checker_and_match_in_onnxruntime",
    );
}
