//! Fast mixed precision: `--target-sqnr` / `--min-agreement` choose the float layers from the
//! diagnostics' ranking with a few confirmation runs, not one run per layer.

mod common;

use pare::jobs::{JobEvent, LayerLabel, NoProgress, RecordProgress};
use pare::model::{Analysis, InputPins};
use pare::quant::mixed::MAX_PROBES;
use pare::quant::{QuantOptions, quantize};
use pare::report::Report;

fn analysis() -> Analysis {
    Analysis::new(common::model(common::resnet_like()), &InputPins::new()).expect("analysis")
}

fn opts() -> QuantOptions {
    common::quant_opts()
}

#[test]
fn target_sqnr_keeps_the_smallest_ranked_prefix_float() {
    let a = analysis();
    let base = quantize(&a, &opts(), &NoProgress).expect("base");
    let start = base.report.output_sqnr_db.expect("sqnr");
    let target = start + 6.0;
    let rec = RecordProgress::default();
    let q = quantize(
        &a,
        &QuantOptions {
            target_sqnr: Some(target),
            ..opts()
        },
        &rec,
    )
    .expect("mixed");
    let r = &q.report;
    let m = r.mixed.as_ref().expect("mixed report");
    assert!(m.reached && r.target_reached == Some(true));
    assert!(r.output_sqnr_db.is_some_and(|v| v >= target));
    // The float set is the worst-ranked prefix of the all-INT8 diagnosis.
    let ranked: Vec<&str> = base
        .report
        .layers
        .iter()
        .filter(|l| l.quantized)
        .map(|l| l.node.as_str())
        .collect();
    let k = m.float_layers.len();
    assert!(k > 0);
    assert_eq!(m.float_layers, ranked[..k].to_vec());
    // Smallest: the prefix one shorter was measured and failed (or k is 1 and the all-INT8
    // model failed).
    assert!(
        k == 1
            || m.probes
                .iter()
                .any(|p| p.float_layers == k - 1 && !p.passed),
        "{:?}",
        m.probes
    );
    assert!(m.probes.iter().any(|p| p.float_layers == k && p.passed));
    assert!(m.probes.len() <= MAX_PROBES + 1);
    let share = m.int8_mac_share.expect("MACs");
    assert!((0.0..1.0).contains(&share), "{share}");
    // Live: every float layer was announced, and each confirmation run.
    let ev = rec.events();
    for l in &m.float_layers {
        assert!(ev.iter().any(|e| matches!(e,
            JobEvent::Layer { node, label: LayerLabel::Fallback, .. } if node == l)));
    }
    let runs = ev
        .iter()
        .filter(|e| matches!(e, JobEvent::Fidelity { .. }))
        .count();
    assert_eq!(runs, m.probes.len());
    assert!(r.render_text().contains("of MACs in INT8"));
}

#[test]
fn min_agreement_measures_top1_and_stops_when_it_holds() {
    let a = analysis();
    let q = quantize(
        &a,
        &QuantOptions {
            min_agreement: Some(1.0),
            ..opts()
        },
        &NoProgress,
    )
    .expect("mixed");
    let m = q.report.mixed.as_ref().expect("mixed report");
    // The all-INT8 model is measured first: top-1 agreement of the classifier's logits.
    let first = m.probes.first().expect("a probe");
    assert_eq!(first.float_layers, 0);
    assert!(first.agreement.is_some_and(|x| (0.0..=1.0).contains(&x)));
    // Full agreement is always reachable (all layers float at worst) and what was kept passed.
    assert!(m.reached);
    let chosen = m.float_layers.len();
    assert!(
        m.probes
            .iter()
            .any(|p| p.float_layers == chosen && p.passed && p.agreement == Some(1.0))
    );
}

#[test]
fn a_met_target_costs_no_confirmation_run() {
    let a = analysis();
    let q = quantize(
        &a,
        &QuantOptions {
            target_sqnr: Some(-100.0),
            ..opts()
        },
        &NoProgress,
    )
    .expect("mixed");
    let m = q.report.mixed.as_ref().expect("mixed report");
    assert!(m.reached && m.probes.is_empty() && m.float_layers.is_empty());
    assert!(q.report.fallback.is_empty());
}
