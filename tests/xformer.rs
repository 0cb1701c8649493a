//! Transformers, channels-last blocks, channel shuffle and recurrent layers (issue 17), on
//! PyTorch exports in tests/data (made by tests/data/gen_xformer.py): a ViT block stack, a
//! Swin window-attention stack, ConvNeXt blocks, a MobileViT block, ShuffleNetV2 units and a
//! CRNN with a bidirectional LSTM head. Every pruned model runs in tract with the original
//! output shapes; the exactness tests prove the index bookkeeping through heads, gates and
//! shuffles, in tract and in onnxruntime (tests/interop.rs also runs the pruned fixtures
//! through the onnx checker).

mod common;

use std::path::Path;

use pare::analysis::channels::{ChannelAnalysis, GroupKind, Role, analyze_channels};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::prune::rewrite::kept_atoms;
use pare::prune::validate::{input_specs, random_inputs};
use pare::prune::{PrunePlan, apply_plan};
use pare::runtime::{EngineKind, HostTensor, Runner, max_abs_diff};

const FIXTURES: &[&str] = &[
    "vit_tiny",
    "vit_dynbatch",
    "swin_tiny",
    "convnext_tiny",
    "mobilevit_tiny",
    "shufflenet_tiny",
    "crnn_bilstm",
];

fn load(name: &str) -> ModelProto {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.onnx"));
    pare::model::io::load_model(&p)
        .expect("fixture loads")
        .proto
}

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

fn run(m: &ModelProto, a: &Analysis, seed: u64) -> Vec<HostTensor> {
    run_on(EngineKind::Tract, m, a, seed)
}

fn run_on(engine: EngineKind, m: &ModelProto, a: &Analysis, seed: u64) -> Vec<HostTensor> {
    let (specs, _) = input_specs(a).expect("specs");
    let inputs = random_inputs(&specs, seed).expect("inputs");
    Runner::new(engine, m, &specs)
        .unwrap_or_else(|e| panic!("{engine} loads: {e}"))
        .run(&inputs)
        .unwrap_or_else(|e| panic!("{engine} runs: {e}"))
}

/// Float parameters: every float initializer's element count.
fn params(m: &ModelProto) -> usize {
    m.graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .filter(|t| pare::model::DataType(t.data_type()).is_float())
        .map(|t| t.dims.iter().product::<i64>().max(0) as usize)
        .sum()
}

fn prune(m: &ModelProto, ratio: f64) -> (Analysis, ChannelAnalysis, PrunePlan, ModelProto) {
    common::prune_at(m, ratio)
}

#[test]
fn every_fixture_prunes_a_third_of_its_parameters_and_runs_with_the_same_shapes() {
    for name in FIXTURES {
        let m = load(name);
        let (a, _, plan, pruned) = prune(&m, 0.5);
        let (before, after) = (params(&m), params(&pruned));
        let cut = 1.0 - after as f64 / before as f64;
        assert!(
            cut >= 0.30,
            "{name}: only {:.1}% fewer parameters ({before} → {after}); plan {:?}",
            cut * 100.0,
            plan.groups
                .iter()
                .map(|g| (g.group, g.kept(), g.total, g.locked.first()))
                .collect::<Vec<_>>()
        );
        let pa = Analysis::new(common::model(pruned.clone()), &InputPins::new())
            .expect("pruned analysis");
        let (x, y) = (run(&m, &a, 1), run(&pruned, &pa, 1));
        assert_eq!(x.len(), y.len(), "{name}");
        for (p, q) in x.iter().zip(&y) {
            assert_eq!(p.shape, q.shape, "{name}: output shape changed");
        }
    }
}

#[test]
fn exactness_keep_everything_reproduces_the_original() {
    for name in FIXTURES {
        let m = load(name);
        let a = analysis(m.clone());
        let ca = analyze_channels(&a);
        let same = apply_plan(&a, &ca, &PrunePlan::keep_all(&ca)).expect("rewrite");
        let (x, y) = (run(&m, &a, 3), run(&same, &a, 3));
        for (p, q) in x.iter().zip(&y) {
            let d = max_abs_diff(p, q).expect("same shape");
            assert!(d <= 1e-6, "{name}: keep-all differs by {d}");
        }
    }
}

/// Kills the units `plan` drops, prunes them, and checks the outputs did not move (tract).
fn assert_dead_units_removed_exactly(name: &str, m: &ModelProto, plan: &PrunePlan) {
    assert_dead_units_removed_exactly_on(EngineKind::Tract, name, m, plan);
}

fn assert_dead_units_removed_exactly_on(
    engine: EngineKind,
    name: &str,
    m: &ModelProto,
    plan: &PrunePlan,
) {
    let a = analysis(m.clone());
    let ca = analyze_channels(&a);
    assert!(plan.pruned_groups() > 0, "{name}: no prunable group");
    let keep = kept_atoms(&ca, plan);
    let dead: Vec<bool> = keep.iter().map(|k| !k).collect();
    let mut dead_model = m.clone();
    common::kill(&mut dead_model, &ca, &dead);
    let da = analysis(dead_model.clone());
    let dca = analyze_channels(&da);
    let pruned = apply_plan(&da, &dca, plan).expect("rewrite");
    let pa =
        Analysis::new(common::model(pruned.clone()), &InputPins::new()).expect("pruned analysis");
    assert!(params(&pruned) < params(m), "{name}: nothing removed");
    let (x, y) = (
        run_on(engine, &dead_model, &da, 4),
        run_on(engine, &pruned, &pa, 4),
    );
    for (p, q) in x.iter().zip(&y) {
        let d = max_abs_diff(p, q).expect("same shape");
        assert!(
            d <= 1e-4,
            "{name} ({engine}): pruning dead units changed outputs by {d}"
        );
    }
}

/// The dead-units plan of the exactness test: the last 3/8 of every prunable group.
fn dead_tail_plan(ca: &ChannelAnalysis) -> PrunePlan {
    let mut plan = PrunePlan::keep_all(ca);
    for gp in plan
        .groups
        .iter_mut()
        .filter(|g| g.locked.is_empty() && g.total >= 2)
    {
        let keep_n = gp.total - (gp.total * 3 / 8).max(1);
        gp.keep = (0..keep_n).collect();
    }
    plan
}

/// onnxruntime runs every pruned fixture with the original output shapes, and both exactness
/// checks hold there too.
#[test]
fn pruned_fixtures_are_exact_in_onnxruntime() {
    if !common::with_onnxruntime("pruned_fixtures_are_exact_in_onnxruntime") {
        return;
    }
    let ort = EngineKind::OnnxRuntime;
    for name in FIXTURES {
        let m = load(name);
        let (a, ca, _, pruned) = prune(&m, 0.5);
        let pa = analysis(pruned.clone());
        let (x, y) = (run_on(ort, &m, &a, 1), run_on(ort, &pruned, &pa, 1));
        for (p, q) in x.iter().zip(&y) {
            assert_eq!(
                p.shape, q.shape,
                "{name}: output shape changed in onnxruntime"
            );
        }
        let same = apply_plan(&a, &ca, &PrunePlan::keep_all(&ca)).expect("rewrite");
        let (x, y) = (run_on(ort, &m, &a, 3), run_on(ort, &same, &a, 3));
        for (p, q) in x.iter().zip(&y) {
            let d = max_abs_diff(p, q).expect("same shape");
            assert!(d <= 1e-6, "{name}: keep-all differs by {d} in onnxruntime");
        }
        assert_dead_units_removed_exactly_on(ort, name, &m, &dead_tail_plan(&ca));
    }
    common::ran_against_onnxruntime("pruned_fixtures_are_exact_in_onnxruntime");
}

#[test]
fn exactness_pruning_dead_units_changes_nothing() {
    for name in FIXTURES {
        let m = load(name);
        let ca = analyze_channels(&analysis(m.clone()));
        // Kill the last 3/8 of every prunable group's units (at least one: heads come in 2–4).
        assert_dead_units_removed_exactly(name, &m, &dead_tail_plan(&ca));
    }
}

fn kinds(ca: &ChannelAnalysis, kind: GroupKind) -> Vec<&pare::analysis::ChannelGroup> {
    ca.groups.iter().filter(|g| g.kind == kind).collect()
}

#[test]
fn vit_has_one_head_group_and_one_mlp_group_per_block() {
    let a = analysis(load("vit_tiny"));
    let ca = analyze_channels(&a);
    let heads = kinds(&ca, GroupKind::Heads);
    let mlps = kinds(&ca, GroupKind::Mlp);
    assert_eq!(heads.len(), 2, "{:#?}", ca.groups);
    assert_eq!(mlps.len(), 2);
    for h in &heads {
        assert!(h.prunable(), "{:?}", h.locks);
        assert_eq!((h.channels, h.unit_width), (4, 8), "4 heads of 8");
    }
    // The fused block's qkv and the split block's q, k, v all produce one head group.
    assert!(heads[0].producers.iter().any(|p| p.contains("attn/qkv")));
    for p in ["attn/q/", "attn/k/", "attn/v/"] {
        assert!(heads[1].producers.iter().any(|x| x.contains(p)), "{p}");
    }
    for g in &mlps {
        assert!(g.prunable() && g.channels == 64, "{:?}", g.locks);
    }
    // The residual stream stays locked, with a reason naming the LayerNorm.
    let stream = ca
        .groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("/patch/Conv")))
        .expect("residual stream");
    assert!(!stream.prunable());
    assert!(
        stream.locks.iter().any(|l| l
            .contains("LayerNormalization '/blocks/blocks.0/norm1/LayerNormalization'")
            && l.contains("residual stream")),
        "{:?}",
        stream.locks
    );
    // Every locked group says why, naming a node or a graph input/output.
    for g in ca.groups.iter().filter(|g| !g.prunable()) {
        assert!(
            g.locks.iter().all(|l| l.contains('\'')),
            "group {}: {:?}",
            g.id,
            g.locks
        );
    }
}

#[test]
fn pruning_heads_removes_whole_heads_and_rewrites_the_head_counts() {
    let m = load("vit_tiny");
    let (_, ca, plan, pruned) = prune(&m, 0.5);
    for g in kinds(&ca, GroupKind::Heads) {
        assert_eq!(plan.groups[g.id].kept(), 2, "half of 4 heads");
    }
    let pa = analysis(pruned);
    // The fused qkv reshape target [1, 17, 3, heads, 8] now holds 2 heads.
    let reshape = pa
        .graph()
        .node
        .iter()
        .find(|n| n.display_name() == "/blocks/blocks.0/attn/Reshape")
        .expect("qkv reshape");
    let target = pa
        .shapes
        .get(&reshape.input[1])
        .and_then(|i| i.int_values());
    assert_eq!(target, Some(vec![1, 17, 3, 2, 8]));
    // qkv keeps 3 × 2 heads × 8 columns, the output projection 2 × 8 rows.
    let dims = |n: &str| pa.shapes.static_shape(n).expect("weight shape");
    let qkv = &pa
        .graph()
        .node
        .iter()
        .find(|n| n.display_name() == "/blocks/blocks.0/attn/qkv/MatMul")
        .expect("qkv")
        .input[1];
    assert_eq!(dims(qkv), vec![32, 48]);
    assert_eq!(
        pa.shapes
            .static_shape("/blocks/blocks.0/attn/Softmax_output_0"),
        Some(vec![1, 2, 17, 17])
    );
}

/// With a dynamic batch, PyTorch builds `reshape(B, N, C)` from `x.shape`: C is the residual
/// width read at run time, which does not shrink with the heads, so the rewrite pins it.
#[test]
fn dynamic_batch_vit_pins_the_merged_head_width() {
    let m = load("vit_dynbatch");
    let (_, _, _, pruned) = prune(&m, 0.5);
    let mut pins = InputPins::new();
    pins.insert("x".to_string(), vec![3, 3, 16, 16]);
    let pa = Analysis::new(common::model(pruned.clone()), &pins).expect("pruned analysis");
    assert_eq!(
        pa.shapes
            .static_shape("/blocks/blocks.0/attn/Reshape_1_output_0"),
        Some(vec![3, 17, 16]),
        "2 heads of 8, batch 3"
    );
    let (specs, _) = input_specs(&pa).expect("specs");
    let x = random_inputs(&specs, 2).expect("inputs");
    let y = Runner::tract(&pruned, &specs)
        .expect("tract loads")
        .run(&x)
        .expect("tract runs at batch 3");
    assert_eq!(y[0].shape, vec![3, 10]);
}

#[test]
fn swin_relative_position_bias_follows_the_heads() {
    let m = load("swin_tiny");
    let a = analysis(m.clone());
    let ca = analyze_channels(&a);
    let heads = kinds(&ca, GroupKind::Heads);
    assert_eq!(heads.len(), 2);
    // The bias added to the scores is a per-head member of the head group.
    for h in &heads {
        let d = ca.detail(h.id).expect("detail");
        assert!(
            d.members
                .iter()
                .any(|m| m.role == Role::Elementwise && m.node.contains("attn/Add")),
            "{:#?}",
            d.members
        );
    }
    let (_, _, _, pruned) = prune(&m, 0.5);
    let pa = analysis(pruned);
    let scores = pa
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Softmax")
        .map(|n| pa.shapes.static_shape(&n.output[0]).expect("shape")[1])
        .collect::<Vec<_>>();
    assert_eq!(scores, vec![2, 2], "2 of 4 heads left in each block");
}

#[test]
fn convnext_mlp_width_is_prunable_through_channels_last() {
    let a = analysis(load("convnext_tiny"));
    let ca = analyze_channels(&a);
    let mlps = kinds(&ca, GroupKind::Mlp);
    assert_eq!(mlps.len(), 2);
    assert!(mlps.iter().all(|g| g.prunable() && g.channels == 128));
    let stream = ca
        .groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("/stem/Conv")))
        .expect("stream");
    assert!(
        stream
            .locks
            .iter()
            .any(|l| l.contains("LayerNormalization"))
    );
}

#[test]
fn lstm_hidden_size_is_a_group_sliced_per_gate_in_both_directions() {
    let m = load("crnn_bilstm");
    let a = analysis(m.clone());
    let ca = analyze_channels(&a);
    let rec = kinds(&ca, GroupKind::Recurrent);
    assert_eq!(rec.len(), 1);
    assert!(rec[0].prunable(), "{:?}", rec[0].locks);
    assert_eq!(rec[0].channels, 32);
    // The last conv is the LSTM's input size: a prunable group consumed by W.
    let conv = ca
        .groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("cnn.3/Conv")))
        .expect("conv group");
    assert!(conv.prunable(), "{:?}", conv.locks);
    let (_, _, _, pruned) = prune(&m, 0.5);
    let pa = analysis(pruned);
    let lstm = pa
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "LSTM")
        .expect("lstm");
    assert_eq!(lstm.attr_i("hidden_size"), Some(16));
    let dims = |k: usize| pa.shapes.static_shape(&lstm.input[k]).expect("shape");
    assert_eq!(
        dims(1),
        vec![2, 64, 16],
        "W: 2 directions × 4 gates × 16, input 16"
    );
    assert_eq!(dims(2), vec![2, 64, 16], "R");
    assert_eq!(dims(3), vec![2, 128], "B: 8 gate biases × 16");
}

#[test]
fn channel_shuffle_prunes_uniformly_per_group() {
    let m = load("shufflenet_tiny");
    let a = analysis(m.clone());
    let ca = analyze_channels(&a);
    assert!(
        ca.notes.iter().any(|n| n.contains("channel shuffle")),
        "{:?}",
        ca.notes
    );
    // The stem's group runs through both shuffles: drop the units of the stem's channels
    // 24..32, which the first shuffle pairs with the first branch's outputs 24..32.
    let stem = ca
        .groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains("/stem/")))
        .expect("stem group");
    assert!(stem.prunable(), "{:?}", stem.locks);
    let stem_atoms = &ca.layouts["/stem/stem.1/Relu_output_0"].atoms;
    let dropped: Vec<usize> = stem_atoms[24..32]
        .iter()
        .map(|&x| ca.atom_unit[x as usize])
        .collect();
    let mut plan = PrunePlan::keep_all(&ca);
    plan.groups[stem.id].keep = (0..stem.channels)
        .filter(|u| !dropped.contains(u))
        .collect();
    assert_dead_units_removed_exactly("shufflenet_tiny", &m, &plan);
    let pa = analysis(apply_plan(&a, &ca, &plan).expect("rewrite"));
    // The first shuffle keeps 2 groups of 24; channels 24..32 reach the second unit only
    // through its branch's input (shuffled to 48..64), so the second shuffle keeps 2 × 32.
    let shapes: Vec<Vec<i64>> = pa
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Reshape")
        .filter_map(|n| pa.shapes.static_shape(&n.output[0]))
        .filter(|s| s.len() == 5)
        .collect();
    assert_eq!(shapes, vec![vec![1, 2, 24, 8, 8], vec![1, 2, 32, 8, 8]]);
}

/// The ViT the bench builds at B/16 size, small: q, k and v come out of the fused projection
/// by Gather (not Split), and every block's heads and MLP width are groups.
#[test]
fn builder_vit_unbinds_by_gather_and_prunes_heads_exactly() {
    let m = pare::model::builder::zoo::vit(2, 9, 32, 4, 64, 0.2);
    let a = analysis(m.clone());
    let ca = analyze_channels(&a);
    assert_eq!(kinds(&ca, GroupKind::Heads).len(), 2, "{:#?}", ca.groups);
    assert_eq!(kinds(&ca, GroupKind::Mlp).len(), 2);
    let (_, _, plan, pruned) = prune(&m, 0.5);
    assert_eq!(plan.pruned_groups(), 4);
    assert!(params(&pruned) * 10 < params(&m) * 7);
    let mut plan = PrunePlan::keep_all(&ca);
    for g in ca.groups.iter().filter(|g| g.prunable()) {
        plan.groups[g.id].keep = (1..g.channels).collect();
    }
    assert_dead_units_removed_exactly("builder vit", &m, &plan);
}

/// GRU (three gates, one direction) between a graph input and a Linear head.
#[test]
fn gru_hidden_units_prune_exactly() {
    use pare::model::builder::{D, GraphBuilder, attr_i, attr_ints};
    let mut b = GraphBuilder::new("gru").with_seed(5);
    let x = b.input("x", &[D::N(6), D::N(1), D::N(8)]);
    let w = b.init_randn("W", &[1, 48, 8], 0.3);
    let r = b.init_randn("R", &[1, 48, 16], 0.3);
    let bias = b.init_randn("B", &[1, 96], 0.3);
    let outs = b.node(
        "GRU",
        &[&x, &w, &r, &bias],
        2,
        vec![attr_i("hidden_size", 16)],
    );
    let axes = b.const_i64(&[1]);
    let y = b.op("Squeeze", &[&outs[0], &axes], vec![]);
    let wo = b.init_randn("Wo", &[16, 4], 0.3);
    let y = b.op("MatMul", &[&y, &wo], vec![]);
    let y = b.op("Transpose", &[&y], vec![attr_ints("perm", &[1, 0, 2])]);
    b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(6), D::N(4)]);
    let m = b.model();
    let ca = analyze_channels(&analysis(m.clone()));
    let rec = kinds(&ca, GroupKind::Recurrent);
    assert_eq!(rec.len(), 1, "{:#?}", ca.groups);
    assert!(
        rec[0].prunable() && rec[0].channels == 16,
        "{:?}",
        rec[0].locks
    );
    let mut plan = PrunePlan::keep_all(&ca);
    plan.groups[rec[0].id].keep = vec![0, 2, 3, 5, 8, 9, 13, 15];
    assert_dead_units_removed_exactly("gru", &m, &plan);
}
