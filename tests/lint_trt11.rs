//! The `tensorrt-11` target: per-minor differences (opset 25 and axis-less Squeeze from 11.5,
//! DFT and 5-D GridSample from 11.2), the Q/DQ rules a strongly typed build enforces, removed
//! plugins and the FP32-engine note. Each rule: a model that triggers it and one that does not.

mod lint_support;

use lint_support::*;
use pare::lint::Severity;
use pare::model::DataType;
use pare::model::builder::{D, attr_i};
use pare::model::proto::{NodeProto, OperatorSetIdProto};

use Severity::{Error, Info};

fn sev(m: &pare::model::proto::ModelProto, target: &str, rule: &str) -> Option<Severity> {
    worst(m, target, rule)
}

#[test]
fn default_target_is_tensorrt_11() {
    assert_eq!(pare::lint::Target::default().id(), "tensorrt-11");
    assert_eq!(
        pare::lint::LintOptions::default().target,
        pare::lint::Target::TensorRt(1105)
    );
}

#[test]
fn opset_25_from_11_5() {
    let m = clean(25);
    assert_eq!(sev(&m, "tensorrt-11", "L27"), None);
    assert_eq!(sev(&m, "tensorrt-11.5", "L27"), None);
    assert_eq!(sev(&m, "tensorrt-11.4", "L27"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-11.0", "L27"), Some(Error));
    assert_eq!(sev(&clean(24), "tensorrt-11.0", "L27"), None);
    assert_eq!(sev(&clean(8), "tensorrt-11", "L27"), Some(Error));
}

#[test]
fn axisless_squeeze_accepted_from_11_5() {
    let dynamic = one_op(13, &[D::S("b"), D::N(1), D::N(4)], "Squeeze", &[], vec![]);
    assert_eq!(sev(&dynamic, "tensorrt-11.4", "L9"), Some(Error));
    assert_eq!(sev(&dynamic, "tensorrt-11", "L9"), None);
}

#[test]
fn dft_and_swish_per_minor() {
    let dft = one_op(17, &img(2, 4, 4), "DFT", &[], vec![attr_i("axis", 2)]);
    let g1 = |t: &str| findings(&dft, t, &[], "G1");
    assert!(
        g1("tensorrt-11.0")
            .iter()
            .any(|d| d.message.contains("DFT"))
    );
    assert!(
        g1("tensorrt-11.2")
            .iter()
            .all(|d| !d.message.contains("DFT"))
    );
    assert!(g1("tensorrt-11").iter().all(|d| !d.message.contains("DFT")));
    let swish = one_op(24, &img(2, 4, 4), "Swish", &[], vec![]);
    let swish_g1 = |t: &str| {
        findings(&swish, t, &[], "G1")
            .iter()
            .any(|d| d.message.contains("Swish"))
    };
    assert!(swish_g1("tensorrt-10.15"));
    assert!(!swish_g1("tensorrt-11.0"));
}

fn grid_sample(rank5: bool) -> pare::model::proto::ModelProto {
    let dims: Vec<D> = if rank5 {
        vec![D::N(1), D::N(2), D::N(4), D::N(4), D::N(4)]
    } else {
        img(2, 4, 4)
    };
    let gdims: Vec<i64> = if rank5 {
        vec![1, 4, 4, 4, 3]
    } else {
        vec![1, 4, 4, 2]
    };
    model(20, &dims, |b| {
        let n: i64 = gdims.iter().product();
        let g = b.init_f32("grid", &gdims, &vec![0.0; n as usize]);
        b.op("GridSample", &["x", &g], vec![])
    })
}

#[test]
fn l31_grid_sample_5d_from_11_2() {
    let m5 = grid_sample(true);
    assert_eq!(sev(&m5, "tensorrt-10", "L31"), Some(Error));
    assert_eq!(sev(&m5, "tensorrt-11.0", "L31"), Some(Error));
    assert_eq!(sev(&m5, "tensorrt-11.2", "L31"), None);
    assert_eq!(sev(&m5, "tensorrt-11", "L31"), None);
    assert_eq!(sev(&grid_sample(false), "tensorrt-11.0", "L31"), None);
}

fn plugin(op: &str, domain: &str) -> pare::model::proto::ModelProto {
    let mut m = model(17, &img(3, 8, 8), |b| {
        let c = b.conv("x", 3, 4, 3, 1, 1, 1);
        b.nodes.push(NodeProto {
            name: Some("/act/plugin".into()),
            op_type: Some(op.into()),
            domain: Some(domain.into()),
            input: vec![c],
            output: vec!["p".into()],
            ..Default::default()
        });
        b.conv("p", 4, 4, 3, 1, 1, 1)
    });
    if !domain.is_empty() {
        m.opset_import.push(OperatorSetIdProto {
            domain: Some(domain.into()),
            version: Some(1),
        });
    }
    m
}

#[test]
fn l32_removed_plugins() {
    let lrelu = plugin("LReLU_TRT", "trt.plugins");
    assert_eq!(sev(&lrelu, "tensorrt-11", "L32"), Some(Error));
    let d = findings(&lrelu, "tensorrt-11", &[], "L32");
    assert!(d[0].message.contains("LeakyRelu"), "{}", d[0].message);
    assert_eq!(sev(&lrelu, "tensorrt-10", "L32"), None);
    assert_eq!(
        sev(&plugin("Split", "trt.plugins"), "tensorrt-11", "L32"),
        Some(Error)
    );
    // The ONNX op of the same name is not a plugin; nor is a plugin 11 still ships.
    assert_eq!(
        sev(&plugin("Relu", ""), "tensorrt-11", "L32"),
        None,
        "default-domain op"
    );
    assert_eq!(
        sev(
            &plugin("EfficientNMS_TRT", "trt.plugins"),
            "tensorrt-11",
            "L32"
        ),
        None
    );
}

#[test]
fn l33_fp32_engine_note() {
    let fp32 = clean(17);
    assert_eq!(sev(&fp32, "tensorrt-11", "L33"), Some(Info));
    let d = findings(&fp32, "tensorrt-11", &[], "L33");
    assert!(
        d[0].message
            .contains("this builds an FP32 engine on TensorRT 11; `pare convert --precision fp16`"),
        "{}",
        d[0].message
    );
    assert_eq!(sev(&fp32, "tensorrt-10", "L33"), None);
    // A QDQ model and an FP16 model are not FP32 engines.
    assert_eq!(sev(&qdq(Qdq::default()), "tensorrt-11", "L33"), None);
    let half = model(17, &img(3, 8, 8), |b| {
        let h = b.op(
            "Cast",
            &["x"],
            vec![attr_i("to", DataType::FLOAT16.0 as i64)],
        );
        let r = b.relu(&h);
        b.op("Cast", &[&r], vec![attr_i("to", DataType::FLOAT.0 as i64)])
    });
    assert_eq!(sev(&half, "tensorrt-11", "L33"), None);
}

#[test]
fn qdq_rules_are_errors_on_11_with_the_quantize_fix() {
    let good = qdq(Qdq::default());
    for r in ["L1", "L2", "L3", "L4", "L5"] {
        assert_eq!(sev(&good, "tensorrt-11", r), None, "{r}");
    }
    let fix = "pare quantize --format trt";
    let cases: [(&str, Qdq); 4] = [
        (
            "L1",
            Qdq {
                zero_point: 3,
                ..Default::default()
            },
        ),
        (
            "L2",
            Qdq {
                uint8: true,
                ..Default::default()
            },
        ),
        (
            "L4",
            Qdq {
                scale: -0.5,
                ..Default::default()
            },
        ),
        (
            "L5",
            Qdq {
                per_axis_activation: true,
                ..Default::default()
            },
        ),
    ];
    for (rule, o) in cases {
        let m = qdq(o);
        let d = findings(&m, "tensorrt-11", &[], rule);
        assert_eq!(d.len(), 1, "{rule}");
        assert_eq!(d[0].severity, Error, "{rule}");
        assert!(d[0].message.contains(fix), "{rule}: {}", d[0].message);
    }
    // UINT8 is only a warning on 10 (silently reinterpreted); per-axis activations too.
    let u8 = qdq(Qdq {
        uint8: true,
        ..Default::default()
    });
    assert_eq!(sev(&u8, "tensorrt-10", "L2"), Some(Severity::Warning));
    // L3: a computed scale is refused by 11 (accepted by 8.x–10).
    let computed = model(17, &img(2, 4, 4), |b| {
        let s = b.init_f32("s", &[], &[0.1]);
        let s2 = b.op("Identity", &[&s], vec![]);
        let z = b.init_i64("z", &[], &[0]);
        let q = b.op("QuantizeLinear", &["x", &s2, &z], vec![]);
        b.op("DequantizeLinear", &[&q, &s, &z], vec![])
    });
    assert_eq!(sev(&computed, "tensorrt-11", "L3"), Some(Error));
    assert_eq!(sev(&computed, "tensorrt-10", "L3"), None);
}
