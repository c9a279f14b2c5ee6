//! SVHN's cropped digits (Netzer et al. 2011) in their official MATLAB v5 files:
//! `train_32x32.mat` (73,257 digits) and `test_32x32.mat` (26,032), each holding `X`, the
//! images as a `uint8` array of `[32, 32, 3, N]` (MATLAB's column-major order: row fastest,
//! then column, channel, image), and `y`, the labels as an `[N, 1]` array of 1 to 10,
//! where 10 stands for the digit 0. [`Svhn::load`] turns them into `[3, 32, 32]` images
//! with labels 0-9 (10 becomes 0, as torchvision does), the form a model trained on
//! CIFAR-10 can score (the out-of-distribution test of Nalisnick et al. 2019).
//!
//! The files are parsed by `matv5` (MAT v5 numeric arrays, compressed or not); this
//! module checks the arrays' names, shapes and values.

use std::path::{Path, PathBuf};

use engine::{Error, Result};

use super::matv5::{read_arrays, Values};
use super::{Dataset, ImageSplits, IMAGE_SHAPE};

/// The training file.
pub const TRAIN_FILE: &str = "train_32x32.mat";
/// The test file.
pub const TEST_FILE: &str = "test_32x32.mat";

/// The op name in this module's errors.
const OP: &str = "svhn";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// SVHN loaded into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Svhn {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

impl Svhn {
    /// Reads `train_32x32.mat` and `test_32x32.mat` from the directory `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Svhn> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(data_error(format!(
                "{}: not a directory; expected one holding {TRAIN_FILE} and {TEST_FILE}",
                dir.display()
            )));
        }
        Ok(Svhn {
            train: read(&dir.join(TRAIN_FILE))?,
            test: read(&dir.join(TEST_FILE))?,
            dir: dir.to_path_buf(),
        })
    }
}

impl ImageSplits for Svhn {
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
        format!(
            "SVHN (cropped digits): {} train and {} test images, from {}",
            self.train.len(),
            self.test.len(),
            self.dir.display()
        )
    }
}

/// The images and labels of one file.
fn read(path: &Path) -> Result<Dataset> {
    let fail = |what: String| data_error(format!("{}: {what}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let arrays = read_arrays(&bytes).map_err(fail)?;
    let array = |name: &str| {
        arrays.iter().find(|a| a.name == name).ok_or_else(|| {
            fail(format!(
                "no array named {name} (SVHN's files hold X, the images, and y, the labels)"
            ))
        })
    };
    let (x, y) = (array("X")?, array("y")?);
    let n = match x.dims[..] {
        [32, 32, 3, n] => n,
        [32, 32, 3] => 1,
        _ => {
            return Err(fail(format!(
                "X is {:?}, expected [32, 32, 3, N] (32x32 RGB images)",
                x.dims
            )))
        }
    };
    let Values::U8(pixels) = &x.values else {
        return Err(fail("X is not an array of uint8".into()));
    };
    let Values::F64(labels) = &y.values else {
        return Err(fail(
            "y is an array of uint8, expected SVHN's doubles".into(),
        ));
    };
    if labels.len() != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(fail(format!(
            "y is {:?}, expected [{n}, 1]: one label for each of X's {n} images",
            y.dims
        )));
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            10.0 => Ok(0),
            _ if (1.0..=9.0).contains(&v) && v.fract() == 0.0 => Ok(v as u16),
            _ => Err(fail(format!("label {i} is {v}, expected 1 to 10"))),
        })
        .collect::<Result<Vec<u16>>>()?;
    // [32, 32, 3, N] column-major: pixels[r + 32·(c + 32·(ch + 3·i))] is row r, column c
    // of channel ch of image i; a Dataset wants [N, 3, 32, 32] row-major.
    let mut images = vec![0u8; n * 3 * 32 * 32];
    for (i, image) in images.chunks_exact_mut(3 * 32 * 32).enumerate() {
        for (ch, plane) in image.chunks_exact_mut(32 * 32).enumerate() {
            let src = &pixels[(i * 3 + ch) * 1024..][..1024];
            for r in 0..32 {
                for c in 0..32 {
                    plane[r * 32 + c] = src[r + 32 * c];
                }
            }
        }
    }
    Dataset::new(IMAGE_SHAPE, images, labels)
}
