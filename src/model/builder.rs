//! A small ONNX graph builder with deterministic weights.
//!
//! Tests, benchmarks and the embedded demo model are written with it, so no test needs Python
//! or a network connection to get a model. Weights come from a seeded PRNG: the same builder
//! calls always give the same bytes.

use super::io::Model;
use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeDimension, TensorShapeProto, TypeProto,
    TypeTensor, TypeValue, ValueInfoProto, attribute_type as at,
};
use super::tensor::{DataType, f32_tensor, i64_tensor};
use crate::rng::Rng;

/// One declared dimension of a graph input or output.
#[derive(Clone, Debug)]
pub enum D {
    N(i64),
    S(&'static str),
}

impl From<i64> for D {
    fn from(v: i64) -> Self {
        D::N(v)
    }
}

impl From<&'static str> for D {
    fn from(v: &'static str) -> Self {
        D::S(v)
    }
}

/// A value-info (name, element type, shape) as ONNX declares graph inputs and outputs.
pub fn value_info(name: &str, dtype: DataType, dims: Option<&[D]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| TensorShapeDimension {
                value: Some(match d {
                    D::N(v) => Dimension::DimValue(*v),
                    D::S(s) => Dimension::DimParam(s.to_string()),
                }),
                denotation: None,
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: Some(dtype.0),
                shape,
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// Attribute constructors.
pub fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::INT),
        i: Some(v),
        ..Default::default()
    }
}
pub fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::FLOAT),
        f: Some(v),
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::FLOATS),
        floats: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::STRING),
        s: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
        ..Default::default()
    }
}
pub fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::TENSOR),
        t: Some(Box::new(t)),
        ..Default::default()
    }
}
pub fn attr_g(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::GRAPH),
        g: Some(Box::new(g)),
        ..Default::default()
    }
}

/// Builds a graph node by node. Node and tensor names are generated PyTorch-style
/// (`/conv1/Conv`, `/conv1/Conv_output_0`) unless given.
pub struct GraphBuilder {
    pub name: String,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    pub opset: i64,
    pub rng: Rng,
    /// Prefix for generated names (`/layer1`), like PyTorch's module scopes.
    pub scope: String,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            opset: 17,
            rng: Rng::new(0x5eed),
            scope: String::new(),
            counter: 0,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Rng::new(seed);
        self
    }

    pub fn with_opset(mut self, opset: i64) -> Self {
        self.opset = opset;
        self
    }

    /// Declares a float input; returns its name.
    pub fn input(&mut self, name: &str, dims: &[D]) -> String {
        self.input_typed(name, DataType::FLOAT, dims)
    }

    pub fn input_typed(&mut self, name: &str, dtype: DataType, dims: &[D]) -> String {
        self.inputs.push(value_info(name, dtype, Some(dims)));
        name.to_string()
    }

    /// Declares a float graph output. ONNX's checker requires a shape on graph outputs; use
    /// symbolic dims where the size is not fixed.
    pub fn output(&mut self, name: &str, dims: &[D]) {
        self.outputs
            .push(value_info(name, DataType::FLOAT, Some(dims)));
    }

    pub fn output_typed(&mut self, name: &str, dtype: DataType, dims: Option<&[D]>) {
        self.outputs.push(value_info(name, dtype, dims));
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{}{stem}_{}", self.scope, self.counter)
    }

    /// Adds a float initializer with the given values.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        self.initializers.push(f32_tensor(name, dims, values));
        name.to_string()
    }

    /// Adds an int64 initializer.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        self.initializers.push(i64_tensor(name, dims, values));
        name.to_string()
    }

    /// Adds a float initializer of seeded normal values scaled by `std`.
    pub fn init_randn(&mut self, name: &str, dims: &[i64], std: f32) -> String {
        let n: i64 = dims.iter().product();
        let v = self.rng.normal_vec(n.max(0) as usize, std);
        self.init_f32(name, dims, &v)
    }

    /// Adds a node with explicit name and output names; returns the outputs.
    pub fn node_named(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        self.nodes.push(NodeProto {
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        outputs.iter().map(|s| s.to_string()).collect()
    }

    /// Adds a node with generated names and `n_out` outputs.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        n_out: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let name = self.fresh(&format!("/{op}"));
        let outs: Vec<String> = (0..n_out).map(|k| format!("{name}_output_{k}")).collect();
        let outs_ref: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node_named(&name, op, inputs, &outs_ref, attrs)
    }

    /// Single-output node shorthand.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node(op, inputs, 1, attrs).remove(0)
    }

    /// Conv with seeded weights and bias; `k` square kernel, symmetric `pad`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
        group: i64,
    ) -> String {
        self.conv_nd(x, cin, cout, &[k, k], stride, pad, group, true)
    }

    /// Conv over any number of spatial dims (`kernel.len()`), optional bias.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_nd(
        &mut self,
        x: &str,
        cin: i64,
        cout: i64,
        kernel: &[i64],
        stride: i64,
        pad: i64,
        group: i64,
        bias: bool,
    ) -> String {
        let name = self.fresh("/conv");
        let mut wdims = vec![cout, cin / group.max(1)];
        wdims.extend_from_slice(kernel);
        let fan_in: i64 = wdims[1..].iter().product();
        let w = self.init_randn(
            &format!("{name}.weight"),
            &wdims,
            (2.0 / fan_in.max(1) as f32).sqrt(),
        );
        let mut ins = vec![x.to_string(), w];
        if bias {
            ins.push(self.init_randn(&format!("{name}.bias"), &[cout], 0.1));
        }
        let r = kernel.len();
        let attrs = vec![
            attr_ints("kernel_shape", kernel),
            attr_ints("strides", &vec![stride; r]),
            attr_ints("pads", &vec![pad; 2 * r]),
            attr_ints("dilations", &vec![1; r]),
            attr_i("group", group),
        ];
        let ins_ref: Vec<&str> = ins.iter().map(String::as_str).collect();
        let out = format!("{name}/Conv_output_0");
        self.node_named(&format!("{name}/Conv"), "Conv", &ins_ref, &[&out], attrs);
        out
    }

    /// BatchNormalization with seeded (positive-variance) statistics.
    pub fn batchnorm(&mut self, x: &str, c: i64) -> String {
        let name = self.fresh("/bn");
        let c_us = c as usize;
        let scale: Vec<f32> = (0..c_us).map(|_| self.rng.range(0.5, 1.5)).collect();
        let bias: Vec<f32> = (0..c_us).map(|_| self.rng.range(-0.2, 0.2)).collect();
        let mean: Vec<f32> = (0..c_us).map(|_| self.rng.range(-0.1, 0.1)).collect();
        let var: Vec<f32> = (0..c_us).map(|_| self.rng.range(0.5, 1.5)).collect();
        let s = self.init_f32(&format!("{name}.weight"), &[c], &scale);
        let b = self.init_f32(&format!("{name}.bias"), &[c], &bias);
        let m = self.init_f32(&format!("{name}.running_mean"), &[c], &mean);
        let v = self.init_f32(&format!("{name}.running_var"), &[c], &var);
        let out = format!("{name}/BatchNormalization_output_0");
        self.node_named(
            &format!("{name}/BatchNormalization"),
            "BatchNormalization",
            &[x, &s, &b, &m, &v],
            &[&out],
            vec![attr_f("epsilon", 1e-5)],
        );
        out
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.op("Relu", &[x], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.op("Concat", xs, vec![attr_i("axis", axis)])
    }

    /// Gemm with seeded weights, `transB=1` as PyTorch's Linear exports it.
    pub fn gemm(&mut self, x: &str, fin: i64, fout: i64) -> String {
        let name = self.fresh("/fc");
        let w = self.init_randn(
            &format!("{name}.weight"),
            &[fout, fin],
            (1.0 / fin.max(1) as f32).sqrt(),
        );
        let b = self.init_randn(&format!("{name}.bias"), &[fout], 0.05);
        let out = format!("{name}/Gemm_output_0");
        self.node_named(
            &format!("{name}/Gemm"),
            "Gemm",
            &[x, &w, &b],
            &[&out],
            vec![
                attr_f("alpha", 1.0),
                attr_f("beta", 1.0),
                attr_i("transB", 1),
            ],
        );
        out
    }

    /// An int64 constant produced by a `Constant` node (as PyTorch exports shape constants).
    pub fn const_i64(&mut self, values: &[i64]) -> String {
        let name = self.fresh("/Constant");
        let out = format!("{name}_output_0");
        let t = i64_tensor("", &[values.len() as i64], values);
        self.node_named(&name, "Constant", &[], &[&out], vec![attr_t("value", t)]);
        out
    }

    /// Finishes the graph.
    pub fn graph(self) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(self.name),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }

    /// Finishes a model (IR 8, the given default-domain opset).
    pub fn model(self) -> ModelProto {
        let opset = self.opset;
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            producer_name: Some("pare-builder".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(self.graph()),
            ..Default::default()
        }
    }

    /// Finishes a [`Model`] ready for the rest of pare.
    pub fn build(self) -> Model {
        let proto = self.model();
        Model {
            file_size: prost::Message::encoded_len(&proto) as u64,
            proto,
            path: None,
            external_tensors: Vec::new(),
        }
    }
}

/// Adds a `metadata_props` entry to a node, like PyTorch's exporter does.
pub fn set_node_metadata(node: &mut NodeProto, key: &str, value: &str) {
    node.metadata_props
        .push(StringStringEntryProto::new(key, value));
}

/// Synthetic models at realistic sizes, for benchmarks and scale tests.
pub mod zoo {
    use super::*;

    /// A ResNet-50-shaped classifier (bottleneck stages 3-4-6-3, ~25.5M params, ~100 MB),
    /// with BatchNorm kept unfused as training exports have it.
    pub fn resnet50() -> ModelProto {
        resnet50_family("resnet50", 50, 1, 1000)
    }

    /// The ResNet-50 layout with the bottleneck width multiplied by `width_mult` (2: Wide
    /// ResNet-50-2) and `classes` outputs.
    pub fn resnet50_family(name: &str, seed: u64, width_mult: i64, classes: i64) -> ModelProto {
        let mut b = GraphBuilder::new(name).with_seed(seed);
        b.input("input", &[D::N(1), D::N(3), D::N(224), D::N(224)]);
        b.scope = "/conv1".into();
        let x = b.conv_nd("input", 3, 64, &[7, 7], 2, 3, 1, false);
        let x = b.batchnorm(&x, 64);
        let x = b.relu(&x);
        let mut x = b.op(
            "MaxPool",
            &[&x],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        );
        let mut cin = 64;
        for (stage, (&blocks, &width)) in
            [3, 4, 6, 3].iter().zip(&[64i64, 128, 256, 512]).enumerate()
        {
            for blk in 0..blocks {
                b.scope = format!("/layer{}/{blk}", stage + 1);
                let stride = if blk == 0 && stage > 0 { 2 } else { 1 };
                let cout = width * 4;
                let width = width * width_mult;
                let y = b.conv_nd(&x, cin, width, &[1, 1], 1, 0, 1, false);
                let y = b.batchnorm(&y, width);
                let y = b.relu(&y);
                let y = b.conv_nd(&y, width, width, &[3, 3], stride, 1, 1, false);
                let y = b.batchnorm(&y, width);
                let y = b.relu(&y);
                let y = b.conv_nd(&y, width, cout, &[1, 1], 1, 0, 1, false);
                let y = b.batchnorm(&y, cout);
                let s = if blk == 0 {
                    let s = b.conv_nd(&x, cin, cout, &[1, 1], stride, 0, 1, false);
                    b.batchnorm(&s, cout)
                } else {
                    x.clone()
                };
                let s = b.add(&y, &s);
                x = b.relu(&s);
                cin = cout;
            }
        }
        b.scope = "/head".into();
        let x = b.op("GlobalAveragePool", &[&x], vec![]);
        let x = b.op("Flatten", &[&x], vec![attr_i("axis", 1)]);
        let x = b.gemm(&x, 2048, classes);
        b.node_named("/head/output", "Identity", &[&x], &["logits"], vec![]);
        b.output("logits", &[D::N(1), D::N(classes)]);
        b.model()
    }

    /// A deep, narrow residual network with about `nodes` nodes (tiny weights): for timing
    /// graph algorithms on big graphs without big files.
    pub fn deep_narrow(nodes: usize) -> ModelProto {
        let mut b = GraphBuilder::new("deep_narrow").with_seed(7);
        b.input("input", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
        let mut x = b.conv("input", 8, 8, 3, 1, 1, 1);
        let mut k = 0;
        while b.nodes.len() + 4 < nodes {
            b.scope = format!("/stage{}/block{}", k / 100, k % 100);
            let y = b.conv(&x, 8, 8, 3, 1, 1, 1);
            let y = b.relu(&y);
            let y = b.conv(&y, 8, 8, 1, 1, 0, 1);
            x = b.add(&y, &x);
            k += 1;
        }
        b.scope = String::new();
        b.node_named("/out", "Identity", &[&x], &["output"], vec![]);
        b.output("output", &[D::N(1), D::N(8), D::N(8), D::N(8)]);
        b.model()
    }

    /// The shape of a ViT encoder: `blocks` pre-norm blocks over `tokens` tokens of `width`,
    /// each a fused-qkv attention with `heads` heads (reshape to heads, unbind by Gather) and
    /// an Erf-GELU MLP of `mlp`, as PyTorch exports timm's ViT. `std` 0 gives zero weights
    /// (a ViT-B/16-sized model without the cost of random numbers).
    pub fn vit(
        blocks: usize,
        tokens: i64,
        width: i64,
        heads: i64,
        mlp: i64,
        std: f32,
    ) -> ModelProto {
        let mut b = GraphBuilder::new("vit").with_seed(16);
        let hd = width / heads;
        let mut w = |b: &mut GraphBuilder, name: &str, dims: &[i64]| {
            if std > 0.0 {
                b.init_randn(name, dims, std)
            } else {
                let n = dims.iter().product::<i64>().max(0) as usize;
                b.init_f32(name, dims, &vec![0.0; n])
            }
        };
        let scalar = |b: &mut GraphBuilder, name: &str, v: f32| b.init_f32(name, &[], &[v]);
        let lin = |b: &mut GraphBuilder,
                   w: &mut dyn FnMut(&mut GraphBuilder, &str, &[i64]) -> String,
                   x: &str,
                   name: &str,
                   fin: i64,
                   fout: i64| {
            let wt = w(b, &format!("{name}.weight"), &[fin, fout]);
            let bias = w(b, &format!("{name}.bias"), &[fout]);
            let y = b.op("MatMul", &[x, &wt], vec![]);
            b.op("Add", &[&y, &bias], vec![])
        };
        let norm = |b: &mut GraphBuilder, x: &str, name: &str| {
            let n = width as usize;
            let s = b.init_f32(&format!("{name}.weight"), &[width], &vec![1.0; n]);
            let t = b.init_f32(&format!("{name}.bias"), &[width], &vec![0.0; n]);
            b.op("LayerNormalization", &[x, &s, &t], vec![attr_i("axis", -1)])
        };
        let mut x = b.input("x", &[D::N(1), D::N(tokens), D::N(width)]);
        let idx: Vec<String> = (0..3)
            .map(|k| b.init_i64(&format!("qkv_index{k}"), &[], &[k]))
            .collect();
        for k in 0..blocks {
            let p = format!("blocks.{k}");
            b.scope = format!("/{p}");
            let y = norm(&mut b, &x, &format!("{p}.norm1"));
            let qkv = lin(
                &mut b,
                &mut w,
                &y,
                &format!("{p}.attn.qkv"),
                width,
                3 * width,
            );
            let shape = b.init_i64(&format!("{p}.attn.shape"), &[5], &[1, tokens, 3, heads, hd]);
            let r = b.op("Reshape", &[&qkv, &shape], vec![]);
            let t = b.op(
                "Transpose",
                &[&r],
                vec![attr_ints("perm", &[2, 0, 3, 1, 4])],
            );
            let qkv: Vec<String> = idx
                .iter()
                .map(|i| b.op("Gather", &[&t, i], vec![attr_i("axis", 0)]))
                .collect();
            let kt = b.op(
                "Transpose",
                &[&qkv[1]],
                vec![attr_ints("perm", &[0, 1, 3, 2])],
            );
            let s = b.op("MatMul", &[&qkv[0], &kt], vec![]);
            let scale = scalar(&mut b, &format!("{p}.attn.scale"), (hd as f32).powf(-0.5));
            let s = b.mul(&s, &scale);
            let s = b.op("Softmax", &[&s], vec![attr_i("axis", -1)]);
            let ctx = b.op("MatMul", &[&s, &qkv[2]], vec![]);
            let ctx = b.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
            let shape = b.init_i64(&format!("{p}.attn.merge"), &[3], &[1, tokens, width]);
            let ctx = b.op("Reshape", &[&ctx, &shape], vec![]);
            let o = lin(
                &mut b,
                &mut w,
                &ctx,
                &format!("{p}.attn.proj"),
                width,
                width,
            );
            x = b.add(&x, &o);
            let y = norm(&mut b, &x, &format!("{p}.norm2"));
            let h = lin(&mut b, &mut w, &y, &format!("{p}.mlp.fc1"), width, mlp);
            let sqrt2 = scalar(&mut b, &format!("{p}.mlp.sqrt2"), std::f32::consts::SQRT_2);
            let one = scalar(&mut b, &format!("{p}.mlp.one"), 1.0);
            let half = scalar(&mut b, &format!("{p}.mlp.half"), 0.5);
            let e = b.op("Div", &[&h, &sqrt2], vec![]);
            let e = b.op("Erf", &[&e], vec![]);
            let e = b.add(&e, &one);
            let g = b.mul(&h, &e);
            let g = b.mul(&g, &half);
            let o = lin(&mut b, &mut w, &g, &format!("{p}.mlp.fc2"), mlp, width);
            x = b.add(&x, &o);
        }
        b.scope = String::new();
        let y = norm(&mut b, &x, "norm");
        b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
        b.output("y", &[D::N(1), D::N(tokens), D::N(width)]);
        b.model()
    }
}
