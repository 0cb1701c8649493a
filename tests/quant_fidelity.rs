//! Quantization that keeps trained models working: bias correction, per-tensor calibrator
//! choice, and task fidelity in the quantize report.

mod common;

use std::collections::HashMap;

use pare::data::{self, DataSource, Preprocess};
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_i, attr_ints};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::calibrate::{CalibrateOptions, calibrate};
use pare::quant::placement::{self, PlacementOptions};
use pare::quant::{QuantOptions, bias_correct, qdq, quantize};
use pare::runtime::{EngineChoice, EngineKind};

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

/// `x + 3` (so the conv's input has a large mean) → 1×1 Conv 4→16 with bias. Weights sit
/// between quantization steps so rounding moves every channel's sum.
fn shifted_conv() -> (ModelProto, Vec<f32>) {
    let mut b = GraphBuilder::new("shifted_conv");
    b.input("x", &[D::N(1), D::N(4), D::N(6), D::N(6)]);
    let three = b.init_f32("three", &[], &[3.0]);
    let x = b.add("x", &three);
    let w: Vec<f32> = (0..64)
        .map(|k| {
            let c = k / 4;
            if k % 4 == 0 {
                1.0 // sets the channel's scale to 1/127
            } else {
                (0.3 + 0.011 * c as f32) * if k % 2 == 0 { 1.0 } else { -0.5 }
            }
        })
        .collect();
    let wn = b.init_f32("w", &[16, 4, 1, 1], &w);
    let bn = b.init_f32("b", &[16], &[0.1; 16]);
    b.node_named(
        "conv",
        "Conv",
        &[&x, &wn, &bn],
        &["y"],
        vec![attr_ints("kernel_shape", &[1, 1]), attr_i("group", 1)],
    );
    b.output("y", &[D::N(1), D::N(16), D::N(6), D::N(6)]);
    (b.model(), w)
}

#[test]
fn bias_correction_removes_the_mean_shift_of_weight_rounding() {
    let (m, w) = shifted_conv();
    let a = analysis(m);
    let plan = placement::plan(
        &a,
        &PlacementOptions {
            quantize_small: true,
            ..Default::default()
        },
    );
    let mut weights =
        qdq::quantize_weights(a.graph(), &plan, pare::quant::WeightMethod::Minmax).expect("w");
    let (probe_model, probes) =
        bias_correct::probes(&a.model.proto, &plan, &weights).expect("probes");
    assert_eq!(probes.len(), 1, "the conv is correctable");
    let decls = data::input_decls(a.graph(), &a.pins).expect("decls");
    let set = data::SampleSet::open(
        decls,
        &DataSource::Random { seed: 7 },
        6,
        Preprocess::default(),
    )
    .expect("samples");
    let opts = CalibrateOptions {
        config: Default::default(),
        two_pass: false,
        threads: 1,
        symmetric: true,
        engine: EngineKind::Tract,
        fit: vec![],
        means: probes.iter().map(|p| p.output.clone()).collect(),
    };
    let cal = calibrate(&probe_model, &plan, &set, &opts, &NoProgress).expect("calibrate");
    let done = bias_correct::apply(&a.model.proto, &probes, &cal.means, &mut weights);
    assert_eq!(done.len(), 1);
    let qw = &weights["w"];
    let wq = qw.dequantized();
    let corrected = qw.corrected_bias.clone().expect("corrected bias");
    // The synthetic shift: sum_i dW[c,i] * E[x_i], with E[x_i] over every sample and position.
    let mut mean_x = [0.0f64; 4];
    let mut count = 0usize;
    for k in 0..set.len() {
        let s = set.load(k).expect("sample");
        let v = s.tensors[0].to_f64();
        for (j, x) in v.iter().enumerate() {
            mean_x[j / 36] += x + 3.0;
        }
        count += 1;
    }
    for m in &mut mean_x {
        *m /= (count * 36) as f64;
    }
    let mut largest = 0.0f64;
    for c in 0..16 {
        let shift: f64 = (0..4)
            .map(|i| (wq[c * 4 + i] - w[c * 4 + i]) as f64 * mean_x[i])
            .sum();
        largest = largest.max(shift.abs());
        // Quantized weights + corrected bias have the float layer's mean output.
        let residual = shift + corrected[c] as f64 - 0.1;
        assert!(
            residual.abs() < 1e-5,
            "channel {c}: shift {shift}, left {residual}"
        );
    }
    assert!(
        largest > 1e-3,
        "the fixture must shift the mean ({largest})"
    );
}

#[test]
fn quantize_reports_held_out_fidelity_and_bias_correction() {
    let a = analysis(common::resnet_like());
    let opts = QuantOptions {
        samples: 8,
        eval_samples: 2,
        quantize_small: true,
        engine: EngineChoice::Tract,
        ..Default::default()
    };
    let q = quantize(&a, &opts, &NoProgress).expect("quantize");
    let f = q.report.fidelity.as_ref().expect("fidelity measured");
    assert!(f.held_out);
    assert_eq!(f.samples, 2, "every 4th of 8 samples is held out");
    assert_eq!(q.report.samples, 8);
    assert_eq!(
        q.report.calibration_samples, 6,
        "calibration sees only the rest"
    );
    let logits = &f.outputs[0];
    assert!(logits.top1_agreement.is_some(), "class scores get top-1");
    assert!(logits.sqnr_db.is_some_and(|s| s > 10.0));
    assert!(q.report.bias_correction);
    assert!(!q.report.bias_corrected.is_empty());
    let text = pare::report::Report::render_text(&q.report);
    assert!(text.contains("held-out"), "{text}");
    assert!(text.contains("top-1 agreement"), "{text}");
    let off = quantize(
        &a,
        &QuantOptions {
            bias_correction: false,
            holdout: 0.0,
            ..opts
        },
        &NoProgress,
    )
    .expect("quantize");
    assert!(off.report.bias_corrected.is_empty());
    assert!(!off.report.fidelity.expect("fidelity").held_out);
    let _: HashMap<String, f64> = HashMap::new();
}

/// conv 3→8 (channels scaled over three decades, as BatchNorm folding leaves them) → ReLU6 →
/// depthwise 3×3 → ReLU → conv 1×1 8→4.
fn separable() -> ModelProto {
    let mut b = GraphBuilder::new("separable");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let mut rng = pare::rng::Rng::new(3);
    let w1: Vec<f32> = (0..8 * 27)
        .map(|k| rng.range(-1.0, 1.0) * 10f32.powi((k / 27) % 4 - 2))
        .collect();
    let w1 = b.init_f32("w1", &[8, 3, 3, 3], &w1);
    let b1 = b.init_f32("b1", &[8], &[0.05; 8]);
    let conv = common::named_conv;
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
fn equalization_keeps_the_function_and_evens_the_channels() {
    let m = separable();
    let (e, report) = pare::quant::equalize::equalize(&m, 4).expect("equalize");
    assert_eq!(report.pairs, 2, "conv→ReLU6→dw and dw→ReLU→pw");
    assert_eq!(report.clips_rewritten, 1);
    assert!(
        report.spread_after < report.spread_before - 0.3,
        "{report:?}"
    );
    common::assert_same_function(&m, &e, &[1, 3, 8, 8]);
}
