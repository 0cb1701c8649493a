//! What a model's inputs declare, and the one builder of concrete input specs for random data:
//! calibration, prune validation, fix verification and extraction all make their random
//! inputs here, so a dynamic dim is sized the same way (and explained the same way)
//! everywhere.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::proto::GraphProto;
use crate::model::shape::Dim;
use crate::model::{Analysis, DataType, InputPins};
use crate::rng::Rng;
use crate::runtime::{HostTensor, InputSpec};

/// One declared dimension of a model input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DeclDim {
    Known(usize),
    Sym(String),
}

impl std::fmt::Display for DeclDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclDim::Known(v) => write!(f, "{v}"),
            DeclDim::Sym(s) => f.write_str(s),
        }
    }
}

/// A model input as declared (with `--input-shape` pins applied).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputDecl {
    pub name: String,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DataType,
    pub dims: Vec<DeclDim>,
}

fn ser_dtype<S: serde::Serializer>(d: &DataType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

impl InputDecl {
    pub fn describe(&self) -> String {
        format!(
            "{} [{}]",
            self.dtype,
            self.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
    pub fn is_dynamic(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, DeclDim::Sym(_)))
    }
}

/// Declared dims from pare's shape vocabulary; unnamed unknown dims get a name of their own
/// so that two of them never have to agree.
fn decl_dims(name: &str, shape: &[Dim]) -> Vec<DeclDim> {
    shape
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Known(v) if *v > 0 => DeclDim::Known(*v as usize),
            Dim::Sym(s) if !s.is_empty() => DeclDim::Sym(s.clone()),
            _ => DeclDim::Sym(format!("{name}_dim{k}")),
        })
        .collect()
}

fn pinned(p: &[i64]) -> Vec<DeclDim> {
    p.iter()
        .map(|&d| DeclDim::Known(d.max(0) as usize))
        .collect()
}

fn no_shape(name: &str) -> PareError {
    PareError::Usage(format!(
        "input '{name}' declares no shape; give it with --input-shape {name}:DIMS"
    ))
}

/// The graph inputs that are not initializers, as the graph declares them; `pins` replace
/// declared dims.
pub fn input_decls(graph: &GraphProto, pins: &InputPins) -> Result<Vec<InputDecl>> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let mut out = Vec::new();
    for vi in graph.input.iter().filter(|v| !inits.contains(v.name())) {
        let (name, dtype, shape) = crate::extract::vi_type(vi);
        let dims = match (pins.get(&name), shape) {
            (Some(p), _) => pinned(p),
            (None, Some(s)) => decl_dims(&name, &s),
            (None, None) => return Err(no_shape(&name)),
        };
        out.push(InputDecl {
            name,
            dtype: dtype.unwrap_or(DataType::FLOAT),
            dims,
        });
    }
    if out.is_empty() {
        return Err(PareError::Usage(
            "the model has no inputs to calibrate".into(),
        ));
    }
    Ok(out)
}

/// The analysed model's inputs: inferred shapes and types (pins applied), else what the graph
/// declares.
pub fn analysis_decls(a: &Analysis) -> Result<Vec<InputDecl>> {
    let g = a.graph();
    let mut out = Vec::with_capacity(a.index.inputs.len());
    for name in &a.index.inputs {
        let info = a.shapes.get(name).cloned().unwrap_or_default();
        let declared = g
            .input
            .iter()
            .find(|v| v.name() == name)
            .map(crate::extract::vi_type);
        let dims = match a.pins.get(name) {
            Some(p) => pinned(p),
            None => {
                let shape = info
                    .shape
                    .or_else(|| declared.as_ref().and_then(|d| d.2.clone()))
                    .ok_or_else(|| no_shape(name))?;
                decl_dims(name, &shape)
            }
        };
        out.push(InputDecl {
            name: name.clone(),
            dtype: info
                .dtype
                .or_else(|| declared.and_then(|d| d.1))
                .unwrap_or(DataType::FLOAT),
            dims,
        });
    }
    Ok(out)
}

/// How random data sizes a dynamic dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DynamicDims {
    /// The first axis becomes 1 and any other 64, with a note: enough to run the model
    /// (validation, verification, boundary data).
    #[default]
    Guess,
    /// The first axis becomes 1; any other is an error asking for a pin. Calibration ranges
    /// measured at a made-up image size would mislead.
    Require,
}

/// The concrete shape of random data for `decl`; notes say what was assumed.
pub fn random_shape(
    decl: &InputDecl,
    dynamic: DynamicDims,
    notes: &mut Vec<String>,
) -> Result<Vec<usize>> {
    let name = &decl.name;
    let mut shape = Vec::with_capacity(decl.dims.len());
    for (k, d) in decl.dims.iter().enumerate() {
        let v = match (d, dynamic) {
            (DeclDim::Known(v), _) => *v,
            (DeclDim::Sym(s), _) if k == 0 => {
                notes.push(format!(
                    "input '{name}' dim 0 ({s}) set to 1 for random data; pin it with --input-shape"
                ));
                1
            }
            (DeclDim::Sym(s), DynamicDims::Guess) => {
                notes.push(format!(
                    "input '{name}' dim {k} ({s}) set to 64 for random data; pin it with --input-shape"
                ));
                64
            }
            (DeclDim::Sym(s), DynamicDims::Require) => {
                let example = decl
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(j, d)| match d {
                        DeclDim::Known(v) => v.to_string(),
                        DeclDim::Sym(_) if j == 0 => "1".into(),
                        DeclDim::Sym(_) => "N".into(),
                    })
                    .collect::<Vec<_>>()
                    .join("x");
                return Err(PareError::Usage(format!(
                    "input '{name}' has dynamic dim {k} ('{s}'): random data needs a size; give --input-shape {name}:{example}"
                )));
            }
        };
        shape.push(v);
    }
    Ok(shape)
}

/// Concrete specs for random inputs of `decls`.
pub fn random_specs(
    decls: &[InputDecl],
    dynamic: DynamicDims,
) -> Result<(Vec<InputSpec>, Vec<String>)> {
    let mut notes = Vec::new();
    let specs = decls
        .iter()
        .map(|d| {
            Ok(InputSpec {
                name: d.name.clone(),
                dtype: d.dtype,
                shape: random_shape(d, dynamic, &mut notes)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((specs, notes))
}

/// Concrete input specs of an analysed model: pinned or declared dims, dynamic dims guessed
/// (1 for the first axis, else 64) with a note each.
pub fn input_specs(a: &Analysis) -> Result<(Vec<InputSpec>, Vec<String>)> {
    random_specs(&analysis_decls(a)?, DynamicDims::Guess)
}

/// Seeded random inputs for `specs` (one generator across the inputs, in order): standard
/// normal floats, small non-negative integers.
pub fn random_inputs(specs: &[InputSpec], seed: u64) -> Result<Vec<HostTensor>> {
    let mut rng = Rng::new(seed);
    specs.iter().map(|s| s.random(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(dims: Vec<DeclDim>) -> InputDecl {
        InputDecl {
            name: "x".into(),
            dtype: DataType::FLOAT,
            dims,
        }
    }

    #[test]
    fn random_inputs_are_deterministic_per_seed() {
        let d = decl(vec![
            DeclDim::Sym("n".into()),
            DeclDim::Known(3),
            DeclDim::Sym("h".into()),
        ]);
        let (specs, notes) =
            random_specs(std::slice::from_ref(&d), DynamicDims::Guess).expect("specs");
        assert_eq!(specs[0].shape, vec![1, 3, 64]);
        assert_eq!(notes.len(), 2);
        let a = random_inputs(&specs, 7).expect("a");
        assert_eq!(a, random_inputs(&specs, 7).expect("again"));
        assert_ne!(a, random_inputs(&specs, 8).expect("other seed"));
        let e = random_specs(&[d], DynamicDims::Require)
            .expect_err("needs a pin")
            .to_string();
        assert!(e.contains("--input-shape x:1x3xN"), "{e}");
    }
}
