//! Deployment targets and what each version of them accepts.
//!
//! TensorRT versions are written as `major * 100 + minor` (7.1 → 701, 10.15 → 1015) so the
//! version-gated rules read as plain integer ranges. The operator table is pare's own compact
//! form of onnx-tensorrt's published operator matrices (TensorRT 6.0 → 10.1): for each op the
//! first parser version that imports it, plus the few gaps where a later matrix lists it as
//! unsupported again.

use std::fmt;

/// Where the model is meant to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Target {
    /// TensorRT's ONNX parser of a given version (`major * 100 + minor`).
    TensorRt(u16),
    OnnxRuntime,
    Tract,
}

/// TensorRT versions pare knows rules for (the published operator matrices plus 10.15, whose
/// importer some rules cite, and the 11.x minors where the parser changed: 11.0 strongly typed
/// networks and removed plugins, 11.2 DFT and 5-D GridSample, 11.5 opset 25 and axis-less
/// Squeeze).
pub const TRT_VERSIONS: &[u16] = &[
    600, 700, 701, 702, 800, 802, 804, 805, 806, 900, 903, 1000, 1001, 1015, 1100, 1102, 1105,
];

/// What `tensorrt-10` means: the 10.0/10.1 parser, the newest with a published matrix here.
/// Rules that relaxed later say so in their messages; `tensorrt-10.15` checks the newest rules.
pub const TRT10_DEFAULT: u16 = 1001;

/// What `tensorrt-11` means: the current 11.x parser (11.5). `tensorrt-11.0` … `tensorrt-11.4`
/// check the older minors (opsets 9–24, no axis-less Squeeze; DFT and 5-D GridSample from 11.2).
pub const TRT11_DEFAULT: u16 = 1105;

/// First TensorRT version whose networks are always strongly typed (precision only from the
/// ONNX file: FP16 tensors and Casts, explicit Q/DQ).
pub const TRT_STRONGLY_TYPED: u16 = 1100;

/// The default target everywhere (`pare lint`, the TUI): the current TensorRT.
impl Default for Target {
    fn default() -> Self {
        Target::TensorRt(TRT11_DEFAULT)
    }
}

impl Target {
    /// Parses `tensorrt-7.1`, `tensorrt-8.6`, `tensorrt-10`, `tensorrt-11`, `trt-8.6`, `onnxruntime`/`ort`,
    /// `tract`. Any TensorRT version from 6.0 is accepted and checked with the rules of the
    /// newest known version at or below it.
    pub fn parse(s: &str) -> Result<Target, String> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "onnxruntime" | "ort" | "onnx-runtime" => return Ok(Target::OnnxRuntime),
            "tract" => return Ok(Target::Tract),
            "tensorrt" | "trt" => return Ok(Target::default()),
            _ => {}
        }
        let v = l
            .strip_prefix("tensorrt-")
            .or_else(|| l.strip_prefix("tensorrt"))
            .or_else(|| l.strip_prefix("trt-"))
            .or_else(|| l.strip_prefix("trt"));
        let bad = || {
            format!(
                "unknown target '{s}': use tensorrt-7.1, tensorrt-8.6, tensorrt-10, tensorrt-11 (or any tensorrt-X.Y from 6.0), onnxruntime or tract"
            )
        };
        let v = v.ok_or_else(bad)?;
        let mut parts = v.split('.');
        let major: u16 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor: Option<u16> = match parts.next() {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None => None,
        };
        let code = match (major, minor) {
            (10, None) => TRT10_DEFAULT,
            (11, None) => TRT11_DEFAULT,
            (m, None) => m * 100,
            (m, Some(n)) if n < 100 => m * 100 + n,
            _ => return Err(bad()),
        };
        if !(600..2000).contains(&code) {
            return Err(bad());
        }
        // Snap to the newest known version at or below the request.
        let snapped = TRT_VERSIONS
            .iter()
            .copied()
            .filter(|&k| k <= code)
            .max()
            .ok_or_else(bad)?;
        Ok(Target::TensorRt(snapped))
    }

    /// The TensorRT version, when the target is TensorRT.
    pub fn trt(&self) -> Option<u16> {
        match self {
            Target::TensorRt(v) => Some(*v),
            _ => None,
        }
    }

    /// True for TensorRT in `[lo, hi]` (inclusive, `major * 100 + minor`).
    pub fn trt_in(&self, lo: u16, hi: u16) -> bool {
        self.trt().is_some_and(|v| v >= lo && v <= hi)
    }

    /// Stable identifier (`tensorrt-7.1`, `onnxruntime`, `tract`).
    pub fn id(&self) -> String {
        match self {
            Target::TensorRt(v) if *v == TRT10_DEFAULT => "tensorrt-10".into(),
            Target::TensorRt(v) if *v == TRT11_DEFAULT => "tensorrt-11".into(),
            Target::TensorRt(v) => format!("tensorrt-{}", version_str(*v)),
            Target::OnnxRuntime => "onnxruntime".into(),
            Target::Tract => "tract".into(),
        }
    }

    /// Human name (`TensorRT 7.1`).
    pub fn display(&self) -> String {
        match self {
            Target::TensorRt(v) if *v == TRT10_DEFAULT => "TensorRT 10 (10.0/10.1 parser)".into(),
            Target::TensorRt(v) if *v == TRT11_DEFAULT => "TensorRT 11 (11.5 parser)".into(),
            Target::TensorRt(v) => format!("TensorRT {}", version_str(*v)),
            Target::OnnxRuntime => "onnxruntime".into(),
            Target::Tract => "tract".into(),
        }
    }

    /// Short name for messages (`TensorRT 7.1`, `TensorRT 10`).
    pub fn short(&self) -> String {
        match self {
            Target::TensorRt(v) if *v == TRT10_DEFAULT => "TensorRT 10".into(),
            Target::TensorRt(v) if *v == TRT11_DEFAULT => "TensorRT 11".into(),
            Target::TensorRt(v) => format!("TensorRT {}", version_str(*v)),
            other => other.display(),
        }
    }

    /// Default-domain opsets the target parses, inclusive.
    pub fn opset_range(&self) -> (i64, i64) {
        match self {
            Target::TensorRt(v) => match *v {
                ..=699 => (1, 10),
                700..=701 => (1, 11),
                702..=802 => (1, 13),
                803..=899 => (1, 17),
                900..=999 => (1, 19),
                1000..=1014 => (9, 20),
                1015..=1104 => (9, 24),
                _ => (9, 25),
            },
            // onnxruntime 1.2x runs opsets 7 to 23.
            Target::OnnxRuntime => (7, 23),
            // tract-onnx 0.23 is asked directly (rule T1); this range is what it documents.
            Target::Tract => (1, 21),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// `701` → `"7.1"`, `702` → `"7.2"`, `1015` → `"10.15"`.
pub fn version_str(v: u16) -> String {
    format!("{}.{}", v / 100, v % 100)
}

pub use crate::ops::OpSupport;

/// Whether TensorRT `version`'s ONNX parser imports default-domain op `op` (from the op
/// table; an op missing from it is never supported).
pub fn trt_op_support(op: &str, version: u16) -> OpSupport {
    crate::ops::def_or_default(op).trt_support(version)
}

/// Domains onnxruntime has kernels for without a custom-op library.
pub fn ort_knows_domain(domain: &str) -> bool {
    matches!(
        domain,
        "" | "ai.onnx"
            | "ai.onnx.ml"
            | "com.microsoft"
            | "com.microsoft.nchwc"
            | "ai.onnx.preview.training"
            | "com.ms.internal.nhwc"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("tensorrt-7.1"), Ok(Target::TensorRt(701)));
        assert_eq!(Target::parse("tensorrt-8.6"), Ok(Target::TensorRt(806)));
        assert_eq!(
            Target::parse("tensorrt-10"),
            Ok(Target::TensorRt(TRT10_DEFAULT))
        );
        assert_eq!(Target::parse("tensorrt-10.15"), Ok(Target::TensorRt(1015)));
        assert_eq!(Target::parse("tensorrt-8.3"), Ok(Target::TensorRt(802)));
        assert_eq!(Target::parse("ort"), Ok(Target::OnnxRuntime));
        assert!(Target::parse("tensorrt-5.0").is_err());
        assert!(Target::parse("openvino").is_err());
        assert_eq!(Target::TensorRt(701).id(), "tensorrt-7.1");
        assert_eq!(Target::TensorRt(TRT10_DEFAULT).id(), "tensorrt-10");
        assert_eq!(Target::parse("tensorrt-11"), Ok(Target::TensorRt(1105)));
        assert_eq!(Target::parse("tensorrt-11.5"), Ok(Target::TensorRt(1105)));
        assert_eq!(Target::parse("tensorrt-11.3"), Ok(Target::TensorRt(1102)));
        assert_eq!(Target::parse("tensorrt-11.1"), Ok(Target::TensorRt(1100)));
        assert_eq!(Target::default().id(), "tensorrt-11");
        assert_eq!(Target::TensorRt(1100).opset_range(), (9, 24));
        assert_eq!(Target::TensorRt(1105).opset_range(), (9, 25));
    }

    /// The operator matrix as it was written before it moved into the op table.
    const TRT_OPS_SINCE: &[(u16, &str)] = &[
        (
            600,
            "Abs Acos Acosh Add ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization \
             Cast Ceil Clip Concat Constant Conv ConvTranspose Cos Cosh DepthToSpace Div Dropout Elu \
             Exp Flatten Floor Gather Gemm GlobalAveragePool GlobalMaxPool HardSigmoid Identity \
             InstanceNormalization LRN LeakyRelu Log LogSoftmax MatMul Max MaxPool Mean Min Mul Neg \
             PRelu Pad Pow Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax \
             ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Selu \
             Shape Sigmoid Sin Sinh Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze \
             Sub Sum Tan Tanh ThresholdedRelu TopK Transpose Unsqueeze Upsample",
        ),
        (
            700,
            "And ConstantOfShape DequantizeLinear Equal Erf Expand GRU Greater ImageScaler LSTM \
             Less Loop Not Or ParametricSoftplus QuantizeLinear RNN RandomUniform \
             RandomUniformLike Range ScaledTanh Scan Size Tile Where",
        ),
        (
            702,
            "Celu CumSum EyeLike GatherElements GlobalLpPool GreaterOrEqual LessOrEqual \
             LpNormalization LpPool ReverseSequence SoftmaxCrossEntropyLoss",
        ),
        (800, "If NonMaxSuppression"),
        (
            802,
            "Einsum GatherND IsNaN Round Scatter ScatterElements ScatterND Sign",
        ),
        (804, "HardSwish RandomNormal RandomNormalLike Shrink Xor"),
        (
            805,
            "GridSample MeanVarianceNormalization Mod NonZero OneHot RoiAlign Trilu",
        ),
        (806, "GroupNormalization IsInf LayerNormalization"),
        (903, "CastLike Hardmax"),
        (1000, "Gelu Mish"),
        (1001, "DeformConv"),
        (1100, "Swish"),
        (1102, "DFT"),
    ];

    #[test]
    fn op_table_matches_the_matrix() {
        let mut listed = std::collections::HashSet::new();
        for &(since, ops) in TRT_OPS_SINCE {
            for op in ops.split_ascii_whitespace() {
                listed.insert(op);
                let d = crate::ops::lookup(op).unwrap_or_else(|| panic!("{op} not in the table"));
                assert_eq!(d.trt.since, Some(since), "{op}");
            }
        }
        for d in crate::ops::all() {
            assert_eq!(d.trt.since.is_some(), listed.contains(d.name), "{}", d.name);
        }
        assert_eq!(trt_op_support("Dropout", 700), OpSupport::From(800));
    }

    #[test]
    fn op_matrix() {
        assert_eq!(trt_op_support("GatherElements", 701), OpSupport::From(702));
        assert_eq!(trt_op_support("GatherElements", 806), OpSupport::Supported);
        assert_eq!(trt_op_support("If", 701), OpSupport::From(800));
        assert_eq!(trt_op_support("NonZero", 804), OpSupport::From(805));
        assert_eq!(trt_op_support("Reciprocal", 802), OpSupport::From(804));
        assert_eq!(trt_op_support("Unique", 1001), OpSupport::Never);
        assert_eq!(
            trt_op_support("SoftmaxCrossEntropyLoss", 806),
            OpSupport::Dropped { since: 800 }
        );
        assert_eq!(trt_op_support("Conv", 600), OpSupport::Supported);
        assert_eq!(trt_op_support("Swish", 1015), OpSupport::From(1100));
        assert_eq!(trt_op_support("Swish", 1100), OpSupport::Supported);
        assert_eq!(trt_op_support("DFT", 1100), OpSupport::From(1102));
        assert_eq!(trt_op_support("DFT", 1105), OpSupport::Supported);
    }
}
