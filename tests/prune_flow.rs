//! Channel flow through `Split`/`Slice` on the channel axis (YOLOv8's C2f blocks), groups that
//! do not depend on symbolic batch/height/width, and honest validation: a pruned model counts
//! as validated only when an engine ran it.

mod common;

use pare::analysis::channels::{CountPlace, analyze_channels};
use pare::jobs::NoProgress;
use pare::model::proto::{Dimension, ModelProto, TypeValue, ValueInfoProto};
use pare::model::{Analysis, InputPins};
use pare::prune::validate::{input_specs, random_inputs, validate_on};
use pare::prune::{PruneOptions, PrunePlan, apply_plan};
use pare::runtime::{EngineChoice, EngineKind, HostTensor, Runner, max_abs_diff};
use pare::tags::Tags;

fn analysis(m: &ModelProto, pins: &InputPins) -> Analysis {
    Analysis::new(common::model(m.clone()), pins).expect("analysis")
}

fn run_on(engine: EngineKind, m: &ModelProto, a: &Analysis, seed: u64) -> Vec<HostTensor> {
    let (specs, _) = input_specs(a).expect("specs");
    let inputs = random_inputs(&specs, seed).expect("inputs");
    Runner::new(engine, m, &specs)
        .unwrap_or_else(|e| panic!("{engine} loads: {e}"))
        .run(&inputs)
        .unwrap_or_else(|e| panic!("{engine} runs: {e}"))
}

/// A plan that keeps the first `keep(total)` units of every prunable group: in the C2f
/// blocks the units are the cv1 channels in order, so the two Split pieces lose different
/// numbers of channels (the case a run-time `chunk` formula gets wrong).
fn uneven_plan(a: &Analysis, keep: impl Fn(usize) -> usize) -> (PrunePlan, ModelProto) {
    let ca = analyze_channels(a);
    let mut plan = PrunePlan::keep_all(&ca);
    for gp in plan
        .groups
        .iter_mut()
        .filter(|g| g.locked.is_empty() && g.total > 2)
    {
        gp.keep = (0..keep(gp.total)).collect();
    }
    let pruned = apply_plan(a, &ca, &plan).expect("rewrite");
    (plan, pruned)
}

#[test]
fn c2f_split_and_slice_pieces_are_pruned_with_their_sizes_rewritten() {
    let m = common::yolo_c2f();
    let a = analysis(&m, &InputPins::new());
    let ca = analyze_channels(&a);
    // Every C2f's cv1 output (cut by a run-time Split, a shared constant Split or two
    // Slices) is one prunable group whose Split sizes / Slice bounds are counts.
    let cut: Vec<_> = ca
        .groups
        .iter()
        .filter(|g| {
            g.counts
                .iter()
                .any(|&c| matches!(ca.counts[c].place, CountPlace::Input { .. }))
        })
        .collect();
    assert_eq!(cut.len(), 4, "one group per C2f block: {:#?}", ca.groups);
    for g in &cut {
        assert!(g.prunable(), "{:?}: {:?}", g.producers, g.locks);
    }
    // Keep 5/8 of every group: the first piece keeps everything, the second loses the rest.
    let (plan, pruned) = uneven_plan(&a, |n| n * 5 / 8);
    assert!(plan.pruned_groups() >= 4);
    let pa = analysis(&pruned, &InputPins::new());
    let (x, y) = (
        run_on(EngineKind::Tract, &m, &a, 1),
        run_on(EngineKind::Tract, &pruned, &pa, 1),
    );
    assert_eq!(x[0].shape, y[0].shape);
    // The shared `[16, 16]` constant is left alone for any other reader; each Split got its own.
    let g = pruned.graph.as_ref().expect("graph");
    let shared = g
        .initializer
        .iter()
        .find(|t| t.name() == "split_sizes_32")
        .expect("shared sizes kept");
    assert_eq!(
        pare::model::tensor::to_i64(shared).expect("ints"),
        vec![16, 16]
    );
    let splits: Vec<_> = g.node.iter().filter(|n| n.op_type() == "Split").collect();
    assert_eq!(splits.len(), 3);
    for s in splits {
        assert!(s.input[1].ends_with("_pruned") || s.input[1].contains("_pruned"));
    }
}

/// The pruned C2f model runs in onnxruntime too (the original failure: "Incompatible
/// dimensions" at an Add), and keeping every index reproduces the original bit for bit in
/// both engines.
#[test]
fn c2f_pruned_runs_in_onnxruntime_and_keep_all_is_bit_identical() {
    if !common::with_onnxruntime("c2f_pruned_runs_in_onnxruntime_and_keep_all_is_bit_identical") {
        return;
    }
    let m = common::yolo_c2f();
    let a = analysis(&m, &InputPins::new());
    for keep in [|n: usize| n * 5 / 8, |n: usize| n - 3] {
        let (_, pruned) = uneven_plan(&a, keep);
        let pa = analysis(&pruned, &InputPins::new());
        let x = run_on(EngineKind::OnnxRuntime, &m, &a, 2);
        let y = run_on(EngineKind::OnnxRuntime, &pruned, &pa, 2);
        assert_eq!(x[0].shape, y[0].shape);
        assert!(y[0].to_f64().iter().all(|v| v.is_finite()));
    }
    let ca = analyze_channels(&a);
    let same = apply_plan(&a, &ca, &PrunePlan::keep_all(&ca)).expect("rewrite");
    for engine in [EngineKind::Tract, EngineKind::OnnxRuntime] {
        let (x, y) = (run_on(engine, &m, &a, 3), run_on(engine, &same, &a, 3));
        let d = max_abs_diff(&x[0], &y[0]).expect("same shape");
        assert_eq!(d, 0.0, "{engine}: keep-all differs by {d}");
    }
    common::ran_against_onnxruntime("c2f_pruned_runs_in_onnxruntime_and_keep_all_is_bit_identical");
}

/// `dims` with every axis but the channel axis (1) symbolic: what a dynamic-axes export
/// declares.
fn symbolic(v: &mut ValueInfoProto, prefix: &str) {
    let Some(TypeValue::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        return;
    };
    let Some(shape) = t.shape.as_mut() else {
        return;
    };
    for (k, d) in shape.dim.iter_mut().enumerate() {
        if k != 1 {
            let name = match k {
                0 => "batch".to_string(),
                2 => "height".to_string(),
                3 => "width".to_string(),
                _ => format!("{prefix}{k}"),
            };
            d.value = Some(Dimension::DimParam(name));
        }
    }
}

/// The model as a dynamic-axes export declares it: symbolic batch, height and width on the
/// inputs, symbolic outputs, no intermediate shapes.
fn dynamic(m: &ModelProto) -> ModelProto {
    let mut m = m.clone();
    let g = m.graph.as_mut().expect("graph");
    g.input.iter_mut().for_each(|v| symbolic(v, "d"));
    for (j, o) in g.output.iter_mut().enumerate() {
        symbolic(o, &format!("out{j}_"));
        if let Some(TypeValue::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(s) = t.shape.as_mut()
        {
            for (k, d) in s.dim.iter_mut().enumerate() {
                d.value = Some(Dimension::DimParam(format!("out{j}_{k}")));
            }
        }
    }
    g.value_info.clear();
    m
}

/// Pins every input of `a` to the concrete shape it has (symbolic dims: batch 1, else 64).
fn pins_of(a: &Analysis) -> InputPins {
    let mut pins = InputPins::new();
    for i in &a.index.inputs {
        if let Some(s) = a.shapes.shape(i) {
            let dims = s
                .iter()
                .enumerate()
                .map(|(k, d)| d.known().unwrap_or(if k == 0 { 1 } else { 64 }))
                .collect();
            pins.insert(i.clone(), dims);
        }
    }
    pins
}

/// What `pare groups` says about each group that holds weights: channels, prunable,
/// producers. (A locked barrier's output with no weights is no group anyone prunes; its
/// "channels" are whatever its axis 1 is, e.g. a pinned height.)
fn signature(a: &Analysis) -> Vec<(usize, bool, Vec<String>)> {
    pare::prune::groups(a, &Tags::default())
        .expect("groups")
        .groups
        .into_iter()
        .filter(|g| !g.members.is_empty())
        .map(|g| (g.channels, g.prunable, g.producers))
        .collect()
}

/// Parameters left after pruning at ratio 0.5 (how much the model prunes).
fn params_after(a: &Analysis) -> u64 {
    let opts = PruneOptions {
        ratio: 0.5,
        ..Default::default()
    };
    let p = pare::prune::prune(a, &opts, &NoProgress).expect("prune");
    pare::model::stats::graph_params(p.model.proto.graph.as_ref().expect("graph"))
}

/// Fixture models (pare's builders) and the committed PyTorch exports.
fn corpus() -> Vec<(String, ModelProto)> {
    let mut v: Vec<(String, ModelProto)> = common::all_prune_fixtures()
        .into_iter()
        .map(|(n, m)| (n.to_string(), m))
        .collect();
    v.push(("demo".into(), pare::demo::build_demo()));
    v.push(("custom_op".into(), common::custom_op()));
    v.push(("dynamic_hw".into(), common::dynamic_hw()));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    for p in files {
        let m = pare::model::io::load_model(&p).expect("load").proto;
        v.push((p.file_name().expect("name").to_string_lossy().into(), m));
    }
    v
}

/// Symbolic batch/height/width never change the groups: every model gives the same groups
/// with and without pinned input shapes, and a dynamic-axes variant of every model gives the
/// groups (and the pruning plan) of the model with its shapes fixed.
#[test]
fn groups_do_not_depend_on_symbolic_dims() {
    for (name, m) in corpus() {
        let free = analysis(&m, &InputPins::new());
        let pinned = analysis(&m, &pins_of(&free));
        let want = signature(&pinned);
        assert!(!want.is_empty(), "{name}: no groups");
        assert_eq!(
            signature(&free),
            want,
            "{name}: groups change with --input-shape"
        );
        if name == "flatten_view" {
            // Its literal `view(1, 16, -1)` keeps channels apart only at batch 1, which a
            // symbolic batch does not promise: locking that Reshape there is right.
            continue;
        }
        let dm = dynamic(&m);
        let dfree = analysis(&dm, &InputPins::new());
        assert_eq!(
            signature(&dfree),
            want,
            "{name}: the dynamic-axes variant has other groups"
        );
        let dpinned = analysis(&dm, &pins_of(&free));
        assert_eq!(signature(&dpinned), want, "{name}: pinned dynamic variant");
        assert_eq!(
            params_after(&dfree),
            params_after(&pinned),
            "{name}: the dynamic-axes variant prunes differently"
        );
    }
}

/// The dynamic-axes C2f model prunes as much as the fixed one and still runs at a size its
/// file never named.
#[test]
fn dynamic_axes_c2f_prunes_as_much_and_runs() {
    let m = common::yolo_c2f();
    let dm = dynamic(&m);
    let a = analysis(&m, &InputPins::new());
    let da = analysis(&dm, &InputPins::new());
    let opts = PruneOptions {
        ratio: 0.5,
        round_to: 1,
        ..Default::default()
    };
    let p = pare::prune::prune(&a, &opts, &NoProgress).expect("prune");
    let dp = pare::prune::prune(&da, &opts, &NoProgress).expect("prune dynamic");
    let params = |m: &ModelProto| pare::model::stats::graph_params(m.graph.as_ref().expect("g"));
    assert_eq!(params(&dp.model.proto), params(&p.model.proto));
    assert!(params(&dp.model.proto) < params(&m));
    let mut pins = InputPins::new();
    pins.insert("images".into(), vec![2, 3, 64, 48]);
    let pa = analysis(&dp.model.proto, &pins);
    let y = run_on(EngineKind::Tract, &dp.model.proto, &pa, 5);
    assert_eq!(y[0].shape, vec![2, 8, 8, 6]);
}

/// A pruned model the engine rejects is not validated, with the engine's reason; the original
/// still ran, so the report names the engine.
#[test]
fn a_pruned_model_no_engine_runs_is_not_validated() {
    let m = common::resnet_like();
    let a = analysis(&m, &InputPins::new());
    let (_, mut broken) = uneven_plan(&a, |n| n / 2);
    // Undo one consumer's slicing: its weight now expects channels its input lacks.
    let orig = m.graph.as_ref().expect("graph");
    let g = broken.graph.as_mut().expect("graph");
    let conv = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .nth(1)
        .expect("second conv")
        .input[1]
        .clone();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name() == conv)
        .expect("weight");
    *w = orig
        .initializer
        .iter()
        .find(|t| t.name() == conv)
        .expect("original weight")
        .clone();
    let v = validate_on(EngineChoice::Tract, &a, &broken, 0, None);
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.engine, Some(EngineKind::Tract));
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("runs the original but not the pruned model")),
        "{:?}",
        v.notes
    );
    let ok = validate_on(
        EngineChoice::Tract,
        &a,
        &uneven_plan(&a, |n| n / 2).1,
        0,
        None,
    );
    assert!(ok.passed, "{ok:?}");
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// No engine runs a model with an unknown custom op: `pare prune` reports `validated: false`
/// with the reason, exits 1 and writes nothing; `--allow-unvalidated` writes it (exit 0, a
/// loud warning); `--no-validate` writes it and says it was not validated.
#[test]
fn unrunnable_pruned_model_is_not_validated_and_exits_1() {
    let dir = common::tempdir();
    let m = common::write(dir.path(), "custom.onnx", &common::custom_op());
    let out = dir.path().join("p.onnx");
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_string();
    let (model, out_s) = (s(&m), s(&out));
    let args = ["prune", &model, "-o", &out_s, "--round-to", "1"];
    let (code, stdout, err) = common::pare(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 1, "{stdout}\n{err}");
    let j = json(&stdout);
    assert_eq!(j["validated"], false);
    assert_eq!(j["validation"]["passed"], false);
    assert_eq!(j["validation"]["method"], "none");
    assert_eq!(j["engine"], serde_json::Value::Null);
    assert!(j["output"].is_null(), "{stdout}");
    assert_eq!(j["withheld"], out_s.as_str());
    let notes = j["validation"]["notes"].to_string();
    assert!(notes.contains("cannot run the original model"), "{notes}");
    assert!(!out.exists(), "an unvalidated model must not be written");

    let (code, stdout, err) = common::pare(&[&args[..], &["--allow-unvalidated"]].concat());
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("validated  NO"), "{stdout}");
    assert!(stdout.contains("WARNING"), "{stdout}");
    assert!(out.exists());
    std::fs::remove_file(&out).expect("rm");

    let (code, stdout, err) = common::pare(&[&args[..], &["--no-validate"]].concat());
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("validated  no (skipped"), "{stdout}");
    assert!(out.exists());

    // A model that runs: validated on the engine that ran, which the report names.
    let r = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let (code, stdout, err) = common::pare(&[
        "prune",
        &s(&r),
        "-o",
        &s(&dir.path().join("r_p.onnx")),
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let j = json(&stdout);
    assert_eq!(j["validated"], true);
    assert_eq!(j["engine"], j["validation"]["method"]);
    assert!(
        j["engine"] == "tract" || j["engine"] == "onnxruntime",
        "{j}"
    );
}

/// A file that declares a fixed input size (CenterFace: 10×3×32×32) runs on onnxruntime at
/// the size `--input-shape` pins, as on tract: the runner re-declares the input instead of
/// onnxruntime refusing every sample ("Got invalid dimensions").
#[test]
fn onnxruntime_runs_at_the_pinned_size_not_the_declared_one() {
    if !common::with_onnxruntime("onnxruntime_runs_at_the_pinned_size_not_the_declared_one") {
        return;
    }
    let m = common::dynamic_hw();
    let mut fixed = m.clone();
    let g = fixed.graph.as_mut().expect("graph");
    for vi in g.input.iter_mut().chain(g.output.iter_mut()) {
        if let Some(TypeValue::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(s) = t.shape.as_mut()
        {
            for (k, d) in s.dim.iter_mut().enumerate() {
                let v = [10, d_known(d).unwrap_or(3), 8, 8][k.min(3)];
                d.value = Some(Dimension::DimValue(v));
            }
        }
    }
    let mut pins = InputPins::new();
    pins.insert("image".into(), vec![1, 3, 24, 20]);
    let a = analysis(&fixed, &pins);
    let x = run_on(EngineKind::OnnxRuntime, &fixed, &a, 3);
    let y = run_on(EngineKind::Tract, &fixed, &a, 3);
    assert_eq!(x[0].shape, vec![1, 4, 24, 20]);
    assert!(max_abs_diff(&x[0], &y[0]).is_some_and(|d| d < 1e-4));
}

fn d_known(d: &pare::model::proto::TensorShapeDimension) -> Option<i64> {
    match d.value {
        Some(Dimension::DimValue(v)) => Some(v),
        _ => None,
    }
}
