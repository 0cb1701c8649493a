//! Images as input tensors: decode, resize to the input's size, scale, per-channel mean/std,
//! RGB or BGR, NCHW or NHWC.

use std::path::Path;

use serde::Serialize;

use super::spec::{DeclDim, InputDecl};
use crate::error::{PareError, Result};
use crate::runtime::HostTensor;

/// Tensor memory layout of image inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// NCHW unless the input's last dim is 1 or 3 and its second is not.
    #[default]
    Auto,
    Nchw,
    Nhwc,
}

/// How images become tensors: `((pixel * scale) - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preprocess {
    /// Target `(height, width)`; default: the input's declared size, else the image's own.
    pub resize: Option<(usize, usize)>,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Channel order BGR (OpenCV-trained models) instead of RGB.
    pub bgr: bool,
    pub layout: Layout,
}

impl Default for Preprocess {
    /// torchvision's ImageNet normalisation.
    fn default() -> Self {
        Preprocess {
            resize: None,
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            bgr: false,
            layout: Layout::Auto,
        }
    }
}

/// The layout images take for `decl`: `requested`, or guessed from where a 1/3 dim sits.
pub fn image_layout(decl: &InputDecl, requested: Layout) -> Layout {
    match requested {
        Layout::Auto => {
            let last = decl.dims.last();
            let second = decl.dims.get(1);
            let chan = |d: Option<&DeclDim>| matches!(d, Some(DeclDim::Known(1 | 3)));
            if decl.dims.len() == 4 && chan(last) && !chan(second) {
                Layout::Nhwc
            } else {
                Layout::Nchw
            }
        }
        l => l,
    }
}

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    image::ImageReader::open(path)
        .map_err(|e| super::io_err(path, e))?
        .with_guessed_format()
        .map_err(|e| super::io_err(path, e))
}

/// The shape image `path` gives input `decl` (only the header is read).
pub fn image_shape(path: &Path, decl: &InputDecl, pp: &Preprocess) -> Result<Vec<usize>> {
    let (w, h) = reader(path)?
        .into_dimensions()
        .map_err(|e| PareError::Usage(format!("{}: cannot read image: {e}", path.display())))?;
    if decl.dims.len() != 4 {
        return Err(PareError::Usage(format!(
            "{}: an image gives a 4-D tensor, but input '{}' is {}",
            path.display(),
            decl.name,
            decl.describe()
        )));
    }
    let (ci, hi, wi) = match image_layout(decl, pp.layout) {
        Layout::Nhwc => (3, 1, 2),
        _ => (1, 2, 3),
    };
    let pick = |d: &DeclDim, native: usize| match d {
        DeclDim::Known(v) => *v,
        DeclDim::Sym(_) => native,
    };
    let (th, tw) = pp.resize.unwrap_or((
        pick(&decl.dims[hi], h as usize),
        pick(&decl.dims[wi], w as usize),
    ));
    let mut shape = vec![1usize; 4];
    shape[ci] = pick(&decl.dims[ci], 3);
    shape[hi] = th;
    shape[wi] = tw;
    Ok(shape)
}

/// Decodes image `path` into a float tensor of `shape` for input `decl`.
pub fn load_image(
    path: &Path,
    decl: &InputDecl,
    shape: &[usize],
    pp: &Preprocess,
) -> Result<HostTensor> {
    let img = reader(path)?
        .decode()
        .map_err(|e| PareError::Usage(format!("{}: cannot decode image: {e}", path.display())))?;
    let layout = image_layout(decl, pp.layout);
    let (c, h, w) = match layout {
        Layout::Nhwc => (shape[3], shape[1], shape[2]),
        _ => (shape[1], shape[2], shape[3]),
    };
    if c != 1 && c != 3 {
        return Err(PareError::Usage(format!(
            "{}: input '{}' wants {c} channels; images give 1 (gray) or 3 (RGB)",
            path.display(),
            decl.name
        )));
    }
    let rgb = img.to_rgb8();
    let rgb = if (rgb.width() as usize, rgb.height() as usize) != (w, h) {
        image::imageops::resize(
            &rgb,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        )
    } else {
        rgb
    };
    let pick = |v: &[f32], k: usize, dflt: f32| v.get(k).or(v.first()).copied().unwrap_or(dflt);
    let mut data = vec![0f32; c * h * w];
    for (x, y, px) in rgb.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for k in 0..c {
            let v = if c == 1 {
                // ITU-R 601 luma, as image's to_luma does.
                0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32
            } else {
                px[if pp.bgr { 2 - k } else { k }] as f32
            };
            let v = (v * pp.scale - pick(&pp.mean, k, 0.0)) / pick(&pp.std, k, 1.0).max(1e-12);
            let idx = match layout {
                Layout::Nhwc => (y * w + x) * c + k,
                _ => (k * h + y) * w + x,
            };
            data[idx] = v;
        }
    }
    Ok(HostTensor::f32(shape.to_vec(), data))
}
