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
    assert_eq!(QuantOptions::default().reconstruct_first, 4);
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
