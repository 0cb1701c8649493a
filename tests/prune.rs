//! Channel groups and structured pruning on fixtures reproducing the seed cases. Every pruned
//! model must load and run in tract with the original output shapes; the exactness tests prove
//! the index bookkeeping through residuals, concats and reshapes.

mod common;

use pare::analysis::channels::{ChannelAnalysis, Role, analyze_channels};
use pare::jobs::NoProgress;
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::prune::rewrite::kept_atoms;
use pare::prune::validate::{input_specs, random_inputs};
use pare::prune::{PruneOptions, PrunePlan, apply_plan, make_plan};
use pare::runtime::{HostTensor, Runner, max_abs_diff};
use pare::tags::Tags;

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

fn run(m: &ModelProto, a: &Analysis, seed: u64) -> Vec<HostTensor> {
    let (specs, _) = input_specs(a).expect("specs");
    let inputs = random_inputs(&specs, seed).expect("inputs");
    Runner::tract(m, &specs)
        .expect("tract loads")
        .run(&inputs)
        .expect("tract runs")
}

fn group_by_producer<'a>(
    ca: &'a ChannelAnalysis,
    needle: &str,
) -> &'a pare::analysis::ChannelGroup {
    ca.groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p.contains(needle)))
        .unwrap_or_else(|| panic!("no group produced by {needle}"))
}

fn prune_default(m: ModelProto, ratio: f64) -> (Analysis, ModelProto, PrunePlan, ChannelAnalysis) {
    let (a, ca, plan, pruned) = common::prune_at(&m, ratio);
    (a, pruned, plan, ca)
}

#[test]
fn every_fixture_prunes_and_runs_with_the_same_output_shapes() {
    for (name, m) in common::all_prune_fixtures() {
        let (a, pruned, plan, _) = prune_default(m.clone(), 0.5);
        assert!(plan.pruned_groups() > 0, "{name}: nothing was pruned");
        let before = run(&m, &a, 1);
        let pa = Analysis::new(common::model(pruned.clone()), &InputPins::new())
            .expect("pruned analysis");
        let after = run(&pruned, &pa, 1);
        for (x, y) in before.iter().zip(&after) {
            assert_eq!(x.shape, y.shape, "{name}: output shape changed");
            assert!(
                y.to_f64().iter().all(|v| v.is_finite()),
                "{name}: non-finite output"
            );
        }
        let macs = |a: &Analysis| pare::model::info::model_info(a).macs;
        assert!(macs(&pa) < macs(&a), "{name}: MACs did not drop");
    }
}

#[test]
fn strided_residual_shortcut_prunes_with_the_main_branch() {
    // seed P1/P4: the 1x1 strided shortcut and the block's last conv meet at an Add.
    let a = analysis(common::resnet_like());
    let ca = analyze_channels(&a);
    let g = a.graph();
    let add2 = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Add")
        .nth(1)
        .expect("second add");
    let producers: Vec<String> = add2
        .input
        .iter()
        .map(|i| g.node[a.index.producer[i]].display_name())
        .collect();
    let grp = group_by_producer(&ca, &producers[0]);
    assert!(
        grp.producers.contains(&producers[1]),
        "shortcut conv not in the same group: {grp:?}"
    );
    assert_eq!(grp.channels, 16);
    // The first block's Add ties the stem conv with conv2 of block 1 too.
    let add1 = g.node.iter().find(|n| n.op_type() == "Add").expect("add");
    let p1: Vec<String> = add1
        .input
        .iter()
        .map(|i| g.node[a.index.producer[i]].display_name())
        .collect();
    let g1 = group_by_producer(&ca, &p1[0]);
    assert!(
        g1.producers
            .iter()
            .any(|p| p1[1].contains(p) || p.contains(&p1[1]))
            || g1.producers.len() >= 2
    );
    assert!(g1.prunable());
}

#[test]
fn classifier_output_is_locked() {
    // seed P3: a Gemm feeding the graph output keeps its class count.
    let a = analysis(common::resnet_like());
    let ca = analyze_channels(&a);
    let fc = group_by_producer(&ca, "/fc");
    assert!(!fc.prunable());
    assert!(
        fc.locks.iter().any(|l| l.contains("graph output")),
        "{:?}",
        fc.locks
    );
    let (_, pruned, _, _) = prune_default(common::resnet_like(), 0.5);
    let g = pruned.graph.as_ref().expect("graph");
    let w = g
        .initializer
        .iter()
        .find(|t| t.name().starts_with("/fc") && t.name().ends_with("weight"))
        .expect("fc weight");
    assert_eq!(w.dims[0], 10, "class count changed");
    assert!(
        w.dims[1] < 16,
        "fc input features should follow the pruned convs"
    );
}

#[test]
fn aspp_branches_share_the_input_and_map_concat_ranges() {
    // seed P5: all branches read the same x; Concat maps output ranges back to each branch.
    let a = analysis(common::aspp());
    let ca = analyze_channels(&a);
    let d = ca
        .detail(group_by_producer(&ca, "/conv_").id)
        .expect("detail");
    let _ = d;
    let cat = a
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Concat")
        .expect("concat");
    let layout = &ca.layouts[&cat.output[0]];
    assert_eq!(layout.atoms.len(), 64);
    let groups: Vec<usize> = layout
        .atoms
        .iter()
        .map(|&x| ca.atom_group[x as usize])
        .collect();
    // Four branches, four distinct groups, in concat order of 16 each.
    for k in 0..4 {
        assert!(
            groups[k * 16..(k + 1) * 16]
                .iter()
                .all(|&g| g == groups[k * 16])
        );
    }
    let distinct: std::collections::HashSet<_> = groups.iter().collect();
    assert_eq!(distinct.len(), 4);
    // The input x (32 channels) is read by every branch conv as a consumer member.
    let x = &cat.input[0];
    let _ = x;
    let x_group = ca
        .groups
        .iter()
        .find(|g| g.channels == 32 && g.prunable())
        .expect("x group");
    let consumers = x_group
        .members
        .iter()
        .filter(|&&m| ca.members[m].role == Role::ConsumerWeight)
        .count();
    assert_eq!(
        consumers, 4,
        "all four branch convs must shrink their inputs together"
    );
    let (_, pruned, _, _) = prune_default(common::aspp(), 0.5);
    let pa = Analysis::new(common::model(pruned), &InputPins::new()).expect("pruned");
    let cat = pa
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Concat")
        .expect("concat");
    assert_eq!(
        pa.shapes.static_shape(&cat.output[0]).expect("shape")[1],
        32
    );
}

#[test]
fn stereo_3d_network_prunes_2d_and_3d_convs() {
    // seed P6/P10: two inputs, Conv3d + ConvTranspose3d; the pruned model runs.
    let a = analysis(common::stereo3d());
    let ca = analyze_channels(&a);
    let input_groups = ca
        .groups
        .iter()
        .filter(|g| g.producers.iter().any(|p| p == "<graph input>"))
        .count();
    assert_eq!(input_groups, 2);
    let c3 = ca.groups.iter().filter(|g| g.prunable()).count();
    assert!(
        c3 >= 4,
        "expected 2-D and 3-D groups to be prunable, got {c3}"
    );
    let (_, pruned, _, _) = prune_default(common::stereo3d(), 0.5);
    let g = pruned.graph.as_ref().expect("graph");
    let deconv = g
        .initializer
        .iter()
        .find(|t| t.name() == "deconv.weight")
        .expect("deconv");
    assert_eq!(deconv.dims.len(), 5);
    assert_eq!(
        &deconv.dims[..2],
        &[8, 8],
        "ConvTranspose3d in and out channels follow their groups"
    );
}

#[test]
fn same_padding_depthwise_and_squeeze_excitation() {
    // seed P14: Pad in front of a conv is channel-transparent; the SE gate joins the dw group.
    let a = analysis(common::same_pad_dw_se());
    let ca = analyze_channels(&a);
    let g = a.graph();
    let dw = g
        .node
        .iter()
        .find(|n| n.attr_i("group") == Some(16))
        .expect("dw");
    let grp = ca
        .groups
        .iter()
        .find(|x| {
            x.members
                .iter()
                .any(|&m| ca.members[m].node == dw.display_name())
        })
        .expect("dw group");
    assert!(grp.prunable(), "{:?}", grp.locks);
    // Stem conv, depthwise conv and the SE expand conv are all one group.
    assert!(grp.producers.len() >= 2, "{:?}", grp.producers);
    assert!(grp.counts.iter().any(|&c| matches!(&ca.counts[c].place, pare::analysis::channels::CountPlace::Attribute { attribute, .. } if attribute == "group")));
    let (_, pruned, _, _) = prune_default(common::same_pad_dw_se(), 0.5);
    let n = pruned
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .find(|n| n.name() == dw.name())
        .expect("dw")
        .clone();
    assert_eq!(
        n.attr_i("group"),
        Some(8),
        "depthwise group attribute must follow the kept channels"
    );
}

#[test]
fn unknown_custom_op_locks_its_groups() {
    // seed P12: never assumed channel-preserving.
    let a = analysis(common::custom_op());
    let ca = analyze_channels(&a);
    let before = group_by_producer(&ca, "/conv_1");
    assert!(!before.prunable());
    assert!(
        before
            .locks
            .iter()
            .any(|l| l.contains("MemoryEfficientSwish")),
        "{:?}",
        before.locks
    );
    let after = ca.groups.iter().find(|g| g.prunable());
    assert!(
        after.is_some(),
        "the conv between the custom op and the output should stay prunable"
    );
}

#[test]
fn flatten_gemm_and_literal_view_are_rewritten() {
    // seed P7: the Reshape constants [1,16,-1] and [1,16,4,4] hold the channel count.
    let (a, pruned, _, ca) = prune_default(common::flatten_view(), 0.5);
    assert!(
        ca.counts.len() >= 2,
        "both view shapes should be tracked: {:?}",
        ca.counts
    );
    let pa = Analysis::new(common::model(pruned.clone()), &InputPins::new()).expect("pruned");
    let g = pruned.graph.as_ref().expect("graph");
    let shape = g
        .initializer
        .iter()
        .find(|t| t.name() == "view_shape")
        .expect("view shape");
    assert_eq!(
        pare::model::tensor::to_i64(shape).expect("ints"),
        vec![1, 8, -1]
    );
    let gemm = g.node.iter().find(|n| n.op_type() == "Gemm").expect("gemm");
    let w = g
        .initializer
        .iter()
        .find(|t| t.name() == gemm.input[1])
        .expect("w");
    assert_eq!(
        w.dims[1],
        8 * 16,
        "flatten features follow 8 kept channels x 16 positions"
    );
    let out = run(&pruned, &pa, 2);
    assert_eq!(out[0].shape, vec![1, 3]);
    let _ = a;
}

#[test]
fn round_to_applies_per_group() {
    // seed P16: every group keeps a multiple of round_to.
    for round_to in [4usize, 8] {
        let a = analysis(common::aspp());
        let ca = analyze_channels(&a);
        let opts = PruneOptions {
            ratio: 0.3,
            round_to,
            ..Default::default()
        };
        let plan = make_plan(&a, &ca, &opts, &NoProgress).expect("plan");
        for g in plan.groups.iter().filter(|g| g.locked.is_empty()) {
            assert_eq!(
                g.kept() % round_to,
                0,
                "group {} keeps {}",
                g.group,
                g.kept()
            );
        }
        // And every member of a group keeps exactly that many entries.
        let keep = kept_atoms(&ca, &plan);
        for g in &ca.groups {
            for &mi in &g.members {
                let m = &ca.members[mi];
                let kept = m
                    .atoms
                    .iter()
                    .filter(|&&x| ca.atom_group[x as usize] == g.id && keep[x as usize])
                    .count();
                let units: std::collections::HashSet<usize> = m
                    .atoms
                    .iter()
                    .filter(|&&x| ca.atom_group[x as usize] == g.id && keep[x as usize])
                    .map(|&x| ca.atom_unit[x as usize])
                    .collect();
                assert!(kept >= units.len());
                assert_eq!(
                    units.len(),
                    plan.groups[g.id].kept(),
                    "member {} of group {}",
                    m.tensor,
                    g.id
                );
            }
        }
    }
}

#[test]
fn skip_and_lock_tags_differ() {
    // seed P8: skip keeps a layer's outputs but lets its inputs follow; lock freezes both.
    let a = analysis(common::flatten_view());
    let ca = analyze_channels(&a);
    let g = a.graph();
    let convs: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .map(|n| n.name())
        .collect();
    let second = convs[1].to_string();
    let first_group = group_by_producer(&ca, convs[0]).id;
    let second_group = group_by_producer(&ca, &second).id;
    let plan_with = |tags: Tags| {
        let opts = PruneOptions {
            ratio: 0.5,
            tags,
            ..Default::default()
        };
        make_plan(&a, &ca, &opts, &NoProgress).expect("plan")
    };
    let skip = plan_with(Tags {
        skip: vec![second.clone()],
        ..Default::default()
    });
    assert!(
        !skip.groups[second_group].locked.is_empty(),
        "skip must protect the layer's outputs"
    );
    assert!(
        skip.groups[first_group].kept() < skip.groups[first_group].total,
        "skip must let inputs shrink"
    );
    let lock = plan_with(Tags {
        lock: vec![second.clone()],
        ..Default::default()
    });
    assert!(!lock.groups[second_group].locked.is_empty());
    assert!(
        !lock.groups[first_group].locked.is_empty(),
        "lock must freeze the layer's inputs too"
    );
    let bad = plan_with_err(
        &a,
        &ca,
        Tags {
            skip: vec!["/conv_99/Conv".into()],
            ..Default::default()
        },
    );
    assert!(
        bad.contains("/conv_99/Conv") && bad.contains("closest"),
        "{bad}"
    );
}

fn plan_with_err(a: &Analysis, ca: &ChannelAnalysis, tags: Tags) -> String {
    let opts = PruneOptions {
        tags,
        ..Default::default()
    };
    make_plan(a, ca, &opts, &NoProgress)
        .expect_err("unknown tag")
        .to_string()
}

#[test]
fn demo_model_groups_are_what_it_promises() {
    // The demo's If is data-dependent, which tract refuses: check the analysis itself.
    let a = analysis(pare::demo::build_demo());
    let ca = analyze_channels(&a);
    let cls = group_by_producer(&ca, "/classifier");
    assert!(!cls.prunable());
    let shortcut = group_by_producer(&ca, "/layer2/0/downsample");
    assert!(shortcut.prunable(), "{:?}", shortcut.locks);
    assert!(
        shortcut.producers.len() >= 2,
        "shortcut must share the block's group: {:?}",
        shortcut.producers
    );
    let (_, pruned, plan, _) = prune_default(pare::demo::build_demo(), 0.5);
    assert!(plan.pruned_groups() >= 3);
    let pa = Analysis::new(common::model(pruned), &InputPins::new()).expect("pruned analysis");
    assert_eq!(pa.shapes.static_shape("logits"), Some(vec![1, 5, 64, 64]));
    assert_eq!(pa.shapes.static_shape("confidence"), Some(vec![1, 16, 16]));
}

#[test]
fn exactness_keep_everything_reproduces_the_original() {
    for (name, m) in common::all_prune_fixtures() {
        let a = analysis(m.clone());
        let ca = analyze_channels(&a);
        let plan = PrunePlan::keep_all(&ca);
        let same = apply_plan(&a, &ca, &plan).expect("rewrite");
        let (x, y) = (run(&m, &a, 3), run(&same, &a, 3));
        for (p, q) in x.iter().zip(&y) {
            let d = max_abs_diff(p, q).expect("same shape");
            assert!(d <= 1e-6, "{name}: keep-all differs by {d}");
        }
    }
}

#[test]
fn exactness_pruning_dead_channels_changes_nothing() {
    for (name, m) in common::all_prune_fixtures() {
        let a = analysis(m.clone());
        let ca = analyze_channels(&a);
        // Kill the last 3/8 of every prunable group's units.
        let mut plan = PrunePlan::keep_all(&ca);
        for gp in plan
            .groups
            .iter_mut()
            .filter(|g| g.locked.is_empty() && g.total >= 8)
        {
            let keep_n = gp.total - gp.total * 3 / 8;
            gp.keep = (0..keep_n).collect();
        }
        assert!(plan.pruned_groups() > 0, "{name}: no prunable group");
        let keep = kept_atoms(&ca, &plan);
        let dead: Vec<bool> = keep.iter().map(|k| !k).collect();
        let mut dead_model = m.clone();
        common::kill(&mut dead_model, &ca, &dead);
        let da = analysis(dead_model.clone());
        let dca = analyze_channels(&da);
        let pruned = apply_plan(&da, &dca, &plan).expect("rewrite");
        let pa = Analysis::new(common::model(pruned.clone()), &InputPins::new())
            .expect("pruned analysis");
        let (x, y) = (run(&dead_model, &da, 4), run(&pruned, &pa, 4));
        for (p, q) in x.iter().zip(&y) {
            let d = max_abs_diff(p, q).expect("same shape");
            assert!(
                d <= 1e-4,
                "{name}: pruning dead channels changed outputs by {d}"
            );
        }
    }
}

/// NaN weights (broken exports, diverged training) must not panic the importance ranking: the
/// sort used to get an inconsistent order from `partial_cmp` and abort `prune --dry-run`.
#[test]
fn nan_weights_do_not_panic_the_importance_ranking() {
    use pare::model::builder::{D, GraphBuilder};
    // Wide enough (two groups of 64) for the sort to see the inconsistent order.
    let mut b = GraphBuilder::new("nan_weights");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let y = b.conv("x", 3, 64, 3, 1, 1, 1);
    let y = b.relu(&y);
    let y = b.conv(&y, 64, 64, 3, 1, 1, 1);
    let y = b.relu(&y);
    let y = b.conv(&y, 64, 8, 1, 1, 0, 1);
    b.node_named("/out/Identity", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
    let mut m = b.model();
    let g = m.graph.as_mut().expect("graph");
    for t in g
        .initializer
        .iter_mut()
        .filter(|t| t.dims.len() == 4 && t.dims[0] == 64)
    {
        let mut v = pare::model::tensor::to_f32(t).expect("floats");
        let per = v.len() / 64;
        for k in (0..64).filter(|k| k % 5 == 0) {
            v[k * per] = f32::NAN;
        }
        *t = pare::model::tensor::f32_tensor(t.name(), &t.dims.clone(), &v);
    }
    for global in [false, true] {
        let a = analysis(m.clone());
        let ca = analyze_channels(&a);
        let opts = PruneOptions {
            ratio: 0.5,
            global,
            ..Default::default()
        };
        let plan = make_plan(&a, &ca, &opts, &NoProgress).expect("plan with NaN weights");
        let pruned = apply_plan(&a, &ca, &plan).expect("rewrite");
        let params =
            |m: &ModelProto| pare::model::stats::graph_params(m.graph.as_ref().expect("graph"));
        assert!(
            params(&pruned) < params(&a.model.proto),
            "global={global}: nothing pruned"
        );
    }
}

/// Old exports (IR < 4) list every weight as a graph input too. Pruning must shrink those
/// input declarations with the initializers: onnxruntime refuses the file otherwise ("Shape of
/// initializer ... does not match"), although tract runs it.
#[test]
fn weights_listed_as_graph_inputs_take_the_pruned_shape() {
    use pare::extract::make_value_info;
    use pare::model::DataType;
    use pare::model::shape::Dim;
    let mut m = common::resnet_like();
    let g = m.graph.as_mut().expect("graph");
    let listed: Vec<_> = g
        .initializer
        .iter()
        .map(|t| {
            let dims: Vec<Dim> = t.dims.iter().map(|&d| Dim::Known(d)).collect();
            make_value_info(t.name(), DataType(t.data_type()), Some(&dims))
        })
        .collect();
    g.input.extend(listed);
    let (_, pruned, plan, _) = prune_default(m, 0.5);
    assert!(plan.pruned_groups() > 0);
    let pg = pruned.graph.expect("graph");
    let mut checked = 0;
    for t in &pg.initializer {
        let Some(vi) = pg.input.iter().find(|i| i.name() == t.name()) else {
            continue;
        };
        let declared = pare::model::shape::declared_info(vi).shape;
        let want: Vec<Dim> = t.dims.iter().map(|&d| Dim::Known(d)).collect();
        assert_eq!(declared.as_deref(), Some(want.as_slice()), "{}", t.name());
        checked += 1;
    }
    assert!(checked > 4, "only {checked} weights listed as inputs");
}
