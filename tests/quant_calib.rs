//! Per-tensor calibrator choice by downstream error, and activation-range equalization.

mod common;

use std::collections::HashMap;

use common::named_conv as conv;
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::{QuantOptions, quantize};
use pare::runtime::EngineChoice;

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

/// `x` → 1×1 conv 2→4 → ReLU6 → depthwise 1×1. Channel 0 of the activation is large (up to
/// ~15) but its depthwise weight is tiny; channels 1–3 stay below ~0.1 and their weights are
/// large. The activation's own MSE keeps the range near channel 0's; the output wants the
/// small channels resolved.
fn lopsided() -> ModelProto {
    let mut b = GraphBuilder::new("lopsided");
    b.input("x", &[D::N(1), D::N(2), D::N(8), D::N(8)]);
    let w1 = b.init_f32(
        "w1",
        &[4, 2, 1, 1],
        &[5.0, 5.0, 0.02, -0.01, -0.015, 0.02, 0.01, 0.025],
    );
    let b1 = b.init_f32("b1", &[4], &[0.0, 0.01, 0.0, 0.005]);
    let y = conv(&mut b, "c1", &["x", &w1, &b1], 1, 1);
    let lo = b.init_f32("lo", &[], &[0.0]);
    let hi = b.init_f32("hi", &[], &[100.0]);
    let y = b.op("Clip", &[&y, &lo, &hi], vec![]);
    let w2 = b.init_f32("w2", &[4, 1, 1, 1], &[0.01, 50.0, 60.0, 40.0]);
    let b2 = b.init_f32("b2", &[4], &[0.0; 4]);
    let y = conv(&mut b, "dw", &[&y, &w2, &b2], 4, 1);
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.model()
}

fn opts(choose: bool) -> QuantOptions {
    QuantOptions {
        samples: 16,
        eval_samples: 8,
        quantize_small: true,
        engine: EngineChoice::Tract,
        bias_correction: false,
        act_equalize: false,
        choose_calibrator: choose,
        // Centering fixes the ReLU6 output's range itself; this is about the choice.
        center: false,
        ..Default::default()
    }
}

#[test]
fn calibrator_choice_follows_the_downstream_error_not_the_tensors_own() {
    let a = analysis(lopsided());
    let plain = quantize(&a, &opts(false), &NoProgress).expect("plain");
    let chosen = quantize(&a, &opts(true), &NoProgress).expect("chosen");
    assert!(plain.report.calibrator_choice.is_none());
    let c = chosen
        .report
        .calibrator_choice
        .as_ref()
        .expect("choice report");
    // The ReLU6 output's range is no longer the MSE one: something downstream liked better.
    assert!(
        c.chosen.iter().any(|(m, _)| m != "mse"),
        "every tensor kept mse: {c:?}"
    );
    assert!(c.mean_gain_db > 0.0, "{c:?}");
    let (p, q) = (
        plain.report.output_sqnr_db.expect("sqnr"),
        chosen.report.output_sqnr_db.expect("sqnr"),
    );
    assert!(q > p + 3.0, "output SQNR {p:.1} dB -> {q:.1} dB");
}

/// conv 3→8 (channels spanning four decades) → ReLU6 → depthwise 3×3 → ReLU → pointwise.
fn separable() -> ModelProto {
    let mut b = GraphBuilder::new("separable");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let mut rng = pare::rng::Rng::new(3);
    let w1: Vec<f32> = (0..8 * 27)
        .map(|k| rng.range(-1.0, 1.0) * 10f32.powi((k / 27) % 4 - 2))
        .collect();
    let w1 = b.init_f32("w1", &[8, 3, 3, 3], &w1);
    let b1 = b.init_f32("b1", &[8], &[0.05; 8]);
    let y = conv(&mut b, "c1", &["x", &w1, &b1], 1, 3);
    let lo = b.init_f32("lo", &[], &[0.0]);
    let hi = b.init_f32("hi", &[], &[6.0]);
    let y = b.op("Clip", &[&y, &lo, &hi], vec![]);
    let w2 = b.init_randn("w2", &[8, 1, 3, 3], 0.5);
    let b2 = b.init_f32("b2", &[8], &[0.0; 8]);
    let y = conv(&mut b, "dw", &[&y, &w2, &b2], 8, 3);
    let y = b.relu(&y);
    let w3 = b.init_randn("w3", &[4, 8, 1, 1], 0.5);
    let y = conv(&mut b, "pw", &[&y, &w3], 1, 1);
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.model()
}

#[test]
fn activation_equalization_keeps_the_function_and_evens_the_ranges() {
    let m = separable();
    let pairs = pare::quant::equalize::activation_pairs(&m, false);
    assert_eq!(pairs.len(), 1, "only conv→ReLU6→depthwise: {pairs:?}");
    assert_eq!(pairs[0].1, 8);
    let amax: HashMap<String, Vec<f32>> = [(
        pairs[0].0.clone(),
        vec![0.002, 0.02, 0.2, 2.0, 6.0, 0.0, 1.0, 0.05],
    )]
    .into();
    let (e, report) =
        pare::quant::equalize::equalize_activations(&m, &amax, 100.0, 0.0).expect("equalize");
    assert_eq!((report.pairs, report.clips_rewritten), (1, 1));
    assert!(
        report.spread_after < report.spread_before - 1.0,
        "{report:?}"
    );
    common::assert_same_function(&m, &e, &[1, 3, 8, 8]);
}

/// Depthwise → ReLU → pointwise is equalized too with a dense strength: the pointwise conv's
/// input *columns* take the factor (scaling its rows instead, as for a depthwise conv2, changed
/// the function).
#[test]
fn dense_activation_equalization_scales_the_pointwise_columns_and_keeps_the_function() {
    let m = separable();
    let pairs = pare::quant::equalize::activation_pairs(&m, true);
    assert_eq!(pairs.len(), 2, "conv→dw and dw→pw: {pairs:?}");
    let amax: HashMap<String, Vec<f32>> = pairs
        .iter()
        .map(|(t, c)| {
            let a: Vec<f32> = (0..*c).map(|i| 0.01 * 4f32.powi(i as i32 % 5)).collect();
            (t.clone(), a)
        })
        .collect();
    for strength in [0.5, 1.0] {
        let (e, report) = pare::quant::equalize::equalize_activations(&m, &amax, 100.0, strength)
            .expect("equalize");
        assert_eq!((report.pairs, report.dense_pairs), (2, 1), "{report:?}");
        assert!(report.spread_after < report.spread_before, "{report:?}");
        common::assert_same_function(&m, &e, &[1, 3, 8, 8]);
    }
    let (_, off) =
        pare::quant::equalize::equalize_activations(&m, &amax, 100.0, 0.0).expect("equalize");
    assert_eq!((off.pairs, off.dense_pairs), (1, 0));
}

#[test]
fn quantize_equalizes_activations_measured_on_calibration_samples() {
    let a = analysis(separable());
    let o = QuantOptions {
        act_equalize: true,
        act_equalize_dense: 0.0,
        ..opts(true)
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    let r = q.report.activation_equalization.as_ref().expect("report");
    assert_eq!(r.pairs, 1);
    let dense = QuantOptions {
        act_equalize_dense: 0.5,
        ..o.clone()
    };
    let qd = quantize(&a, &dense, &NoProgress).expect("quantize");
    let rd = qd.report.activation_equalization.as_ref().expect("report");
    assert_eq!((rd.pairs, rd.dense_pairs), (2, 1), "{rd:?}");
    assert!(r.spread_after < r.spread_before, "{r:?}");
    let off = quantize(&a, &opts(true), &NoProgress).expect("quantize");
    assert!(off.report.activation_equalization.is_none());
}

/// The choice scores candidates on 4 fitting samples for symmetric INT8 and on 16 for
/// onnxruntime's asymmetric UINT8, where 4 chose clipped ranges that other samples needed
/// (see `choice_samples`).
#[test]
fn the_choice_sees_more_samples_for_asymmetric_ranges() {
    let a = analysis(lopsided());
    let samples = |format| {
        let o = QuantOptions {
            samples: 32,
            format,
            ..opts(true)
        };
        let q = quantize(&a, &o, &NoProgress).expect("quantize");
        q.report.calibrator_choice.expect("choice report").samples
    };
    assert_eq!(samples(pare::quant::Format::Trt), 4);
    assert_eq!(samples(pare::quant::Format::Ort), 16);
}
