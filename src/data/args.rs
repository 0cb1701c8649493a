//! The data flags every command that runs a model shares (flattened into quantize, extract,
//! split, reduce, prune and fix), so `--data`, `--samples`, `--seed` and the image
//! preprocessing flags mean the same everywhere. `--calib` and `--input-data`, the names
//! quantize and extract used before, stay as aliases of `--data`.

use clap::Args;

use super::image::{Layout, Preprocess};
use super::source::DataSource;
use crate::error::{PareError, Result};

/// Where sample data comes from and how much of it to use.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct DataArgs {
    /// Sample data: a folder of samples (.png/.jpg/.npy/.pb; one subfolder per input; ONNX
    /// test_data_set_N folders), NAME=PATH once per input, tensor files in input order, a
    /// test-data folder per sample, or 'random' (repeatable). Aliases: --calib, --input-data.
    #[arg(
        long = "data",
        visible_aliases = ["calib", "input-data"],
        value_name = "DIR|FILE|NAME=PATH|random"
    )]
    pub data: Vec<String>,
    /// Number of samples: random data makes exactly N, other data is read up to N (default:
    /// quantize 32, fix 2, extract and prune 1 random / all given).
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Seed of random data (sample K uses SEED+K).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// How images become tensors.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct PreprocessArgs {
    /// Resize images to HxW (default: the input's declared size).
    #[arg(long, value_name = "HxW")]
    pub resize: Option<String>,
    /// Per-channel mean subtracted after scaling (default ImageNet: 0.485,0.456,0.406).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std divided by (default ImageNet: 0.229,0.224,0.225).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Pixel scale before mean/std (default 1/255).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Feed channels as BGR (OpenCV-trained models).
    #[arg(long)]
    pub bgr: bool,
    /// Image tensor layout.
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,
}

fn usage(m: impl Into<String>) -> PareError {
    PareError::Usage(m.into())
}

fn parse_resize(s: &str) -> Result<(usize, usize)> {
    let bad = || usage(format!("--resize '{s}': expected HxW, e.g. 224x224"));
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        h.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    ))
}

impl PreprocessArgs {
    /// The preprocessing these flags ask for, on top of ImageNet defaults.
    pub fn preprocess(&self) -> Result<Preprocess> {
        let mut pp = Preprocess::default();
        if let Some(r) = &self.resize {
            pp.resize = Some(parse_resize(r)?);
        }
        if let Some(m) = &self.mean {
            pp.mean = m.clone();
        }
        if let Some(s) = &self.std {
            if s.iter().any(|v| *v <= 0.0) {
                return Err(usage("--std values must be positive"));
            }
            pp.std = s.clone();
        }
        if let Some(s) = self.scale {
            pp.scale = s;
        }
        pp.bgr = self.bgr;
        pp.layout = self.layout;
        Ok(pp)
    }
}

impl DataArgs {
    /// The data source, `None` when no `--data` was given.
    pub fn source(&self) -> Result<Option<DataSource>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        DataSource::parse(&self.data, self.seed).map(Some)
    }

    /// The data source, seeded random data when none was given.
    pub fn source_or_random(&self) -> Result<DataSource> {
        Ok(self
            .source()?
            .unwrap_or(DataSource::Random { seed: self.seed }))
    }

    /// `--samples`, or `default`; zero is an error.
    pub fn limit(&self, default: usize) -> Result<usize> {
        match self.samples {
            Some(0) => Err(usage("--samples must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }

    /// Whether `--data` gives files or folders (not `random`).
    pub fn has_files(&self) -> bool {
        !self.data.is_empty() && self.data != ["random"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DataArgs,
    }

    #[test]
    fn old_flag_names_are_aliases_of_data() {
        let c = Cli::parse_from([
            "t",
            "--calib",
            "a=x",
            "--input-data",
            "b=y",
            "--data",
            "c=z",
            "--resize",
            "8x4",
            "--bgr",
        ]);
        assert_eq!(c.data.data, vec!["a=x", "b=y", "c=z"]);
        let pp = c.data.preprocess.preprocess().expect("pp");
        assert_eq!(pp.resize, Some((8, 4)));
        assert!(pp.bgr);
        assert!(matches!(
            c.data.source().expect("src"),
            Some(DataSource::PerInput(v)) if v.len() == 3
        ));
        let c = Cli::parse_from(["t", "--samples", "0", "--resize", "8by4"]);
        assert!(c.data.limit(3).is_err());
        let e = c
            .data
            .preprocess
            .preprocess()
            .expect_err("resize")
            .to_string();
        assert!(e.contains("8by4"), "{e}");
        assert_eq!(
            Cli::parse_from(["t"])
                .data
                .source_or_random()
                .expect("random"),
            DataSource::Random { seed: 0 }
        );
    }
}
