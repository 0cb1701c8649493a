//! Sensitivity (`pare groups --sensitivity`), per-group ratios and budgets (`pare prune
//! --target-macs`) on small fixtures built here: no shared models needed.

mod common;

use pare::analysis::channels::analyze_channels as analyze_channels_for_tests;
use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_i};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::prune::budget::{Amount, BudgetOptions};
use pare::prune::sensitivity::{SampleSpec, SensitivityRequest, sensitivity};
use pare::prune::{PruneOptions, PruneRequest, make_plan};
use pare::tags::Tags;

/// Scales the weight of the Conv whose output is `out` by `k`.
fn scale_weight(b: &mut GraphBuilder, out: &str, k: f32) {
    let w = b
        .nodes
        .iter()
        .find(|n| n.output.first().map(String::as_str) == Some(out))
        .map(|n| n.input[1].clone())
        .expect("conv");
    let t = b
        .initializers
        .iter_mut()
        .find(|t| t.name() == w)
        .expect("weight");
    let dims = t.dims.clone();
    let raw = t.raw_data.clone().expect("raw weights");
    let vals: Vec<f32> = raw
        .chunks(4)
        .map(|c| k * f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    *t = pare::model::tensor::f32_tensor(&w, &dims, &vals);
}

/// Two branches summed into a classifier: the `/fragile` branch's hidden channels feed the
/// output through large weights, the `/robust` branch's through tiny ones.
fn two_branches() -> ModelProto {
    let mut b = GraphBuilder::new("two_branches");
    b.input("input", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.scope = "/fragile".into();
    let f = b.conv("input", 4, 16, 3, 1, 1, 1);
    let f = b.relu(&f);
    let f = b.conv(&f, 16, 8, 1, 1, 0, 1);
    scale_weight(&mut b, &f, 10.0);
    b.scope = "/robust".into();
    let r = b.conv("input", 4, 16, 3, 1, 1, 1);
    let r = b.relu(&r);
    let r = b.conv(&r, 16, 8, 1, 1, 0, 1);
    scale_weight(&mut b, &r, 0.01);
    b.scope = "/head".into();
    let x = b.add(&f, &r);
    let x = b.op("GlobalAveragePool", &[&x], vec![]);
    let x = b.op("Flatten", &[&x], vec![attr_i("axis", 1)]);
    b.node_named("/head/Identity", "Identity", &[&x], &["logits"], vec![]);
    b.output("logits", &[D::N(1), D::N(8)]);
    b.model()
}

/// Two branches into a pooled output: `/redundant` is linear (its 16 hidden channels span
/// only its 4 inputs, so a least-squares refit of the next conv restores any removal) and
/// feeds the output through large weights; `/lean`'s hidden channels pass a ReLU and feed
/// it through moderate ones. Unrepaired or bias-folded, `/redundant` looks fragile.
fn redundant_and_lean() -> ModelProto {
    let mut b = GraphBuilder::new("redundant_and_lean");
    b.input("input", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.scope = "/redundant".into();
    let r = b.conv("input", 4, 16, 1, 1, 0, 1);
    let r = b.conv(&r, 16, 8, 1, 1, 0, 1);
    scale_weight(&mut b, &r, 10.0);
    b.scope = "/lean".into();
    let l = b.conv("input", 4, 16, 3, 1, 1, 1);
    let l = b.relu(&l);
    let l = b.conv(&l, 16, 8, 1, 1, 0, 1);
    scale_weight(&mut b, &l, 0.3);
    b.scope = "/head".into();
    let x = b.add(&r, &l);
    let x = b.op("GlobalAveragePool", &[&x], vec![]);
    let x = b.op("Flatten", &[&x], vec![attr_i("axis", 1)]);
    b.node_named("/head/Identity", "Identity", &[&x], &["logits"], vec![]);
    b.output("logits", &[D::N(1), D::N(8)]);
    b.model()
}

fn analysis(p: &std::path::Path) -> Analysis {
    Analysis::open(p, &InputPins::new()).expect("analysis")
}

/// The group whose first producer's name starts with `prefix`.
fn group_of(a: &Analysis, prefix: &str) -> usize {
    let ca = analyze_channels_for_tests(a);
    ca.groups
        .iter()
        .find(|g| g.producers.len() == 1 && g.producers[0].starts_with(prefix))
        .map(|g| g.id)
        .expect("group")
}

#[test]
fn sensitivity_ranks_the_fragile_group_first() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "two.onnx", &two_branches());
    let a = analysis(&p);
    let req = SensitivityRequest {
        data: SampleSpec::random(0, 4),
        ratio: 0.5,
        options: PruneOptions {
            round_to: 1,
            ..Default::default()
        },
    };
    let rep = sensitivity(&a, &req, &NoProgress).expect("sensitivity");
    let fragile = group_of(&a, "/fragile");
    let robust = group_of(&a, "/robust");
    assert_eq!(rep.groups.len(), 2, "{:?}", rep.groups);
    assert_eq!(rep.groups[0].group, fragile, "{:?}", rep.groups);
    assert_eq!(rep.groups[1].group, robust);
    let (f, r) = (
        rep.groups[0].sqnr_db.expect("sqnr"),
        rep.groups[1].sqnr_db.expect("sqnr"),
    );
    assert!(r > f + 20.0, "robust {r} dB vs fragile {f} dB");
    assert!(rep.groups.iter().all(|g| g.macs_saved > 0 && g.kept == 8));
    assert!(rep.notes.iter().any(|n| n.contains("random")));

    // The CLI gives the same ranking in JSON.
    let (code, out, err) = common::pare(&[
        "groups",
        p.to_str().expect("utf8"),
        "--sensitivity",
        "--samples",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["groups"][0]["group"], fragile);
    assert_eq!(v["ratio"], 0.5);
}

#[test]
fn group_ratios_are_honoured_and_tags_win() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "two.onnx", &two_branches());
    let a = analysis(&p);
    let ca = analyze_channels_for_tests(&a);
    let (fragile, robust) = (group_of(&a, "/fragile"), group_of(&a, "/robust"));
    let mut opts = PruneOptions {
        ratio: 0.0,
        round_to: 1,
        ..Default::default()
    };
    opts.group_ratios.insert(fragile, 0.25);
    opts.group_ratios.insert(robust, 0.75);
    let plan = make_plan(&a, &ca, &opts, &NoProgress).expect("plan");
    assert_eq!(plan.groups[fragile].kept(), 12);
    assert_eq!(plan.groups[robust].kept(), 4);
    // Other groups keep everything at ratio 0 whatever the rounding.
    assert!(
        plan.groups
            .iter()
            .filter(|g| g.group != fragile && g.group != robust)
            .all(|g| g.kept() == g.total)
    );
    let robust_conv = ca.groups[robust].producers[0].clone();
    let fragile_conv = ca.groups[fragile].producers[0].clone();
    opts.tags = Tags {
        skip: vec![robust_conv],
        ratio: [(fragile_conv, 0.5)].into_iter().collect(),
        ..Default::default()
    };
    let plan = make_plan(&a, &ca, &opts, &NoProgress).expect("plan");
    assert_eq!(plan.groups[robust].kept(), 16, "skip tag wins");
    assert_eq!(plan.groups[fragile].kept(), 8, "tag ratio wins");
    opts.group_ratios.insert(robust, 1.5);
    assert!(make_plan(&a, &ca, &opts, &NoProgress).is_err());
}

#[test]
fn target_macs_reaches_the_budget_and_prunes_the_robust_branch() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "two.onnx", &two_branches());
    let out = dir.path().join("pruned.onnx");
    let (code, stdout, err) = common::pare(&[
        "prune",
        p.to_str().expect("utf8"),
        "--target-macs",
        "0.7",
        "--round-to",
        "1",
        "--json",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let (before, after) = (
        v["macs_before"].as_u64().expect("macs"),
        v["macs_after"].as_u64().expect("macs"),
    );
    assert!(
        after as f64 <= 0.7 * before as f64,
        "{after} > 0.7 × {before}"
    );
    let b = &v["budget"];
    assert_eq!(b["reached"], true, "{b}");
    assert_eq!(b["random_data"], true);
    assert!(b["trace"].as_array().expect("trace").len() >= 2);
    let a = analysis(&p);
    let (fragile, robust) = (group_of(&a, "/fragile"), group_of(&a, "/robust"));
    let ratio = |g: usize| {
        b["ratios"]
            .as_array()
            .expect("ratios")
            .iter()
            .find(|r| r["group"] == g)
            .and_then(|r| r["ratio"].as_f64())
            .expect("ratio")
    };
    assert!(
        ratio(robust) > ratio(fragile),
        "robust {} fragile {}",
        ratio(robust),
        ratio(fragile)
    );
    assert!(out.exists());
    assert!(
        stdout.contains("random inputs"),
        "the report says the data was random"
    );
}

#[test]
fn budget_leaves_tagged_groups_alone_and_floor_stops_early() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "two.onnx", &two_branches());
    let a = analysis(&p);
    let ca = analyze_channels_for_tests(&a);
    let robust = group_of(&a, "/robust");
    let mut budget = BudgetOptions::new(SampleSpec::random(0, 4));
    budget.target_macs = Some(Amount::Fraction(0.7));
    let req = PruneRequest {
        options: PruneOptions {
            round_to: 1,
            tags: Tags {
                skip: vec![ca.groups[robust].producers[0].clone()],
                ..Default::default()
            },
            ..Default::default()
        },
        budget: Some(budget.clone()),
        ..Default::default()
    };
    let rep = pare::prune::run(&a, &req, &NoProgress).expect("prune");
    let b = rep.budget.expect("budget report");
    assert!(b.ratios.iter().all(|r| r.group != robust), "{:?}", b.ratios);
    assert_eq!(rep.plan[robust].kept, 16);

    // A floor no step can keep: nothing is pruned and the report says it stopped early.
    budget.min_sqnr_db = Some(200.0);
    let req = PruneRequest {
        options: PruneOptions {
            round_to: 1,
            ..Default::default()
        },
        budget: Some(budget),
        ..Default::default()
    };
    let rep = pare::prune::run(&a, &req, &NoProgress).expect("prune");
    let b = rep.budget.expect("budget report");
    assert!(!b.reached);
    assert!(matches!(
        b.stop,
        pare::prune::budget::StopReason::MinSqnr { .. }
    ));
    assert!(b.notes.iter().any(|n| n.contains("stopped early")));
    assert_eq!(rep.macs_after, rep.macs_before);
}

/// `--target-macs` on a model with symbolic height and width: its MACs are unknown, so the
/// budget is refused (exit 2, naming the input and `--input-shape`) instead of "reached" with
/// nothing pruned; pinned, it prunes.
#[test]
fn target_macs_on_symbolic_sizes_asks_for_input_shape() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "dyn.onnx", &common::dynamic_hw());
    let out = dir.path().join("p.onnx");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["prune", m.to_str().expect("utf8"), "-o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(out.display().to_string());
        v.extend(
            ["--target-macs", "0.6"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string()),
        );
        v
    };
    let call = |extra: &[&'static str]| {
        let v = args(extra);
        common::pare(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, _, err) = call(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'image'") && err.contains("--input-shape"),
        "{err}"
    );
    assert!(!out.exists());
    let (code, stdout, err) = call(&["--input-shape", "image:1x3x32x32", "--json"]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let (before, after) = (
        r["macs_before"].as_f64().expect("macs_before"),
        r["macs_after"].as_f64().expect("macs_after"),
    );
    assert!(before > 0.0 && after <= 0.6 * before, "{before} -> {after}");
}

#[test]
fn budget_with_lsq_prunes_what_a_refit_restores() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "rl.onnx", &redundant_and_lean());
    let a = analysis(&p);
    let (red, lean) = (group_of(&a, "/redundant"), group_of(&a, "/lean"));
    let out = dir.path().join("out.onnx");
    let run = |recover: &str| {
        let (code, stdout, err) = common::pare(&[
            "prune",
            p.to_str().expect("utf8"),
            "-o",
            out.to_str().expect("utf8"),
            "--target-macs",
            "0.9",
            "--round-to",
            "1",
            "--calib",
            "random",
            "--samples",
            "8",
            "--recover",
            recover,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        let ratio = |g: usize| {
            v["budget"]["ratios"]
                .as_array()
                .expect("ratios")
                .iter()
                .find(|r| r["group"] == g)
                .and_then(|r| r["ratio"].as_f64())
                .expect("ratio")
        };
        (ratio(red), ratio(lean), v)
    };
    // Measured as bias-folded, the redundant branch looks fragile: the search cuts the lean one.
    let (r, l, _) = run("bias");
    assert!(l > r, "bias: redundant {r} lean {l}");
    // Measured as re-fitted, the redundant branch costs nothing: the search cuts it instead,
    // and the written model (really re-fitted) keeps the output.
    let (r, l, v) = run("lsq");
    assert!(r > 0.0 && l == 0.0, "lsq: redundant {r} lean {l}");
    let sqnr = v["fidelity"]["outputs"][0]["sqnr_db"]
        .as_f64()
        .expect("sqnr");
    assert!(sqnr > 40.0, "{}", v["fidelity"]);
}
