//! Residual-stream equalization: the channels of a stream of residual Adds are evened out
//! together (producers' rows, consumers' columns) without changing the float function.

mod common;

use std::collections::HashMap;

use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::stream;
use pare::quant::{QuantOptions, quantize};
use pare::rng::Rng;

/// conv A → s0; s0 → 1×1 expand → ReLU → 1×1 project → p; s1 = s0 + p → 1×1 head. The
/// stream {s0, p, s1} is written by A and the projection, read by the expansion and the head.
/// Stream channel `c` is scaled by `r_c` (four decades) in both writers and by `1/r_c` in both
/// readers: every channel matters as much downstream, but one per-tensor scale drowns the
/// small ones.
fn fixture(tail: &str) -> ModelProto {
    let mut b = GraphBuilder::new("stream").with_seed(4);
    b.input("x", &[D::N(1), D::N(3), D::N(12), D::N(12)]);
    let mut rng = Rng::new(8);
    let r = |c: usize| 10f32.powi(c as i32 % 4 - 2);
    let mut init =
        |b: &mut GraphBuilder, name: &str, dims: [i64; 4], f: &dyn Fn(usize, usize) -> f32| {
            let per = (dims[1] * dims[2] * dims[3]) as usize;
            let inner = (dims[2] * dims[3]) as usize;
            let v: Vec<f32> = (0..dims[0] as usize * per)
                .map(|k| rng.range(-1.0, 1.0) * f(k / per, (k % per) / inner))
                .collect();
            b.init_f32(name, &dims, &v)
        };
    let wa = init(&mut b, "wa", [8, 3, 3, 3], &|o, _| r(o));
    let we = init(&mut b, "we", [16, 8, 1, 1], &|_, i| 0.5 / r(i));
    let wp = init(&mut b, "wp", [8, 16, 1, 1], &|o, _| 0.5 * r(o));
    let wh = init(&mut b, "wh", [4, 8, 1, 1], &|_, i| 0.5 / r(i));
    let ba = b.init_f32("ba", &[8], &(0..8).map(|c| 0.1 * r(c)).collect::<Vec<_>>());
    let s0 = common::named_conv(&mut b, "a", &["x", &wa, &ba], 1, 3);
    let e = common::named_conv(&mut b, "expand", &[&s0, &we], 1, 1);
    let e = b.relu(&e);
    let p = common::named_conv(&mut b, "project", &[&e, &wp], 1, 1);
    let s1 = b.add(&s0, &p);
    let y = match tail {
        "pool" => b.op("GlobalAveragePool", &[&s1], vec![]),
        _ => common::named_conv(&mut b, "head", &[&s1, &wh], 1, 1),
    };
    b.node_named("out", "Identity", &[&y], &["y"], vec![]);
    let dims = if tail == "pool" {
        [1, 8, 1, 1]
    } else {
        [1, 4, 12, 12]
    };
    b.output("y", &dims.map(D::N));
    b.model()
}

#[test]
fn a_stream_is_equalized_whole_and_the_function_stays() {
    let m = fixture("conv");
    let found = stream::streams(&m);
    assert_eq!(found.len(), 1, "{found:?}");
    let s = &found[0];
    assert_eq!((s.tensors.len(), s.channels), (3, 8), "{s:?}");
    // Channel ranges of the stream as three decades apart as conv A's rows.
    let amax: HashMap<String, Vec<f32>> = s
        .tensors
        .iter()
        .map(|t| (t.clone(), (0..8).map(|c| 10f32.powi(c % 3 - 1)).collect()))
        .collect();
    let (e, report) = stream::equalize_streams(&m, &found, &amax, 0.5, 100.0).expect("equalize");
    assert_eq!((report.streams, report.tensors), (1, 3));
    assert!(
        report.spread_after < report.spread_before - 0.5,
        "{report:?}"
    );
    common::assert_same_function(&m, &e, &[1, 3, 12, 12]);
}

#[test]
fn a_stream_with_a_reader_that_is_not_a_conv_is_left_alone() {
    assert!(stream::streams(&fixture("pool")).is_empty());
}

fn opts(streams: bool) -> QuantOptions {
    QuantOptions {
        samples: 16,
        eval_samples: 4,
        stream_equalize: streams,
        ..common::quant_opts()
    }
}

/// Output SQNR against the float model on inputs calibration never saw.
fn held_out_sqnr(m: &ModelProto, q: &ModelProto) -> f64 {
    common::held_out_sqnr(m, q, "x", &[1, 3, 12, 12], 6, 77)
}

#[test]
fn stream_equalization_lowers_the_quantization_error() {
    let m = fixture("conv");
    let a = Analysis::new(common::model(m.clone()), &InputPins::default()).expect("analysis");
    let on = quantize(&a, &opts(true), &NoProgress).expect("quantize");
    let off = quantize(&a, &opts(false), &NoProgress).expect("quantize");
    let r = on
        .report
        .stream_equalization
        .as_ref()
        .expect("stream report");
    assert_eq!(r.streams, 1);
    assert!(off.report.stream_equalization.is_none());
    let (s_on, s_off) = (held_out_sqnr(&m, &on.model), held_out_sqnr(&m, &off.model));
    assert!(
        s_on > s_off + 1.0,
        "streams {s_on:.2} dB vs none {s_off:.2} dB"
    );
}
