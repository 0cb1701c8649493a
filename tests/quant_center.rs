//! Activation centering (`--format trt`): ReLU/ReLU6 outputs feeding convolutions are shifted by
//! half their range so the symmetric INT8 grid covers them with all its codes; the float
//! function must not change, and the quantized model must get closer to the float one.

mod common;

use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::center;
use pare::quant::{QuantOptions, quantize};

/// Stem conv → ReLU6 → depthwise 3x3 (padded) → ReLU → 1x1 conv → ReLU6 (opset `opset`): a
/// ReLU6 into a padded depthwise conv, a ReLU into an unpadded one, and a ReLU6 into the
/// graph output (not centerable).
fn fixture(opset: i64) -> ModelProto {
    let mut b = GraphBuilder::new("center").with_seed(5).with_opset(opset);
    b.input("x", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    let x = b.conv("x", 3, 16, 3, 1, 1, 1);
    let x = relu6(&mut b, &x, opset);
    let x = b.conv(&x, 16, 16, 3, 1, 1, 16);
    let x = b.relu(&x);
    let x = b.conv(&x, 16, 24, 1, 1, 0, 1);
    let y = relu6(&mut b, &x, opset);
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(24), D::N(16), D::N(16)]);
    b.model()
}

fn relu6(b: &mut GraphBuilder, x: &str, opset: i64) -> String {
    if opset >= 11 {
        let lo = b.init_f32(&format!("{x}_lo"), &[], &[0.0]);
        let hi = b.init_f32(&format!("{x}_hi"), &[], &[6.0]);
        b.op("Clip", &[x, &lo, &hi], vec![])
    } else {
        b.op(
            "Clip",
            &[x],
            vec![
                pare::model::builder::attr_f("min", 0.0),
                pare::model::builder::attr_f("max", 6.0),
            ],
        )
    }
}

#[test]
fn centering_keeps_the_float_function() {
    for opset in [13, 10] {
        let m = fixture(opset);
        let sites = center::sites(&m);
        assert_eq!(
            sites.len(),
            2,
            "opset {opset}: the ReLU6 and the ReLU between convs"
        );
        let c = center::apply(&m, &sites, &[Some(2.5), Some(0.75)]).expect("centering");
        assert_eq!(c.report.tensors, 2);
        assert_eq!(c.report.pads, 1, "only the depthwise conv is padded");
        assert_eq!(c.fixed.len(), 2, "the Pad's output and the ReLU's output");
        common::assert_same_function(&m, &c.model, &[1, 3, 16, 16]);
        let g = c.model.graph.as_ref().expect("graph");
        let pad = g.node.iter().find(|n| n.op_type() == "Pad").expect("a Pad");
        let dw = g
            .node
            .iter()
            .find(|n| n.input.first() == pad.output.first())
            .expect("the Pad feeds the depthwise conv");
        assert!(
            dw.attr_ints("pads").is_none(),
            "the conv's own pads are gone"
        );
        // Biases and bounds were replaced, not left behind.
        let read: std::collections::HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        assert!(
            g.initializer.iter().all(|t| read.contains(t.name())),
            "opset {opset}: an initializer nothing reads"
        );
    }
}

#[test]
fn a_graph_output_or_a_non_conv_reader_is_left_alone() {
    let mut b = GraphBuilder::new("center_no").with_seed(3);
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let x = b.conv("x", 3, 8, 3, 1, 1, 1);
    let r = b.relu(&x);
    let c = b.conv(&r, 8, 8, 1, 1, 0, 1);
    let s = b.add(&r, &c);
    b.node_named("out", "Identity", &[&s], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
    assert!(
        center::sites(&b.model()).is_empty(),
        "the ReLU also feeds an Add"
    );
}

fn opts(center: bool) -> QuantOptions {
    QuantOptions {
        samples: 16,
        eval_samples: 4,
        center,
        ..common::quant_opts()
    }
}

/// Output SQNR against the float model on inputs calibration never saw.
fn held_out_sqnr(m: &ModelProto, q: &ModelProto) -> f64 {
    common::held_out_sqnr(m, q, "x", &[1, 3, 16, 16], 6, 99)
}

#[test]
fn centering_lowers_the_quantization_error() {
    let m = fixture(13);
    let a = Analysis::new(common::model(m.clone()), &InputPins::default()).expect("analysis");
    let on = quantize(&a, &opts(true), &NoProgress).expect("quantize centered");
    let off = quantize(&a, &opts(false), &NoProgress).expect("quantize plain");
    let report = on.report.centering.as_ref().expect("centering report");
    assert_eq!(report.tensors, 2);
    assert!(off.report.centering.is_none());
    let (s_on, s_off) = (held_out_sqnr(&m, &on.model), held_out_sqnr(&m, &off.model));
    assert!(
        s_on > s_off + 1.0,
        "centered {s_on:.2} dB vs plain {s_off:.2} dB"
    );
    // Pad → Q/DQ → Conv: the conv reads INT8, and a Pad of -o could not fold into the conv's
    // zero padding anyway, so lint raises no fusion warning (P3) on pare's own output.
    let g = on.model.graph.as_ref().expect("graph");
    let pad = g
        .node
        .iter()
        .find(|n| n.op_type() == "Pad")
        .expect("Pad kept");
    assert!(
        g.node
            .iter()
            .any(|n| n.op_type() == "QuantizeLinear" && n.input.first() == pad.output.first()),
        "the Pad's output is quantized"
    );
    let qa =
        Analysis::new(common::model(on.model.clone()), &InputPins::default()).expect("analysis");
    let lint = pare::lint::lint(
        &qa,
        &pare::lint::LintOptions {
            target: "tensorrt-10".parse().expect("target"),
            rules: vec!["P1".into(), "P3".into()],
        },
    );
    assert!(lint.diagnostics.is_empty(), "{:?}", lint.diagnostics);
}

#[test]
fn ort_format_is_not_centered() {
    let m = fixture(13);
    let a = Analysis::new(common::model(m), &InputPins::default()).expect("analysis");
    let o = QuantOptions {
        format: pare::quant::Format::Ort,
        ..opts(true)
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize ort");
    assert!(
        q.report.centering.is_none(),
        "asymmetric UINT8 already covers [0, A]"
    );
}

/// Exports before IR 4 list every initializer among the graph inputs: a replaced bias must
/// leave that list too, or it becomes an input the user has to feed (found on CenterFace).
#[test]
fn replaced_initializers_leave_the_graph_inputs_too() {
    let mut m = fixture(13);
    let g = m.graph.as_mut().expect("graph");
    let listed: Vec<_> = g
        .initializer
        .iter()
        .map(|t| {
            let dims: Vec<D> = t.dims.iter().map(|&d| D::N(d)).collect();
            pare::model::builder::value_info(t.name(), pare::model::DataType::FLOAT, Some(&dims))
        })
        .collect();
    g.input.extend(listed);
    let c = center::apply(&m, &center::sites(&m), &[Some(1.0), Some(0.5)]).expect("centering");
    let g = c.model.graph.as_ref().expect("graph");
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let fed: Vec<&str> = g
        .input
        .iter()
        .map(|v| v.name())
        .filter(|n| !inits.contains(n))
        .collect();
    assert_eq!(fed, ["x"]);
    common::assert_same_function(&m, &c.model, &[1, 3, 16, 16]);
}

/// Without bias correction the offset is folded through the INT8 weights: folded through the
/// float ones, weight rounding meets a mostly `-o` input and shifts every output.
#[test]
fn without_bias_correction_the_offset_goes_through_the_int8_weights() {
    let m = fixture(13);
    let a = Analysis::new(common::model(m.clone()), &InputPins::default()).expect("analysis");
    let plain = |center: bool| QuantOptions {
        bias_correction: false,
        ..opts(center)
    };
    let on = quantize(&a, &plain(true), &NoProgress).expect("centered");
    let off = quantize(&a, &plain(false), &NoProgress).expect("plain");
    let (s_on, s_off) = (held_out_sqnr(&m, &on.model), held_out_sqnr(&m, &off.model));
    assert!(
        s_on > s_off + 1.0,
        "centered {s_on:.2} dB vs plain {s_off:.2} dB"
    );
}
