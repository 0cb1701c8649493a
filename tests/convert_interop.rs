//! Converted (FP16) models against the reference tools: every model `pare convert` writes
//! passes `onnx.checker` (full check), runs in onnxruntime, holds no infinite FP16
//! initializer, and stays close to the FP32 model there (SQNR over 35 dB on random inputs).
//! Needs a Python with onnx, onnxruntime and numpy (`common::python` finds or creates it).

mod common;

use std::path::PathBuf;
use std::process::Command;

use pare::convert::{ConvertOptions, convert};
use pare::jobs::NoProgress;
use pare::model::io::{SaveOptions, save_model};
use pare::model::{Analysis, InputPins};
use pare::runtime::EngineChoice;

fn python() -> PathBuf {
    common::python("convert interop")
}

/// argv: FLOAT CONVERTED
const CHECK: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
ort.set_default_logger_severity(3)
fl, cm = sys.argv[1], sys.argv[2]
m = onnx.load(cm)
onnx.checker.check_model(m, full_check=True)
def inits(g):
    for t in g.initializer:
        yield t
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from inits(a.g)
half = 0
for t in inits(m.graph):
    if t.data_type == onnx.TensorProto.FLOAT16:
        half += 1
        assert np.isfinite(numpy_helper.to_array(t)).all(), t.name
assert half > 0, "no FP16 initializer"
f = ort.InferenceSession(fl, providers=["CPUExecutionProvider"])
c = ort.InferenceSession(cm, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feed_f, feed_c = {}, {}
for i, j in zip(f.get_inputs(), c.get_inputs()):
    shape = [d if isinstance(d, int) else (1 if k == 0 else 16) for k, d in enumerate(i.shape)]
    x = rng.standard_normal(shape).astype(np.float32)
    feed_f[i.name] = x
    feed_c[j.name] = x.astype(np.float16) if j.type == "tensor(float16)" else x
sig = noise = 0.0
for a, b in zip(f.run(None, feed_f), c.run(None, feed_c)):
    a, b = a.astype(np.float64), b.astype(np.float64)
    assert np.isfinite(b).all()
    sig += (a * a).sum(); noise += ((a - b) ** 2).sum()
db = 10 * np.log10(sig / max(noise, 1e-30))
print(f"onnxruntime SQNR {db:.1f} dB, {half} FP16 initializers")
assert db > 35, "FP16 model far from FP32"
print("ok")
"#;

#[test]
fn converted_models_pass_the_onnx_checker_and_run_in_onnxruntime() {
    let py = python();
    let dir = common::tempdir();
    let fixtures = [
        ("resnet_like", common::resnet_like()),
        ("aspp", common::aspp()),
        ("psp", common::psp()),
        ("same_pad_dw_se", common::same_pad_dw_se()),
        ("matmul_block", common::matmul_block()),
        ("stereo_if", common::stereo_if()),
        ("data_if", common::data_if()),
        ("loop_outer", common::loop_outer()),
        ("seg_head", common::seg_head()),
    ];
    let mut failures = Vec::new();
    for (name, m) in fixtures {
        let a = Analysis::new(common::model(m.clone()), &InputPins::new()).expect("analysis");
        let float = common::write(dir.path(), &format!("{name}.onnx"), &m);
        for keep_io_types in [false, true] {
            let o = ConvertOptions {
                samples: 2,
                keep_io_types,
                engine: EngineChoice::Tract,
                ..ConvertOptions::default()
            };
            let (c, _) = convert(&a, &o, &NoProgress).unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = dir.path().join(format!("{name}.{keep_io_types}.fp16.onnx"));
            save_model(&common::model(c), &out, &SaveOptions::default()).expect("save");
            let r = Command::new(&py)
                .arg("-c")
                .arg(CHECK)
                .arg(&float)
                .arg(&out)
                .output()
                .expect("python");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            );
            eprintln!("{name} keep_io_types={keep_io_types}: {}", text.trim());
            if !r.status.success() {
                failures.push(format!("{name} keep_io_types={keep_io_types}: {text}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// argv: MODEL. onnx checker (full), onnxruntime runs it (optimizations off: its CPU Q/DQ
/// fusions mishandle FP16 scales), outputs finite.
const RUNS: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
feed = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in s.get_inputs()}
for o in s.run(None, feed):
    assert np.isfinite(o.astype(np.float64)).all()
print("ok")
"#;

#[test]
fn quantized_fp16_models_pass_the_checker_and_run_in_onnxruntime() {
    use pare::convert::Precision;
    use pare::quant::{QuantOptions, quantize};
    let py = python();
    let dir = common::tempdir();
    for (name, m) in [
        ("resnet_like", common::resnet_like()),
        ("same_pad_dw_se", common::same_pad_dw_se()),
    ] {
        let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
        let o = QuantOptions {
            samples: 4,
            eval_samples: 2,
            quantize_small: true,
            engine: EngineChoice::Tract,
            precision: Some(Precision::Fp16),
            ..Default::default()
        };
        let q = quantize(&a, &o, &NoProgress).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = dir.path().join(format!("{name}.int8fp16.onnx"));
        save_model(&common::model(q.model), &out, &SaveOptions::default()).expect("save");
        let r = Command::new(&py)
            .arg("-c")
            .arg(RUNS)
            .arg(&out)
            .output()
            .expect("python");
        assert!(
            r.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }
}
