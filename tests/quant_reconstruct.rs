//! Weight reconstruction on quantized inputs (`--reconstruct`): each layer refitted, in graph
//! order, to the float layer's output from the input the quantized model gives it.

mod common;

use common::named_conv as conv;
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::{QuantOptions, quantize};
use pare::runtime::EngineChoice;

/// conv 3→8 3×3 → ReLU → depthwise 3×3 → ReLU → 1×1 projection 8→4 whose outputs are small
/// differences of large, nearly equal inputs (what amplifies activation rounding noise in
/// trained MobileNetV2's projections) → ReLU → 1×1 4→4.
fn cancelling() -> ModelProto {
    let mut b = GraphBuilder::new("cancelling");
    b.input("x", &[D::N(1), D::N(3), D::N(12), D::N(12)]);
    // Channel pairs (2o, 2o+1) compute nearly the same feature.
    let mut rng = pare::rng::Rng::new(11);
    let mut w1 = vec![0.0f32; 8 * 27];
    for o in 0..4 {
        for j in 0..27 {
            let v = rng.range(-0.5, 0.5);
            w1[2 * o * 27 + j] = v;
            w1[(2 * o + 1) * 27 + j] = v * 1.02 + rng.range(-0.02, 0.02);
        }
    }
    let w1 = b.init_f32("w1", &[8, 3, 3, 3], &w1);
    let b1 = b.init_f32("b1", &[8], &[0.1; 8]);
    let y = conv(&mut b, "c1", &["x", &w1, &b1], 1, 3);
    let y = b.relu(&y);
    let mut w2 = vec![0.0f32; 8 * 9];
    for o in 0..4 {
        for j in 0..9 {
            let v = rng.range(-0.5, 0.5);
            w2[2 * o * 9 + j] = v;
            w2[(2 * o + 1) * 9 + j] = v;
        }
    }
    let w2 = b.init_f32("w2", &[8, 1, 3, 3], &w2);
    let b2 = b.init_f32("b2", &[8], &[0.05; 8]);
    let y = conv(&mut b, "dw", &[&y, &w2, &b2], 8, 3);
    let y = b.relu(&y);
    // Output o reads channels 2o and 2o+1 with weights +3 and -2.95 (plus a little of the
    // rest): a small difference of large inputs.
    let mut w3 = vec![0.0f32; 4 * 8];
    for o in 0..4 {
        for j in 0..8 {
            w3[o * 8 + j] = rng.range(-0.05, 0.05);
        }
        w3[o * 8 + 2 * o] = 3.0;
        w3[o * 8 + 2 * o + 1] = -2.95;
    }
    let w3 = b.init_f32("w3", &[4, 8, 1, 1], &w3);
    let b3 = b.init_f32("b3", &[4], &[0.0; 4]);
    let y = conv(&mut b, "pw", &[&y, &w3, &b3], 1, 1);
    let y = b.relu(&y);
    let w4 = b.init_randn("w4", &[4, 4, 1, 1], 0.5);
    let b4 = b.init_f32("b4", &[4], &[0.0; 4]);
    let y = conv(&mut b, "c4", &[&y, &w4, &b4], 1, 1);
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(12), D::N(12)]);
    b.model()
}

fn opts(reconstruct: bool) -> QuantOptions {
    QuantOptions {
        samples: 16,
        eval_samples: 8,
        quantize_small: true,
        engine: EngineChoice::Tract,
        act_equalize: false,
        choose_calibrator: false,
        holdout: 0.0,
        reconstruct,
        reconstruct_first: 0,
        ..Default::default()
    }
}

/// The default reconstructs only the first layers in graph order, and those no worse.
#[test]
fn the_default_reconstructs_the_first_layers_only() {
    let a = Analysis::new(common::model(cancelling()), &InputPins::new()).expect("analysis");
    let o = QuantOptions {
        reconstruct_first: 2,
        ..opts(false)
    };
    let first = quantize(&a, &o, &NoProgress).expect("first layers");
    let r = first.report.reconstruction.as_ref().expect("report");
    let nodes: Vec<&str> = r.layers.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(nodes, ["c1", "dw"], "{r:?}");
    let off = quantize(&a, &opts(false), &NoProgress).expect("plain");
    let (p, q) = (
        off.report.output_sqnr_db.expect("sqnr"),
        first.report.output_sqnr_db.expect("sqnr"),
    );
    assert!(q > p, "output SQNR {p:.1} dB -> {q:.1} dB");
}

/// A chain of 14 convs with the default `reconstruct_first`: the first 12 in graph order are
/// refitted (the depth where trained MobileNetV2 stops gaining: 20.3 dB with 4, 21.8 with 12,
/// 21.7 with all), the last two keep nearest rounding.
#[test]
fn the_default_depth_is_the_first_twelve_layers() {
    let mut b = GraphBuilder::new("chain");
    b.input("x", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
    let mut y = "x".to_string();
    for i in 0..14 {
        let w = b.init_randn(&format!("w{i}"), &[8, 8, 1, 1], 0.4);
        let bias = b.init_f32(&format!("b{i}"), &[8], &[0.05; 8]);
        let c = conv(&mut b, &format!("c{i}"), &[&y, &w, &bias], 1, 1);
        y = b.relu(&c);
    }
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
    let a = Analysis::new(common::model(b.model()), &InputPins::new()).expect("analysis");
    let o = QuantOptions {
        reconstruct_first: QuantOptions::default().reconstruct_first,
        ..opts(false)
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    let r = q.report.reconstruction.as_ref().expect("report");
    let nodes: Vec<&str> = r.layers.iter().map(|l| l.node.as_str()).collect();
    let first: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    assert_eq!(nodes, first, "{r:?}");
}

#[test]
fn reconstruction_refits_every_layer_and_lowers_the_output_error() {
    let a = Analysis::new(common::model(cancelling()), &InputPins::new()).expect("analysis");
    let off = quantize(&a, &opts(false), &NoProgress).expect("plain");
    let on = quantize(&a, &opts(true), &NoProgress).expect("reconstructed");
    assert!(off.report.reconstruction.is_none());
    let r = on.report.reconstruction.as_ref().expect("report");
    let nodes: Vec<&str> = r.layers.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(nodes, ["c1", "dw", "pw", "c4"], "{r:?}");
    for l in &r.layers {
        // Never worse on the layer's own sampled positions: a worse fit is not written.
        let (b, f) = (l.before_db.expect("before"), l.after_db.expect("after"));
        assert!(f >= b, "{l:?}");
        assert!(l.positions > 0, "{l:?}");
    }
    let (p, q) = (
        off.report.output_sqnr_db.expect("sqnr"),
        on.report.output_sqnr_db.expect("sqnr"),
    );
    eprintln!("output SQNR {p:.1} dB -> {q:.1} dB");
    assert!(q > p + 0.5, "output SQNR {p:.1} dB -> {q:.1} dB");
}

#[test]
fn reconstruction_is_skipped_with_learned_rounding() {
    let a = Analysis::new(common::model(cancelling()), &InputPins::new()).expect("analysis");
    let o = QuantOptions {
        rounding: pare::quant::adaround::Rounding::Learned,
        ..opts(true)
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    assert!(q.report.reconstruction.is_none());
    assert!(q.report.learned_rounding.is_some());
}

/// A 1×1 conv over 300 channels (MobileNetV2's projections read 384 to 960): at the default
/// position budget it gets the rows a refit needs (8 per unknown), not only GPTQ rounding for
/// want of positions (with 2048 positions, every layer over 254 inputs got no refit).
#[test]
fn a_wide_projection_is_refitted_by_default() {
    let mut b = GraphBuilder::new("wide");
    b.input("x", &[D::N(1), D::N(300), D::N(20), D::N(20)]);
    let w = b.init_randn("w", &[8, 300, 1, 1], 0.1);
    let bias = b.init_f32("b", &[8], &[0.0; 8]);
    let y = conv(&mut b, "wide", &["x", &w, &bias], 1, 1);
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(8), D::N(20), D::N(20)]);
    let a = Analysis::new(common::model(b.model()), &InputPins::new()).expect("analysis");
    let o = QuantOptions {
        reconstruct_first: 1,
        ..opts(false)
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    let r = q.report.reconstruction.as_ref().expect("report");
    assert!(r.skipped.is_empty(), "{r:?}");
    let nodes: Vec<&str> = r.layers.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(nodes, ["wide"], "{r:?}");
    assert!(r.layers[0].positions >= 8 * 301, "{r:?}");
}
