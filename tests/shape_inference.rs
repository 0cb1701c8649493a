//! pare's own shape inference: op rules on tiny built models, symbolic dims, shape-arithmetic
//! evaluation, control flow, robustness, speed — and agreement with tract on every tensor of
//! models tract can run.

use std::collections::HashMap;

use pare::model::GraphIndex;
use pare::model::builder::{D, GraphBuilder, attr_f, attr_g, attr_i, attr_ints, attr_s, attr_t};
use pare::model::proto::{GraphProto, ModelProto};
use pare::model::shape::{
    Dim, InputPins, ShapeInfo, Value, format_shape, infer_graph, infer_shapes, rank_of,
    tract_shapes,
};
use pare::model::tensor::{DataType, i64_tensor};

fn k(v: i64) -> Dim {
    Dim::Known(v)
}

fn s(v: &str) -> Dim {
    Dim::Sym(v.to_string())
}

fn pins(p: &[(&str, &[i64])]) -> InputPins {
    p.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect()
}

fn infer_with(m: &ModelProto, p: &InputPins) -> ShapeInfo {
    let ix = GraphIndex::build(m.graph.as_ref().unwrap()).expect("valid test graph");
    infer_shapes(m, &ix, p)
}

fn infer(m: &ModelProto) -> ShapeInfo {
    infer_with(m, &HashMap::new())
}

/// Static shape of a tensor, with a readable failure.
fn st(info: &ShapeInfo, name: &str) -> Vec<i64> {
    info.static_shape(name).unwrap_or_else(|| {
        panic!(
            "{name}: expected a static shape, got {} (diagnostics: {:?})",
            format_shape(info.shape(name)),
            info.diagnostics
        )
    })
}

fn dims(info: &ShapeInfo, name: &str) -> Vec<Dim> {
    info.shape(name)
        .unwrap_or_else(|| panic!("{name}: rank unknown"))
        .to_vec()
}

fn no_diags(info: &ShapeInfo) {
    assert!(
        info.diagnostics.is_empty(),
        "unexpected diagnostics: {:?}",
        info.diagnostics
    );
}

fn conv_node(
    b: &mut GraphBuilder,
    x: &str,
    w_dims: &[i64],
    attrs: Vec<pare::model::proto::AttributeProto>,
) -> String {
    let w = b.init_randn(&format!("w{}", b.nodes.len()), w_dims, 0.1);
    b.op("Conv", &[x, &w], attrs)
}

#[test]
fn conv_pads_strides_dilations_and_auto_pad() {
    let mut b = GraphBuilder::new("conv");
    b.input("x", &[D::N(1), D::N(3), D::N(225), D::N(225)]);
    let explicit = conv_node(
        &mut b,
        "x",
        &[8, 3, 3, 3],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let same = conv_node(
        &mut b,
        "x",
        &[8, 3, 3, 3],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_s("auto_pad", "SAME_UPPER"),
        ],
    );
    let lower = conv_node(
        &mut b,
        "x",
        &[8, 3, 4, 4],
        vec![
            attr_ints("strides", &[3, 3]),
            attr_s("auto_pad", "SAME_LOWER"),
        ],
    );
    let valid = conv_node(
        &mut b,
        "x",
        &[8, 3, 3, 3],
        vec![attr_ints("strides", &[2, 2]), attr_s("auto_pad", "VALID")],
    );
    let dil = conv_node(
        &mut b,
        "x",
        &[4, 3, 3, 3],
        vec![attr_ints("dilations", &[2, 3])],
    );
    let asym = conv_node(
        &mut b,
        "x",
        &[4, 3, 5, 1],
        vec![attr_ints("pads", &[0, 2, 4, 0])],
    );
    let grouped = conv_node(&mut b, &explicit, &[16, 2, 1, 1], vec![attr_i("group", 4)]);
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(st(&info, &explicit), [1, 8, 113, 113]);
    assert_eq!(st(&info, &same), [1, 8, 113, 113]);
    assert_eq!(st(&info, &lower), [1, 8, 75, 75]);
    assert_eq!(st(&info, &valid), [1, 8, 112, 112]);
    // 225 - 2*(3-1) = 221 and 225 - 3*(3-1) = 219.
    assert_eq!(st(&info, &dil), [1, 4, 221, 219]);
    // H: 225 + 0 + 4 - 5 + 1 = 225; W: 225 + 2 + 0 - 1 + 1 = 227.
    assert_eq!(st(&info, &asym), [1, 4, 225, 227]);
    assert_eq!(st(&info, &grouped), [1, 16, 113, 113]);
    assert_eq!(info.dtype(&explicit), Some(DataType::FLOAT));
}

#[test]
fn conv_1d_and_3d_and_pooling() {
    let mut b = GraphBuilder::new("nd");
    b.input("a", &[D::N(2), D::N(4), D::N(100)]);
    b.input("v", &[D::N(1), D::N(2), D::N(8), D::N(32), D::N(30)]);
    let c1 = conv_node(
        &mut b,
        "a",
        &[6, 4, 5],
        vec![attr_ints("strides", &[3]), attr_ints("pads", &[2, 2])],
    );
    let c3 = conv_node(
        &mut b,
        "v",
        &[4, 2, 3, 3, 3],
        vec![
            attr_ints("strides", &[1, 2, 2]),
            attr_ints("pads", &[1, 1, 1, 1, 1, 1]),
        ],
    );
    let mp = b.node(
        "MaxPool",
        &[&c3],
        2,
        vec![
            attr_ints("kernel_shape", &[2, 3, 3]),
            attr_ints("strides", &[2, 2, 2]),
        ],
    );
    let ceil = b.op(
        "AveragePool",
        &[&c1],
        vec![
            attr_ints("kernel_shape", &[3]),
            attr_ints("strides", &[2]),
            attr_i("ceil_mode", 1),
        ],
    );
    // ceil_mode: a last window starting in the end padding is dropped (size 6, k 2, s 2,
    // pad 1: ceil((6+1+1-2)/2)+1 = 4, but window 4 would start at 6 >= 6+1 → 4 stays;
    // with pad 0 and size 5, k 2, s 2: ceil(3/2)+1 = 3, window 3 starts at 4 < 5 → 3).
    let gp = b.op("GlobalMaxPool", &[&c3], vec![]);
    let info = infer(&b.model());
    no_diags(&info);
    // (100 + 4 - 5) / 3 + 1 = 34
    assert_eq!(st(&info, &c1), [2, 6, 34]);
    assert_eq!(st(&info, &c3), [1, 4, 8, 16, 15]);
    assert_eq!(st(&info, &mp[0]), [1, 4, 4, 7, 7]);
    assert_eq!(st(&info, &mp[1]), [1, 4, 4, 7, 7]);
    assert_eq!(info.dtype(&mp[1]), Some(DataType::INT64));
    // ceil((34 - 3) / 2) + 1 = 17
    assert_eq!(st(&info, &ceil), [2, 6, 17]);
    assert_eq!(st(&info, &gp), [1, 4, 1, 1, 1]);
}

#[test]
fn pool_ceil_mode_drops_window_starting_in_padding() {
    let mut b = GraphBuilder::new("ceil");
    b.input("x", &[D::N(1), D::N(1), D::N(6), D::N(5)]);
    let p = b.op(
        "MaxPool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[0, 0, 1, 1]),
            attr_i("ceil_mode", 1),
        ],
    );
    let info = infer(&b.model());
    // H: ceil((6+1-2)/2)+1 = 4, but the 4th window starts at 6 >= 6 → 3.
    // W: ceil((5+1-2)/2)+1 = 3, 3rd window starts at 4 < 5 → 3.
    assert_eq!(st(&info, &p), [1, 1, 3, 3]);
}

#[test]
fn conv_transpose_output_padding_groups_and_3d() {
    let mut b = GraphBuilder::new("deconv");
    b.input("x", &[D::N(1), D::N(8), D::N(16), D::N(15)]);
    b.input("v", &[D::N(1), D::N(4), D::N(5), D::N(6), D::N(7)]);
    let w = b.init_randn("w", &[8, 3, 3, 3], 0.1);
    let up = b.op(
        "ConvTranspose",
        &["x", &w],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 0]),
            attr_i("group", 2),
        ],
    );
    let os = b.op(
        "ConvTranspose",
        &["x", &w],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("output_shape", &[33, 31]),
        ],
    );
    let same = b.op(
        "ConvTranspose",
        &["x", &w],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_s("auto_pad", "SAME_UPPER"),
        ],
    );
    let w3 = b.init_randn("w3", &[4, 2, 3, 3, 3], 0.1);
    let up3 = b.op(
        "ConvTranspose",
        &["v", &w3],
        vec![
            attr_ints("strides", &[2, 2, 2]),
            attr_ints("pads", &[1, 1, 1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 1, 1]),
        ],
    );
    let info = infer(&b.model());
    no_diags(&info);
    // 2*(16-1) + 1 + 3 - 2 = 32 ; 2*(15-1) + 0 + 3 - 2 = 29 ; channels 3 * group 2.
    assert_eq!(st(&info, &up), [1, 6, 32, 29]);
    assert_eq!(st(&info, &os), [1, 3, 33, 31]);
    assert_eq!(st(&info, &same), [1, 3, 32, 30]);
    assert_eq!(st(&info, &up3), [1, 2, 10, 12, 14]);
}

fn resize_model(opset: i64) -> (ModelProto, Vec<String>) {
    let mut b = GraphBuilder::new("resize").with_opset(opset);
    b.input("x", &[D::N(1), D::N(3), D::N(17), D::N(20)]);
    let roi = b.init_f32("roi", &[0], &[]);
    let none = b.init_f32("no_scales", &[0], &[]);
    let up = b.init_f32("up", &[4], &[1.0, 1.0, 2.0, 2.0]);
    let down = b.init_f32("down", &[4], &[1.0, 1.0, 0.5, 1.0 / 3.0]);
    let sizes = b.init_i64("sizes", &[4], &[1, 3, 40, 50]);
    let a = b.op("Resize", &["x", &roi, &up], vec![attr_s("mode", "nearest")]);
    let c = b.op(
        "Resize",
        &["x", &roi, &down],
        vec![attr_s("mode", "nearest")],
    );
    let d = b.op(
        "Resize",
        &["x", &roi, &none, &sizes],
        vec![attr_s("mode", "linear")],
    );
    (b.model(), vec![a, c, d])
}

#[test]
fn resize_with_scales_and_sizes() {
    let (m, outs) = resize_model(13);
    let info = infer(&m);
    no_diags(&info);
    assert_eq!(st(&info, &outs[0]), [1, 3, 34, 40]);
    // floor(17 * 0.5) = 8, floor(20 * (1/3 as f32)) = 6
    assert_eq!(st(&info, &outs[1]), [1, 3, 8, 6]);
    assert_eq!(st(&info, &outs[2]), [1, 3, 40, 50]);

    // Opset 18 axes attribute; Upsample with its scales input; symbolic dims scale too.
    let mut b = GraphBuilder::new("resize18").with_opset(18);
    b.input(
        "x",
        &[D::S("batch"), D::N(3), D::S("height"), D::S("width")],
    );
    let roi = b.init_f32("roi", &[0], &[]);
    let sc = b.init_f32("sc", &[2], &[2.0, 4.0]);
    let half = b.init_f32("half", &[4], &[1.0, 1.0, 0.5, 0.5]);
    let r = b.op(
        "Resize",
        &["x", &roi, &sc],
        vec![attr_ints("axes", &[2, 3])],
    );
    let h = b.op("Resize", &["x", &roi, &half], vec![]);
    let info = infer(&b.model());
    assert_eq!(
        dims(&info, &r),
        [s("batch"), k(3), s("2*height"), s("4*width")]
    );
    assert_eq!(
        dims(&info, &h),
        [s("batch"), k(3), s("height/2"), s("width/2")]
    );

    let mut b = GraphBuilder::new("upsample").with_opset(9);
    b.input("x", &[D::N(1), D::N(2), D::N(5), D::N(7)]);
    let sc = b.init_f32("sc", &[4], &[1.0, 1.0, 3.0, 2.0]);
    let u = b.op("Upsample", &["x", &sc], vec![]);
    let info = infer(&b.model());
    assert_eq!(st(&info, &u), [1, 2, 15, 14]);
}

/// Seed case P11: `Shape → Gather → Div → Concat → Reshape`.
fn shape_arith_model() -> (ModelProto, String, String) {
    let mut b = GraphBuilder::new("p11");
    b.input(
        "x",
        &[D::S("batch"), D::N(3), D::S("height"), D::S("width")],
    );
    let shape = b.op("Shape", &["x"], vec![]);
    let i0 = b.init_i64("i0", &[], &[0]);
    let i2 = b.init_i64("i2", &[], &[2]);
    let i3 = b.init_i64("i3", &[], &[3]);
    let two = b.init_i64("two", &[], &[2]);
    let n = b.op("Gather", &[&shape, &i0], vec![attr_i("axis", 0)]);
    let h = b.op("Gather", &[&shape, &i2], vec![attr_i("axis", 0)]);
    let w = b.op("Gather", &[&shape, &i3], vec![attr_i("axis", 0)]);
    let h2 = b.op("Div", &[&h, &two], vec![]);
    let w2 = b.op("Mul", &[&w, &two], vec![]);
    let axes = b.init_i64("axes0", &[1], &[0]);
    let nu = b.op("Unsqueeze", &[&n, &axes], vec![]);
    let hu = b.op("Unsqueeze", &[&h2, &axes], vec![]);
    let wu = b.op("Unsqueeze", &[&w2, &axes], vec![]);
    let three = b.const_i64(&[3]);
    let target = b.concat(&[&nu, &three, &hu, &wu], 0);
    let y = b.op("Reshape", &["x", &target], vec![]);
    b.output(&y, &[D::S("batch"), D::N(3), D::S("h2"), D::S("w2")]);
    (b.model(), target, y)
}

#[test]
fn shape_arithmetic_evaluates_with_pins() {
    let (m, target, y) = shape_arith_model();
    let info = infer_with(&m, &pins(&[("x", &[2, 3, 64, 48])]));
    no_diags(&info);
    assert_eq!(
        info.get(&target).unwrap().int_values(),
        Some(vec![2, 3, 32, 96])
    );
    assert_eq!(st(&info, &y), [2, 3, 32, 96]);
}

#[test]
fn shape_arithmetic_stays_symbolic_without_pins() {
    let (m, target, y) = shape_arith_model();
    let info = infer(&m);
    no_diags(&info);
    assert_eq!(
        info.get(&target).unwrap().value,
        Some(Value::Int(vec![
            s("batch"),
            k(3),
            s("height/2"),
            s("2*width")
        ]))
    );
    assert_eq!(
        dims(&info, &y),
        [s("batch"), k(3), s("height/2"), s("2*width")]
    );
    assert_eq!(rank_of(&info, &y), Some(4));
}

#[test]
fn reshape_minus_one_and_zero_with_symbols() {
    let mut b = GraphBuilder::new("reshape");
    b.input("x", &[D::S("batch"), D::N(8), D::S("h"), D::S("w")]);
    let t = b.init_i64("t", &[3], &[0, 0, -1]);
    let flat = b.op("Reshape", &["x", &t], vec![]);
    let t2 = b.init_i64("t2", &[4], &[0, 2, 4, -1]);
    let split = b.op("Reshape", &["x", &t2], vec![]);
    let tr = b.op("Transpose", &[&flat], vec![]);
    let fl = b.op("Flatten", &["x"], vec![attr_i("axis", 2)]);
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(dims(&info, &flat), [s("batch"), k(8), s("h*w")]);
    assert_eq!(dims(&info, &split), [s("batch"), k(2), k(4), s("h*w")]);
    assert_eq!(dims(&info, &tr), [s("h*w"), k(8), s("batch")]);
    assert_eq!(dims(&info, &fl), [s("8*batch"), s("h*w")]);
}

#[test]
fn symbolic_spatial_dims_through_strided_convs() {
    let mut b = GraphBuilder::new("sym");
    b.input(
        "x",
        &[D::S("batch"), D::N(3), D::S("height"), D::S("width")],
    );
    let c1 = b.conv("x", 3, 8, 3, 2, 1, 1);
    let c2 = b.conv(&c1, 8, 8, 3, 2, 1, 1);
    let c3 = b.conv(&c2, 8, 8, 3, 1, 1, 1);
    let info = infer(&b.model());
    assert_eq!(
        dims(&info, &c1),
        [s("batch"), k(8), s("(height+1)/2"), s("(width+1)/2")]
    );
    assert_eq!(
        dims(&info, &c2),
        [s("batch"), k(8), s("(height+3)/4"), s("(width+3)/4")]
    );
    assert_eq!(dims(&info, &c3), dims(&info, &c2));
}

#[test]
fn broadcasting_with_symbolic_dims() {
    let mut b = GraphBuilder::new("bcast");
    b.input("a", &[D::S("batch"), D::N(1), D::S("height")]);
    b.input("b", &[D::N(1), D::N(5), D::S("height")]);
    b.input("c", &[D::S("n"), D::N(3)]);
    b.input("d", &[D::S("batch"), D::N(3)]);
    b.input("e", &[D::N(4), D::N(3)]);
    b.input("f", &[D::N(3)]);
    let ab = b.add("a", "b");
    let cd = b.mul("c", "d");
    let de = b.add("d", "e");
    let df = b.op("Sub", &["d", "f"], vec![]);
    let cmp = b.op("Less", &["d", "f"], vec![]);
    let wh = b.op("Where", &[&cmp, "d", "e"], vec![]);
    let mx = b.op("Max", &["f", "e", "d"], vec![]);
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(dims(&info, &ab), [s("batch"), k(5), s("height")]);
    assert_eq!(dims(&info, &cd), [Dim::Unknown, k(3)]);
    assert_eq!(dims(&info, &de), [k(4), k(3)]);
    assert_eq!(dims(&info, &df), [s("batch"), k(3)]);
    assert_eq!(info.dtype(&cmp), Some(DataType::BOOL));
    assert_eq!(dims(&info, &wh), [k(4), k(3)]);
    assert_eq!(dims(&info, &mx), [k(4), k(3)]);

    // Incompatible concrete dims: a diagnostic and an unknown dim, no failure.
    let mut b = GraphBuilder::new("bad");
    b.input("a", &[D::N(2), D::N(3)]);
    b.input("b", &[D::N(4), D::N(3)]);
    let y = b.add("a", "b");
    let info = infer(&b.model());
    assert_eq!(dims(&info, &y), [Dim::Unknown, k(3)]);
    assert_eq!(info.diagnostics.len(), 1);
}

#[test]
fn gemm_flatten_matmul() {
    let mut b = GraphBuilder::new("fc");
    b.input("x", &[D::N(2), D::N(3), D::N(4), D::N(5)]);
    let f = b.op("Flatten", &["x"], vec![]);
    let g = b.gemm(&f, 60, 10);
    let wt = b.init_randn("wt", &[60, 7], 0.1);
    let g2 = b.op(
        "Gemm",
        &[&wt, &f],
        vec![attr_i("transA", 1), attr_i("transB", 1)],
    );
    let f0 = b.op("Flatten", &["x"], vec![attr_i("axis", 0)]);
    let fneg = b.op("Flatten", &["x"], vec![attr_i("axis", -1)]);
    b.input("m", &[D::S("batch"), D::N(1), D::N(6), D::N(4)]);
    b.input("n", &[D::N(5), D::N(4), D::N(7)]);
    b.input("v", &[D::N(4)]);
    let mm = b.op("MatMul", &["m", "n"], vec![]);
    let mv = b.op("MatMul", &["m", "v"], vec![]);
    let vm = b.op("MatMul", &["v", "n"], vec![]);
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(st(&info, &f), [2, 60]);
    assert_eq!(st(&info, &g), [2, 10]);
    assert_eq!(st(&info, &g2), [7, 2]);
    assert_eq!(st(&info, &f0), [1, 120]);
    assert_eq!(st(&info, &fneg), [24, 5]);
    assert_eq!(dims(&info, &mm), [s("batch"), k(5), k(6), k(7)]);
    assert_eq!(dims(&info, &mv), [s("batch"), k(1), k(6)]);
    assert_eq!(dims(&info, &vm), [k(5), k(7)]);
}

fn branch(name: &str, build: impl FnOnce(&mut GraphBuilder) -> String) -> GraphProto {
    let mut b = GraphBuilder::new(name);
    let out = build(&mut b);
    b.output_typed(&out, DataType::FLOAT, None);
    b.graph()
}

/// `If(cond)` with a Relu branch (x's shape) and a Reshape-to-2-D branch.
fn if_model(cond_from_shape: bool) -> (ModelProto, String, String, String) {
    let mut b = GraphBuilder::new("if");
    b.input("x", &[D::S("batch"), D::N(1), D::N(4), D::N(6)]);
    let cond = if cond_from_shape {
        // squeeze(1) as PyTorch exports it on a dynamic dim: If(Shape(x)[1] == 1).
        let shape = b.op("Shape", &["x"], vec![]);
        let one = b.init_i64("one", &[], &[1]);
        let dim = b.op("Gather", &[&shape, &one], vec![]);
        b.op("Equal", &[&dim, &one], vec![])
    } else {
        let t = i64_tensor("", &[], &[0]);
        let t = pare::model::proto::TensorProto {
            data_type: Some(DataType::BOOL.0),
            raw_data: Some(bytes::Bytes::from_static(&[0])),
            ..t
        };
        b.op("Constant", &[], vec![attr_t("value", t)])
    };
    let then_g = branch("then", |g| {
        let axes = g.init_i64("sq_axes", &[1], &[1]);
        g.node_named("sq", "Squeeze", &["x", &axes], &["then_out"], vec![]);
        "then_out".to_string()
    });
    let else_g = branch("else", |g| {
        let t = g.init_i64("else_shape", &[2], &[0, -1]);
        g.node_named("rs", "Reshape", &["x", &t], &["else_out"], vec![]);
        "else_out".to_string()
    });
    let y = b.op(
        "If",
        &[&cond],
        vec![attr_g("then_branch", then_g), attr_g("else_branch", else_g)],
    );
    let r = b.relu(&y);
    (b.model(), cond, y, r)
}

#[test]
fn if_with_constant_condition_takes_the_branch() {
    let (m, _, y, r) = if_model(false);
    let info = infer(&m);
    no_diags(&info);
    assert_eq!(dims(&info, &y), [s("batch"), k(24)]);
    assert_eq!(dims(&info, &r), [s("batch"), k(24)]);
    // Both branches were inferred.
    assert_eq!(dims(&info, "then_out"), [s("batch"), k(4), k(6)]);
    assert_eq!(dims(&info, "else_out"), [s("batch"), k(24)]);
}

#[test]
fn if_on_shape_condition_resolves_with_pins_and_merges_without() {
    let (m, cond, y, _) = if_model(true);
    let info = infer_with(&m, &pins(&[("x", &[3, 1, 4, 6])]));
    no_diags(&info);
    assert_eq!(info.get(&cond).unwrap().int_values(), Some(vec![1]));
    assert_eq!(st(&info, &y), [3, 4, 6]);
    // Dim 1 is declared 1, so even unpinned the condition is known.
    let info = infer(&m);
    assert_eq!(dims(&info, &y), [s("batch"), k(4), k(6)]);
    // A pin with channel 5 flips the condition; the dead Squeeze branch (squeezing a 5)
    // raises no diagnostic.
    let info = infer_with(&m, &pins(&[("x", &[3, 5, 4, 6])]));
    assert_eq!(st(&info, &y), [3, 120]);
    no_diags(&info);

    // Unknown condition: ranks differ between branches, so the rank is unknown.
    let mut b = GraphBuilder::new("if_unknown");
    b.input("x", &[D::N(2), D::N(1), D::N(4), D::N(6)]);
    b.input_typed("c", DataType::BOOL, &[]);
    let g1 = branch("t", |g| {
        g.node_named("r1", "Relu", &["x"], &["t_out"], vec![]);
        "t_out".into()
    });
    let g2 = branch("e", |g| {
        g.node_named("r2", "Sigmoid", &["x"], &["e_out"], vec![]);
        "e_out".into()
    });
    let same = b.op(
        "If",
        &["c"],
        vec![attr_g("then_branch", g1), attr_g("else_branch", g2)],
    );
    let info = infer(&b.model());
    assert_eq!(st(&info, &same), [2, 1, 4, 6]);
}

#[test]
fn loop_scan_outputs_stack_trip_count() {
    let mut b = GraphBuilder::new("loop");
    b.input("x", &[D::N(2), D::N(3)]);
    let m = b.init_i64("trip", &[], &[5]);
    let mut body = GraphBuilder::new("body");
    body.input_typed("iter", DataType::INT64, &[]);
    body.input_typed("cond_in", DataType::BOOL, &[]);
    body.input("acc", &[D::N(2), D::N(3)]);
    body.node_named("b_add", "Add", &["acc", "x"], &["acc_out"], vec![]);
    body.node_named("b_id", "Identity", &["cond_in"], &["cond_out"], vec![]);
    body.node_named("b_relu", "Relu", &["acc_out"], &["scan_out"], vec![]);
    body.output_typed("cond_out", DataType::BOOL, Some(&[]));
    body.output_typed("acc_out", DataType::FLOAT, None);
    body.output_typed("scan_out", DataType::FLOAT, None);
    let outs = b.node(
        "Loop",
        &[&m, "", "x"],
        2,
        vec![attr_g("body", body.graph())],
    );
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(st(&info, &outs[0]), [2, 3]);
    assert_eq!(st(&info, &outs[1]), [5, 2, 3]);
    assert_eq!(st(&info, "scan_out"), [2, 3]);
}

#[test]
fn unknown_custom_op_gives_diagnostic_not_failure() {
    let mut b = GraphBuilder::new("custom");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let mut outs = b.node("MyFancyOp", &["x"], 1, vec![]);
    b.nodes.last_mut().unwrap().domain = Some("com.example".into());
    let y = outs.remove(0);
    let after = b.relu(&y);
    let unk = b.op("TotallyUnknownOp", &["x"], vec![]);
    let side = b.conv("x", 3, 4, 3, 1, 1, 1);
    let info = infer(&b.model());
    let t = info.get(&y).unwrap();
    assert_eq!((t.shape.clone(), t.dtype), (None, None));
    assert_eq!(info.shape(&after), None);
    assert_eq!(info.shape(&unk), None);
    assert_eq!(st(&info, &side), [1, 4, 8, 8]);
    let msgs: Vec<&str> = info
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with("no shape rule for op com.example.MyFancyOp"),
        "{msgs:?}"
    );
    assert_eq!(
        msgs[1],
        "no shape rule for op TotallyUnknownOp; outputs unknown"
    );
    assert_eq!(info.diagnostics[1].op_type, "TotallyUnknownOp");
}

#[test]
fn bad_axes_are_diagnosed_not_panicking() {
    let mut b = GraphBuilder::new("bad_axes");
    b.input("x", &[D::N(1), D::N(3), D::N(8)]);
    let ax = b.init_i64("ax", &[1], &[7]);
    let sq = b.op("Squeeze", &["x", &ax], vec![]);
    let un = b.op("Unsqueeze", &["x", &ax], vec![]);
    let idx = b.init_i64("idx", &[], &[0]);
    let ga = b.op("Gather", &["x", &idx], vec![attr_i("axis", -9)]);
    let tr = b.op("Transpose", &["x"], vec![attr_ints("perm", &[0, 0, 1])]);
    let cc = b.op("Concat", &["x", "x"], vec![attr_i("axis", 3)]);
    let sm = b.op("Softmax", &["x"], vec![attr_i("axis", 5)]);
    let rd = b.op("ReduceMean", &["x"], vec![attr_ints("axes", &[-4])]);
    let am = b.op("ArgMax", &["x"], vec![attr_i("axis", 3)]);
    let st_ = b.init_i64("st", &[1], &[0]);
    let en = b.init_i64("en", &[1], &[2]);
    let bad = b.init_i64("bad", &[1], &[9]);
    let sl = b.op("Slice", &["x", &st_, &en, &bad], vec![]);
    let zero = b.init_i64("zero", &[1], &[0]);
    let one = b.init_i64("one", &[1], &[1]);
    let step0 = b.op("Slice", &["x", &st_, &en, &one, &zero], vec![]);
    let sp = b.node("Split", &["x"], 2, vec![attr_i("axis", -5)]);
    let info = infer(&b.model());
    assert_eq!(info.shape(&sq), None);
    assert_eq!(rank_of(&info, &un), Some(4));
    assert_eq!(info.shape(&ga), None);
    assert_eq!(dims(&info, &tr), vec![Dim::Unknown; 3]);
    assert_eq!(dims(&info, &cc), vec![Dim::Unknown; 3]);
    assert_eq!(st(&info, &sm), [1, 3, 8]);
    assert_eq!(rank_of(&info, &rd), Some(3));
    assert_eq!(info.shape(&am), None);
    assert_eq!(rank_of(&info, &sl), Some(3));
    assert_eq!(dims(&info, &step0), [k(1), Dim::Unknown, k(8)]);
    assert_eq!(rank_of(&info, &sp[1]), Some(3));
    assert!(info.diagnostics.len() >= 9, "{:?}", info.diagnostics);
}

#[test]
fn slice_split_pad_and_friends() {
    let mut b = GraphBuilder::new("misc");
    b.input("x", &[D::N(2), D::N(10), D::N(9), D::S("w")]);
    let i = |b: &mut GraphBuilder, n: &str, v: &[i64]| b.init_i64(n, &[v.len() as i64], v);
    let st_ = i(&mut b, "st", &[-3, 1, 0]);
    let en = i(&mut b, "en", &[i64::MAX, 100, -1]);
    let ax = i(&mut b, "ax", &[1, 2, 3]);
    let sp = i(&mut b, "sp", &[1, 3, 1]);
    let sl = b.op("Slice", &["x", &st_, &en, &ax, &sp], vec![]);
    let rst = i(&mut b, "rst", &[-1]);
    let ren = i(&mut b, "ren", &[i64::MIN]);
    let rax = i(&mut b, "rax", &[1]);
    let rsp = i(&mut b, "rsp", &[-2]);
    let rev = b.op("Slice", &["x", &rst, &ren, &rax, &rsp], vec![]);
    let split = b.node(
        "Split",
        &["x"],
        3,
        vec![attr_i("axis", 1), attr_i("num_outputs", 3)],
    );
    let sizes = i(&mut b, "sizes", &[2, 7]);
    let split2 = b.node("Split", &["x", &sizes], 2, vec![attr_i("axis", 2)]);
    let pads = i(&mut b, "pads", &[0, 1, 2, 3, 0, 1, 2, 3]);
    let pd = b.op("Pad", &["x", &pads], vec![attr_s("mode", "reflect")]);
    let pads2 = i(&mut b, "pads2", &[1, 4]);
    let pax = i(&mut b, "pax", &[-2]);
    let pd2 = b.op("Pad", &["x", &pads2, "", &pax], vec![]);
    let raxes = i(&mut b, "raxes", &[1, -1]);
    let rm = b.op("ReduceMean", &["x", &raxes], vec![attr_i("keepdims", 0)]);
    let rs = b.op("ReduceSum", &["x"], vec![]);
    let rn = b.op("ReduceSum", &["x"], vec![attr_i("noop_with_empty_axes", 1)]);
    let kk = i(&mut b, "kk", &[4]);
    let tk = b.node("TopK", &["x", &kk], 2, vec![attr_i("axis", 1)]);
    let am = b.op(
        "ArgMin",
        &["x"],
        vec![attr_i("axis", 2), attr_i("keepdims", 0)],
    );
    let tl = i(&mut b, "reps", &[1, 2, 3, 1]);
    let tile = b.op("Tile", &["x", &tl], vec![]);
    let es = i(&mut b, "es", &[3, 1, 1, 1, 1]);
    let ex = b.op("Expand", &["x", &es], vec![]);
    let sh = b.op("Shape", &["x"], vec![attr_i("start", 1), attr_i("end", -1)]);
    let size = b.op("Size", &[&sl], vec![]);
    let cos = b.op("ConstantOfShape", &[&sh], vec![]);
    let d2s_in = b.op("Transpose", &["x"], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let c_qs = b.init_f32("qs", &[], &[0.1]);
    let qz = b.op("QuantizeLinear", &["x", &c_qs], vec![]);
    let c_ds = b.init_f32("ds", &[], &[0.1]);
    let dq = b.op("DequantizeLinear", &[&qz, &c_ds], vec![]);
    let cast = b.op("Cast", &["x"], vec![attr_i("to", DataType::INT32.0 as i64)]);
    let info = infer(&b.model());
    no_diags(&info);
    // axis1: [-3, MAX) of 10 → 7..10 → 3; axis2: [1, 100) step 3 of 9 → 1,4,7 → 3;
    // axis3: [0, -1) of w → w-1.
    assert_eq!(dims(&info, &sl), [k(2), k(3), k(3), s("w-1")]);
    // Reverse with step -2 over 10 → 9,7,5,3,1.
    assert_eq!(dims(&info, &rev), [k(2), k(5), k(9), s("w")]);
    assert_eq!(dims(&info, &split[0])[1], k(4));
    assert_eq!(dims(&info, &split[2])[1], k(2));
    assert_eq!(dims(&info, &split2[1]), [k(2), k(10), k(7), s("w")]);
    assert_eq!(dims(&info, &pd), [k(2), k(12), k(13), s("w+6")]);
    assert_eq!(dims(&info, &pd2), [k(2), k(10), k(14), s("w")]);
    assert_eq!(st(&info, &rm), [2, 9]);
    assert_eq!(st(&info, &rs), [1, 1, 1, 1]);
    assert_eq!(dims(&info, &rn), dims(&info, "x"));
    assert_eq!(dims(&info, &tk[0]), [k(2), k(4), k(9), s("w")]);
    assert_eq!(info.dtype(&tk[1]), Some(DataType::INT64));
    assert_eq!(dims(&info, &am), [k(2), k(10), s("w")]);
    assert_eq!(info.dtype(&am), Some(DataType::INT64));
    assert_eq!(dims(&info, &tile), [k(2), k(20), k(27), s("w")]);
    assert_eq!(dims(&info, &ex), [k(3), k(2), k(10), k(9), s("w")]);
    assert_eq!(
        info.get(&sh).unwrap().value,
        Some(Value::Int(vec![k(10), k(9)]))
    );
    assert_eq!(
        info.get(&size).unwrap().value,
        Some(Value::Int(vec![s("18*w-18")]))
    );
    assert_eq!(st(&info, &cos), [10, 9]);
    assert_eq!(info.dtype(&cos), Some(DataType::FLOAT));
    assert_eq!(dims(&info, &d2s_in), [k(2), k(9), k(10), s("w")]);
    assert_eq!(info.dtype(&qz), Some(DataType::UINT8));
    assert_eq!(info.dtype(&dq), Some(DataType::FLOAT));
    assert_eq!(info.dtype(&cast), Some(DataType::INT32));
}

#[test]
fn small_integer_values_evaluate() {
    let mut b = GraphBuilder::new("eval");
    b.input("x", &[D::N(1), D::N(3), D::N(10), D::N(12)]);
    let sh = b.op("Shape", &["x"], vec![]);
    let st_ = b.init_i64("s", &[1], &[2]);
    let en = b.init_i64("e", &[1], &[4]);
    let hw = b.op("Slice", &[&sh, &st_, &en], vec![]);
    let f = b.op("Cast", &[&hw], vec![attr_i("to", 1)]);
    let half = b.init_f32("half", &[], &[0.5]);
    let scaled = b.op("Mul", &[&f, &half], vec![]);
    let fl = b.op("Floor", &[&scaled], vec![]);
    let back = b.op("Cast", &[&fl], vec![attr_i("to", 7)]);
    let prod = b.op("ReduceProd", &[&back], vec![attr_i("keepdims", 0)]);
    let zero = b.init_i64("z", &[], &[0]);
    let one = b.init_i64("o", &[], &[1]);
    let rg = b.op("Range", &[&zero, &prod, &one], vec![]);
    let c_ten = b.init_i64("ten", &[1], &[10]);
    let eq = b.op("Equal", &[&hw, &c_ten], vec![]);
    let nt = b.op("Not", &[&eq], vec![]);
    let c_m1 = b.init_i64("m1", &[1], &[-1]);
    let wh = b.op("Where", &[&eq, &hw, &c_m1], vec![]);
    let c_e3 = b.init_i64("e3", &[1], &[3]);
    let ex = b.op("Expand", &[&one, &c_e3], vec![]);
    let nz = b.op("NonZero", &[&nt], vec![]);
    let c_lo = b.init_i64("lo", &[], &[11]);
    let c_hi = b.init_i64("hi", &[], &[100]);
    let cl = b.op("Clip", &[&hw, &c_lo, &c_hi], vec![]);
    let info = infer(&b.model());
    no_diags(&info);
    let ints = |n: &str| info.get(n).unwrap().int_values();
    assert_eq!(ints(&hw), Some(vec![10, 12]));
    assert_eq!(
        info.get(&scaled).unwrap().value,
        Some(Value::Float(vec![5.0, 6.0]))
    );
    assert_eq!(ints(&back), Some(vec![5, 6]));
    assert_eq!(ints(&prod), Some(vec![30]));
    assert_eq!(st(&info, &rg), [30]);
    assert_eq!(ints(&eq), Some(vec![1, 0]));
    assert_eq!(info.dtype(&eq), Some(DataType::BOOL));
    assert_eq!(ints(&nt), Some(vec![0, 1]));
    assert_eq!(ints(&wh), Some(vec![10, -1]));
    assert_eq!(ints(&ex), Some(vec![1, 1, 1]));
    assert_eq!(st(&info, &nz), [1, 1]);
    assert_eq!(ints(&cl), Some(vec![11, 12]));
}

#[test]
fn pins_replace_declared_shapes() {
    let mut b = GraphBuilder::new("pins");
    b.input("x", &[D::S("batch"), D::N(3), D::S("h"), D::S("w")]);
    let y = b.conv("x", 3, 4, 3, 2, 1, 1);
    let m = b.model();
    let info = infer_with(&m, &pins(&[("x", &[1, 3, 64, 64])]));
    no_diags(&info);
    assert_eq!(st(&info, &y), [1, 4, 32, 32]);
    // A pin of another rank is used anyway, with a diagnostic.
    let info = infer_with(&m, &pins(&[("x", &[3, 64, 64])]));
    assert_eq!(st(&info, "x"), [3, 64, 64]);
    assert!(
        info.diagnostics
            .iter()
            .any(|d| d.node == "x" && d.message.contains("rank"))
    );
}

#[test]
fn nested_graph_api_resolves_outer_names() {
    let (m, _, _, _) = if_model(false);
    let g = m.graph.as_ref().unwrap();
    let ix = GraphIndex::build(g).unwrap();
    let outer = infer_with(&m, &pins(&[("x", &[2, 1, 4, 6])]));
    let sub = ix
        .subgraphs
        .iter()
        .find(|s| s.attribute == "then_branch")
        .unwrap();
    let then_g = g
        .node
        .iter()
        .find_map(|n| n.attr("then_branch"))
        .and_then(|a| a.g.as_deref())
        .unwrap();
    let info = infer_graph(then_g, &sub.index, &outer, 17);
    assert_eq!(st(&info, "then_out"), [2, 4, 6]);
}

#[test]
fn ten_thousand_nodes_infer_fast() {
    let m = pare::model::builder::zoo::deep_narrow(10_000);
    let ix = GraphIndex::build(m.graph.as_ref().unwrap()).unwrap();
    let t = std::time::Instant::now();
    let info = infer_shapes(&m, &ix, &HashMap::new());
    let el = t.elapsed();
    no_diags(&info);
    assert!(info.tensors.len() > 10_000);
    assert_eq!(info.static_count(), info.tensors.len());
    // Release builds take a few ms; leave room for debug builds and busy CI machines.
    assert!(el.as_millis() < 2_000, "took {el:?}");
}

// ---- Agreement with tract ----

/// Compares pare with tract on every tensor tract gives a concrete shape; returns how many
/// tensors were compared.
fn agree_with_tract(m: &ModelProto, p: &InputPins) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, pare::model::io::encode_model(m)).unwrap();
    let tract = tract_shapes(&path, p).unwrap_or_else(|e| panic!("tract failed: {e}"));
    let ours = infer_with(m, p);
    no_diags(&ours);
    let mut bad: Vec<String> = tract
        .iter()
        .filter(|(name, shape)| ours.static_shape(name).as_ref() != Some(*shape))
        .map(|(name, shape)| {
            format!(
                "{name}: pare {} tract {shape:?}",
                format_shape(ours.shape(name))
            )
        })
        .collect();
    bad.sort();
    assert!(
        bad.is_empty(),
        "pare and tract disagree:\n{}",
        bad.join("\n")
    );
    // Everything tract left open is something pare must at least not have got wrong; and
    // pare must not know less than tract about these static models.
    tract.len()
}

fn agreement_convnet() -> ModelProto {
    let mut b = GraphBuilder::new("convnet").with_opset(13);
    b.input("x", &[D::N(1), D::N(3), D::N(67), D::N(50)]);
    let c1 = b.conv("x", 3, 8, 3, 2, 1, 1);
    let c1 = b.batchnorm(&c1, 8);
    let c1 = b.relu(&c1);
    let mp = b.op(
        "MaxPool",
        &[&c1],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let ap = b.op(
        "AveragePool",
        &[&mp],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_i("ceil_mode", 1),
        ],
    );
    let dil = conv_node(
        &mut b,
        &mp,
        &[8, 8, 3, 3],
        vec![
            attr_ints("dilations", &[2, 2]),
            attr_ints("pads", &[2, 2, 2, 2]),
        ],
    );
    let same = conv_node(
        &mut b,
        &dil,
        &[8, 8, 3, 3],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_s("auto_pad", "SAME_UPPER"),
        ],
    );
    let w = b.init_randn("wt", &[8, 4, 3, 3], 0.1);
    let up = b.op(
        "ConvTranspose",
        &[&same, &w],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 1]),
        ],
    );
    let sig = b.op("Sigmoid", &[&up], vec![]);
    let hs = b.op("HardSwish", &[&ap], vec![]);
    let gp = b.op("GlobalAveragePool", &[&hs], vec![]);
    let fl = b.op("Flatten", &[&gp], vec![]);
    let fc = b.gemm(&fl, 8, 5);
    let sm = b.op("Softmax", &[&fc], vec![attr_i("axis", 1)]);
    b.output(&sm, &[D::N(1), D::N(5)]);
    b.output(&sig, &[D::S("a"), D::S("b"), D::S("c"), D::S("d")]);
    b.model()
}

fn agreement_shapes() -> ModelProto {
    let mut b = GraphBuilder::new("shapes").with_opset(13);
    b.input(
        "x",
        &[D::S("batch"), D::N(4), D::S("height"), D::S("width")],
    );
    let c = b.conv("x", 4, 6, 3, 1, 1, 1);
    // Shape arithmetic: reshape to [N, 6, H*W] through Shape/Gather/Mul/Concat.
    let sh = b.op("Shape", &[&c], vec![]);
    let idx = b.init_i64("idx", &[2], &[2, 3]);
    let hw = b.op("Gather", &[&sh, &idx], vec![]);
    let prod = b.op("ReduceProd", &[&hw], vec![attr_i("keepdims", 1)]);
    let nc_s = b.init_i64("nc_s", &[1], &[0]);
    let nc_e = b.init_i64("nc_e", &[1], &[2]);
    let nc = b.op("Slice", &[&sh, &nc_s, &nc_e], vec![]);
    let tgt = b.concat(&[&nc, &prod], 0);
    let flat = b.op("Reshape", &[&c, &tgt], vec![]);
    let tr = b.op("Transpose", &[&flat], vec![attr_ints("perm", &[0, 2, 1])]);
    let mm = b.op("MatMul", &[&tr, &flat], vec![]);
    let rm = b.op(
        "ReduceMean",
        &[&mm],
        vec![attr_ints("axes", &[-1]), attr_i("keepdims", 0)],
    );
    // Slices with negative and clamped bounds and steps.
    let s1 = b.init_i64("s1", &[2], &[-5, 1]);
    let e1 = b.init_i64("e1", &[2], &[i64::MAX, 1000]);
    let a1 = b.init_i64("a1", &[2], &[2, 3]);
    let p1 = b.init_i64("p1", &[2], &[2, 3]);
    let sl = b.op("Slice", &[&c, &s1, &e1, &a1, &p1], vec![]);
    // Resize by scales and by sizes.
    let roi = b.init_f32("roi", &[0], &[]);
    let sc = b.init_f32("sc", &[4], &[1.0, 1.0, 2.0, 0.5]);
    let rz = b.op("Resize", &[&c, &roi, &sc], vec![attr_s("mode", "nearest")]);
    let none = b.init_f32("none", &[0], &[]);
    let c_two = b.init_i64("two", &[1], &[2]);
    let hw_up = b.op("Mul", &[&hw, &c_two], vec![]);
    let sizes = b.concat(&[&nc, &hw_up], 0);
    let rz2 = b.op(
        "Resize",
        &[&c, &roi, &none, &sizes],
        vec![attr_s("mode", "linear")],
    );
    // Pad, Concat, Split, Unsqueeze/Squeeze, Expand, Tile, Where.
    let pads = b.init_i64("pads", &[8], &[0, 0, 1, 2, 0, 0, 3, 0]);
    let pd = b.op("Pad", &[&c, &pads], vec![attr_s("mode", "edge")]);
    let cat = b.concat(&[&c, &c, &c], 1);
    let c_cs = b.init_i64("cs", &[1], &[0]);
    let c_ce = b.init_i64("ce", &[1], &[12]);
    let c_ca = b.init_i64("ca", &[1], &[1]);
    let cat = b.op("Slice", &[&cat, &c_cs, &c_ce, &c_ca], vec![]);
    let c_split = b.init_i64("split", &[3], &[2, 4, 6]);
    let sp = b.node("Split", &[&cat, &c_split], 3, vec![attr_i("axis", 1)]);
    let ua = b.init_i64("ua", &[2], &[0, 3]);
    let un = b.op("Unsqueeze", &[&sp[0], &ua], vec![]);
    let sq = b.op("Squeeze", &[&un, &ua], vec![]);
    let c_one = b.init_f32("one", &[1, 1], &[1.0]);
    let c_exs = b.init_i64("exs", &[3], &[2, 1, 5]);
    let ex = b.op("Expand", &[&c_one, &c_exs], vec![]);
    let c_reps = b.init_i64("reps", &[4], &[1, 2, 1, 1]);
    let tl = b.op("Tile", &[&sq, &c_reps], vec![]);
    let gt = b.op("Greater", &[&sp[1], &tl], vec![]);
    let wh = b.op("Where", &[&gt, &sp[1], &tl], vec![]);
    let am = b.op("ArgMax", &[&wh], vec![attr_i("axis", 1)]);
    let outs = [rm, sl, rz, rz2, pd, ex, am];
    for o in &outs {
        b.output_typed(o, DataType::FLOAT, None);
    }
    b.model()
}

fn agreement_3d() -> ModelProto {
    let mut b = GraphBuilder::new("vol").with_opset(13);
    b.input("v", &[D::N(1), D::N(2), D::N(6), D::N(10), D::N(9)]);
    let c = conv_node(
        &mut b,
        "v",
        &[4, 2, 3, 3, 3],
        vec![
            attr_ints("strides", &[1, 2, 2]),
            attr_ints("pads", &[1, 1, 1, 1, 1, 1]),
        ],
    );
    let w = b.init_randn("wt3", &[4, 3, 3, 3, 3], 0.1);
    let up = b.op(
        "ConvTranspose",
        &[&c, &w],
        vec![
            attr_ints("strides", &[2, 2, 2]),
            attr_ints("pads", &[1, 1, 1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 1, 0]),
        ],
    );
    let mp = b.op(
        "MaxPool",
        &[&up],
        vec![
            attr_ints("kernel_shape", &[2, 2, 2]),
            attr_ints("strides", &[2, 2, 2]),
        ],
    );
    let sqa = b.init_i64("sqa", &[1], &[0]);
    let sq = b.op("Squeeze", &[&mp, &sqa], vec![]);
    let sm = b.op("Softmax", &[&sq], vec![attr_i("axis", 0)]);
    let lrelu = b.op("LeakyRelu", &[&sm], vec![attr_f("alpha", 0.1)]);
    b.output_typed(&lrelu, DataType::FLOAT, None);
    b.model()
}

#[test]
fn agrees_with_tract_on_a_convnet() {
    let n = agree_with_tract(&agreement_convnet(), &HashMap::new());
    assert!(n >= 20, "tract gave only {n} shapes");
}

#[test]
fn agrees_with_tract_on_shape_arithmetic_with_pins() {
    let n = agree_with_tract(&agreement_shapes(), &pins(&[("x", &[2, 4, 12, 10])]));
    assert!(n >= 40, "tract gave only {n} shapes");
    // And without pins pare keeps everything symbolic but ranked.
    let info = infer(&agreement_shapes());
    for (name, t) in &info.tensors {
        assert!(t.shape.is_some(), "{name} lost its rank");
    }
}

#[test]
fn agrees_with_tract_on_3d_conv_and_transpose() {
    let n = agree_with_tract(&agreement_3d(), &HashMap::new());
    assert!(n >= 8, "tract gave only {n} shapes");
}

#[test]
fn agrees_with_tract_on_deep_narrow() {
    let n = agree_with_tract(
        &pare::model::builder::zoo::deep_narrow(300),
        &HashMap::new(),
    );
    assert!(n >= 300);
}

/// Every op with a rule, fed random ranks, random small-int operands (negative and huge
/// included) and random attributes: inference must never panic, whatever the model says.
#[test]
fn garbage_models_never_panic() {
    const OPS: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Equal",
        "Less",
        "Greater",
        "And",
        "Or",
        "Not",
        "Where",
        "Relu",
        "Clip",
        "Cast",
        "CastLike",
        "PRelu",
        "Dropout",
        "Softmax",
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "Gemm",
        "MatMul",
        "Einsum",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "ScatterND",
        "Pad",
        "Shape",
        "Size",
        "ConstantOfShape",
        "Range",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "OneHot",
        "NonZero",
        "Compress",
        "ReduceMean",
        "ReduceSum",
        "ReduceProd",
        "ReduceMax",
        "ArgMax",
        "TopK",
        "BatchNormalization",
        "LayerNormalization",
        "Resize",
        "Upsample",
        "QuantizeLinear",
        "DequantizeLinear",
        "NonMaxSuppression",
        "RoiAlign",
        "GridSample",
        "CumSum",
        "Trilu",
        "Identity",
        "Floor",
        "Ceil",
        "Round",
        "Neg",
        "Abs",
        "Sqrt",
        "Reciprocal",
    ];
    let mut rng = pare::rng::Rng::new(42);
    let mut pick = |n: u64| rng.below(n) as i64;
    let interesting = [
        -9_223_372_036_854_775_808i64,
        -100,
        -7,
        -3,
        -2,
        -1,
        0,
        1,
        2,
        3,
        5,
        64,
        1 << 40,
        i64::MAX,
    ];
    // PARE_FUZZ_ROUNDS raises the count for a longer local run.
    let rounds: usize = std::env::var("PARE_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for round in 0..rounds {
        let mut b = GraphBuilder::new("fuzz");
        let mut pool: Vec<String> = Vec::new();
        for i in 0..4 {
            let rank = pick(6) as usize;
            let dims: Vec<D> = (0..rank)
                .map(|_| match pick(6) {
                    0 => D::S("n"),
                    1 => D::S("m"),
                    v => D::N([0, 1, 3, 7][(v - 2) as usize]),
                })
                .collect();
            pool.push(b.input(&format!("x{i}"), &dims));
        }
        for i in 0..6 {
            let n = pick(5) as usize;
            let vals: Vec<i64> = (0..n)
                .map(|_| interesting[pick(interesting.len() as u64) as usize])
                .collect();
            let dims: Vec<i64> = if n == 1 && pick(2) == 0 {
                vec![]
            } else {
                vec![n as i64]
            };
            pool.push(b.init_i64(&format!("c{i}"), &dims, &vals));
            let fv: Vec<f32> = (0..n)
                .map(|_| [0.0, 0.5, 2.0, -1.0, f32::NAN][pick(5) as usize])
                .collect();
            pool.push(b.init_f32(&format!("f{i}"), &dims, &fv));
        }
        for j in 0..OPS.len() * 2 {
            let op = OPS[(j + round) % OPS.len()];
            let n_in = 1 + pick(5) as usize;
            let ins: Vec<String> = (0..n_in)
                .map(|_| {
                    if pick(8) == 0 {
                        String::new()
                    } else {
                        pool[pick(pool.len() as u64) as usize].clone()
                    }
                })
                .collect();
            let ins_ref: Vec<&str> = ins.iter().map(String::as_str).collect();
            let mut attrs = Vec::new();
            for name in [
                "axis",
                "keepdims",
                "group",
                "to",
                "blocksize",
                "transA",
                "num_outputs",
                "ceil_mode",
                "k",
                "batch_dims",
                "start",
                "end",
            ] {
                if pick(3) == 0 {
                    attrs.push(attr_i(
                        name,
                        if name == "to" {
                            pick(20)
                        } else {
                            interesting[pick(interesting.len() as u64) as usize]
                        },
                    ));
                }
            }
            for name in [
                "axes",
                "perm",
                "kernel_shape",
                "strides",
                "pads",
                "dilations",
                "split",
                "output_padding",
                "output_shape",
                "starts",
                "ends",
                "shape",
            ] {
                if pick(3) == 0 {
                    let n = pick(7) as usize;
                    attrs.push(attr_ints(
                        name,
                        &(0..n)
                            .map(|_| interesting[pick(interesting.len() as u64) as usize])
                            .collect::<Vec<_>>(),
                    ));
                }
            }
            if pick(3) == 0 {
                let eqs = [
                    "ij,jk->ik",
                    "...ii",
                    "a...b,b...->",
                    "ab",
                    "x,,y->q",
                    "....",
                    "i1",
                ];
                attrs.push(attr_s("equation", eqs[pick(eqs.len() as u64) as usize]));
            }
            if pick(4) == 0 {
                attrs.push(attr_s(
                    "auto_pad",
                    ["SAME_UPPER", "VALID", "SAME_LOWER"][pick(3) as usize],
                ));
            }
            let outs = b.node(op, &ins_ref, 1 + pick(3) as usize, attrs);
            pool.extend(outs);
        }
        let m = b.model();
        let info = infer(&m);
        assert!(info.tensors.len() >= pool.len() / 2, "round {round}");
        let p = pins(&[("x0", &[2, 3]), ("x1", &[1, 1, 1, 1])]);
        let _ = infer_with(&m, &p);
    }
}

#[test]
fn einsum_gathernd_depth_space_and_detection_ops() {
    let mut b = GraphBuilder::new("more");
    b.input("x", &[D::S("n"), D::N(8), D::N(4), D::N(6)]);
    b.input("m", &[D::N(3), D::N(5)]);
    b.input("q", &[D::N(5), D::N(7)]);
    b.input_typed("ind", DataType::INT64, &[D::N(2), D::N(2)]);
    b.input("boxes", &[D::N(1), D::N(100), D::N(4)]);
    b.input("scores", &[D::N(1), D::N(3), D::N(100)]);
    b.input("rois", &[D::N(9), D::N(4)]);
    b.input_typed("bidx", DataType::INT64, &[D::N(9)]);
    b.input("grid", &[D::S("n"), D::N(10), D::N(12), D::N(2)]);
    let mm = b.op("Einsum", &["m", "q"], vec![attr_s("equation", "ij,jk->ik")]);
    let implicit = b.op("Einsum", &["m", "q"], vec![attr_s("equation", "ij,jk")]);
    let batched = b.op(
        "Einsum",
        &["x", "x"],
        vec![attr_s("equation", "...ij,...kj->...ik")],
    );
    let gnd = b.op("GatherND", &["m", "ind"], vec![]);
    let d2s = b.op("DepthToSpace", &["x"], vec![attr_i("blocksize", 2)]);
    let s2d = b.op("SpaceToDepth", &["x"], vec![attr_i("blocksize", 2)]);
    let depth = b.init_i64("depth", &[], &[10]);
    let vals = b.init_f32("vals", &[2], &[0.0, 1.0]);
    let oh = b.op("OneHot", &["ind", &depth, &vals], vec![attr_i("axis", 1)]);
    let ln = b.node(
        "LayerNormalization",
        &["x", "x"],
        3,
        vec![attr_i("axis", 2)],
    );
    let nms = b.op("NonMaxSuppression", &["boxes", "scores"], vec![]);
    let roi = b.op(
        "RoiAlign",
        &["x", "rois", "bidx"],
        vec![attr_i("output_height", 7), attr_i("output_width", 5)],
    );
    let gs = b.op("GridSample", &["x", "grid"], vec![]);
    let cond = b.init_i64("cond", &[4], &[1, 0, 1, 1]);
    let cmp = b.op("Compress", &["x", &cond], vec![attr_i("axis", 2)]);
    let tri = b.op("Trilu", &["m"], vec![]);
    let csax = b.init_i64("csax", &[], &[1]);
    let cs = b.op("CumSum", &["m", &csax], vec![]);
    let info = infer(&b.model());
    no_diags(&info);
    assert_eq!(st(&info, &mm), [3, 7]);
    assert_eq!(st(&info, &implicit), [3, 7]);
    assert_eq!(dims(&info, &batched), [s("n"), k(8), k(4), k(4)]);
    assert_eq!(st(&info, &gnd), [2]);
    assert_eq!(dims(&info, &d2s), [s("n"), k(2), k(8), k(12)]);
    assert_eq!(dims(&info, &s2d), [s("n"), k(32), k(2), k(3)]);
    assert_eq!(st(&info, &oh), [2, 10, 2]);
    assert_eq!(dims(&info, &ln[0]), dims(&info, "x"));
    assert_eq!(dims(&info, &ln[1]), [s("n"), k(8), k(1), k(1)]);
    assert_eq!(dims(&info, &nms), [Dim::Unknown, k(3)]);
    assert_eq!(info.dtype(&nms), Some(DataType::INT64));
    assert_eq!(st(&info, &roi), [9, 8, 7, 5]);
    assert_eq!(dims(&info, &gs), [s("n"), k(8), k(10), k(12)]);
    assert_eq!(dims(&info, &cmp), [s("n"), k(8), k(3), k(6)]);
    assert_eq!(st(&info, &tri), [3, 5]);
    assert_eq!(st(&info, &cs), [3, 5]);
}

#[test]
fn concat_and_split_mismatches_are_diagnosed() {
    let mut b = GraphBuilder::new("mismatch");
    b.input("a", &[D::N(1), D::N(3), D::N(8)]);
    b.input("b", &[D::N(1), D::N(3), D::N(9)]);
    let c = b.concat(&["a", "b"], 1);
    let sp = b.init_i64("sp", &[2], &[1, 1]);
    let parts = b.node("Split", &["a", &sp], 2, vec![attr_i("axis", 1)]);
    let info = infer(&b.model());
    assert_eq!(dims(&info, &c)[1], k(6));
    assert_eq!(st(&info, &parts[0]), [1, 1, 8]);
    let msgs: Vec<&str> = info
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("disagree on axis 2"), "{msgs:?}");
    assert!(msgs[1].contains("does not add up"), "{msgs:?}");
}

/// PRelu's output is X's shape: a per-channel slope (`[3]` as old PyTorch exports write it, or
/// `[3, 1]`) never makes a dim unknown (onnx backend `test_PReLU_1d_multiparam`).
#[test]
fn prelu_output_has_the_input_shape_for_per_channel_slopes() {
    for slope_dims in [vec![3i64], vec![3, 1]] {
        let mut b = GraphBuilder::new("prelu").with_opset(9);
        b.input("x", &[D::N(2), D::N(3), D::N(4)]);
        let slope = b.init_f32("slope", &slope_dims, &[0.25, 0.5, 0.75]);
        b.node_named("p", "PRelu", &["x", &slope], &["y"], vec![]);
        b.output("y", &[D::N(2), D::N(3), D::N(4)]);
        let info = infer(&b.model());
        assert_eq!(st(&info, "y"), vec![2, 3, 4], "slope {slope_dims:?}");
    }
}
