//! `pare fix`: every fix rewrites what it should and is proven equal by running the original
//! and the fixed model on seeded inputs; a diverging result is never written.

mod lint_support;

use lint_support::*;
use pare::jobs::{JobEvent, NoProgress, RecordProgress};
use pare::lint::fix::{FixKind, FixOptions, FixOutcome, VerifyStatus, fix_model, write_fixed};
use pare::model::builder::{D, attr_i, attr_ints, attr_s};
use pare::model::proto::ModelProto;

fn fix(m: &ModelProto, only: &[&str], pins: &[(&str, &[i64])]) -> FixOutcome {
    let a = analysis(m, pins);
    let opts = FixOptions {
        only: only.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    fix_model(&a, &opts, &NoProgress).expect("fix")
}

fn ops(o: &FixOutcome) -> Vec<String> {
    o.model
        .proto
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect()
}

fn assert_verified(o: &FixOutcome) {
    assert!(o.changed(), "nothing changed");
    assert_eq!(
        o.verification.status,
        VerifyStatus::Passed,
        "{:#?}",
        o.verification
    );
    assert!(
        o.verification.max_abs_diff.is_some_and(|d| d <= 1e-5),
        "{:#?}",
        o.verification
    );
    assert!(!o.verification.outputs.is_empty());
}

#[test]
fn fold_if_inlines_the_taken_branch_and_keeps_the_output_name() {
    for dynamic in [false, true] {
        let o = fix(&squeeze_if(dynamic), &["fold-if"], &[]);
        assert_verified(&o);
        let ops = ops(&o);
        assert!(!ops.contains(&"If".to_string()), "{ops:?}");
        assert!(ops.contains(&"Squeeze".to_string()));
        // The Sigmoid still reads the If's output name.
        let g = o.model.proto.graph.as_ref().expect("graph");
        assert!(
            g.node
                .iter()
                .any(|n| n.op_type() == "Squeeze" && n.output == vec!["if_out".to_string()])
        );
        // tract refuses the original (branches of different rank), so it ran in pieces.
        assert!(
            o.verification.reference.contains("pieces"),
            "{}",
            o.verification.reference
        );
        assert_eq!(o.verification.fixed, "tract");
        assert!(
            o.pinned_inputs.is_empty(),
            "the condition holds for every shape"
        );
    }
}

#[test]
fn fold_if_by_rule_id_and_pins_only_when_needed() {
    let o = fix(&squeeze_if(true), &["L7"], &[("x", &[2, 3, 12, 20])]);
    assert_verified(&o);
    assert_eq!(o.fixes_applied, vec!["fold-if".to_string()]);
    assert!(o.pinned_inputs.is_empty());
    assert!(
        o.verification.inputs[0].contains("2x3x12x20"),
        "{:?}",
        o.verification.inputs
    );
}

#[test]
fn run_time_if_is_left_alone() {
    let o = fix(&data_if(false), &["fold-if"], &[]);
    assert!(!o.changed());
    assert_eq!(o.verification.status, VerifyStatus::NotRun);
}

#[test]
fn fold_shapes_under_pins_declares_the_pinned_shape() {
    let o = fix(
        &shape_resize(true),
        &["fold-shapes"],
        &[("x", &[1, 3, 6, 10])],
    );
    assert_verified(&o);
    let ops = ops(&o);
    assert!(
        !ops.iter().any(|o| o == "Shape" || o == "Concat"),
        "{ops:?}"
    );
    assert_eq!(o.pinned_inputs, vec![("x".to_string(), vec![1, 3, 6, 10])]);
    let decl = &o.model.proto.graph.as_ref().expect("graph").input[0];
    let a = analysis(&o.model.proto, &[]);
    assert_eq!(a.shapes.static_shape(decl.name()), Some(vec![1, 3, 6, 10]));
    // The folded sizes are the pinned size times two.
    assert_eq!(a.shapes.static_shape("y"), Some(vec![1, 2, 12, 20]));
    // Without pins nothing is known, so nothing folds and nothing is pinned.
    let o = fix(&shape_resize(true), &["fold-shapes"], &[]);
    assert!(!o.changed());
}

#[test]
fn const_inputs_materialise_axes_and_write_squeeze_axes() {
    let m = model(13, &[D::N(1), D::N(1), D::N(4)], |b| {
        let c = constant_i64(b, "/axes", &[1]);
        let axes = b.op("Identity", &[&c], vec![]);
        let s = b.op("Squeeze", &["x", &axes], vec![]);
        let u = b.op("Unsqueeze", &[&s, &axes], vec![]);
        b.op("Squeeze", &[&u], vec![])
    });
    let o = fix(&m, &["const-inputs"], &[]);
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    for n in g
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "Squeeze" | "Unsqueeze"))
    {
        assert_eq!(n.input.len(), 2, "{n:?}");
        assert!(
            inits.contains(&n.input[1].as_str()),
            "{} axes not an initializer",
            n.display_name()
        );
    }
    assert!(
        !ops(&o).contains(&"Identity".to_string())
            || g.node.iter().filter(|n| n.op_type() == "Identity").count() == 1
    );
    // And the lint agrees.
    for r in ["L8", "L9", "L10"] {
        assert!(
            findings(&o.model.proto, "tensorrt-10", &[], r).is_empty(),
            "{r}"
        );
    }
}

#[test]
fn clip_bounds_become_initializers() {
    let o = fix(&clamp(), &["L11"], &[]);
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    for n in g.node.iter().filter(|n| n.op_type() == "Clip") {
        assert!(
            n.input.iter().skip(1).all(|i| inits.contains(&i.as_str())),
            "{n:?}"
        );
    }
    assert!(findings(&o.model.proto, "tensorrt-7.1", &[], "L11").is_empty());
}

#[test]
fn convtranspose_q3_becomes_symmetric_deconv_plus_slice() {
    let o = fix(&deconv3d_q3(), &["convtranspose-pads"], &[]);
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    let ct = g
        .node
        .iter()
        .find(|n| n.op_type() == "ConvTranspose")
        .expect("deconv");
    assert_eq!(ct.attr_ints("pads"), Some(&[0, 0, 0, 0, 0, 0][..]));
    assert!(ct.attr("output_padding").is_none());
    assert!(ops(&o).contains(&"Slice".to_string()));
    let a = analysis(&o.model.proto, &[]);
    assert_eq!(a.shapes.static_shape("y"), Some(vec![1, 2, 10, 10, 10]));
    assert!(findings(&o.model.proto, "tensorrt-7.1", &[], "L19").is_empty());
}

#[test]
fn convtranspose_output_padding_past_the_computed_area_pads_then_adds_bias() {
    // pads 0, output_padding 1: the last row is bias only.
    let m = deconv(
        2,
        vec![
            attr_ints("pads", &[0, 0, 0, 0]),
            attr_ints("output_padding", &[1, 1]),
        ],
        true,
        3,
        2,
    );
    let o = fix(&m, &["convtranspose-pads"], &[]);
    assert_verified(&o);
    let ops = ops(&o);
    assert!(
        ops.contains(&"Pad".to_string()) && ops.contains(&"Add".to_string()),
        "{ops:?}"
    );
}

#[test]
fn convtranspose_auto_pad_and_explicit_asymmetric_pads() {
    for attrs in [
        vec![attr_s("auto_pad", "SAME_UPPER")],
        vec![attr_s("auto_pad", "SAME_LOWER")],
        vec![attr_ints("pads", &[2, 0, 0, 1])],
    ] {
        let desc = format!("{attrs:?}");
        let o = fix(&deconv(2, attrs, true, 2, 3), &["convtranspose-pads"], &[]);
        assert_verified(&o);
        let ct = o
            .model
            .proto
            .graph
            .as_ref()
            .expect("graph")
            .node
            .iter()
            .find(|n| n.op_type() == "ConvTranspose")
            .cloned()
            .expect("ct");
        assert!(
            ct.attr("output_shape").is_none() && ct.attr("auto_pad").is_none(),
            "{desc}"
        );
        let p = ct.attr_ints("pads").expect("pads");
        assert_eq!(p[..2], p[2..], "symmetric for {desc}");
    }
}

#[test]
fn convtranspose_output_shape_is_not_rewritten() {
    // output_shape 13 > 11 computed: onnxruntime rejects it, tract pads; pare does not guess.
    assert!(
        !fix(
            &deconv(2, vec![attr_ints("output_shape", &[13, 13])], true, 2, 3),
            &["convtranspose-pads"],
            &[]
        )
        .changed()
    );
    // tract and onnxruntime resolve output_shape differently: no rewrite can be proven.
    assert!(
        !fix(
            &deconv(2, vec![attr_ints("output_shape", &[9, 9])], true, 2, 3),
            &["convtranspose-pads"],
            &[]
        )
        .changed()
    );
    let same_op = vec![
        attr_s("auto_pad", "SAME_LOWER"),
        attr_ints("output_padding", &[1, 1]),
    ];
    assert!(
        !fix(
            &deconv(2, same_op, true, 2, 3),
            &["convtranspose-pads"],
            &[]
        )
        .changed()
    );
}

#[test]
fn resize_scales_become_sizes_only_when_exact() {
    let o = fix(
        &resize_scales(&[1.0, 1.0, 2.0, 2.0], 5),
        &["resize-sizes"],
        &[],
    );
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    let r = g
        .node
        .iter()
        .find(|n| n.op_type() == "Resize")
        .expect("resize");
    assert_eq!(r.input.len(), 4);
    assert!(r.input[2].is_empty());
    let sizes = g
        .initializer
        .iter()
        .find(|t| t.name() == r.input[3])
        .expect("sizes");
    assert_eq!(
        pare::model::tensor::to_i64(sizes).expect("ints"),
        vec![1, 2, 10, 10]
    );
    // 5 * 1.5 is not an integer: left alone.
    assert!(
        !fix(
            &resize_scales(&[1.0, 1.0, 1.5, 1.5], 5),
            &["resize-sizes"],
            &[]
        )
        .changed()
    );
}

#[test]
fn gather_indices_constant_and_run_time() {
    let o = fix(&gather_const_negative(), &["gather-indices"], &[]);
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    let ge = g
        .node
        .iter()
        .find(|n| n.op_type() == "GatherElements")
        .expect("ge");
    let idx = g
        .initializer
        .iter()
        .find(|t| t.name() == ge.input[1])
        .expect("indices");
    assert!(
        pare::model::tensor::to_i64(idx)
            .expect("ints")
            .iter()
            .all(|&v| (0..6).contains(&v))
    );
    // Run-time indices that really are negative (ArgMax - 5): normalised with Less/Add/Where.
    let o = fix(&gather_runtime_negative(), &["L12"], &[]);
    assert_verified(&o);
    assert!(ops(&o).contains(&"Where".to_string()), "{:?}", ops(&o));
    assert!(findings(&o.model.proto, "tensorrt-8.0", &[], "L12").is_empty());
    // Indices that cannot be negative are not touched.
    assert!(!fix(&gather_argmax(), &["L12"], &[]).changed());
}

#[test]
fn hygiene_fixes() {
    let mut m = clean(17);
    let conv_out = m.graph.as_ref().expect("graph").node[0].output[0].clone();
    {
        let g = m.graph.as_mut().expect("graph");
        g.value_info
            .push(vi(&conv_out, &[D::N(1), D::N(9), D::N(8), D::N(8)]));
        g.initializer.push(pare::model::tensor::f32_tensor(
            "leftover",
            &[2],
            &[1.0, 2.0],
        ));
        g.node[1].name = None;
        let dup = g.node[0].name.clone();
        g.node[2].name = dup;
    }
    let o = fix(&m, &["value-info", "drop-unused", "names"], &[]);
    assert_verified(&o);
    let g = o.model.proto.graph.as_ref().expect("graph");
    assert!(g.value_info.is_empty());
    assert!(g.initializer.iter().all(|t| t.name() != "leftover"));
    let names: std::collections::HashSet<&str> = g.node.iter().map(|n| n.name()).collect();
    assert_eq!(names.len(), g.node.len());
    assert!(g.node.iter().all(|n| !n.name().is_empty()));
    for r in ["G5", "G7", "G8", "G9"] {
        assert!(
            findings(&o.model.proto, "tensorrt-10", &[], r).is_empty(),
            "{r}"
        );
    }
}

#[test]
fn target_selects_the_fixes_lint_reports() {
    let a = analysis(&deconv3d_q3(), &[]);
    let opts = FixOptions {
        target: Some(t("tensorrt-8.6")),
        ..Default::default()
    };
    let o = fix_model(&a, &opts, &NoProgress).expect("fix");
    assert!(
        !o.fixes_applied.contains(&"convtranspose-pads".to_string()),
        "8.6 builds it: {:?}",
        o.fixes_applied
    );
    let opts = FixOptions {
        target: Some(t("tensorrt-7.1")),
        ..Default::default()
    };
    let o = fix_model(&a, &opts, &NoProgress).expect("fix");
    assert!(o.fixes_applied.contains(&"convtranspose-pads".to_string()));
}

#[test]
fn rule_without_fix_is_a_usage_error() {
    let a = analysis(&clean(17), &[]);
    let opts = FixOptions {
        only: vec!["L13".into()],
        ..Default::default()
    };
    let e = fix_model(&a, &opts, &NoProgress).expect_err("no fix for L13");
    assert!(e.to_string().contains("no automatic fix"), "{e}");
    let opts = FixOptions {
        only: vec!["bogus".into()],
        ..Default::default()
    };
    assert!(fix_model(&a, &opts, &NoProgress).is_err());
    assert_eq!(FixKind::parse("FOLD-IF"), Some(FixKind::FoldIf));
}

#[test]
fn divergence_is_reported_per_fix_and_nothing_is_written() {
    // A negative tolerance makes every comparison fail: the verification must say which fix
    // diverged first and write_fixed must refuse.
    let a = analysis(&clamp(), &[]);
    let opts = FixOptions {
        only: vec!["clip-bounds".into(), "names".into()],
        tolerance: -1.0,
        ..Default::default()
    };
    let mut o = fix_model(&a, &opts, &NoProgress).expect("fix");
    assert_eq!(o.verification.status, VerifyStatus::Failed);
    assert_eq!(o.verification.diverged_fix.as_deref(), Some("clip-bounds"));
    let dir = tempdir();
    let inp = write(dir.path(), "in.onnx", &clamp());
    let out = dir.path().join("out.onnx");
    let e = write_fixed(&mut o, &inp, &out, true).expect_err("must not write");
    assert!(e.to_string().contains("clip-bounds"), "{e}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no temporary file left"
    );
}

#[test]
fn write_refuses_the_input_and_writes_atomically() {
    let dir = tempdir();
    let inp = write(dir.path(), "in.onnx", &clamp());
    let a = pare::model::Analysis::open(&inp, &Default::default()).expect("open");
    let mut o = fix_model(&a, &FixOptions::default(), &NoProgress).expect("fix");
    assert!(write_fixed(&mut o, &inp, &inp, false).is_err());
    let out = dir.path().join("fixed.onnx");
    write_fixed(&mut o, &inp, &out, false).expect("write");
    let back = pare::model::load_model(&out).expect("reload");
    assert_eq!(
        back.proto.graph.as_ref().expect("g").node.len(),
        o.nodes_after
    );
    assert_eq!(o.written.as_deref(), Some(out.to_str().expect("utf8")));
}

#[test]
fn fix_job_events() {
    let a = analysis(&squeeze_if(false), &[]);
    let rec = RecordProgress::default();
    fix_model(&a, &FixOptions::default(), &rec).expect("fix");
    let ev = rec.events();
    let phases: Vec<String> = ev
        .iter()
        .filter_map(|e| {
            if let JobEvent::Phase { name, .. } = e {
                Some(name.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(phases, vec!["fixing".to_string(), "verifying".to_string()]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, JobEvent::Log(l) if l.starts_with("fold-if")))
    );
    assert!(matches!(ev.last(), Some(JobEvent::Finished { .. })));
}

#[test]
fn committed_pytorch_exports_fix_and_verify() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (file, pins, expect) in [
        (
            "stereo_squeeze.onnx",
            vec![("left", vec![1, 3, 32, 48]), ("right", vec![1, 3, 32, 48])],
            vec!["fold-if", "convtranspose-pads"],
        ),
        ("clamp_min.onnx", vec![], vec!["clip-bounds"]),
        ("gather_elements.onnx", vec![], vec![]),
        ("interp_variants.onnx", vec![], vec![]),
    ] {
        let mut p = pare::model::InputPins::new();
        for (n, d) in &pins {
            p.insert(n.to_string(), d.clone());
        }
        let a = pare::model::Analysis::open(&data.join(file), &p).expect("open");
        let o = fix_model(&a, &FixOptions::default(), &NoProgress).expect("fix");
        for e in &expect {
            assert!(
                o.fixes_applied.iter().any(|f| f == e),
                "{file}: {:?}",
                o.fixes_applied
            );
        }
        if o.changed() {
            assert_eq!(
                o.verification.status,
                VerifyStatus::Passed,
                "{file}: {:#?}",
                o.verification
            );
        }
    }
    let _ = (attr_i, attr_ints);
}

#[test]
fn nested_ifs_fold_in_turn() {
    use pare::model::DataType;
    use pare::model::builder::{GraphBuilder, attr_g};
    // Outer If (always true) whose then branch holds another If (always true) that squeezes.
    let mut b = GraphBuilder::new("nested");
    b.input("x", &[D::S("b"), D::N(1), D::N(4), D::N(4)]);
    let shape = b.op("Shape", &["x"], vec![]);
    let idx = b.init_i64("i1", &[], &[1]);
    let dim = b.op("Gather", &[&shape, &idx], vec![attr_i("axis", 0)]);
    let one = b.init_i64("one", &[], &[1]);
    let cond = b.op("Equal", &[&dim, &one], vec![]);
    let mut inner_t = GraphBuilder::new("inner_then");
    let axes = constant_i64(&mut inner_t, "/inner/axes", &[1]);
    inner_t.node_named(
        "/inner/Squeeze",
        "Squeeze",
        &["x", &axes],
        &["inner_sq"],
        vec![],
    );
    inner_t.output_typed("inner_sq", DataType::FLOAT, None);
    let mut inner_e = GraphBuilder::new("inner_else");
    inner_e.node_named(
        "/inner/Reshape_like",
        "Identity",
        &["x"],
        &["inner_id"],
        vec![],
    );
    inner_e.output_typed("inner_id", DataType::FLOAT, None);
    let mut outer_t = GraphBuilder::new("outer_then");
    outer_t.node_named(
        "/inner/If",
        "If",
        &[&cond],
        &["inner_out"],
        vec![
            attr_g("then_branch", inner_t.graph()),
            attr_g("else_branch", inner_e.graph()),
        ],
    );
    outer_t.node_named(
        "/outer/Relu",
        "Relu",
        &["inner_out"],
        &["outer_t_out"],
        vec![],
    );
    outer_t.output_typed("outer_t_out", DataType::FLOAT, None);
    let mut outer_e = GraphBuilder::new("outer_else");
    let axes2 = constant_i64(&mut outer_e, "/outer/axes", &[1]);
    outer_e.node_named(
        "/outer/Squeeze",
        "Squeeze",
        &["x", &axes2],
        &["outer_e_out"],
        vec![],
    );
    outer_e.output_typed("outer_e_out", DataType::FLOAT, None);
    b.node_named(
        "/outer/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", outer_t.graph()),
            attr_g("else_branch", outer_e.graph()),
        ],
    );
    b.output_typed("y", DataType::FLOAT, None);
    let m = shaped(b.model());
    let o = fix(&m, &["fold-if"], &[]);
    assert_verified(&o);
    let ops = ops(&o);
    assert!(!ops.contains(&"If".to_string()), "{ops:?}");
    assert_eq!(o.actions.len(), 2, "{:#?}", o.actions);
}
