//! MNIST in its official IDX files: 60,000 training and 10,000 test digits, 28×28 grey
//! bytes, labels 0-9.
//!
//! An IDX file is two zero bytes, a type byte (`0x08`: unsigned bytes, the only type MNIST
//! uses), the number of dimensions, each dimension as a big-endian `u32`, then the values
//! in row-major order. MNIST's four files, each as distributed (`.gz`) or unpacked:
//!
//! | file | dimensions |
//! |---|---|
//! | `train-images-idx3-ubyte` | `[60000, 28, 28]` |
//! | `train-labels-idx1-ubyte` | `[60000]` |
//! | `t10k-images-idx3-ubyte` | `[10000, 28, 28]` |
//! | `t10k-labels-idx1-ubyte` | `[10000]` |
//!
//! **Padding.** Glow's reference code pads each digit with two pixels on every side to
//! 32×32 (numpy's `minimum` mode, which is zero on MNIST, whose digits sit in a 20×20 box
//! inside black borders), so that three levels of squeezing divide the size; [`Mnist::load`]
//! does the same with zeros unless asked for the 28×28 originals. Either way images are
//! `[1, H, W]`: one channel.

use std::path::{Path, PathBuf};

use engine::{Error, Result};

use super::{read_maybe_gzip, Dataset, ImageSplits};

/// The training images.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// The test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Side of an MNIST digit as distributed.
pub const SIDE: usize = 28;

/// Side after the reference code's padding.
pub const PADDED_SIDE: usize = 32;

/// The op name in this module's errors.
const OP: &str = "mnist";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// MNIST loaded into memory: its training and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training split, `[1, 32, 32]` or `[1, 28, 28]` images.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

impl Mnist {
    /// Reads the four files from `dir` (each `NAME` or `NAME.gz`, see the module doc),
    /// padded to 32×32 when `pad` (as the reference code does), else 28×28.
    pub fn load(dir: impl AsRef<Path>, pad: bool) -> Result<Mnist> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(data_error(format!(
                "{}: not a directory; expected one holding {TRAIN_IMAGES}(.gz), \
                 {TRAIN_LABELS}(.gz), {TEST_IMAGES}(.gz) and {TEST_LABELS}(.gz)",
                dir.display()
            )));
        }
        let split = |images: &str, labels: &str| -> Result<Dataset> {
            let images = read_idx(&find(dir, images)?, 3)?;
            let labels = read_idx(&find(dir, labels)?, 1)?;
            digits(images, labels, pad)
        };
        Ok(Mnist {
            train: split(TRAIN_IMAGES, TRAIN_LABELS)?,
            test: split(TEST_IMAGES, TEST_LABELS)?,
            dir: dir.to_path_buf(),
        })
    }
}

impl ImageSplits for Mnist {
    fn train(&self) -> &Dataset {
        &self.train
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn num_classes(&self) -> usize {
        10
    }

    fn describe(&self) -> String {
        let [_, h, w] = self.train.shape;
        format!(
            "MNIST: {} train and {} test images of {h}x{w} ({}), from {}",
            self.train.len(),
            self.test.len(),
            if h == PADDED_SIDE {
                "padded from 28x28"
            } else {
                "as distributed"
            },
            self.dir.display()
        )
    }
}

/// `dir/name`, or `dir/name.gz`, whichever exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        Ok(plain)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(data_error(format!(
            "{}: missing (nor {}): MNIST's IDX files, from the official archives",
            plain.display(),
            gz.display()
        )))
    }
}

/// One IDX file of unsigned bytes: its path, dimensions and values.
#[derive(Debug)]
struct Idx {
    path: PathBuf,
    dims: Vec<usize>,
    values: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes with `rank` dimensions (gzip or not).
fn read_idx(path: &Path, rank: usize) -> Result<Idx> {
    let bytes = read_maybe_gzip(OP, path)?;
    let fail = |what: String| data_error(format!("{}: {what}", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(fail(
            "not an IDX file (it starts with two zero bytes, a type and a rank)".into(),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(fail(format!(
            "IDX type {:#04x}, expected 0x08 (unsigned bytes)",
            bytes[2]
        )));
    }
    if usize::from(bytes[3]) != rank {
        return Err(fail(format!("{} dimensions, expected {rank}", bytes[3])));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(fail(format!(
            "{} bytes, shorter than its {header}-byte header",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n == bytes.len() - header);
    if count.is_none() {
        return Err(fail(format!(
            "dimensions {dims:?} need {} values after the header, the file has {}",
            dims.iter()
                .try_fold(1u128, |n, &d| n.checked_mul(d as u128))
                .map_or("more".to_string(), |n| n.to_string()),
            bytes.len() - header
        )));
    }
    let mut values = bytes;
    values.drain(..header);
    Ok(Idx {
        path: path.to_path_buf(),
        dims,
        values,
    })
}

/// The dataset of the images and labels files, checked against each other.
fn digits(images: Idx, labels: Idx, pad: bool) -> Result<Dataset> {
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if (h, w) != (SIDE, SIDE) {
        return Err(data_error(format!(
            "{}: images of {h}x{w}, expected MNIST's {SIDE}x{SIDE}",
            images.path.display()
        )));
    }
    if labels.dims[0] != n {
        return Err(data_error(format!(
            "{} has {} labels for the {n} images of {}",
            labels.path.display(),
            labels.dims[0],
            images.path.display()
        )));
    }
    if let Some(i) = labels.values.iter().position(|&l| l > 9) {
        return Err(data_error(format!(
            "{}: label {i} is {}, expected 0-9",
            labels.path.display(),
            labels.values[i]
        )));
    }
    let (side, pixels) = if pad {
        (PADDED_SIDE, pad_images(&images.values, SIDE, PADDED_SIDE))
    } else {
        (SIDE, images.values)
    };
    let labels = labels.values.iter().map(|&l| u16::from(l)).collect();
    Dataset::new([1, side, side], pixels, labels)
}

/// Square `side`×`side` images centred on a black `to`×`to` canvas.
fn pad_images(images: &[u8], side: usize, to: usize) -> Vec<u8> {
    let margin = (to - side) / 2;
    let mut out = vec![0u8; images.len() / (side * side) * to * to];
    for (src, dst) in images
        .chunks_exact(side * side)
        .zip(out.chunks_exact_mut(to * to))
    {
        for (row, src_row) in src.chunks_exact(side).enumerate() {
            let at = (row + margin) * to + margin;
            dst[at..at + side].copy_from_slice(src_row);
        }
    }
    out
}
