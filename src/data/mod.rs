//! Sample data for every command that runs a model: one loader (images with resize / mean /
//! std / scale / BGR / layout, `.npy`, ONNX `.pb` tensors, `test_data_set_N` folders, one
//! subfolder per input or `NAME=DIR`, and seeded `random`), one set of flags ([`DataArgs`]),
//! one `.npy` codec ([`npy`]), one raw-tensor codec ([`codec`]) and one builder of random input
//! specs ([`spec`]). Calibration, extraction's boundary data, prune validation and fix
//! verification all read their inputs here, so a layout or dtype that works for one works for
//! all of them.

pub mod args;
pub mod codec;
pub mod image;
pub mod npy;
pub mod samples;
pub mod source;
pub mod spec;

use std::path::{Path, PathBuf};

pub use args::{DataArgs, PreprocessArgs};
pub use codec::{cast_host, host_to_tensor, read_tensor_file, tensor_to_host};
pub use image::{Layout, Preprocess};
pub use npy::{read_npy, write_npy, write_npy_f32};
pub use samples::{Sample, SampleSet, ShapeCount};
pub use source::DataSource;
pub use spec::{
    DeclDim, DynamicDims, InputDecl, analysis_decls, input_decls, input_specs, random_inputs,
    random_specs,
};

use crate::error::{PareError, Result};
use crate::model::Analysis;
use crate::runtime::{EngineKind, HostTensor};

/// One input's data in one sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// The whole sample is seeded random data (every input of the sample has the same seed).
    Random {
        seed: u64,
    },
    Image(PathBuf),
    /// Sample `index` along axis 0 of a batch file when `split`.
    Npy {
        path: PathBuf,
        index: usize,
        split: bool,
    },
    Pb(PathBuf),
}

impl Item {
    /// How messages name the item: its file (and row).
    pub fn label(&self) -> String {
        match self {
            Item::Random { seed } => format!("random (seed {seed})"),
            Item::Image(p) | Item::Pb(p) => p.display().to_string(),
            Item::Npy {
                path,
                index,
                split: true,
            } => format!("{}[{index}]", path.display()),
            Item::Npy { path, .. } => path.display().to_string(),
        }
    }
}

/// An I/O error naming the file (a missing file is its own case).
pub(crate) fn io_err(p: &Path, e: std::io::Error) -> PareError {
    if e.kind() == std::io::ErrorKind::NotFound {
        PareError::NotFound {
            path: p.to_path_buf(),
        }
    } else {
        PareError::Io {
            path: p.to_path_buf(),
            source: e,
        }
    }
}

/// Dims joined by `sep` (`1x3x224x224`, `1, 3, 224, 224`).
pub(crate) fn dims_text(d: &[usize], sep: &str) -> String {
    d.iter().map(usize::to_string).collect::<Vec<_>>().join(sep)
}

/// Input data loaded whole: one or more samples for the model's inputs.
#[derive(Clone, Debug)]
pub struct Samples {
    /// Per sample, one tensor per model input (in `Analysis::index.inputs` order).
    pub sets: Vec<Vec<HostTensor>>,
    /// Where they came from, for reports.
    pub source: String,
    pub notes: Vec<String>,
    /// The engine that computes tensors from them: tract (with float64 reference outputs)
    /// unless the user chose onnxruntime.
    pub engine: EngineKind,
}

/// Loads at most `limit` samples of `source` for the analysed model's inputs (random: exactly
/// `limit`), dynamic dims of random data guessed, every tensor converted to its input's type.
pub fn load_all(
    a: &Analysis,
    source: &DataSource,
    limit: usize,
    preprocess: Preprocess,
) -> Result<Samples> {
    let set = SampleSet::open_with(
        analysis_decls(a)?,
        source,
        limit,
        preprocess,
        DynamicDims::Guess,
    )?;
    let mut notes = set.notes.clone();
    let sets = (0..set.len())
        .map(|k| set.load_converted(k, &mut notes))
        .collect::<Result<Vec<_>>>()?;
    notes.dedup();
    Ok(Samples {
        sets,
        source: set.source.clone(),
        notes,
        engine: EngineKind::Tract,
    })
}

/// Input samples from `--data` values (none: `count` seeded random samples starting at
/// `seed`; else at most `count` samples of the data).
pub fn load_samples(a: &Analysis, values: &[String], count: usize, seed: u64) -> Result<Samples> {
    let source = if values.is_empty() {
        DataSource::Random { seed }
    } else {
        DataSource::parse(values, seed)?
    };
    load_all(a, &source, count.max(1), Preprocess::default())
}

#[cfg(test)]
mod tests;
