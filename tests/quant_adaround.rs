//! Learned rounding (`--rounding learned`): per layer, floor or ceil per weight chosen to
//! minimise the layer's output error on calibration activations.

mod common;

use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::adaround::Rounding;
use pare::quant::{QuantOptions, quantize};
use pare::rng::Rng;
use pare::runtime::{EngineChoice, HostTensor, InputSpec, Runner, sqnr_db};

/// Two 3x3 convolutions (the second reads the first's spatially and channel-correlated
/// activations, where nearest rounding's errors add up) and a depthwise one.
fn fixture() -> ModelProto {
    let mut b = GraphBuilder::new("adaround").with_seed(7);
    b.input("input", &[D::N(1), D::N(3), D::N(24), D::N(24)]);
    let x = b.conv("input", 3, 16, 3, 1, 1, 1);
    let x = b.relu(&x);
    let x = b.conv(&x, 16, 16, 3, 1, 1, 16);
    let x = b.relu(&x);
    let x = b.conv(&x, 16, 24, 3, 1, 1, 1);
    b.node_named("out", "Identity", &[&x], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(24), D::N(24), D::N(24)]);
    b.model()
}

fn opts(rounding: Rounding) -> QuantOptions {
    QuantOptions {
        samples: 16,
        eval_samples: 4,
        quantize_small: true,
        engine: EngineChoice::Tract,
        rounding,
        // Rounding alone: bias correction and the reconstruction of the first layers would
        // also move the nearest-rounded model.
        bias_correction: false,
        reconstruct_first: 0,
        ..Default::default()
    }
}

/// Output SQNR of `q` against `m` on inputs neither quantization saw.
fn held_out_sqnr(m: &ModelProto, q: &ModelProto) -> f64 {
    let specs = vec![InputSpec {
        name: "input".into(),
        dtype: pare::model::tensor::DataType::FLOAT,
        shape: vec![1, 3, 24, 24],
    }];
    let ef = Runner::tract(m, &specs).expect("float");
    let eq = Runner::tract(q, &specs).expect("quantized");
    let mut rng = Rng::new(4242);
    let (mut r, mut g) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let x = vec![
            HostTensor::random(
                pare::model::tensor::DataType::FLOAT,
                &[1, 3, 24, 24],
                &mut rng,
            )
            .expect("input"),
        ];
        r.extend(ef.run(&x).expect("float run")[0].to_f64());
        g.extend(eq.run(&x).expect("quantized run")[0].to_f64());
    }
    sqnr_db(&r, &g)
}

/// On each layer's calibration patches: never worse, and better where weights flipped.
fn never_worse_and_better_where_flipped(r: &pare::quant::adaround::RoundingReport) {
    for l in &r.layers {
        let (n, g) = (
            l.nearest_db.expect("nearest"),
            l.learned_db.expect("learned"),
        );
        assert!(g >= n - 1e-9, "{}: {g} < {n}", l.node);
        if l.flipped > 0 {
            assert!(g > n, "{}: flipped {} but {g} <= {n}", l.node, l.flipped);
        }
    }
}

#[test]
fn learned_rounding_lowers_the_output_error_versus_nearest() {
    let m = fixture();
    let a = Analysis::new(common::model(m.clone()), &InputPins::new()).expect("analysis");
    let nearest = quantize(&a, &opts(Rounding::Nearest), &NoProgress).expect("nearest");
    let learned = quantize(&a, &opts(Rounding::Learned), &NoProgress).expect("learned");
    assert!(nearest.report.learned_rounding.is_none());
    let r = learned.report.learned_rounding.as_ref().expect("report");
    assert_eq!(r.layers.len(), 3, "{:?}", r.skipped);
    never_worse_and_better_where_flipped(r);
    assert!(r.layers.iter().any(|l| l.flipped > 0));
    // The written model, on samples neither run calibrated on.
    let (sn, sl) = (
        held_out_sqnr(&m, &nearest.model),
        held_out_sqnr(&m, &learned.model),
    );
    assert!(sl > sn + 0.1, "learned {sl:.2} dB vs nearest {sn:.2} dB");
}

#[test]
fn learned_rounding_keeps_a_remeasured_bias_correction() {
    let m = fixture();
    let a = Analysis::new(common::model(m.clone()), &InputPins::new()).expect("analysis");
    let with_bias = |rounding| QuantOptions {
        bias_correction: true,
        ..opts(rounding)
    };
    let nearest = quantize(&a, &with_bias(Rounding::Nearest), &NoProgress).expect("nearest");
    let learned = quantize(&a, &with_bias(Rounding::Learned), &NoProgress).expect("learned");
    // The learned weights' own mean shift is measured and removed (it used to be dropped).
    assert_eq!(learned.report.bias_corrected.len(), 3);
    assert!(
        learned
            .report
            .notes
            .iter()
            .all(|n| !n.contains("bias correction not applied")),
        "{:?}",
        learned.report.notes
    );
    // Per layer, the error a bias cannot remove.
    never_worse_and_better_where_flipped(learned.report.learned_rounding.as_ref().expect("r"));
    // Activation error dominates this fixture's output, so held out it must not be worse.
    let (sn, sl) = (
        held_out_sqnr(&m, &nearest.model),
        held_out_sqnr(&m, &learned.model),
    );
    assert!(sl >= sn, "learned {sl:.2} dB vs nearest {sn:.2} dB");
}
