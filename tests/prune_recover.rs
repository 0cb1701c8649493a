//! Reconstruction after pruning (`--recover lsq|bias`) and fidelity on held-out samples.
//! The fixtures are built so the exact answer is known: removed channels that are linear
//! combinations of kept ones (least squares must recover the original outputs), and
//! constant channels (bias folding must).

mod common;

use pare::data::{DataSource, Preprocess};
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_i, attr_ints};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::prune::recover::{CalibOptions, FitMethod, FitTarget, RecoverOptions};
use pare::prune::sensitivity::SampleSpec;
use pare::prune::{Criterion, PruneOptions, PruneReport, PruneRequest, RecoverMode};
use pare::rng::Rng;
use pare::runtime::{EngineChoice, EngineKind};

/// A 1x1 or kxk conv with explicit weights.
fn conv(
    b: &mut GraphBuilder,
    name: &str,
    x: &str,
    w: (&[i64], &[f32]),
    bias: Option<&[f32]>,
) -> String {
    let k = w.0[2];
    let pad = (k - 1) / 2;
    let wn = b.init_f32(&format!("{name}.weight"), w.0, w.1);
    let mut ins = vec![x.to_string(), wn];
    if let Some(bv) = bias {
        ins.push(b.init_f32(&format!("{name}.bias"), &[w.0[0]], bv));
    }
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    let out = format!("{name}_out");
    b.node_named(
        name,
        "Conv",
        &ins,
        &[&out],
        vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("pads", &[pad, pad, pad, pad]),
            attr_i("group", 1),
        ],
    );
    out
}

fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

/// A 1x1 conv `cin → cout` without bias, its weights drawn from `rng` at `scale`.
fn random_1x1(
    b: &mut GraphBuilder,
    rng: &mut Rng,
    name: &str,
    x: &str,
    [cout, cin]: [i64; 2],
    scale: f32,
) -> String {
    let w = randn(rng, (cout * cin) as usize, scale);
    conv(b, name, x, (&[cout, cin, 1, 1], &w), None)
}

/// x(4) → conv1 1x1 (8 channels, no bias: every channel is a linear combination of any 4
/// others) → conv2 3x3 (6 channels, padded) → y.
fn linear_pair() -> ModelProto {
    let mut rng = Rng::new(7);
    let mut b = GraphBuilder::new("linear_pair");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let h = conv(
        &mut b,
        "conv1",
        &x,
        (&[8, 4, 1, 1], &randn(&mut rng, 32, 0.5)),
        None,
    );
    let w2 = randn(&mut rng, 6 * 8 * 9, 0.2);
    let y = conv(
        &mut b,
        "conv2",
        &h,
        (&[6, 8, 3, 3], &w2),
        Some(&randn(&mut rng, 6, 0.1)),
    );
    b.output(&y, &[D::N(1), D::N(6), D::N(8), D::N(8)]);
    b.model()
}

/// x(4) → conv1 1x1 (8 channels; channels 4..8 have zero weights and a large bias, like a
/// BatchNorm-folded channel whose gamma went to zero) → conv2 1x1 → y.
fn constant_channels() -> ModelProto {
    let mut rng = Rng::new(11);
    let mut b = GraphBuilder::new("constant_channels");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let mut w1 = vec![0.0f32; 32];
    for o in 0..4 {
        for i in 0..4 {
            w1[o * 4 + i] = if o == i { 1.0 } else { 0.3 };
        }
    }
    let b1 = [0.1, -0.1, 0.2, 0.0, 3.0, -2.0, 1.5, 4.0];
    let h = conv(&mut b, "conv1", &x, (&[8, 4, 1, 1], &w1), Some(&b1));
    let mut w2 = randn(&mut rng, 6 * 8, 0.5);
    for o in 0..6 {
        for i in 4..8 {
            w2[o * 8 + i] *= 0.1; // small weights on large constants
        }
    }
    let y = conv(&mut b, "conv2", &h, (&[6, 8, 1, 1], &w2), Some(&[0.0; 6]));
    b.output(&y, &[D::N(1), D::N(6), D::N(8), D::N(8)]);
    b.model()
}

/// x(4) → conv1 1x1 (16 channels, linear) → GlobalAveragePool → Flatten → Gemm (5): with
/// half the channels kept, the Gemm has 9 unknowns per output but only one row per sample
/// (6 fit samples), unless it is fitted on the positions before the pool.
fn pooled_classifier() -> ModelProto {
    let mut rng = Rng::new(5);
    let mut b = GraphBuilder::new("pooled_classifier");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let w1 = randn(&mut rng, 64, 0.5);
    let h = conv(&mut b, "conv1", &x, (&[16, 4, 1, 1], &w1), None);
    let p = b.op("GlobalAveragePool", &[&h], vec![]);
    let f = b.op("Flatten", &[&p], vec![attr_i("axis", 1)]);
    let w = b.init_f32("fc.weight", &[5, 16], &randn(&mut rng, 80, 0.5));
    let bias = b.init_f32("fc.bias", &[5], &randn(&mut rng, 5, 0.1));
    b.node_named(
        "fc",
        "Gemm",
        &[&f, &w, &bias],
        &["logits"],
        vec![attr_i("transB", 1)],
    );
    b.output("logits", &[D::N(1), D::N(5)]);
    b.model()
}

/// x(4) → conv1 1x1 (8 channels) → Relu → conv2 1x1 → y. Channels 0..3 are small and
/// independent, 4 is large and 5..8 are exact copies of it: keeping half, a criterion by size
/// keeps the copies; one by redundancy drops them and a re-fit is exact.
fn copies_and_small_channels() -> ModelProto {
    let mut rng = Rng::new(13);
    let mut b = GraphBuilder::new("copies");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let mut w1 = randn(&mut rng, 32, 0.3);
    let big: Vec<f32> = randn(&mut rng, 4, 2.0);
    for o in 3..8 {
        w1[o * 4..o * 4 + 4].copy_from_slice(&big);
    }
    let h = conv(&mut b, "conv1", &x, (&[8, 4, 1, 1], &w1), None);
    let h = b.relu(&h);
    let w2 = randn(&mut rng, 6 * 8, 0.5);
    let y = conv(&mut b, "conv2", &h, (&[6, 8, 1, 1], &w2), Some(&[0.0; 6]));
    b.output(&y, &[D::N(1), D::N(6), D::N(8), D::N(8)]);
    b.model()
}

fn prune_with(m: ModelProto, mode: RecoverMode) -> PruneReport {
    prune_by(m, mode, Criterion::L1)
}

fn prune_by(m: ModelProto, mode: RecoverMode, criterion: Criterion) -> PruneReport {
    let recover = RecoverOptions {
        engine: EngineKind::Tract,
        ..Default::default()
    };
    prune_half(m, mode, criterion, recover)
}

/// Prunes half of every group of `m` with calibration on 8 random samples (a quarter held
/// out), recovering with `mode` and `recover` on tract.
fn prune_half(
    m: ModelProto,
    mode: RecoverMode,
    criterion: Criterion,
    recover: RecoverOptions,
) -> PruneReport {
    prune_half_on(m, mode, criterion, recover, 8)
}

/// [`prune_half`] on `samples` random samples.
fn prune_half_on(
    m: ModelProto,
    mode: RecoverMode,
    criterion: Criterion,
    recover: RecoverOptions,
    samples: usize,
) -> PruneReport {
    let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
    let req = PruneRequest {
        options: PruneOptions {
            ratio: 0.5,
            round_to: 1,
            criterion,
            ..Default::default()
        },
        output: None,
        validate: false,
        calib: Some(CalibOptions {
            data: SampleSpec {
                source: DataSource::Random { seed: 3 },
                samples,
                preprocess: Preprocess::default(),
                engine: EngineChoice::Tract,
            },
            given: true,
            holdout: 0.25,
            recover,
        }),
        recover: mode,
        ..Default::default()
    };
    pare::prune::run(&a, &req, &NoProgress).expect("prune")
}

fn sqnr(f: &Option<pare::fidelity::Fidelity>) -> f64 {
    f.as_ref()
        .and_then(|f| f.min_sqnr_db())
        .unwrap_or(f64::INFINITY)
}

#[test]
fn least_squares_recovers_linear_combinations_exactly() {
    let rep = prune_with(linear_pair(), RecoverMode::Lsq);
    assert_eq!(rep.pruned_groups, 1, "{:?}", rep.plan);
    let r = rep.recovery.as_ref().expect("recovery ran");
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].method, FitMethod::Lsq, "{:?}", r.layers);
    let before = sqnr(&rep.fidelity_before_recovery);
    let after = sqnr(&rep.fidelity);
    assert!(before < 30.0, "pruning alone should hurt: {before} dB");
    assert!(after >= 60.0, "least squares should be exact: {after} dB");
    assert!(rep.fidelity.as_ref().is_some_and(|f| f.held_out));
}

#[test]
fn a_classifier_behind_global_pooling_is_fitted_on_spatial_positions() {
    let rep = prune_with(pooled_classifier(), RecoverMode::Lsq);
    assert_eq!(rep.pruned_groups, 1, "{:?}", rep.plan);
    let r = rep.recovery.as_ref().expect("recovery ran");
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].method, FitMethod::Lsq, "{:?}", r.layers);
    let before = sqnr(&rep.fidelity_before_recovery);
    let after = sqnr(&rep.fidelity);
    assert!(before < 30.0, "pruning alone should hurt: {before} dB");
    assert!(
        after >= 60.0,
        "kept channels span the removed ones: {after} dB"
    );
}

#[test]
fn with_lsq_the_activation_criterion_drops_redundant_channels_first() {
    let rep = prune_by(
        copies_and_small_channels(),
        RecoverMode::Lsq,
        Criterion::Activation,
    );
    let g = rep.plan.iter().find(|g| g.total == 8).expect("group");
    assert_eq!(g.kept, 4, "{:?}", rep.plan);
    let after = sqnr(&rep.fidelity);
    assert!(
        after >= 60.0,
        "one copy and the small channels span it all: {after} dB"
    );
    // By size alone, the copies are kept and the small channels lost.
    let by_size = prune_by(
        copies_and_small_channels(),
        RecoverMode::Bias,
        Criterion::Activation,
    );
    assert!(
        sqnr(&by_size.fidelity) < 40.0,
        "{}",
        sqnr(&by_size.fidelity)
    );
}

#[test]
fn bias_folding_is_exact_for_constant_channels() {
    let rep = prune_with(constant_channels(), RecoverMode::Bias);
    let kept: Vec<usize> = rep.plan.iter().map(|g| g.kept).collect();
    assert!(kept.contains(&4), "{:?}", rep.plan);
    let r = rep.recovery.as_ref().expect("recovery ran");
    assert_eq!(r.layers[0].method, FitMethod::Bias);
    let before = sqnr(&rep.fidelity_before_recovery);
    let after = sqnr(&rep.fidelity);
    assert!(before < 20.0, "dropping constants should hurt: {before} dB");
    assert!(after >= 60.0, "bias folding should be exact: {after} dB");
    // No recovery: the report says so and the numbers are the unrepaired ones.
    let none = prune_with(constant_channels(), RecoverMode::None);
    assert!(none.recovery.is_none() && none.fidelity_before_recovery.is_none());
    assert!((sqnr(&none.fidelity) - before).abs() < 1e-6);
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = common::pare(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("json")
}

#[test]
fn fidelity_is_in_the_json_with_calib_random_on_held_out_samples() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let p = p.to_str().expect("utf8");
    let v = json(&[
        "prune",
        p,
        "--dry-run",
        "--json",
        "--ratio",
        "0.5",
        "--calib",
        "random",
        "--samples",
        "8",
    ]);
    let f = &v["fidelity"];
    assert_eq!(f["samples"], 2, "{f}");
    assert_eq!(f["held_out"], true);
    assert!(f["outputs"][0]["sqnr_db"].is_number(), "{f}");
    assert!(v["fidelity_before_recovery"].is_object());
    let r = &v["recovery"];
    assert_eq!(r["mode"], "lsq");
    let fit: Vec<u64> = serde_json::from_value(r["fit_samples"].clone()).expect("fit");
    let eval: Vec<u64> = serde_json::from_value(r["eval_samples"].clone()).expect("eval");
    assert_eq!((fit.len(), eval.len()), (6, 2));
    assert!(fit.iter().all(|k| !eval.contains(k)), "{fit:?} {eval:?}");
    assert!(
        v["phases"].as_array().is_some_and(|p| p.len() >= 3),
        "{}",
        v["phases"]
    );

    // Without --calib: a few random inputs, and the report says so; no recovery.
    let out = dir.path().join("p.onnx");
    let v = json(&["prune", p, "-o", out.to_str().expect("utf8"), "--json"]);
    let notes = v["fidelity"]["notes"].to_string();
    assert!(notes.contains("random inputs"), "{notes}");
    assert!(v["recovery"].is_null());
    // ... measured on validation's own run: no second pair of runners, no extra phases.
    assert_eq!(v["fidelity"]["samples"], 1, "{}", v["fidelity"]);
    let phases = v["phases"].to_string();
    assert!(!phases.contains("fidelity"), "{phases}");
    assert!(v["fidelity"]["outputs"][0]["sqnr_db"].is_number());
    // Recovery needs samples.
    let (code, _, err) = common::pare(&["prune", p, "--dry-run", "--recover", "lsq"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--calib"), "{err}");
}

/// x(4) → conv1 1x1 (8 channels; 0..4 are half of 4..8) → conv2 3x3 (6 outputs, also a graph
/// output so they stay; its weights on 0..4 are half those on 4..8) → conv3 1x1 (3) → y.
/// With a limit of 16 unknowns, conv2 (37) is only bias-folded after pruning 0..4: its output
/// drifts (by a factor 1.25 around its mean). conv3 (7 unknowns) lost no input channel, yet a
/// fit on the pruned conv2's output toward the original's output is exact.
fn drift_chain() -> ModelProto {
    let mut rng = Rng::new(17);
    let mut b = GraphBuilder::new("drift_chain");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let mut w1 = randn(&mut rng, 32, 0.5);
    for i in 0..16 {
        w1[i] = 0.5 * w1[16 + i];
    }
    let h = conv(&mut b, "conv1", &x, (&[8, 4, 1, 1], &w1), None);
    let mut w2 = randn(&mut rng, 6 * 8 * 9, 0.3);
    for o in 0..6 {
        for i in 0..36 {
            w2[o * 72 + i] = 0.5 * w2[o * 72 + 36 + i];
        }
    }
    let y1 = conv(&mut b, "conv2", &h, (&[6, 8, 3, 3], &w2), Some(&[0.1; 6]));
    let w3 = randn(&mut rng, 3 * 6, 0.5);
    let y2 = conv(&mut b, "conv3", &y1, (&[3, 6, 1, 1], &w3), Some(&[0.0; 3]));
    b.output(&y1, &[D::N(1), D::N(6), D::N(8), D::N(8)]);
    b.output(&y2, &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    b.model()
}

fn prune_drift_chain(refit_downstream: bool) -> PruneReport {
    let recover = RecoverOptions {
        engine: EngineKind::Tract,
        refit_downstream,
        max_unknowns: 16,
        ..Default::default()
    };
    prune_half(drift_chain(), RecoverMode::Lsq, Criterion::L1, recover)
}

#[test]
fn a_conv_downstream_of_the_pruned_one_is_refitted_toward_the_original() {
    let off = prune_drift_chain(false);
    assert_eq!(off.pruned_groups, 1, "{:?}", off.plan);
    let layers = |r: &PruneReport| -> Vec<(String, FitMethod)> {
        let rec = r.recovery.as_ref().expect("recovery ran");
        rec.layers
            .iter()
            .map(|l| (l.node.clone(), l.method))
            .collect()
    };
    let names = |r: &PruneReport| -> Vec<String> { layers(r).into_iter().map(|l| l.0).collect() };
    assert_eq!(names(&off), ["conv2"]);
    assert!(
        layers(&off).iter().all(|l| l.1 == FitMethod::Bias),
        "{:?}",
        layers(&off)
    );
    let on = prune_drift_chain(true);
    assert_eq!(names(&on), ["conv2", "conv3"]);
    let rec = on.recovery.as_ref().expect("recovery ran");
    let l = &rec.layers[1];
    assert_eq!(
        (l.method, l.inputs_kept, l.inputs_total),
        (FitMethod::Lsq, 6, 6)
    );
    let y2 = |r: &PruneReport| -> f64 {
        let f = r.fidelity.as_ref().expect("fidelity");
        let o = f
            .outputs
            .iter()
            .find(|o| o.name == "conv3_out")
            .expect("y2");
        o.sqnr_db.expect("sqnr")
    };
    assert!(
        y2(&off) < 30.0,
        "bias folding alone leaves drift: {} dB",
        y2(&off)
    );
    assert!(
        y2(&on) >= 60.0,
        "the downstream fit absorbs it: {} dB",
        y2(&on)
    );
}

/// `v`'s second half set to `k` times its first half.
fn second_half_scaled(v: &mut [f32], k: f32) {
    let (orig, copies) = v.split_at_mut(v.len() / 2);
    copies
        .iter_mut()
        .zip(orig.iter())
        .for_each(|(c, o)| *c = k * o);
}

/// x(4, one position) → conv0 1x1 (64; channels 32..64 are 0.3× channels 0..32) → conv1 1x1
/// (8, the stream s; the copies' columns 0.3× the originals') → conv2 1x1 (8, bias 20) →
/// Relu → conv3 1x1 (8) → Add(s) → y. Pruning half of each group drops the copies; conv1
/// has more unknowns (33) than fitting rows (24), so it is bias-folded and the stream
/// keeps a drift that is an affine function of x. conv3's kept inputs span x, so it can
/// cancel that drift exactly, but only if it is fitted toward the original *sum*.
fn residual_block() -> ModelProto {
    let mut rng = Rng::new(17);
    let mut b = GraphBuilder::new("residual_block");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(1), D::N(1)]);
    let mut w0 = randn(&mut rng, 64 * 4, 0.5);
    second_half_scaled(&mut w0, 0.3);
    let h = conv(&mut b, "conv0", &x, (&[64, 4, 1, 1], &w0), None);
    let mut w1 = randn(&mut rng, 8 * 64, 0.4);
    w1.chunks_mut(64)
        .for_each(|row| second_half_scaled(row, 0.3));
    let s = conv(&mut b, "conv1", &h, (&[8, 64, 1, 1], &w1), None);
    let w2 = randn(&mut rng, 64, 0.4);
    let e = conv(&mut b, "conv2", &s, (&[8, 8, 1, 1], &w2), Some(&[20.0; 8]));
    let e = b.relu(&e);
    let p = random_1x1(&mut b, &mut rng, "conv3", &e, [8, 8], 0.4);
    let y = b.add(&s, &p);
    b.output(&y, &[D::N(1), D::N(8), D::N(1), D::N(1)]);
    b.model()
}

/// Prunes half of every group with lsq recovery on 32 random samples (24 fitting), residual
/// targets on or off.
fn prune_targets(m: ModelProto, residual: bool) -> PruneReport {
    let recover = RecoverOptions {
        engine: EngineKind::Tract,
        residual_targets: residual,
        ..Default::default()
    };
    prune_half_on(m, RecoverMode::Lsq, Criterion::L1, recover, 32)
}

fn layer<'r>(rep: &'r PruneReport, node: &str) -> &'r pare::prune::recover::LayerRecovery {
    let r = rep.recovery.as_ref().expect("recovery ran");
    let l = r.layers.iter().find(|l| l.node == node);
    l.unwrap_or_else(|| panic!("{node} not re-fitted: {:?}", r.layers))
}

#[test]
fn a_residual_projection_cancels_the_drift_its_stream_carries() {
    let with = prune_targets(residual_block(), true);
    assert_eq!(with.pruned_groups, 2, "{:?}", with.plan);
    assert_eq!(layer(&with, "conv1").method, FitMethod::Bias);
    assert_eq!(layer(&with, "conv3").target, Some(FitTarget::ResidualSum));
    let without = prune_targets(residual_block(), false);
    assert_eq!(layer(&without, "conv3").target, Some(FitTarget::Output));
    let (a, b) = (sqnr(&with.fidelity), sqnr(&without.fidelity));
    assert!(a >= 60.0, "toward the sum: {a} dB");
    assert!(
        b < 40.0,
        "toward conv3's own output the drift stays: {b} dB"
    );
}

/// x(4) → conv1 1x1 (8) → Relu → conv2 1x1 (6) → Add(a [1,1,8,8] map from x, or a
/// [1,6,1,1] constant) → y: an Add that broadcasts is no residual stream.
fn broadcast_add(constant: bool) -> ModelProto {
    let mut rng = Rng::new(23);
    let mut b = GraphBuilder::new("broadcast_add");
    let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let h = random_1x1(&mut b, &mut rng, "conv1", &x, [8, 4], 0.5);
    let h = b.relu(&h);
    let w2 = randn(&mut rng, 48, 0.5);
    let y = conv(&mut b, "conv2", &h, (&[6, 8, 1, 1], &w2), Some(&[0.0; 6]));
    let other = match constant {
        true => b.init_f32("shift", &[1, 6, 1, 1], &randn(&mut rng, 6, 1.0)),
        false => random_1x1(&mut b, &mut rng, "map", &x, [1, 4], 0.5),
    };
    let y = b.add(&y, &other);
    b.output(&y, &[D::N(1), D::N(6), D::N(8), D::N(8)]);
    b.model()
}

#[test]
fn an_add_that_broadcasts_keeps_the_plain_target() {
    for constant in [false, true] {
        let rep = prune_targets(broadcast_add(constant), true);
        let l = layer(&rep, "conv2");
        assert_eq!(l.method, FitMethod::Lsq, "{l:?}");
        assert_eq!(l.target, Some(FitTarget::Output), "{l:?}");
    }
}
