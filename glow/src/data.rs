//! Image data for training: a [`Dataset`] of images of any one shape `[C, H, W]` with
//! their labels, the [`ImageSplits`] a run trains from (a training and a test split), and
//! CIFAR-10, one implementation of it, in its standard binary layout: loading, the
//! train/test split, seeded epoch orders and horizontal-flip augmentation.
//!
//! A file of the binary version of CIFAR-10 is a run of 3,073-byte records: one label byte
//! (0-9, see [`CLASS_NAMES`]) then the 32×32 image as 1,024 red, 1,024 green and 1,024 blue
//! bytes, rows top to bottom. That is already `[C, H, W]`, so a [`Dataset`] keeps the pixel
//! bytes as they are and [`Dataset::batch`] hands out `[B, C, H, W]` bytes, the order
//! [`Glow::preprocess`](crate::Glow::preprocess) takes.
//!
//! [`Cifar10::load`] accepts
//! - a directory with any of `data_batch_1.bin` … `data_batch_5.bin` (at least one) and
//!   optionally `test_batch.bin`, or a directory whose `cifar-10-batches-bin/` holds them
//!   (what [`download_cifar10`](crate::download::download_cifar10) leaves), or
//! - a single `.bin` file, read as training data.
//!
//! **The test split.** With `test_batch.bin` present, it is the test split. Without it, the
//! LAST 10% of the training records (`n / 10`, in file order `data_batch_1.bin` first) are
//! held out for evaluation and the rest are the training split: for the shipped 3,000-image
//! sample ([`default_data_dir`]) that is records 2,700..3,000, so 2,700 train and 300 test.
//! (Fewer than 10 records leave an empty test split.)
//! [`Cifar10::test_source`] says which applies.
//!
//! **Shuffling and augmentation.** [`epoch_order`] shuffles the indices `0..n` from a seed
//! and the epoch number; [`random_hflip`] mirrors a random half of a batch from a seed and
//! the step number. Both are deterministic for a given seed and rand version.
//!
//! Errors are [`engine::Error::Invalid`] values whose message names the file or directory.
//!
//! **Other datasets**, each in its official distribution format and each an
//! [`ImageSplits`]: [`mnist`] (IDX files, one channel, padded to 32×32), [`cifar100`]
//! (binary records with coarse and fine labels), [`svhn`] (MATLAB v5 files),
//! [`imagenet`] (downsampled ImageNet's `.npz` batches, 32×32 or 64×64) and [`folder`]
//! (PNG and JPEG pictures, cropped and resized to any size).

pub mod cifar100;
pub mod folder;
pub mod imagenet;
mod matv5;
pub mod mnist;
pub mod svhn;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use engine::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The ten classes, indexed by label.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// `[C, H, W]` of one CIFAR-10 image.
pub const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// Pixel bytes of one CIFAR-10 image: 3 × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Bytes of one CIFAR-10 record: the label byte and the pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// The training batches, in the order they are concatenated.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];

/// The test batch.
pub const TEST_FILE: &str = "test_batch.bin";

/// The folder the official archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";

/// The op name in this module's errors.
const OP: &str = "cifar10";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// The shipped 3,000-image sample, `data/cifar10-sample/` of the project: the default
/// dataset. Found from the glow crate's manifest directory at compile time, so it points
/// into the source tree the binary was built from.
pub fn default_data_dir() -> PathBuf {
    let glow_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    glow_dir
        .parent()
        .unwrap_or(glow_dir)
        .join("data")
        .join("cifar10-sample")
}

/// Images of one shape and their labels, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    /// `[N, C, H, W]` pixel bytes: each image's channels in turn, each a plane of rows
    /// top to bottom.
    pub images: Vec<u8>,
    /// `[N]` labels (two bytes each: downsampled ImageNet has 1,000 classes).
    pub labels: Vec<u16>,
}

/// A dataset as a training run sees it: images of one shape in a training split and a
/// test split, with their classes. [`Cifar10`] is one.
pub trait ImageSplits {
    /// The images trained on.
    fn train(&self) -> &Dataset;
    /// The images evaluated on.
    fn test(&self) -> &Dataset;
    /// The number of classes the labels index.
    fn num_classes(&self) -> usize;
    /// A line saying what the data is and where it came from.
    fn describe(&self) -> String;
    /// `[C, H, W]` of every image.
    fn image_shape(&self) -> [usize; 3] {
        self.train().shape
    }
    /// The name of class `label`, for messages and summaries: its number unless the
    /// dataset names its classes.
    fn class_name(&self, label: usize) -> String {
        label.to_string()
    }
}

impl Dataset {
    /// `labels.len()` images of `shape` from their `[N, C, H, W]` bytes; fails unless
    /// the bytes are exactly that many images.
    pub fn new(shape: [usize; 3], images: Vec<u8>, labels: Vec<u16>) -> Result<Dataset> {
        let per_image: usize = shape.iter().product();
        if per_image == 0 || images.len() != labels.len() * per_image {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} labels of {shape:?} images need {} pixel bytes, got {}",
                    labels.len(),
                    labels.len() * per_image,
                    images.len()
                ),
            ));
        }
        Ok(Dataset {
            shape,
            images,
            labels,
        })
    }

    /// No images, of `shape`.
    pub fn empty(shape: [usize; 3]) -> Dataset {
        Dataset {
            shape,
            images: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Pixel bytes of one image, `C·H·W`.
    pub fn image_bytes(&self) -> usize {
        self.shape.iter().product()
    }

    /// The CRC-32 of every image's bytes, then every label, in order: what a checkpoint
    /// records of the data it was trained on (`TrainState::data_crc32`), so that a
    /// resume on other images, or the same images in another order, is refused. Labels
    /// count one byte each when every one is below 256 (as they were stored before
    /// datasets of more classes, so older checkpoints keep matching their data), else
    /// two, little-endian.
    pub fn fingerprint(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.images);
        let labels: Vec<u8> = match self.labels.iter().all(|&l| l < 256) {
            true => self.labels.iter().map(|&l| l as u8).collect(),
            false => self.labels.iter().flat_map(|l| l.to_le_bytes()).collect(),
        };
        h.update(&labels);
        h.finalize()
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `[C, H, W]` bytes of image `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.images[i * n..(i + 1) * n]
    }

    /// The images at `indices` as `[B, C, H, W]` bytes (ready for
    /// [`Glow::preprocess`](crate::Glow::preprocess)) and their labels.
    ///
    /// # Panics
    /// When an index is `>= self.len()`, like slice indexing.
    pub fn batch(&self, indices: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_bytes());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(usize::from(self.labels[i]));
        }
        (pixels, labels)
    }

    /// The whole dataset in order, `size` images at a time (the last batch may be
    /// shorter), as `(index of the first image, pixels, labels)`: the input
    /// [`crate::train::evaluate`] takes.
    pub fn sequential_batches(
        &self,
        size: usize,
    ) -> impl Iterator<Item = (u64, Vec<u8>, Vec<usize>)> + '_ {
        let size = size.max(1);
        (0..self.len()).step_by(size).map(move |start| {
            let indices: Vec<usize> = (start..(start + size).min(self.len())).collect();
            let (pixels, labels) = self.batch(&indices);
            (start as u64, pixels, labels)
        })
    }

    /// Splits off the records from `at` on: `self` keeps `0..at`, the result holds the rest.
    fn split_off(&mut self, at: usize) -> Dataset {
        Dataset {
            shape: self.shape,
            images: self.images.split_off(at * self.image_bytes()),
            labels: self.labels.split_off(at),
        }
    }

    /// Appends the records of one CIFAR-10 batch file, checking its size and labels.
    fn read_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)
            .map_err(|e| data_error(format!("cannot read {}: {e}", path.display())))?;
        if bytes.is_empty() {
            return Err(data_error(format!(
                "{}: empty file, expected {RECORD_BYTES}-byte records",
                path.display()
            )));
        }
        if bytes.len() % RECORD_BYTES != 0 {
            return Err(data_error(format!(
                "{}: {} bytes is not a multiple of the {RECORD_BYTES}-byte record \
                 (1 label byte + {IMAGE_BYTES} pixel bytes); is it a CIFAR-10 binary batch?",
                path.display(),
                bytes.len()
            )));
        }
        let n = bytes.len() / RECORD_BYTES;
        self.images.reserve(n * IMAGE_BYTES);
        self.labels.reserve(n);
        for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = record[0];
            if usize::from(label) >= CLASS_NAMES.len() {
                return Err(data_error(format!(
                    "{}: record {i} (byte {}) has label {label}, expected 0-9",
                    path.display(),
                    i * RECORD_BYTES
                )));
            }
            self.labels.push(u16::from(label));
            self.images.extend_from_slice(&record[1..]);
        }
        Ok(())
    }
}

/// Where the test split came from.
#[derive(Debug, Clone, PartialEq)]
pub enum TestSource {
    /// The records of this `test_batch.bin`.
    File(PathBuf),
    /// The last `count` of the `total` training records (the last 10%), held out because
    /// no `test_batch.bin` was found.
    HeldOut {
        /// The number of records held out.
        count: usize,
        /// The number of training records before the hold-out.
        total: usize,
    },
}

impl fmt::Display for TestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestSource::File(path) => write!(f, "test split: {}", path.display()),
            TestSource::HeldOut { count, total } => write!(
                f,
                "test split: the last 10% of the training records ({count} of {total}, \
                 records {}..{total}) held out, as no {TEST_FILE} was found",
                total - count
            ),
        }
    }
}

/// CIFAR-10 loaded into memory: a training and a test split.
#[derive(Debug, Clone, PartialEq)]
pub struct Cifar10 {
    /// The training split.
    pub train: Dataset,
    /// The test split (see [`TestSource`]).
    pub test: Dataset,
    /// The files the training records were read from, in order.
    pub train_files: Vec<PathBuf>,
    /// Where the test split came from.
    pub test_source: TestSource,
}

impl Cifar10 {
    /// Loads a directory of CIFAR-10 batches or a single batch file; see the module
    /// documentation for what is accepted and how the test split is chosen.
    pub fn load(path: impl AsRef<Path>) -> Result<Cifar10> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .map_err(|e| data_error(format!("cannot read {}: {e}", path.display())))?;
        let (train_files, test_file) = if meta.is_dir() {
            find_batches(path)?
        } else {
            (vec![path.to_path_buf()], None)
        };

        let mut train = Dataset::empty(IMAGE_SHAPE);
        for file in &train_files {
            train.read_file(file)?;
        }
        let (test, test_source) = match test_file {
            Some(file) => {
                let mut test = Dataset::empty(IMAGE_SHAPE);
                test.read_file(&file)?;
                (test, TestSource::File(file))
            }
            None => {
                let total = train.len();
                let count = total / 10;
                let test = train.split_off(total - count);
                (test, TestSource::HeldOut { count, total })
            }
        };
        Ok(Cifar10 {
            train,
            test,
            train_files,
            test_source,
        })
    }

    /// One line saying what was loaded, e.g. for a training log.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self
            .train_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        format!(
            "CIFAR-10: {} train and {} test images; train: {}; {}",
            self.train.len(),
            self.test.len(),
            files.join(", "),
            self.test_source
        )
    }
}

impl ImageSplits for Cifar10 {
    fn train(&self) -> &Dataset {
        &self.train
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn num_classes(&self) -> usize {
        CLASS_NAMES.len()
    }

    fn describe(&self) -> String {
        Cifar10::describe(self)
    }

    fn class_name(&self, label: usize) -> String {
        CLASS_NAMES
            .get(label)
            .map_or_else(|| label.to_string(), |n| n.to_string())
    }
}

/// The training batches present in `dir` (or in its `cifar-10-batches-bin/`) and its test
/// batch if any.
fn find_batches(dir: &Path) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let present = |dir: &Path| -> Vec<PathBuf> {
        TRAIN_FILES
            .iter()
            .map(|name| dir.join(name))
            .filter(|p| p.is_file())
            .collect()
    };
    let mut dir = dir.to_path_buf();
    let mut train = present(&dir);
    if train.is_empty() && dir.join(BATCHES_DIR).is_dir() {
        dir = dir.join(BATCHES_DIR);
        train = present(&dir);
    }
    if train.is_empty() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| data_error(format!("cannot read {}: {e}", dir.display())))?
            .count();
        let what = if entries == 0 {
            "empty directory".to_string()
        } else {
            format!(
                "no training batch: {} is missing",
                dir.join(TRAIN_FILES[0]).display()
            )
        };
        return Err(data_error(format!(
            "{}: {what}; expected at least one of data_batch_1.bin … data_batch_5.bin \
             (and optionally {TEST_FILE}), or a single .bin file",
            dir.display()
        )));
    }
    let test = dir.join(TEST_FILE);
    Ok((train, test.is_file().then_some(test)))
}

/// The most bytes [`read_maybe_gzip`] unpacks: more than any dataset file it is used on
/// (MNIST's largest is 47 MB), and a bound on what a damaged archive can make it allocate.
const MAX_UNPACKED: u64 = 1 << 30;

/// The bytes of `path`, unpacked when they are gzip (found by gzip's magic bytes, not by
/// the name); errors name `op` and the file.
pub(crate) fn read_maybe_gzip(op: &'static str, path: &Path) -> Result<Vec<u8>> {
    let fail = |what: String| Error::invalid(op, format!("{}: {what}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| fail(format!("damaged gzip data: {e}")))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(fail(format!(
            "unpacks to more than {MAX_UNPACKED} bytes; is it a dataset file?"
        )));
    }
    Ok(out)
}

/// Mixes a seed and a counter into one well-spread `u64` (SplitMix64's finaliser), so
/// nearby seeds and epochs give unrelated RNG streams.
pub(crate) fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Salt that keeps the flip stream apart from the epoch-order stream of the same seed.
const FLIP_SALT: u64 = 0x666C_6970_5F68_6F72; // "flip_hor"

/// A permutation of `0..n` for `epoch`: `StdRng` seeded from a mix of `seed` and `epoch`
/// shuffles the indices. The same `(seed, epoch, n)` always gives the same order.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(mix(seed, epoch));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Mirrors left-right the images of `pixels` (`[B, C, H, W]` bytes of `image_shape`
/// `[C, H, W]`) whose entry in `flip` is true.
pub fn hflip(pixels: &mut [u8], image_shape: [usize; 3], flip: &[bool]) -> Result<()> {
    let [c, h, w] = image_shape;
    let image = c * h * w;
    if pixels.len() != flip.len() * image {
        return Err(Error::shape(
            "hflip",
            format!(
                "{} bytes do not make {} images of [{c}, {h}, {w}]",
                pixels.len(),
                flip.len()
            ),
        ));
    }
    if image == 0 {
        return Ok(());
    }
    for (img, &f) in pixels.chunks_exact_mut(image).zip(flip) {
        if f {
            img.chunks_exact_mut(w).for_each(<[u8]>::reverse);
        }
    }
    Ok(())
}

/// Horizontal-flip augmentation: mirrors each image of `pixels` (`[B, C, H, W]` bytes of
/// `image_shape`) with probability 1/2, in place, and returns which were flipped. The
/// choices come from `StdRng` seeded from a mix of `seed` and `step`, so a training run is
/// reproducible.
pub fn random_hflip(
    pixels: &mut [u8],
    image_shape: [usize; 3],
    seed: u64,
    step: u64,
) -> Result<Vec<bool>> {
    let image: usize = image_shape.iter().product();
    let batch = pixels.len().checked_div(image).unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(mix(seed ^ FLIP_SALT, step));
    let flip: Vec<bool> = (0..batch).map(|_| rng.random_bool(0.5)).collect();
    hflip(pixels, image_shape, &flip)?;
    Ok(flip)
}
