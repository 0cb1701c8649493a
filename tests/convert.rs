//! `pare convert`: which nodes stay FP32 and why (initializers beyond 65504, activations beyond
//! 512, Resize scales, `--exclude`), minimal Casts in topological order, control-flow bodies,
//! and the report. Fidelity runs on tract where tract runs the model; onnxruntime and the
//! onnx checker are in `convert_interop.rs`.

mod common;

use std::collections::{HashMap, HashSet};

use pare::convert::{ConvertOptions, KeepReason, Precision, convert};
use pare::data::DataSource;
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_i};
use pare::model::proto::{GraphProto, ModelProto};
use pare::model::tensor::to_f32;
use pare::model::{Analysis, DataType, InputPins};
use pare::report::Report;
use pare::runtime::EngineChoice;

fn opts() -> ConvertOptions {
    ConvertOptions {
        precision: Precision::Fp16,
        source: DataSource::Random { seed: 0 },
        samples: 2,
        engine: EngineChoice::Tract,
        ..ConvertOptions::default()
    }
}

fn run(m: &ModelProto, o: &ConvertOptions) -> (ModelProto, pare::convert::ConvertReport) {
    let a = Analysis::new(common::model(m.clone()), &InputPins::new()).expect("analysis");
    convert(&a, o, &NoProgress).expect("convert")
}

fn init_type(g: &GraphProto, name: &str) -> Option<DataType> {
    g.initializer
        .iter()
        .find(|t| t.name() == name)
        .map(|t| DataType(t.data_type()))
}

/// conv → Mul by `big` (one element `w`) → Relu.
fn big_weight(w: f32) -> ModelProto {
    let mut b = GraphBuilder::new("big").with_opset(17);
    b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let c = b.conv("x", 4, 4, 3, 1, 1, 1);
    let big = b.init_f32("big", &[1, 4, 1, 1], &[1.0, 0.5, w, 0.25]);
    b.node_named("/big/Mul", "Mul", &[&c, &big], &["scaled"], vec![]);
    let r = b.relu("scaled");
    b.node_named("/out", "Identity", &[&r], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.model()
}

#[test]
fn weight_above_fp16_max_keeps_its_node_fp32_and_says_so() {
    let (m, r) = run(&big_weight(70000.0), &opts());
    let k = r
        .kept
        .iter()
        .find(|k| k.node == "/big/Mul")
        .expect("the Mul stays FP32");
    assert_eq!(k.reason, KeepReason::InitializerRange);
    assert!(
        k.detail.contains("'big'") && k.detail.contains("65504"),
        "{}",
        k.detail
    );
    let g = m.graph.as_ref().expect("graph");
    // Never clamped: the initializer is still FP32 and still 70000.
    let big = g
        .initializer
        .iter()
        .find(|t| t.name() == "big")
        .expect("big");
    assert_eq!(DataType(big.data_type()), DataType::FLOAT);
    assert_eq!(to_f32(big).expect("values")[2], 70000.0);
    assert!(
        r.render_text()
            .contains("/big/Mul (Mul): initializer 'big'")
    );
    // The conv before it is FP16.
    assert!(r.converted_nodes >= 1);
    assert!(
        g.initializer
            .iter()
            .any(|t| t.data_type() == DataType::FLOAT16.0)
    );
    // In range: nothing kept for the weight.
    let (_, r) = run(&big_weight(3.0), &opts());
    assert!(
        r.kept
            .iter()
            .all(|k| k.reason != KeepReason::InitializerRange),
        "{:?}",
        r.kept
    );
}

#[test]
fn activations_beyond_512_keep_their_nodes_fp32() {
    let mut b = GraphBuilder::new("loud").with_opset(17);
    b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let gain = b.init_f32("gain", &[], &[1000.0]);
    b.node_named("/loud/Mul", "Mul", &["x", &gain], &["loud"], vec![]);
    let c = b.conv("loud", 4, 4, 3, 1, 1, 1);
    b.node_named("/quiet/Sigmoid", "Sigmoid", &[&c], &["q"], vec![]);
    b.node_named("/out", "Identity", &["q"], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let (_, r) = run(&b.model(), &opts());
    let loud = r.kept.iter().find(|k| k.node == "/loud/Mul").expect("kept");
    assert_eq!(loud.reason, KeepReason::ActivationRange);
    assert!(loud.detail.contains("> 512"), "{}", loud.detail);
    assert!(r.kept.iter().all(|k| k.node != "/out"), "{:?}", r.kept);
    assert_eq!(r.range_samples, 1);
}

#[test]
fn resize_scales_stay_fp32() {
    let mut b = GraphBuilder::new("resize").with_opset(13);
    b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let c = b.conv("x", 4, 4, 3, 1, 1, 1);
    let scales = b.init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
    b.node_named(
        "/up/Resize",
        "Resize",
        &[&c, "", &scales],
        &["up"],
        vec![pare::model::builder::attr_s("mode", "linear")],
    );
    b.node_named("/out", "Identity", &["up"], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(16), D::N(16)]);
    let (m, r) = run(&b.model(), &opts());
    let g = m.graph.as_ref().expect("graph");
    assert_eq!(init_type(g, "scales"), Some(DataType::FLOAT));
    let resize = g
        .node
        .iter()
        .find(|n| n.op_type() == "Resize")
        .expect("resize");
    assert_eq!(resize.input[2], "scales", "scales read directly, no Cast");
    assert!(
        r.kept.iter().all(|k| k.node != "/up/Resize"),
        "{:?}",
        r.kept
    );
    assert!(r.fidelity_error.is_none(), "{:?}", r.fidelity_error);
}

/// Every Cast reads a tensor no Cast produced, and every node's inputs exist before it.
fn assert_minimal_and_sorted(g: &GraphProto) {
    assert_minimal_and_sorted_in(g, HashSet::new())
}

/// [`assert_minimal_and_sorted`] for a nested graph that reads `outer` names.
fn assert_minimal_and_sorted_in(g: &GraphProto, outer: HashSet<String>) {
    let mut known = outer;
    known.extend(g.input.iter().map(|i| i.name().to_string()));
    known.extend(g.initializer.iter().map(|t| t.name().to_string()));
    let cast_out: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Cast")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut seen_casts: HashMap<(String, i64), usize> = HashMap::new();
    for n in &g.node {
        if n.subgraphs().next().is_none() {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                assert!(
                    known.contains(i),
                    "{} reads {i} before it is produced",
                    n.display_name()
                );
            }
        }
        if n.op_type() == "Cast" && n.name().starts_with("/pare/") {
            assert!(
                !cast_out.contains(n.input[0].as_str()),
                "Cast chain at {}",
                n.display_name()
            );
            let k = (n.input[0].clone(), n.attr_i("to").unwrap_or(0));
            *seen_casts.entry(k).or_default() += 1;
        }
        known.extend(n.output.iter().cloned());
    }
    assert!(
        seen_casts.values().all(|&c| c == 1),
        "duplicate Casts: {seen_casts:?}"
    );
}

#[test]
fn casts_are_minimal_and_the_order_topological() {
    for (keep_io, m) in [
        (true, common::resnet_like()),
        (false, common::aspp()),
        (true, big_weight(70000.0)),
    ] {
        let o = ConvertOptions {
            keep_io_types: keep_io,
            ..opts()
        };
        let (out, r) = run(&m, &o);
        let g = out.graph.as_ref().expect("graph");
        assert_minimal_and_sorted(g);
        assert!(r.converted_nodes > 0);
        let input_type = g.input[0].tensor_type().and_then(|t| t.elem_type);
        let want = if keep_io {
            DataType::FLOAT
        } else {
            DataType::FLOAT16
        };
        assert_eq!(input_type, Some(want.0), "keep_io_types={keep_io}");
    }
}

#[test]
fn exclude_by_op_name_and_glob() {
    for pat in ["Mul", "/big/Mul", "/big/*"] {
        let o = ConvertOptions {
            exclude: vec![pat.to_string()],
            ..opts()
        };
        let (_, r) = run(&big_weight(3.0), &o);
        let k = r.kept.iter().find(|k| k.node == "/big/Mul").expect(pat);
        assert_eq!(k.reason, KeepReason::Excluded, "{pat}");
        assert!(k.detail.contains(pat));
    }
    let a = Analysis::new(common::model(big_weight(3.0)), &InputPins::new()).expect("a");
    let bad = ConvertOptions {
        exclude: vec!["/big/[".into()],
        ..opts()
    };
    let e = convert(&a, &bad, &NoProgress)
        .expect_err("bad glob")
        .to_string();
    assert!(e.contains("/big/["), "{e}");
}

#[test]
fn loop_body_is_converted_with_an_fp32_interface() {
    // tract runs no Loop: onnxruntime runs this one in convert_interop.rs.
    let (m, r) = run(&common::loop_outer(), &opts());
    let g = m.graph.as_ref().expect("graph");
    let lp = g.node.iter().find(|n| n.op_type() == "Loop").expect("loop");
    let body = lp.subgraphs().next().expect("body").1;
    let mul = body
        .node
        .iter()
        .find(|n| n.op_type() == "Mul")
        .expect("mul");
    // The body's Mul reads its FP32 carried input through a Cast and the outer gain as FP16.
    assert!(
        mul.input.iter().any(|i| i.ends_with("__to_fp16")),
        "{:?}",
        mul.input
    );
    assert!(r.converted_nodes > 0 && r.kept.iter().any(|k| k.op == "Loop"));
    assert!(
        r.kept.iter().all(|k| !k.node.starts_with("/Loop > ")),
        "{:?}",
        r.kept
    );
    let mut outer: HashSet<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
    outer.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    assert_minimal_and_sorted_in(body, outer);
}

#[test]
fn if_branches_are_converted() {
    let (m, r) = run(&common::data_if(), &opts());
    assert_minimal_and_sorted(m.graph.as_ref().expect("graph"));
    assert!(r.kept.iter().any(|k| k.reason == KeepReason::ControlFlow));
}

#[test]
fn bf16_and_cast_to_float() {
    let mut b = GraphBuilder::new("cast").with_opset(17);
    b.input("x", &[D::N(1), D::N(4)]);
    let i = b.op("Cast", &["x"], vec![attr_i("to", DataType::INT64.0 as i64)]);
    let f = b.op("Cast", &[&i], vec![attr_i("to", DataType::FLOAT.0 as i64)]);
    let s = b.op("Sigmoid", &[&f], vec![]);
    b.node_named("/out", "Identity", &[&s], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4)]);
    let (m, _) = run(&b.model(), &opts());
    let g = m.graph.as_ref().expect("graph");
    assert_minimal_and_sorted(g);
    let casts: Vec<i64> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Cast")
        .filter_map(|n| n.attr_i("to"))
        .collect();
    // int64 → float became int64 → float16: no float → float16 Cast after it.
    assert!(casts.contains(&(DataType::FLOAT16.0 as i64)), "{casts:?}");
    let o = ConvertOptions {
        precision: Precision::Bf16,
        ..opts()
    };
    let (m, r) = run(&big_weight(70000.0), &o);
    assert!(
        r.kept
            .iter()
            .all(|k| k.reason != KeepReason::InitializerRange)
    );
    let g = m.graph.as_ref().expect("graph");
    assert_eq!(init_type(g, "big"), Some(DataType::BFLOAT16));
}

#[test]
fn quantize_with_fp16_leaves_only_reported_fp32_compute() {
    use pare::quant::{QuantOptions, quantize};
    let m = common::resnet_like();
    let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
    let o = QuantOptions {
        samples: 4,
        eval_samples: 2,
        quantize_small: true,
        engine: EngineChoice::Tract,
        precision: Some(Precision::Fp16),
        ..Default::default()
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    let low = q.report.low_precision.as_ref().expect("fp16 pass reported");
    assert!(low.converted_nodes > 0);
    assert!(q.report.render_text().contains("float nodes in FP16"));
    let qa = Analysis::new(common::model(q.model.clone()), &InputPins::new()).expect("qa");
    let g = q.model.graph.as_ref().expect("graph");
    assert_eq!(
        q.model.opset_import[0].version,
        Some(19),
        "raised for FP16 scales"
    );
    // FP32 compute left: nodes (not Casts) writing FP32 tensors.
    let fp32: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type() != "Cast")
        .filter(|n| {
            n.output
                .iter()
                .any(|o| qa.shapes.dtype(o) == Some(DataType::FLOAT))
        })
        .map(|n| n.display_name())
        .collect();
    for n in &fp32 {
        assert!(
            low.kept.iter().any(|k| &k.node == n),
            "{n} computes in FP32 but the report does not say why: {:?}",
            low.kept
        );
    }
    assert!(fp32.len() <= low.kept.len());
    // The DQ scales are FP16.
    let dq = g
        .node
        .iter()
        .find(|n| n.op_type() == "DequantizeLinear")
        .expect("dq");
    assert_eq!(init_type(g, &dq.input[1]), Some(DataType::FLOAT16));
    // Without the flag nothing changes.
    let plain = quantize(
        &a,
        &QuantOptions {
            precision: None,
            ..o
        },
        &NoProgress,
    )
    .expect("quantize");
    assert!(plain.report.low_precision.is_none());
}
