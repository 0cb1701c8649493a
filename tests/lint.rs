//! Every lint rule: a model that triggers it and one that does not, on the targets whose
//! versions gate it. Plus the report API (per-node view, ordering, JSON shape).

mod lint_support;

use lint_support::*;
use pare::lint::{LintOptions, Severity, all_rules, lint};
use pare::model::DataType;
use pare::model::builder::{D, attr_i, attr_ints, attr_s};

use Severity::{Error, Info, Warning};

fn sev(m: &pare::model::proto::ModelProto, target: &str, rule: &str) -> Option<Severity> {
    worst(m, target, rule)
}

#[test]
fn every_rule_is_documented_and_unique() {
    let mut ids = std::collections::HashSet::new();
    for r in all_rules() {
        assert!(ids.insert(r.id), "duplicate rule id {}", r.id);
        assert!(
            !r.title.is_empty()
                && !r.explanation.is_empty()
                && !r.snippet.is_empty()
                && !r.applies.is_empty(),
            "{}",
            r.id
        );
    }
    // The TensorRT_RULES.md ids that apply to float or QDQ models.
    for id in (1..=30)
        .map(|k| format!("L{k}"))
        .chain((1..=4).map(|k| format!("P{k}")))
    {
        assert!(ids.contains(id.as_str()), "rule {id} missing");
    }
    for id in [
        "G1", "G3", "G4", "G5", "G6", "G7", "G8", "G9", "G10", "G11", "G12", "T1",
    ] {
        assert!(ids.contains(id), "rule {id} missing");
    }
}

#[test]
fn l27_opset_range_per_target() {
    let m17 = clean(17);
    assert_eq!(sev(&m17, "tensorrt-7.1", "L27"), Some(Error));
    assert_eq!(sev(&m17, "tensorrt-8.6", "L27"), None);
    assert_eq!(sev(&m17, "tensorrt-10", "L27"), None);
    assert_eq!(sev(&clean(11), "tensorrt-7.1", "L27"), None);
    assert_eq!(sev(&clean(18), "tensorrt-8.6", "L27"), Some(Error));
    assert_eq!(sev(&clean(8), "tensorrt-10", "L27"), Some(Error)); // 10.x needs opset >= 9
    assert_eq!(sev(&clean(17), "onnxruntime", "L27"), None);
}

#[test]
fn l7_if_error_on_7_1_warning_on_8_6_and_10_naming_the_node() {
    let m = squeeze_if(true);
    let d = findings(&m, "tensorrt-7.1", &[], "L7");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Error);
    assert_eq!(d[0].nodes, vec!["/If".to_string()]);
    assert_eq!(d[0].seed_case.as_deref(), Some("Q4"));
    assert!(d[0].fixable, "condition is known (channel dim is 1)");
    assert!(d[0].message.contains("always"), "{}", d[0].message);
    for t in ["tensorrt-8.6", "tensorrt-10"] {
        let d = findings(&m, t, &[], "L7");
        assert_eq!(d[0].severity, Warning, "{t}");
        assert!(d[0].message.contains("rank"), "{}", d[0].message);
    }
    assert_eq!(sev(&m, "onnxruntime", "L7"), None);
    assert_eq!(sev(&clean(17), "tensorrt-7.1", "L7"), None);
}

#[test]
fn l7_run_time_condition() {
    // Same-shape branches: a warning on 10; different ranks: an error; never fixable.
    let d = findings(&data_if(false), "tensorrt-10", &[], "L7");
    assert_eq!(d[0].severity, Warning);
    assert!(!d[0].fixable);
    let d = findings(&data_if(true), "tensorrt-10", &[], "L7");
    assert_eq!(d[0].severity, Error, "{}", d[0].message);
    let d = findings(&data_if(true), "tensorrt-7.1", &[], "L7");
    assert!(d[0].message.contains("tensor values"), "{}", d[0].message);
}

#[test]
fn l8_squeeze_axes_computed() {
    let computed = model(13, &[D::N(1), D::N(1), D::N(4)], |b| {
        let c = constant_i64(b, "/axes", &[1]);
        let axes = b.op("Identity", &[&c], vec![]);
        b.op("Squeeze", &["x", &axes], vec![])
    });
    let d = findings(&computed, "tensorrt-8.6", &[], "L8");
    assert_eq!(d[0].severity, Error);
    assert!(d[0].fixable);
    assert_eq!(
        sev(&computed, "tensorrt-10.15", "L8"),
        None,
        "10.15 accepts constant-resolvable axes"
    );
    let init = one_op(
        13,
        &[D::N(1), D::N(1), D::N(4)],
        "Squeeze",
        &[("axes", Some(vec![1]))],
        vec![],
    );
    assert_eq!(sev(&init, "tensorrt-8.6", "L8"), None);
}

#[test]
fn l9_squeeze_without_axes_on_dynamic_dims() {
    let dynamic = one_op(13, &[D::S("b"), D::N(1), D::N(4)], "Squeeze", &[], vec![]);
    assert_eq!(sev(&dynamic, "tensorrt-10", "L9"), Some(Error));
    assert_eq!(sev(&dynamic, "tensorrt-8.6", "L9"), Some(Warning));
    let d = findings(&dynamic, "tensorrt-10", &[("x", &[2, 1, 4])], "L9");
    assert!(d[0].fixable, "pinned shapes let pare write the axes");
    let fixed = one_op(13, &[D::N(2), D::N(1), D::N(4)], "Squeeze", &[], vec![]);
    assert_eq!(sev(&fixed, "tensorrt-10", "L9"), None);
}

#[test]
fn l10_unsqueeze_and_slice_axes() {
    let computed = model(13, &[D::N(1), D::N(4)], |b| {
        let c = constant_i64(b, "/axes", &[0]);
        let axes = b.op("Identity", &[&c], vec![]);
        b.op("Unsqueeze", &["x", &axes], vec![])
    });
    assert_eq!(sev(&computed, "tensorrt-8.6", "L10"), Some(Error));
    let init = one_op(
        13,
        &[D::N(1), D::N(4)],
        "Unsqueeze",
        &[("axes", Some(vec![0]))],
        vec![],
    );
    assert_eq!(sev(&init, "tensorrt-8.6", "L10"), None);
    // TopK K computed: an error on 8.2-8.4 only.
    let topk = model(13, &[D::N(1), D::N(8)], |b| {
        let k = constant_i64(b, "/k", &[2]);
        let k = b.op("Identity", &[&k], vec![]);
        b.node("TopK", &["x", &k], 2, vec![]).remove(0)
    });
    assert_eq!(sev(&topk, "tensorrt-8.4", "L10"), Some(Error));
    assert_eq!(sev(&topk, "tensorrt-8.6", "L10"), None);
}

#[test]
fn l11_clip_bounds_on_7x() {
    let m = clamp();
    let d = findings(&m, "tensorrt-7.1", &[], "L11");
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.severity == Error && d.fixable));
    assert!(
        d[0].message
            .contains("Clip max value must be an initializer"),
        "{}",
        d[0].message
    );
    assert_eq!(sev(&m, "tensorrt-8.6", "L11"), None);
    let ok = model(17, &img(3, 4, 4), |b| {
        let lo = b.init_f32("lo", &[], &[0.0]);
        let hi = b.init_f32("hi", &[], &[6.0]);
        b.op("Clip", &["x", &lo, &hi], vec![])
    });
    assert_eq!(sev(&ok, "tensorrt-7.1", "L11"), None);
}

#[test]
fn l12_gather_elements_per_version() {
    let m = gather_argmax();
    let d = findings(&m, "tensorrt-7.1", &[], "L12");
    assert_eq!(d[0].severity, Error);
    assert_eq!(d[0].seed_case.as_deref(), Some("Q6"));
    assert_eq!(sev(&m, "tensorrt-8.6", "L12"), None);
    assert_eq!(
        sev(&m, "tensorrt-8.0", "L12"),
        None,
        "argmax indices are never negative"
    );
    assert_eq!(
        sev(&gather_const_negative(), "tensorrt-8.0", "L12"),
        Some(Error)
    );
    assert_eq!(
        sev(&gather_runtime_negative(), "tensorrt-8.0", "L12"),
        Some(Warning)
    );
    assert_eq!(sev(&gather_const_negative(), "tensorrt-8.2", "L12"), None);
}

fn resize(
    mode: &str,
    ctm: &str,
    by_sizes: bool,
    nearest: Option<&str>,
) -> pare::model::proto::ModelProto {
    model(17, &img(2, 4, 4), |b| {
        let mut attrs = vec![
            attr_s("mode", mode),
            attr_s("coordinate_transformation_mode", ctm),
        ];
        if let Some(n) = nearest {
            attrs.push(attr_s("nearest_mode", n));
        }
        if by_sizes {
            let s = b.init_i64("sizes", &[4], &[1, 2, 8, 8]);
            b.op("Resize", &["x", "", "", &s], attrs)
        } else {
            let s = b.init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
            b.op("Resize", &["x", "", &s], attrs)
        }
    })
}

#[test]
fn l13_resize_forms_per_version() {
    // align_corners with scales: refused by 7.x, fine from 8.0.
    let ac_scales = resize("linear", "align_corners", false, None);
    assert_eq!(sev(&ac_scales, "tensorrt-7.1", "L13"), Some(Error));
    assert_eq!(sev(&ac_scales, "tensorrt-8.6", "L13"), None);
    // align_corners with sizes: accepted (an info line shows the accepted form).
    assert_eq!(
        sev(
            &resize("linear", "align_corners", true, None),
            "tensorrt-7.1",
            "L13"
        ),
        Some(Info)
    );
    // asymmetric linear with sizes: refused by 7.x.
    assert_eq!(
        sev(
            &resize("linear", "asymmetric", true, None),
            "tensorrt-7.1",
            "L13"
        ),
        Some(Error)
    );
    // never supported.
    assert_eq!(
        sev(
            &resize("linear", "half_pixel_symmetric", true, None),
            "tensorrt-10",
            "L13"
        ),
        Some(Error)
    );
    assert_eq!(
        sev(
            &resize("linear", "half_pixel", true, None),
            "tensorrt-10",
            "L13"
        ),
        None
    );
}

#[test]
fn l14_nearest_mode() {
    let m = resize("nearest", "asymmetric", false, Some("round_prefer_floor"));
    assert_eq!(sev(&m, "tensorrt-7.1", "L14"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-8.6", "L14"), None);
    assert_eq!(
        sev(
            &resize("nearest", "asymmetric", false, Some("floor")),
            "tensorrt-7.1",
            "L14"
        ),
        None
    );
}

#[test]
fn l15_cubic() {
    let m = resize("cubic", "half_pixel", true, None);
    assert_eq!(sev(&m, "tensorrt-8.4", "L15"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-8.6", "L15"), None);
}

#[test]
fn l16_resize_scales_computed() {
    let m = model(17, &img(2, 4, 4), |b| {
        let s = b.init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
        let s = b.op("Identity", &[&s], vec![]);
        b.op(
            "Resize",
            &["x", "", &s],
            vec![
                attr_s("mode", "nearest"),
                attr_s("coordinate_transformation_mode", "asymmetric"),
                attr_s("nearest_mode", "floor"),
            ],
        )
    });
    let d = findings(&m, "tensorrt-7.1", &[], "L16");
    assert_eq!(d[0].severity, Error);
    assert!(d[0].fixable);
    assert_eq!(sev(&m, "tensorrt-8.6", "L16"), None);
    assert_eq!(
        sev(
            &resize("nearest", "asymmetric", false, Some("floor")),
            "tensorrt-7.1",
            "L16"
        ),
        None
    );
}

#[test]
fn l17_linear_resize_of_outer_dims() {
    let five = |scales: &[f32]| {
        let s = scales.to_vec();
        model(
            17,
            &[D::N(1), D::N(2), D::N(2), D::N(4), D::N(4)],
            move |b| {
                let s = b.init_f32("scales", &[5], &s);
                b.op("Resize", &["x", "", &s], vec![attr_s("mode", "linear")])
            },
        )
    };
    assert_eq!(
        sev(&five(&[1.0, 2.0, 2.0, 2.0, 2.0]), "tensorrt-8.6", "L17"),
        Some(Error)
    );
    assert_eq!(
        sev(&five(&[1.0, 1.0, 2.0, 2.0, 2.0]), "tensorrt-8.6", "L17"),
        None
    );
}

#[test]
fn l18_opset18_resize_attributes() {
    let m = model(18, &img(2, 4, 4), |b| {
        let s = b.init_f32("scales", &[4], &[1.0, 1.0, 0.5, 0.5]);
        b.op(
            "Resize",
            &["x", "", &s],
            vec![attr_s("mode", "linear"), attr_i("antialias", 1)],
        )
    });
    assert_eq!(sev(&m, "tensorrt-10", "L18"), Some(Error));
    assert_eq!(
        sev(
            &resize("linear", "half_pixel", true, None),
            "tensorrt-10",
            "L18"
        ),
        None
    );
}

#[test]
fn l19_asymmetric_3d_deconvolution() {
    let m = deconv3d_q3();
    let d = findings(&m, "tensorrt-7.1", &[], "L19");
    assert_eq!(d[0].severity, Error);
    assert_eq!(d[0].seed_case.as_deref(), Some("Q3"));
    assert!(d[0].fixable);
    assert_eq!(sev(&m, "tensorrt-8.6", "L19"), None, "fixed in 8.4");
    let sym = deconv(3, vec![attr_ints("pads", &[1; 6])], true, 4, 2);
    assert_eq!(sev(&sym, "tensorrt-7.1", "L19"), None);
    let two_d = deconv(
        2,
        vec![
            attr_ints("pads", &[1; 4]),
            attr_ints("output_padding", &[1, 1]),
        ],
        true,
        4,
        2,
    );
    assert_eq!(
        sev(&two_d, "tensorrt-7.1", "L19"),
        None,
        "only 3-D is refused"
    );
}

#[test]
fn l20_dilated_deconvolution() {
    let m = deconv(2, vec![attr_ints("dilations", &[2, 2])], false, 2, 2);
    assert_eq!(sev(&m, "tensorrt-7.0", "L20"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-7.1", "L20"), None);
}

#[test]
fn l21_negative_prepadding_from_output_shape() {
    // Full output is 11; asking for 13 means padding of -2 split over both ends.
    let m = deconv(2, vec![attr_ints("output_shape", &[13, 13])], true, 2, 2);
    let d = findings(&m, "tensorrt-10", &[], "L21");
    assert_eq!(d[0].severity, Error, "{d:?}");
    assert!(!d[0].fixable, "no runtime agrees on its meaning");
    assert_eq!(
        sev(
            &deconv(2, vec![attr_ints("pads", &[1; 4])], true, 2, 2),
            "tensorrt-10",
            "L21"
        ),
        None
    );
}

#[test]
fn l22_deconvolution_weights_computed() {
    let m = model(17, &img(2, 5, 5), |b| {
        let w = b.init_randn("w", &[2, 2, 3, 3], 0.3);
        let w = b.op("Identity", &[&w], vec![]);
        b.op(
            "ConvTranspose",
            &["x", &w],
            vec![attr_ints("kernel_shape", &[3, 3])],
        )
    });
    assert_eq!(sev(&m, "tensorrt-8.4", "L22"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-10", "L22"), None);
}

#[test]
fn l23_scatter_nd() {
    let m = |red: Option<&str>| {
        let attrs = red
            .map(|r| vec![attr_s("reduction", r)])
            .unwrap_or_default();
        model(17, &[D::N(4), D::N(3)], move |b| {
            let idx = b.init_i64("idx", &[1, 1], &[2]);
            let upd = b.init_f32("upd", &[1, 3], &[1.0, 2.0, 3.0]);
            b.op("ScatterND", &["x", &idx, &upd], attrs)
        })
    };
    assert_eq!(sev(&m(None), "tensorrt-7.1", "L23"), Some(Error));
    assert_eq!(sev(&m(None), "tensorrt-8.6", "L23"), None);
    assert_eq!(sev(&m(Some("add")), "tensorrt-10", "L23"), Some(Error));
    assert_eq!(sev(&m(None), "tensorrt-10", "L23"), None);
}

#[test]
fn l24_nonzero() {
    let m = one_op(17, &[D::N(4)], "NonZero", &[], vec![]);
    assert_eq!(sev(&m, "tensorrt-8.4", "L24"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-8.6", "L24"), None);
    assert_eq!(
        sev(&m, "tensorrt-8.4", "G1"),
        None,
        "NonZero is reported by its own rule"
    );
}

#[test]
fn l25_loop_with_dynamic_trip_count() {
    use pare::model::builder::{GraphBuilder, attr_g};
    let make = |dynamic: bool| {
        let mut b = GraphBuilder::new("loop");
        b.input("x", &[D::N(2)]);
        b.input_typed("n", DataType::INT64, &[]);
        let trip = if dynamic {
            "n".to_string()
        } else {
            b.init_i64("trip", &[], &[3])
        };
        let cond = b.init_i64("cond_init", &[], &[1]);
        let mut body = GraphBuilder::new("body");
        body.input_typed("i", DataType::INT64, &[]);
        body.input_typed("c", DataType::BOOL, &[]);
        body.input("acc", &[D::N(2)]);
        body.node_named("/body/Add", "Add", &["acc", "x"], &["acc_out"], vec![]);
        body.node_named("/body/Id", "Identity", &["c"], &["c_out"], vec![]);
        body.node_named(
            "/body/Scan",
            "Identity",
            &["acc_out"],
            &["scan_out"],
            vec![],
        );
        body.output_typed("c_out", DataType::BOOL, Some(&[]));
        body.output("acc_out", &[D::N(2)]);
        body.output("scan_out", &[D::N(2)]);
        b.node_named(
            "/Loop",
            "Loop",
            &[&trip, &cond, "x"],
            &["final", "y"],
            vec![attr_g("body", body.graph())],
        );
        b.output_typed("y", DataType::FLOAT, None);
        b.model()
    };
    assert_eq!(sev(&make(true), "tensorrt-10", "L25"), Some(Error));
    assert_eq!(sev(&make(false), "tensorrt-10", "L25"), None);
    assert_eq!(sev(&make(true), "tensorrt-8.6", "L25"), None);
}

#[test]
fn l26_int64_io() {
    use pare::model::builder::GraphBuilder;
    let mut b = GraphBuilder::new("i64");
    b.input_typed("ids", DataType::INT64, &[D::N(4)]);
    b.node_named("/Cast", "Cast", &["ids"], &["y"], vec![attr_i("to", 1)]);
    b.output_typed("y", DataType::FLOAT, None);
    let m = b.model();
    assert_eq!(sev(&m, "tensorrt-8.6", "L26"), Some(Warning));
    assert_eq!(sev(&m, "tensorrt-10", "L26"), Some(Info));
    assert_eq!(sev(&clean(17), "tensorrt-8.6", "L26"), None);
}

#[test]
fn l28_topk_sorted() {
    let m = one_op(
        17,
        &[D::N(1), D::N(8)],
        "TopK",
        &[("k", Some(vec![2]))],
        vec![attr_i("sorted", 0)],
    );
    assert_eq!(sev(&m, "tensorrt-10", "L28"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-8.6", "L28"), None);
    let ok = one_op(
        17,
        &[D::N(1), D::N(8)],
        "TopK",
        &[("k", Some(vec![2]))],
        vec![],
    );
    assert_eq!(sev(&ok, "tensorrt-10", "L28"), None);
}

#[test]
fn l29_pad_on_7x() {
    let reflect = one_op(
        17,
        &img(2, 4, 4),
        "Pad",
        &[("pads", Some(vec![0, 0, 1, 1, 0, 0, 1, 1]))],
        vec![attr_s("mode", "reflect")],
    );
    assert_eq!(sev(&reflect, "tensorrt-7.1", "L29"), Some(Error));
    assert_eq!(sev(&reflect, "tensorrt-8.6", "L29"), None);
    let channels = one_op(
        17,
        &img(2, 4, 4),
        "Pad",
        &[("pads", Some(vec![0, 1, 0, 0, 0, 1, 0, 0]))],
        vec![],
    );
    assert_eq!(sev(&channels, "tensorrt-7.1", "L29"), Some(Error));
    let ok = one_op(
        17,
        &img(2, 4, 4),
        "Pad",
        &[("pads", Some(vec![0, 0, 1, 1, 0, 0, 1, 1]))],
        vec![],
    );
    assert_eq!(sev(&ok, "tensorrt-7.1", "L29"), None);
    let computed = model(17, &img(2, 4, 4), |b| {
        let p = b.init_i64("pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        let p = b.op("Identity", &[&p], vec![]);
        b.op("Pad", &["x", &p], vec![])
    });
    let d = findings(&computed, "tensorrt-7.1", &[], "L29");
    assert!(d[0].fixable, "{d:?}");
}

#[test]
fn l30_einsum() {
    let m = |eq: &str| {
        let eq = eq.to_string();
        model(17, &[D::N(2), D::N(3)], move |b| {
            let w = b.init_f32("w", &[3, 4], &[0.5; 12]);
            b.op("Einsum", &["x", &w], vec![attr_s("equation", &eq)])
        })
    };
    assert_eq!(sev(&m("ij,jk->ik"), "tensorrt-8.0", "L30"), Some(Error));
    assert_eq!(sev(&m("ij,jk->ik"), "tensorrt-8.6", "L30"), None);
    assert_eq!(sev(&m("...j,jk->...k"), "tensorrt-8.6", "L30"), Some(Error));
    assert_eq!(sev(&m("...j,jk->...k"), "tensorrt-10", "L30"), None);
}

#[test]
fn l1_to_l5_qdq_parameters() {
    let good = qdq(Qdq::default());
    for r in ["L1", "L2", "L3", "L4", "L5"] {
        assert_eq!(sev(&good, "tensorrt-8.6", r), None, "{r}");
    }
    assert_eq!(
        sev(
            &qdq(Qdq {
                zero_point: 3,
                ..Default::default()
            }),
            "tensorrt-8.6",
            "L1"
        ),
        Some(Error)
    );
    let u8 = qdq(Qdq {
        uint8: true,
        ..Default::default()
    });
    assert_eq!(sev(&u8, "tensorrt-8.6", "L2"), Some(Error));
    assert_eq!(sev(&u8, "tensorrt-10", "L2"), Some(Warning));
    assert_eq!(
        sev(
            &qdq(Qdq {
                scale: -0.5,
                ..Default::default()
            }),
            "tensorrt-8.6",
            "L4"
        ),
        Some(Error)
    );
    let pa = qdq(Qdq {
        per_axis_activation: true,
        ..Default::default()
    });
    assert_eq!(sev(&pa, "tensorrt-8.0", "L5"), Some(Error));
    assert_eq!(sev(&pa, "tensorrt-10", "L5"), Some(Warning));
    // L3: computed scale on 7.x.
    let computed = model(17, &img(2, 4, 4), |b| {
        let s = b.init_f32("s", &[], &[0.1]);
        let s2 = b.op("Identity", &[&s], vec![]);
        let z = b.init_i64("z", &[], &[0]);
        let q = b.op("QuantizeLinear", &["x", &s2, &z], vec![]);
        b.op("DequantizeLinear", &[&q, &s, &z], vec![])
    });
    assert_eq!(sev(&computed, "tensorrt-7.1", "L3"), Some(Error));
    assert_eq!(sev(&computed, "tensorrt-8.6", "L3"), None);
}

#[test]
fn p1_to_p4_qdq_placement() {
    let good = qdq(Qdq::default());
    for r in ["P1", "P3", "P4"] {
        assert_eq!(sev(&good, "tensorrt-10", r), None, "{r}");
    }
    assert_eq!(
        sev(
            &qdq(Qdq {
                no_input_qdq: true,
                ..Default::default()
            }),
            "tensorrt-10",
            "P1"
        ),
        Some(Warning)
    );
    assert_eq!(
        sev(
            &qdq(Qdq {
                per_tensor_weight: true,
                ..Default::default()
            }),
            "tensorrt-10",
            "P1"
        ),
        Some(Warning)
    );
    assert_eq!(
        sev(
            &qdq(Qdq {
                q_after_conv: true,
                ..Default::default()
            }),
            "tensorrt-10",
            "P3"
        ),
        Some(Warning)
    );
    assert_eq!(
        sev(
            &qdq(Qdq {
                small: true,
                ..Default::default()
            }),
            "tensorrt-10",
            "P4"
        ),
        Some(Info)
    );
    // P2: residual Add whose skip input has no Q/DQ.
    let residual = model(17, &[D::N(1), D::N(16), D::N(4), D::N(4)], |b| {
        let s = b.init_f32("s", &[], &[0.02]);
        let z = b.init_i64("z", &[], &[0]);
        let q = b.op("QuantizeLinear", &["x", &s, &z], vec![]);
        let dq = b.op("DequantizeLinear", &[&q, &s, &z], vec![]);
        let c = b.conv(&dq, 16, 16, 3, 1, 1, 1);
        b.add(&c, "x")
    });
    assert_eq!(sev(&residual, "tensorrt-10", "P2"), Some(Warning));
    let quantized_skip = model(17, &[D::N(1), D::N(16), D::N(4), D::N(4)], |b| {
        let s = b.init_f32("s", &[], &[0.02]);
        let z = b.init_i64("z", &[], &[0]);
        let q = b.op("QuantizeLinear", &["x", &s, &z], vec![]);
        let dq = b.op("DequantizeLinear", &[&q, &s, &z], vec![]);
        let c = b.conv(&dq, 16, 16, 3, 1, 1, 1);
        b.add(&c, &dq)
    });
    assert_eq!(sev(&quantized_skip, "tensorrt-10", "P2"), None);
    assert_eq!(
        sev(&clean(17), "tensorrt-10", "P2"),
        None,
        "no Q/DQ at all: perf rules stay quiet"
    );
}

#[test]
fn l6_qoperator() {
    let m = model(17, &[D::N(1), D::N(2), D::N(4), D::N(4)], |b| {
        let ins: Vec<String> = (0..8)
            .map(|k| b.init_f32(&format!("p{k}"), &[], &[1.0]))
            .collect();
        let ins: Vec<&str> = std::iter::once("x")
            .chain(ins.iter().map(String::as_str))
            .collect();
        b.op("QLinearConv", &ins, vec![])
    });
    assert_eq!(sev(&m, "tensorrt-10", "L6"), Some(Error));
    assert_eq!(sev(&m, "tensorrt-10", "G1"), None);
    assert_eq!(sev(&m, "onnxruntime", "L6"), None);
    assert_eq!(sev(&qdq(Qdq::default()), "tensorrt-10", "L6"), None);
}

#[test]
fn g1_ops_the_target_lacks() {
    let hs = one_op(17, &img(2, 4, 4), "HardSwish", &[], vec![]);
    let d = findings(&hs, "tensorrt-8.2", &[], "G1");
    assert_eq!(d[0].severity, Error);
    assert!(d[0].message.contains("8.4"), "{}", d[0].message);
    assert_eq!(sev(&hs, "tensorrt-8.6", "G1"), None);
    let custom = custom_op("com.acme");
    assert_eq!(sev(&custom, "tensorrt-10", "G1"), Some(Error));
    assert_eq!(sev(&custom, "onnxruntime", "G1"), Some(Error));
    assert_eq!(sev(&custom_op("com.microsoft"), "onnxruntime", "G1"), None);
    assert_eq!(sev(&clean(17), "tensorrt-7.1", "G1"), None);
}

#[test]
fn g3_dynamic_inputs_name_the_dims() {
    let m = squeeze_if(true);
    let d = findings(&m, "tensorrt-10", &[], "G3");
    assert_eq!(d[0].severity, Warning);
    assert_eq!(d[0].seed_case.as_deref(), Some("Q11"));
    assert!(
        d[0].message
            .contains("dims 0 (batch), 2 (height), 3 (width)"),
        "{}",
        d[0].message
    );
    assert!(d[0].message.contains("--minShapes=x:"), "{}", d[0].message);
    assert_eq!(sev(&m, "onnxruntime", "G3"), Some(Info));
    assert_eq!(sev(&clean(17), "tensorrt-10", "G3"), None);
}

#[test]
fn g4_pinned_shape_contradicts_declaration() {
    let m = clean(17);
    let d = findings(&m, "tensorrt-10", &[("x", &[1, 3, 8, 16])], "G4");
    assert_eq!(d[0].severity, Error);
    assert!(
        d[0].message.contains("dim 3: declared 8, given 16"),
        "{}",
        d[0].message
    );
    assert!(findings(&m, "tensorrt-10", &[("x", &[1, 3, 8, 8])], "G4").is_empty());
}

#[test]
fn g5_to_g8_hygiene() {
    let mut m = clean(17);
    let g = m.graph.as_mut().expect("graph");
    g.initializer.push(pare::model::tensor::f32_tensor(
        "leftover",
        &[2],
        &[1.0, 2.0],
    ));
    g.input.push(vi("unused_in", &[D::N(1)]));
    g.node[1].name = None;
    let dup = g.node[0].name.clone();
    g.node[2].name = dup;
    assert_eq!(sev(&m, "tensorrt-10", "G5"), Some(Info));
    assert_eq!(sev(&m, "tensorrt-10", "G6"), Some(Warning));
    assert_eq!(sev(&m, "onnxruntime", "G6"), Some(Info));
    assert_eq!(sev(&m, "tensorrt-10", "G7"), Some(Info));
    assert_eq!(sev(&m, "tensorrt-10", "G8"), Some(Warning));
    let c = clean(17);
    for r in ["G5", "G6", "G7", "G8"] {
        assert_eq!(sev(&c, "tensorrt-10", r), None, "{r}");
    }
}

#[test]
fn g9_value_info_contradiction() {
    let mut m = clean(17);
    let conv_out = m.graph.as_ref().expect("graph").node[0].output[0].clone();
    m.graph
        .as_mut()
        .expect("graph")
        .value_info
        .push(vi(&conv_out, &[D::N(1), D::N(5), D::N(8), D::N(8)]));
    let d = findings(&m, "tensorrt-10", &[], "G9");
    assert_eq!(d[0].severity, Warning);
    assert!(
        d[0].message.contains("inferred 1x4x8x8"),
        "{}",
        d[0].message
    );
    let mut ok = clean(17);
    ok.graph
        .as_mut()
        .expect("graph")
        .value_info
        .push(vi(&conv_out, &[D::N(1), D::N(4), D::N(8), D::N(8)]));
    assert_eq!(sev(&ok, "tensorrt-10", "G9"), None);
}

#[test]
fn g10_inference_gaps_and_g11_foldable_shapes() {
    assert_eq!(
        sev(&custom_op("com.acme"), "tensorrt-10", "G10"),
        Some(Info)
    );
    assert_eq!(sev(&clean(17), "tensorrt-10", "G10"), None);
    // Static input: Shape → Slice → Mul → Concat folds.
    let d = findings(&shape_resize(false), "tensorrt-10", &[], "G11");
    assert_eq!(d[0].severity, Info);
    assert!(d[0].nodes.len() >= 3, "{d:?}");
    assert!(
        findings(&shape_resize(true), "tensorrt-10", &[], "G11").is_empty(),
        "dynamic H/W: nothing known"
    );
    assert!(
        !findings(
            &shape_resize(true),
            "tensorrt-10",
            &[("x", &[1, 3, 6, 6])],
            "G11"
        )
        .is_empty(),
        "pinned"
    );
}

#[test]
fn g12_shape_from_tensor_values() {
    let m = model(17, &[D::N(1), D::N(8)], |b| {
        let am = b.op(
            "ArgMax",
            &["x"],
            vec![attr_i("axis", 1), attr_i("keepdims", 0)],
        );
        let ax = b.init_i64("ax", &[1], &[1]);
        let ends = b.init_i64("ends", &[1], &[8]);
        b.op("Slice", &["x", &am, &ends, &ax], vec![])
    });
    let d = findings(&m, "tensorrt-7.1", &[], "G12");
    assert_eq!(d[0].severity, Error);
    assert!(d[0].message.contains("ArgMax"), "{}", d[0].message);
    assert_eq!(d[0].seed_case.as_deref(), Some("Q2"));
    assert_eq!(sev(&m, "tensorrt-8.6", "G12"), Some(Warning));
    assert_eq!(
        sev(&shape_resize(true), "tensorrt-7.1", "G12"),
        None,
        "shape-derived sizes are fine"
    );
}

#[test]
fn t1_asks_tract_and_names_the_node() {
    let d = findings(&data_if(true), "tract", &[], "T1");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].severity, Error);
    assert_eq!(d[0].nodes.first().map(String::as_str), Some("/If"), "{d:?}");
    assert!(d[0].message.contains("tract cannot"), "{}", d[0].message);
    assert!(findings(&clean(17), "tract", &[], "T1").is_empty());
    assert!(
        findings(&squeeze_if(false), "tensorrt-10", &[], "T1").is_empty(),
        "only for the tract target"
    );
}

#[test]
fn report_orders_by_severity_and_maps_nodes() {
    let a = analysis(&squeeze_if(true), &[]);
    let r = lint(
        &a,
        &LintOptions {
            target: t("tensorrt-7.1"),
            rules: Vec::new(),
        },
    );
    let sevs: Vec<Severity> = r.diagnostics.iter().map(|d| d.severity).collect();
    let mut sorted = sevs.clone();
    sorted.sort();
    assert_eq!(sevs, sorted);
    assert_eq!(r.errors, sevs.iter().filter(|s| **s == Error).count());
    let by = r.by_node();
    assert!(by["/If"].iter().any(|d| d.rule == "L7"));
    // JSON carries the documented keys.
    let j = serde_json::to_value(&r.diagnostics).expect("json");
    for k in [
        "rule",
        "severity",
        "nodes",
        "message",
        "seed_case",
        "fixable",
        "title",
        "fix_snippet",
        "target",
    ] {
        assert!(j[0].get(k).is_some(), "missing {k}");
    }
    assert_eq!(j[0]["severity"], "error");
    // Restricting to rules.
    let only = lint(
        &a,
        &LintOptions {
            target: t("tensorrt-7.1"),
            rules: vec!["l7".into()],
        },
    );
    assert!(only.diagnostics.iter().all(|d| d.rule == "L7"));
}

#[test]
fn lint_job_reports_events() {
    let a = analysis(&squeeze_if(true), &[]);
    let rec = pare::jobs::RecordProgress::default();
    let r = pare::lint::lint_job(
        &a,
        &LintOptions {
            target: t("tensorrt-7.1"),
            rules: Vec::new(),
        },
        &rec,
    );
    let ev = rec.events();
    assert!(matches!(
        ev.first(),
        Some(pare::jobs::JobEvent::Phase { .. })
    ));
    assert!(matches!(
        ev.last(),
        Some(pare::jobs::JobEvent::Finished { .. })
    ));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, pare::jobs::JobEvent::Log(_)))
            .count(),
        r.diagnostics.len()
    );
}
