//! Where sample data comes from (`--data`, alias `--calib` / `--input-data`), and how a folder
//! maps onto the model's inputs:
//! - a folder of files, one sample per file (single-input models);
//! - a folder with one subfolder per input (`left/`, `right/`), files paired in sorted order;
//! - `NAME=PATH` given once per input (a folder or one file each);
//! - ONNX test-data folders (`test_data_set_0/input_0.pb`, …), one sample per folder; a folder
//!   that itself holds `input_K.pb` files is one such sample;
//! - several folders (one sample each) or several files (one per input, in input order);
//! - `random`: seeded data in the declared shapes.

use std::path::{Path, PathBuf};

use super::spec::InputDecl;
use super::{Item, io_err};
use crate::error::{PareError, Result};

/// Where sample data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// Seeded data in the declared shapes; sample K uses seed + K.
    Random { seed: u64 },
    /// A folder or file for all inputs.
    Path(PathBuf),
    /// Several folders (one sample each) or several files (one sample, one file per input).
    Paths(Vec<PathBuf>),
    /// One folder or file per input name.
    PerInput(Vec<(String, PathBuf)>),
}

impl DataSource {
    /// Parses `--data` values: `random`, `PATH` (repeatable), or `NAME=PATH` (repeatable).
    pub fn parse(values: &[String], seed: u64) -> Result<Self> {
        if values.is_empty() {
            return Err(PareError::Usage(
                "--data is required: a folder of samples, NAME=FOLDER per input, or 'random'"
                    .into(),
            ));
        }
        if values.len() == 1 && values[0] == "random" {
            return Ok(DataSource::Random { seed });
        }
        let named: Vec<Option<(String, PathBuf)>> = values
            .iter()
            .map(|v| match v.split_once('=') {
                Some((n, p)) if !n.is_empty() && !n.contains('/') && !Path::new(v).exists() => {
                    Some((n.to_string(), PathBuf::from(p)))
                }
                _ => None,
            })
            .collect();
        if named.iter().all(Option::is_some) {
            return Ok(DataSource::PerInput(named.into_iter().flatten().collect()));
        }
        if named.iter().any(Option::is_some) {
            return Err(PareError::Usage(
                "--data: give folders or files, 'random', or NAME=PATH once per input (not a mix)"
                    .into(),
            ));
        }
        Ok(match values {
            [one] => DataSource::Path(PathBuf::from(one)),
            many => DataSource::Paths(many.iter().map(PathBuf::from).collect()),
        })
    }

    /// How reports name the source.
    pub fn label(&self) -> String {
        match self {
            DataSource::Random { seed } => format!("random (seed {seed})"),
            DataSource::Path(p) => p.display().to_string(),
            DataSource::Paths(ps) => join(ps.iter().map(|p| p.display().to_string())),
            DataSource::PerInput(pairs) => {
                join(pairs.iter().map(|(n, p)| format!("{n}={}", p.display())))
            }
        }
    }
}

fn join(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

fn names(inputs: &[InputDecl]) -> String {
    join(inputs.iter().map(|i| i.name.clone()))
}

fn ext(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn is_sample_file(p: &Path) -> bool {
    matches!(
        ext(p).as_deref(),
        Some("png" | "jpg" | "jpeg" | "npy" | "pb")
    )
}

/// The item that reads file `p`, by its extension.
pub(super) fn item_for(p: &Path) -> Item {
    match ext(p).as_deref() {
        Some("npy") => Item::Npy {
            path: p.to_path_buf(),
            index: 0,
            split: false,
        },
        Some("pb") => Item::Pb(p.to_path_buf()),
        _ => Item::Image(p.to_path_buf()),
    }
}

/// Sample files of a folder (sorted), or the file itself.
fn list_files(p: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
    if meta.is_file() {
        if !is_sample_file(p) {
            return Err(PareError::Usage(format!(
                "{}: not a sample file (expected .png, .jpg, .npy or .pb)",
                p.display()
            )));
        }
        return Ok(vec![p.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| io_err(p, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_sample_file(p))
        .collect();
    v.sort();
    Ok(v)
}

fn subdirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// K of an `input_K.pb` file.
fn input_index(p: &Path) -> Option<usize> {
    p.file_name()?
        .to_str()?
        .strip_prefix("input_")?
        .strip_suffix(".pb")?
        .parse()
        .ok()
}

/// One ONNX test-data folder as one sample: `input_K.pb` files mapped to inputs by the name
/// stored in the tensor, else by K; a folder without them gives one file per input, in
/// name order.
fn test_data_sample(dir: &Path, inputs: &[InputDecl]) -> Result<Vec<Item>> {
    let mut files = list_files(dir)?;
    if !files.iter().any(|p| input_index(p).is_some()) {
        if files.len() != inputs.len() {
            return Err(PareError::Usage(format!(
                "{}: {} tensor files for {} model inputs ({})",
                dir.display(),
                files.len(),
                inputs.len(),
                names(inputs)
            )));
        }
        return Ok(files.iter().map(|f| item_for(f)).collect());
    }
    files.retain(|p| input_index(p).is_some());
    files.sort_by_key(|p| input_index(p));
    let mut slots: Vec<Option<Item>> = vec![None; inputs.len()];
    for (k, f) in files.iter().enumerate() {
        let t = super::codec::read_pb(f)?;
        let slot = inputs.iter().position(|i| i.name == t.name()).unwrap_or(k);
        if let Some(s) = slots.get_mut(slot) {
            *s = Some(Item::Pb(f.clone()));
        }
    }
    slots
        .into_iter()
        .zip(inputs)
        .map(|(s, i)| {
            s.ok_or_else(|| {
                PareError::Usage(format!(
                    "{}: no input_K.pb for model input '{}'",
                    dir.display(),
                    i.name
                ))
            })
        })
        .collect()
}

/// Pairs per-input file lists by sorted order.
fn pair_up(lists: Vec<(String, Vec<PathBuf>)>) -> Result<Vec<Vec<Item>>> {
    let n = lists.first().map_or(0, |l| l.1.len());
    if let Some((name, l)) = lists.iter().find(|l| l.1.len() != n) {
        return Err(PareError::Usage(format!(
            "sample inputs do not pair up: '{}' has {} files, '{}' has {}",
            lists[0].0,
            n,
            name,
            l.len()
        )));
    }
    Ok((0..n)
        .map(|k| lists.iter().map(|(_, l)| item_for(&l[k])).collect())
        .collect())
}

/// Samples (one item per input, model input order) of one folder or file.
fn discover(p: &Path, inputs: &[InputDecl]) -> Result<Vec<Vec<Item>>> {
    let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
    if meta.is_dir() {
        let sets: Vec<PathBuf> = subdirs(p)
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("test_data_set"))
            })
            .collect();
        if !sets.is_empty() {
            return sets.iter().map(|d| test_data_sample(d, inputs)).collect();
        }
        if list_files(p)?.iter().any(|f| input_index(f).is_some()) {
            return Ok(vec![test_data_sample(p, inputs)?]);
        }
        let per_input: Vec<Option<PathBuf>> = inputs
            .iter()
            .map(|i| Some(p.join(&i.name)).filter(|d| d.is_dir()))
            .collect();
        if per_input.iter().all(Option::is_some) {
            let lists = inputs
                .iter()
                .zip(per_input.into_iter().flatten())
                .map(|(i, d)| Ok((i.name.clone(), list_files(&d)?)))
                .collect::<Result<Vec<_>>>()?;
            return pair_up(lists);
        }
    }
    if inputs.len() > 1 {
        return Err(PareError::Usage(format!(
            "{}: the model has {} inputs ({}); give one subfolder per input ({}) or --data NAME=FOLDER for each",
            p.display(),
            inputs.len(),
            names(inputs),
            join(inputs.iter().map(|i| format!("{}/", i.name)))
        )));
    }
    Ok(list_files(p)?
        .into_iter()
        .map(|f| vec![item_for(&f)])
        .collect())
}

/// Several paths: all folders (one sample each) or all files (one sample, one per input).
fn discover_many(paths: &[PathBuf], inputs: &[InputDecl]) -> Result<Vec<Vec<Item>>> {
    let dirs = paths.iter().filter(|p| p.is_dir()).count();
    if dirs == paths.len() {
        return paths.iter().map(|d| test_data_sample(d, inputs)).collect();
    }
    if dirs > 0 {
        return Err(PareError::Usage(
            "--data: give either directories (one sample each) or tensor files, not both".into(),
        ));
    }
    if paths.len() != inputs.len() {
        return Err(PareError::Usage(format!(
            "--data gives {} files; the model has {} input(s): {}",
            paths.len(),
            inputs.len(),
            names(inputs)
        )));
    }
    let files = paths
        .iter()
        .map(|p| Ok(item_for(list_files(p)?.first().unwrap_or(p))))
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![files])
}

/// `NAME=PATH` pairs: every name an input, every input named.
fn discover_named(pairs: &[(String, PathBuf)], inputs: &[InputDecl]) -> Result<Vec<Vec<Item>>> {
    for (n, _) in pairs {
        if !inputs.iter().any(|i| &i.name == n) {
            let near = crate::extract::closest(n, inputs.iter().map(|i| i.name.as_str()), 3);
            return Err(PareError::Usage(format!(
                "--data names '{n}', which is not an input of the model (inputs: {}; closest: '{}')",
                names(inputs),
                near.join("', '")
            )));
        }
        if pairs.iter().filter(|(m, _)| m == n).count() > 1 {
            return Err(PareError::Usage(format!("--data gives input '{n}' twice")));
        }
    }
    let mut per_input = Vec::new();
    for i in inputs {
        let (_, p) = pairs.iter().find(|(n, _)| n == &i.name).ok_or_else(|| {
            PareError::Usage(format!(
                "--data gives no data for input '{}': add --data {}=PATH",
                i.name, i.name
            ))
        })?;
        per_input.push((i.name.clone(), list_files(p)?));
    }
    pair_up(per_input)
}

/// The samples of `source` for `inputs`, unexpanded; random sources give `limit` samples.
pub(super) fn find_samples(
    source: &DataSource,
    inputs: &[InputDecl],
    limit: usize,
) -> Result<Vec<Vec<Item>>> {
    match source {
        DataSource::Random { seed } => Ok((0..limit)
            .map(|k| {
                vec![
                    Item::Random {
                        seed: seed.wrapping_add(k as u64)
                    };
                    inputs.len()
                ]
            })
            .collect()),
        DataSource::Path(p) => discover(p, inputs),
        DataSource::Paths(ps) => discover_many(ps, inputs),
        DataSource::PerInput(pairs) => discover_named(pairs, inputs),
    }
}
