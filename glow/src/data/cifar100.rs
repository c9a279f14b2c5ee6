//! CIFAR-100 in its binary version (`cifar-100-binary.tar.gz`): `train.bin` (50,000
//! images) and `test.bin` (10,000), each a run of 3,074-byte records: the coarse label
//! (one of 20 superclasses), the fine label (one of 100 classes), then the 32×32 image as
//! CIFAR-10 stores it (1,024 red, 1,024 green and 1,024 blue bytes, rows top to bottom).
//!
//! [`Cifar100::load`] takes the directory holding the two files, or the directory the
//! archive unpacks into (whose `cifar-100-binary/` holds them), and which labels to keep.

use std::path::{Path, PathBuf};

use engine::{Error, Result};

use super::{Dataset, ImageSplits, IMAGE_BYTES, IMAGE_SHAPE};

/// The training file.
pub const TRAIN_FILE: &str = "train.bin";
/// The test file.
pub const TEST_FILE: &str = "test.bin";
/// The folder the official archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-100-binary";
/// Bytes of one record: two label bytes and the pixels.
pub const RECORD_BYTES: usize = 2 + IMAGE_BYTES;

/// The op name in this module's errors.
const OP: &str = "cifar100";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// Which of CIFAR-100's two labels a [`Dataset`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Labels {
    /// The 100 classes.
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

impl Labels {
    /// The number of classes.
    pub fn count(self) -> usize {
        match self {
            Labels::Fine => 100,
            Labels::Coarse => 20,
        }
    }
}

/// CIFAR-100 loaded into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Cifar100 {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// The labels kept.
    pub labels: Labels,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

impl Cifar100 {
    /// Reads `train.bin` and `test.bin` from `path` or from its `cifar-100-binary/`,
    /// keeping the `labels` asked for.
    pub fn load(path: impl AsRef<Path>, labels: Labels) -> Result<Cifar100> {
        let mut dir = path.as_ref().to_path_buf();
        if !dir.join(TRAIN_FILE).is_file() && dir.join(BATCHES_DIR).is_dir() {
            dir = dir.join(BATCHES_DIR);
        }
        if !dir.is_dir() {
            return Err(data_error(format!(
                "{}: not a directory; expected one holding {TRAIN_FILE} and {TEST_FILE} \
                 (or {BATCHES_DIR}/ with them)",
                dir.display()
            )));
        }
        Ok(Cifar100 {
            train: read(&dir.join(TRAIN_FILE), labels)?,
            test: read(&dir.join(TEST_FILE), labels)?,
            labels,
            dir,
        })
    }
}

impl ImageSplits for Cifar100 {
    fn train(&self) -> &Dataset {
        &self.train
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn num_classes(&self) -> usize {
        self.labels.count()
    }

    fn describe(&self) -> String {
        format!(
            "CIFAR-100: {} train and {} test images, {} labels, from {}",
            self.train.len(),
            self.test.len(),
            match self.labels {
                Labels::Fine => "fine (100 classes)",
                Labels::Coarse => "coarse (20 superclasses)",
            },
            self.dir.display()
        )
    }
}

/// The records of one file, checking its size and both labels of every record.
fn read(path: &Path, labels: Labels) -> Result<Dataset> {
    let bytes = std::fs::read(path)
        .map_err(|e| data_error(format!("cannot read {}: {e}", path.display())))?;
    if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
        return Err(data_error(format!(
            "{}: {} bytes is not a whole number of {RECORD_BYTES}-byte records (coarse \
             label, fine label, {IMAGE_BYTES} pixel bytes); is it CIFAR-100's binary version?",
            path.display(),
            bytes.len()
        )));
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut kept = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let (coarse, fine) = (record[0], record[1]);
        if coarse >= 20 || fine >= 100 {
            return Err(data_error(format!(
                "{}: record {i} (byte {}) has labels {coarse} (coarse, expected 0-19) and \
                 {fine} (fine, expected 0-99)",
                path.display(),
                i * RECORD_BYTES
            )));
        }
        kept.push(u16::from(match labels {
            Labels::Fine => fine,
            Labels::Coarse => coarse,
        }));
        images.extend_from_slice(&record[2..]);
    }
    Dataset::new(IMAGE_SHAPE, images, kept)
}
