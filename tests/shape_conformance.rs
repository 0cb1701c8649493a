//! pare's shape inference against a suite nobody here wrote: the backend test models the
//! `onnx` Python package ships (`onnx/backend/test/data/{pytorch-converted,pytorch-operator,
//! simple,real,light}`), each with the outputs onnx's reference produced. For every output
//! the model declares as a tensor, pare's inferred shape (from the model and its declared
//! input shapes alone) must equal the stored output's shape, except for the cases in
//! [`ALLOWED`], where the shape depends on input *values* and pare must stay honest: each dim
//! it does claim must be right.
//!
//! The onnx package is the interop Python's (see `tests/common/python.rs`, which provisions
//! it); with no such Python the test says so on stderr and checks nothing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pare::model::Analysis;
use pare::model::shape::{Dim, format_info};

/// Outputs whose shape the model and its declared input shapes do not determine: (case,
/// output, why). pare must not contradict the stored shape on these, and must not be exactly
/// right by luck either (then the entry is stale and must go).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "test_expand_shape_model1",
        "Y",
        "Expand's target shape is a graph input (a runtime value); pare gives [1, 3, ?]",
    ),
    (
        "test_expand_shape_model2",
        "Y",
        "Expand's target shape is a graph input (a runtime value); pare gives [1, 3, ?]",
    ),
    (
        "test_expand_shape_model3",
        "Y",
        "Expand's target shape is a graph input (a runtime value); pare gives [?, 3, ?]",
    ),
    (
        "test_expand_shape_model4",
        "Y",
        "Expand's target shape is a graph input (a runtime value); pare gives [?, ?, 3, ?]",
    ),
    (
        "test_strnorm_model_monday_casesensintive_lower",
        "y",
        "StringNormalizer removes stopwords: the length depends on the strings",
    ),
    (
        "test_strnorm_model_monday_casesensintive_nochangecase",
        "y",
        "StringNormalizer removes stopwords: the length depends on the strings",
    ),
    (
        "test_strnorm_model_monday_casesensintive_upper",
        "y",
        "StringNormalizer removes stopwords: the length depends on the strings",
    ),
    (
        "test_strnorm_model_monday_empty_output",
        "y",
        "StringNormalizer removes stopwords: the length depends on the strings",
    ),
    (
        "test_strnorm_model_monday_insensintive_upper_twodim",
        "y",
        "StringNormalizer removes stopwords: the length depends on the strings",
    ),
];

const SUITES: [&str; 5] = [
    "pytorch-converted",
    "pytorch-operator",
    "simple",
    "real",
    "light",
];

/// One model with the stored outputs of its first test data set, in output order.
struct Case {
    name: String,
    model: PathBuf,
    outputs: Vec<PathBuf>,
}

/// `onnx/backend/test/data` of the interop Python's onnx, or why there is none.
fn data_dir() -> Result<PathBuf, String> {
    let py = common::try_python()?;
    let out = Command::new(&py)
        .args([
            "-c",
            "import onnx, os; print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .map_err(|e| format!("{}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!("{} cannot import onnx", py.display()));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("backend/test/data");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} does not exist", dir.display()))
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The cases of one suite. `light` keeps `light_X.onnx` beside `light_X_output_0.pb`; the
/// others keep `CASE/model.onnx` and `CASE/test_data_set_0/output_N.pb`. `real`'s cases hold
/// only a `data.json` naming the `light` model, which is walked there.
fn cases(suite_dir: &Path, light: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for p in sorted_entries(suite_dir) {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if light {
            if let Some(stem) = name.strip_suffix(".onnx") {
                let outputs = vec![suite_dir.join(format!("{stem}_output_0.pb"))];
                out.push(Case {
                    name: stem.to_string(),
                    model: p.clone(),
                    outputs,
                });
            }
            continue;
        }
        let model = p.join("model.onnx");
        if !model.is_file() {
            continue;
        }
        let mut outputs: Vec<(usize, PathBuf)> = sorted_entries(&p.join("test_data_set_0"))
            .into_iter()
            .filter_map(|f| {
                let n = f.file_name()?.to_str()?;
                let k = n
                    .strip_prefix("output_")?
                    .strip_suffix(".pb")?
                    .parse()
                    .ok()?;
                Some((k, f))
            })
            .collect();
        outputs.sort();
        let outputs = outputs.into_iter().map(|(_, f)| f).collect();
        out.push(Case {
            name,
            model,
            outputs,
        });
    }
    out
}

/// What became of one output.
enum Outcome {
    Equal,
    /// Listed in [`ALLOWED`], and pare claims nothing the stored shape contradicts.
    Allowed,
    /// Declared as something other than a tensor (a sequence, an optional, a map).
    NotTensor,
    Failed(String),
}

/// pare's shape agrees with `expected` wherever it claims a dim.
fn compatible(got: Option<&[Dim]>, expected: &[i64]) -> bool {
    got.is_none_or(|g| {
        g.len() == expected.len()
            && g.iter()
                .zip(expected)
                .all(|(d, &e)| d.known().is_none_or(|v| v == e))
    })
}

fn check_output(
    case: &Case,
    a: &Analysis,
    i: usize,
    allowed: &HashMap<(&str, &str), &str>,
) -> Outcome {
    let vi = &a.graph().output[i];
    if vi.tensor_type().is_none() {
        return Outcome::NotTensor;
    }
    let Some(pb) = case.outputs.get(i) else {
        return Outcome::Failed(format!("no stored output {i}"));
    };
    let expected = match pare::data::codec::read_pb(pb) {
        Ok(t) => t.dims.clone(),
        Err(e) => return Outcome::Failed(format!("{}: {e}", pb.display())),
    };
    let info = a.shapes.get(vi.name());
    let got = info.and_then(|t| t.shape.as_deref());
    let equal = got.is_some_and(|g| {
        g.len() == expected.len() && g.iter().zip(&expected).all(|(d, &e)| d.known() == Some(e))
    });
    let shown = format!("pare {} vs stored {expected:?}", format_info(info));
    match allowed.get(&(case.name.as_str(), vi.name())) {
        None if equal => Outcome::Equal,
        None => Outcome::Failed(shown),
        Some(_) if equal => Outcome::Failed(format!("{shown}: now equal, remove it from ALLOWED")),
        Some(_) if compatible(got, &expected) => Outcome::Allowed,
        Some(why) => Outcome::Failed(format!("{shown}: contradicts the stored shape ({why})")),
    }
}

#[test]
fn inferred_output_shapes_match_onnx_backend_test_data() {
    let dir = match data_dir() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("shape conformance: SKIPPED, no onnx backend test data: {why}");
            return;
        }
    };
    let allowed: HashMap<(&str, &str), &str> =
        ALLOWED.iter().map(|&(c, o, why)| ((c, o), why)).collect();
    let (mut total, mut equal, mut allowed_n, mut not_tensor) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for suite in SUITES {
        for case in cases(&dir.join(suite), suite == "light") {
            let a = match Analysis::open(&case.model, &HashMap::new()) {
                Ok(a) => a,
                Err(e) => {
                    failures.push(format!("{suite}/{}: {e}", case.name));
                    continue;
                }
            };
            for i in 0..a.graph().output.len() {
                let name = a.graph().output[i].name().to_string();
                match check_output(&case, &a, i, &allowed) {
                    Outcome::NotTensor => not_tensor += 1,
                    Outcome::Equal => {
                        total += 1;
                        equal += 1;
                    }
                    Outcome::Allowed => {
                        total += 1;
                        allowed_n += 1;
                    }
                    Outcome::Failed(why) => {
                        total += 1;
                        failures.push(format!("{suite}/{} output '{name}': {why}", case.name));
                    }
                }
            }
        }
    }
    eprintln!(
        "shape conformance: {equal} of {total} tensor outputs equal, {allowed_n} allow-listed \
         (shape not determined by the model), {} unequal; {not_tensor} non-tensor outputs skipped",
        failures.len()
    );
    assert!(
        total >= 100,
        "only {total} tensor outputs under {}: is the onnx backend test data complete?",
        dir.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A sequence-typed value-info (float elements of unknown shape).
fn sequence_vi(name: &str) -> pare::model::proto::ValueInfoProto {
    use pare::model::proto::{TypeProto, TypeSequence, TypeTensor, TypeValue, ValueInfoProto};
    let elem = TypeProto {
        value: Some(TypeValue::TensorType(TypeTensor {
            elem_type: Some(1),
            shape: None,
        })),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::SequenceType(Box::new(TypeSequence {
                elem_type: Some(Box::new(elem)),
            }))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sequences, an op pare has no rule for and Expand with a runtime target, without Python:
/// the inferred shapes, and how `pare info` renders them (unknown rank is `?` / `null`, never
/// the `[]` of a scalar; a sequence says it is one).
#[test]
fn sequences_unknown_ranks_and_expand_render_honestly() {
    use pare::model::builder::{D, GraphBuilder, attr_i};
    use pare::model::tensor::DataType;
    let mut b = GraphBuilder::new("seq");
    b.input("x", &[D::N(2), D::N(3), D::N(4)]);
    b.input_typed("target", DataType::INT64, &[D::N(3)]);
    let seq = b.node_named(
        "construct",
        "SequenceConstruct",
        &["x", "x"],
        &["seq"],
        vec![],
    )[0]
    .clone();
    let one = b.init_i64("one", &[], &[1]);
    let at = b.op("SequenceAt", &[&seq, &one], vec![]);
    let len = b.op("SequenceLength", &[&seq], vec![]);
    let cat = b.op("ConcatFromSequence", &[&seq], vec![attr_i("axis", 0)]);
    let split = b.op(
        "SplitToSequence",
        &["x"],
        vec![attr_i("axis", 1), attr_i("keepdims", 0)],
    );
    let last = b.init_i64("last", &[], &[-1]);
    let piece = b.op("SequenceAt", &[&split, &last], vec![]);
    let unknown = b.node_named("mystery", "NoSuchOp", &["x"], &["u"], vec![])[0].clone();
    let ones = b.op("Shape", &[&at], vec![]);
    let fixed = b.op("Expand", &["x", &ones], vec![]);
    let runtime = b.op("Expand", &["x", "target"], vec![]);
    b.input("y", &[D::N(1), D::N(3), D::N(1)]);
    let partial = b.op("Expand", &["y", "target"], vec![]);
    let constant = b.const_i64(&[2, 1, 1]);
    let folded = b.op("Expand", &["y", &constant], vec![]);
    for o in [&at, &cat, &piece, &fixed, &runtime, &partial, &folded] {
        b.output(o, &[D::S("d")]);
    }
    b.output_typed(&len, DataType::INT64, Some(&[]));
    b.output_typed(&unknown, DataType::FLOAT, None);
    b.outputs.push(sequence_vi("seq"));
    let a = Analysis::new(b.build(), &HashMap::new()).expect("valid fixture");
    let shape = |n: &str| format_info(a.shapes.get(n));
    assert_eq!(shape(&at), "[2, 3, 4]");
    assert_eq!(shape(&len), "[]");
    assert_eq!(
        a.shapes.get(&len).and_then(|t| t.int_values()),
        Some(vec![2])
    );
    assert_eq!(shape(&cat), "[4, 3, 4]");
    assert_eq!(shape(&piece), "[2, 4]");
    assert_eq!(shape(&fixed), "[2, 3, 4]");
    assert_eq!(shape(&runtime), "[2, 3, 4]");
    assert_eq!(shape(&partial), "[?, 3, ?]");
    assert_eq!(shape(&folded), "[2, 3, 1]");
    assert_eq!(shape("seq"), "sequence<float32 [2, 3, 4]>");
    assert_eq!(shape("u"), "?");

    let info = pare::model::info::model_info(&a);
    let j = serde_json::to_value(&info).expect("info serialises");
    let out = |n: &str| {
        j["outputs"]
            .as_array()
            .and_then(|v| v.iter().find(|o| o["name"] == n))
            .cloned()
            .unwrap_or_else(|| panic!("no output {n} in {j}"))
    };
    assert_eq!(out("u")["shape"], serde_json::Value::Null);
    assert!(out("u").get("type").is_none(), "a tensor has no type field");
    assert_eq!(out(&len)["shape"], serde_json::json!([]));
    assert_eq!(out("seq")["type"], "sequence");
    assert_eq!(out("seq")["dtype"], "float32");
    assert_eq!(out("seq")["shape"], serde_json::json!([2, 3, 4]));
    let text = pare::report::Report::render_text(&info);
    let line = |n: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no line for {n} in\n{text}"))
            .to_string()
    };
    assert!(line("u").ends_with(" ?"), "{}", line("u"));
    assert!(
        line("seq").ends_with("sequence<float32 [2, 3, 4]>"),
        "{}",
        line("seq")
    );
    assert!(line(&len).ends_with(" []"), "{}", line(&len));
}
