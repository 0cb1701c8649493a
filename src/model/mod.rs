//! The ONNX model core: schema, load/save, graph index, shape inference and statistics.

pub mod builder;
pub mod graph;
pub mod info;
pub mod io;
pub mod opset;
pub mod proto;
pub mod shape;
pub mod stats;
pub mod tensor;

use std::path::Path;

pub use graph::GraphIndex;
pub use io::{Model, SaveOptions, load_model, save_model};
pub use shape::{InputPins, ShapeInfo};
pub use tensor::DataType;

use crate::error::{PareError, Result};
use proto::GraphProto;

/// A model with its graph index and inferred shapes: what every analysis starts from.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub model: Model,
    pub index: GraphIndex,
    pub shapes: ShapeInfo,
    pub pins: InputPins,
}

impl Analysis {
    /// Indexes and infers shapes of a loaded model. Pins naming no input are an error.
    pub fn new(model: Model, pins: &InputPins) -> Result<Self> {
        let graph = model
            .proto
            .graph
            .as_ref()
            .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
        let index = GraphIndex::build(graph)?;
        for name in pins.keys() {
            if !index.inputs.iter().any(|i| i == name) {
                return Err(PareError::Usage(format!(
                    "--input-shape names '{name}', which is not an input of the model (inputs: {})",
                    index.inputs.join(", ")
                )));
            }
        }
        let shapes = shape::infer_shapes(&model.proto, &index, pins);
        Ok(Self {
            model,
            index,
            shapes,
            pins: pins.clone(),
        })
    }

    /// Loads, indexes and infers a model file.
    pub fn open(path: &Path, pins: &InputPins) -> Result<Self> {
        Self::new(load_model(path)?, pins).map_err(|e| match e {
            PareError::InvalidModel(_) | PareError::Cycle { .. } => PareError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
            other => other,
        })
    }

    pub fn graph(&self) -> &GraphProto {
        // `new` checked the graph exists.
        self.model
            .proto
            .graph
            .as_ref()
            .expect("checked in Analysis::new")
    }
}

/// Parses `NAME:1x3x512x512` (the `--input-shape` syntax).
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<i64>)> {
    let bad = || {
        PareError::Usage(format!(
            "--input-shape '{spec}': expected NAME:DIMxDIMx..., e.g. input:1x3x512x512"
        ))
    };
    let (name, dims) = spec.rsplit_once(':').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let dims: Vec<i64> = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split(['x', 'X', ','])
            .map(|d| d.trim().parse::<i64>().ok().filter(|v| *v >= 0))
            .collect::<Option<_>>()
            .ok_or_else(bad)?
    };
    Ok((name.to_string(), dims))
}
