//! The loaders of files a user hands the program, fuzzed: [`Cifar10::load`], the other
//! datasets' ([`Mnist::load`], [`Cifar100::load`], [`Svhn::load`], [`ImageNet::load`],
//! [`ImageFolder::load`]) and [`load_checkpoint`] (then
//! [`Checkpoint::restore`] of what loads) must never panic, on any input. An error is
//! fine and must name the file.
//!
//! Each loader gets [`cases`] inputs (10,000 by default) made from a valid file: a few
//! records of the shipped sample, the other datasets' small files (`tests/formats/`; one
//! or two of a dataset's files mutated at a time), and a small checkpoint written by
//! [`save_checkpoint`].
//! They are truncated at random lengths, have random bits flipped and bytes overwritten
//! (labels; the safetensors header length and its JSON text), garbage appended or a slice
//! repeated, or are replaced by random bytes; checkpoints also get their header's JSON
//! changed value by value (a dtype, a shape, an offset, a field of the model
//! configuration), re-serialised with a consistent length, so that the deeper checks run.
//! A checkpoint that loads is restored on the CPU device when its configuration
//! describes a model of at most a few times the original's size ([`small_enough`]):
//! restoring builds the model the configuration asks for before comparing the stored
//! shapes, so a damaged `hidden` or `depth` of millions would allocate gigabytes and, on
//! failure, abort the process, which no test can catch.
//!
//! **Reproducing a failure.** Case `i` draws everything from a generator seeded with
//! `(seed, i)`; a failure prints both, the mutation, and where the input was saved
//! (`target/tmp/fuzz-failures/`). `FUZZ_SEED` (decimal or `0x…`) changes the seed,
//! `FUZZ_CASES` the number of cases, `FUZZ_CASE=i` runs case `i` alone:
//!
//! ```sh
//! FUZZ_CASE=1234 cargo test --test fuzz_loaders checkpoint -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::backend::AdamKind;
use engine::{Device, Tensor};
use glow::checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, TrainState};
use glow::data::cifar100::{Cifar100, Labels};
use glow::data::folder::{FolderOptions, ImageFolder};
use glow::data::imagenet::{self, ImageNet};
use glow::data::mnist::Mnist;
use glow::data::svhn::{self, Svhn};
use glow::data::{default_data_dir, Cifar10, ImageSplits, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Glow, GlowConfig};
use glow_rs::testing::Scratch;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

mod formats;

/// The seed when `FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x00f0_22ed_10ad_e250;

/// `FUZZ_SEED`, decimal or `0x` hex.
fn seed() -> u64 {
    match std::env::var("FUZZ_SEED") {
        Ok(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .unwrap_or_else(|e| panic!("FUZZ_SEED={s:?}: {e}")),
        Err(_) => DEFAULT_SEED,
    }
}

/// The case indices to run: `FUZZ_CASE` alone, or `0..FUZZ_CASES` (default 10,000).
fn cases() -> Range<usize> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{name}={s:?}: {e}")))
    };
    match var("FUZZ_CASE") {
        Some(i) => i..i + 1,
        None => 0..var("FUZZ_CASES").unwrap_or(10_000),
    }
}

/// The generator of case `case`: SplitMix64's finaliser spreads `(seed, case)`.
fn case_rng(seed: u64, case: usize) -> StdRng {
    let mut z = seed ^ (case as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A fresh directory for one test (see `glow_rs::testing::Scratch`).
fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("fuzz-{name}"))
}

/// Writes `bytes` to `path` in place: over the old contents, then cut to length. (Creating
/// the file anew truncates it to nothing first, which on an ext4 mounted with `discard`
/// costs milliseconds per write and would make these tests I/O bound.)
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open the input file");
    f.write_all(bytes).expect("write the input");
    f.set_len(bytes.len() as u64)
        .expect("cut the input to length");
}

// ---------------------------------------------------------------------------------------
// Byte-level mutations, shared by both loaders.

/// The ways an input is made from the valid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    /// Cut at a random length.
    Truncate,
    /// 1-8 random bits flipped.
    FlipBits,
    /// 1-16 bytes overwritten with values a parser finds interesting.
    Overwrite,
    /// Random bytes appended (sometimes exactly one record).
    Append,
    /// A slice of the file inserted again elsewhere.
    Repeat,
    /// Random bytes of a random length (sometimes a whole number of records).
    Random,
    /// Checkpoints: the header length (the first 8 bytes) set near or far from the truth.
    HeaderLength,
    /// Checkpoints: one value of the header's JSON replaced, or a member removed.
    HeaderJson,
    /// Checkpoints: one value of the metadata (the model or optimiser configuration, a
    /// step counter) replaced.
    Metadata,
}

const BYTE_MUTATIONS: [Mutation; 6] = [
    Mutation::Truncate,
    Mutation::FlipBits,
    Mutation::Overwrite,
    Mutation::Append,
    Mutation::Repeat,
    Mutation::Random,
];

/// A position, half the time inside one of the `hot` ranges (labels, a header).
fn position(rng: &mut StdRng, len: usize, hot: &[Range<usize>]) -> usize {
    let hot: Vec<&Range<usize>> = hot
        .iter()
        .filter(|r| r.end <= len && !r.is_empty())
        .collect();
    if !hot.is_empty() && rng.random_bool(0.5) {
        let r = hot[rng.random_range(0..hot.len())];
        rng.random_range(r.clone())
    } else {
        rng.random_range(0..len)
    }
}

/// A byte a parser may react to: structure of JSON, digits, extremes, or anything.
fn interesting_byte(rng: &mut StdRng) -> u8 {
    const BYTES: &[u8] = b"{}[]\":,-.0123456789eE \\\x00\x7f\x80\xff\n";
    match rng.random_range(0..3) {
        0 => BYTES[rng.random_range(0..BYTES.len())],
        1 => rng.random_range(0..12), // around the labels 0-9
        _ => rng.random(),
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Applies one byte-level mutation to `bytes`.
fn mutate_bytes(m: Mutation, bytes: &mut Vec<u8>, rng: &mut StdRng, hot: &[Range<usize>]) {
    let len = bytes.len();
    match m {
        Mutation::Truncate if len > 0 => {
            // A third of the cuts fall between records, leaving a shorter valid file.
            let at = match rng.random_bool(1.0 / 3.0) {
                true => RECORD_BYTES * rng.random_range(0..=len / RECORD_BYTES),
                false => rng.random_range(0..len),
            };
            bytes.truncate(at);
        }
        Mutation::FlipBits if len > 0 => {
            for _ in 0..rng.random_range(1..=8) {
                let at = position(rng, len, hot);
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        Mutation::Overwrite if len > 0 => {
            for _ in 0..rng.random_range(1..=16) {
                let at = position(rng, len, hot);
                bytes[at] = interesting_byte(rng);
            }
        }
        Mutation::Append => {
            let n = if rng.random_bool(0.3) {
                RECORD_BYTES
            } else {
                rng.random_range(1..=2 * RECORD_BYTES)
            };
            let mut tail = random_bytes(rng, n);
            tail[0] = rng.random_range(0..12);
            bytes.extend(tail);
        }
        Mutation::Repeat if len >= RECORD_BYTES && rng.random_bool(1.0 / 3.0) => {
            // A whole record, repeated at a record boundary.
            let records = len / RECORD_BYTES;
            let first = RECORD_BYTES * rng.random_range(0..records);
            let record = bytes[first..first + RECORD_BYTES].to_vec();
            let at = RECORD_BYTES * rng.random_range(0..=records);
            bytes.splice(at..at, record);
        }
        Mutation::Repeat if len > 0 => {
            let start = rng.random_range(0..len);
            let end = rng.random_range(start..=len.min(start + 2 * RECORD_BYTES));
            let slice = bytes[start..end].to_vec();
            let at = rng.random_range(0..=len);
            bytes.splice(at..at, slice);
        }
        Mutation::Random => {
            let n = if rng.random_bool(0.3) {
                RECORD_BYTES * rng.random_range(1..=4)
            } else {
                rng.random_range(0..=5 * RECORD_BYTES)
            };
            *bytes = random_bytes(rng, n);
            if rng.random_bool(0.5) {
                // Valid-looking labels, so the records reach the label check and beyond.
                for r in bytes.chunks_mut(RECORD_BYTES) {
                    r[0] = rng.random_range(0..11);
                }
            }
        }
        _ => {}
    }
}

/// Catches a panic of `f`, returning its message.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Collects failures (saving their inputs for reproduction) and counts the cases of each
/// mutation and how many of them loaded.
struct Failures {
    seed: u64,
    loader: &'static str,
    found: Vec<String>,
    tally: BTreeMap<String, (usize, usize)>,
}

impl Failures {
    fn new(seed: u64, loader: &'static str) -> Failures {
        Failures {
            seed,
            loader,
            found: Vec::new(),
            tally: BTreeMap::new(),
        }
    }

    /// Counts a case made by the mutations `how` under each of them, and whether it
    /// loaded.
    fn count(&mut self, how: &[Mutation], loaded: bool) {
        let mut kinds: Vec<String> = how.iter().map(|m| format!("{m:?}")).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds.into_iter().chain(["(all)".to_string()]) {
            let entry = self.tally.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += usize::from(loaded);
        }
    }

    /// Records that case `case` (mutations `how`) failed with `what`, saving `input`.
    fn record(&mut self, case: usize, how: &[Mutation], what: String, input: &[u8]) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let saved = dir.join(format!("{}-{:#x}-{case}", self.loader, self.seed));
        let _ = std::fs::write(&saved, input);
        let line = format!(
            "{} case {case} (FUZZ_SEED={:#x} FUZZ_CASE={case}, {how:?}): {what}; input saved \
             as {}",
            self.loader,
            self.seed,
            saved.display()
        );
        eprintln!("{line}");
        self.found.push(line);
    }

    fn assert_none(&self, cases: usize, started: Instant) {
        eprintln!(
            "{}: inputs with each mutation (loaded / made):",
            self.loader
        );
        for (how, (made, loaded)) in &self.tally {
            eprintln!("  {how:<13} {loaded:>5} / {made}");
        }
        eprintln!(
            "{}: {cases} inputs in {:.2?}, {} failures",
            self.loader,
            started.elapsed(),
            self.found.len()
        );
        assert!(self.found.is_empty(), "{}", self.found.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------
// The CIFAR-10 loader.

/// Records in the valid starting file.
const RECORDS: usize = 4;

/// Removes the batch files of `dir` that this case does not write.
fn clear(dir: &Path, keep: &[(PathBuf, &Vec<u8>)]) {
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let path = dir.join(name);
        if !keep.iter().any(|(p, _)| *p == path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Checks what a successful load returned against the bytes it read.
fn check_loaded(data: &Cifar10, total_bytes: usize) -> Result<(), String> {
    for (split, d) in [("train", &data.train), ("test", &data.test)] {
        if d.images.len() != d.len() * glow::data::IMAGE_BYTES {
            return Err(format!(
                "{split}: {} bytes for {} images",
                d.images.len(),
                d.len()
            ));
        }
        if let Some(l) = d.labels.iter().find(|&&l| l > 9) {
            return Err(format!("{split}: label {l} accepted"));
        }
    }
    let records = data.train.len() + data.test.len();
    if records * RECORD_BYTES != total_bytes {
        return Err(format!("{records} records from {total_bytes} bytes"));
    }
    Ok(())
}

#[test]
fn the_cifar10_loader_never_panics() {
    let seed = seed();
    let scratch = scratch("cifar10");
    let sample = std::fs::read(default_data_dir().join(TRAIN_FILES[0])).expect("the sample");
    let valid = sample[..RECORDS * RECORD_BYTES].to_vec();
    let labels: Vec<Range<usize>> = (0..RECORDS)
        .map(|i| i * RECORD_BYTES..i * RECORD_BYTES + 1)
        .collect();
    let mut failures = Failures::new(seed, "cifar10");
    let started = Instant::now();
    let cases = cases();
    let count = cases.len();
    for case in cases {
        let mut rng = case_rng(seed, case);
        let make = |rng: &mut StdRng, how: &mut Vec<Mutation>| {
            let mut bytes = valid.clone();
            for _ in 0..rng.random_range(1..=2) {
                let m = BYTE_MUTATIONS[rng.random_range(0..BYTE_MUTATIONS.len())];
                how.push(m);
                mutate_bytes(m, &mut bytes, rng, &labels);
            }
            bytes
        };
        let mut how = Vec::new();
        let train = make(&mut rng, &mut how);
        // A single file, or a directory holding it as a training batch and, maybe, a
        // test batch (itself valid or mutated).
        let as_dir = rng.random_bool(0.3);
        let test = (as_dir && rng.random_bool(0.5)).then(|| {
            if rng.random_bool(0.5) {
                valid.clone()
            } else {
                make(&mut rng, &mut how)
            }
        });
        let (path, files) = if as_dir {
            let mut files = vec![(scratch.path(TRAIN_FILES[rng.random_range(0..5)]), &train)];
            if let Some(t) = &test {
                files.push((scratch.path(TEST_FILE), t));
            }
            (scratch.to_path_buf(), files)
        } else {
            (
                scratch.path(TRAIN_FILES[0]),
                vec![(scratch.path(TRAIN_FILES[0]), &train)],
            )
        };
        clear(&scratch, &files);
        for (p, b) in &files {
            overwrite(p, b);
        }
        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
        let outcome = no_panic(|| Cifar10::load(&path));
        failures.count(&how, matches!(outcome, Ok(Ok(_))));
        let problem = match outcome {
            Err(panic) => Some(format!("panicked: {panic}")),
            Ok(Ok(data)) => check_loaded(&data, total).err(),
            Ok(Err(e)) => {
                let msg = e.to_string();
                let named = files
                    .iter()
                    .any(|(p, _)| msg.contains(&p.display().to_string()))
                    || msg.contains(&path.display().to_string());
                (!named).then(|| format!("the error names no file: {msg}"))
            }
        };
        if let Some(what) = problem {
            failures.record(case, &how, what, &train);
        }
    }
    failures.assert_none(count, started);
}

// ---------------------------------------------------------------------------------------
// The other datasets' loaders (glow::data::{mnist, cifar100, svhn, imagenet, folder}).

/// One valid file of a dataset: its name, its bytes, and the ranges a mutation aims at
/// half the time (headers, labels).
struct ValidFile {
    name: String,
    bytes: Vec<u8>,
    hot: Vec<Range<usize>>,
}

/// Fuzzes the loader `load` of a dataset made of the files `valid` in one directory: each
/// case mutates one or two of them (the rest stay valid), writes them all, and loads.
/// A load must not panic; an error must name a file or the directory; a dataset that
/// loads must hold whole images of one shape, with labels below `classes`.
fn fuzz_dataset<D: ImageSplits>(
    loader: &'static str,
    valid: &[ValidFile],
    classes: usize,
    load: impl Fn(&Path) -> glow::engine::Result<D>,
) {
    let seed = seed();
    let scratch = scratch(loader);
    let mut failures = Failures::new(seed, loader);
    let started = Instant::now();
    let cases = cases();
    let count = cases.len();
    for case in cases {
        let mut rng = case_rng(seed, case);
        let mut how = Vec::new();
        let mut files: Vec<Vec<u8>> = valid.iter().map(|f| f.bytes.clone()).collect();
        for _ in 0..rng.random_range(1..=2) {
            let i = rng.random_range(0..valid.len());
            let m = BYTE_MUTATIONS[rng.random_range(0..BYTE_MUTATIONS.len())];
            how.push(m);
            mutate_bytes(m, &mut files[i], &mut rng, &valid[i].hot);
        }
        for (f, bytes) in valid.iter().zip(&files) {
            overwrite(&scratch.path(&f.name), bytes);
        }
        let outcome = no_panic(|| load(&scratch));
        failures.count(&how, matches!(outcome, Ok(Ok(_))));
        let problem = match outcome {
            Err(panic) => Some(format!("panicked: {panic}")),
            Ok(Ok(data)) => [data.train(), data.test()].iter().find_map(|d| {
                let whole = d.images.len() == d.len() * d.image_bytes();
                let labels = d.labels.iter().all(|&l| usize::from(l) < classes);
                (!whole || !labels).then(|| format!("loaded {d:?}"))
            }),
            Ok(Err(e)) => {
                let msg = e.to_string();
                let named = valid
                    .iter()
                    .any(|f| msg.contains(&scratch.path(&f.name).display().to_string()))
                    || msg.contains(&scratch.display().to_string());
                (!named).then(|| format!("the error names no file: {msg}"))
            }
        };
        if let Some(what) = problem {
            failures.record(case, &how, what, &files.concat());
        }
    }
    failures.assert_none(count, started);
}

/// The one hot range of a file.
fn one(range: Range<usize>) -> Vec<Range<usize>> {
    vec![range]
}

#[test]
fn the_mnist_loader_never_panics() {
    // Two of the four files compressed, as distributed; two as unpacked.
    let mut valid = Vec::new();
    for (prefix, n, tag, gz) in [("train", 3, 0, true), ("t10k", 2, 1, false)] {
        let (images, labels) = formats::mnist_files(n, tag);
        for (kind, bytes, hot) in [
            ("images-idx3", images, one(0..16)),
            ("labels-idx1", labels, one(0..8 + n)),
        ] {
            let name = format!("{prefix}-{kind}-ubyte");
            valid.push(match gz {
                true => ValidFile {
                    name: format!("{name}.gz"),
                    bytes: formats::gzip(&bytes),
                    hot: one(0..10),
                },
                false => ValidFile { name, bytes, hot },
            });
        }
    }
    fuzz_dataset("mnist", &valid, 10, |dir| Mnist::load(dir, true));
}

#[test]
fn the_cifar100_loader_never_panics() {
    let file = |name: &str, n: usize, tag: u8| ValidFile {
        name: name.into(),
        bytes: formats::cifar100_records(n, tag),
        hot: (0..n).map(|i| i * 3074..i * 3074 + 2).collect(),
    };
    let valid = [file("train.bin", 3, 0), file("test.bin", 2, 1)];
    fuzz_dataset("cifar100", &valid, 100, |dir| {
        Cifar100::load(dir, Labels::Fine)
    });
}

#[test]
fn the_svhn_loader_never_panics() {
    // One file compressed (as MATLAB saves by default), one not; the header and the
    // first element's tags are hot.
    let file = |name: &str, n: usize, tag: u8, compress: bool| ValidFile {
        name: name.into(),
        bytes: formats::svhn_file(n, tag, compress, false),
        hot: vec![0..128, 128..200],
    };
    let valid = [
        file(svhn::TRAIN_FILE, 2, 0, true),
        file(svhn::TEST_FILE, 1, 1, false),
    ];
    fuzz_dataset("svhn", &valid, 10, |dir| Svhn::load(dir));
}

#[test]
fn the_imagenet_loader_never_panics() {
    // A stored archive (np.savez) and a deflated one (np.savez_compressed): the .npy
    // headers of the stored one, and the zip's central directory, are hot.
    let stored = formats::imagenet_batch(2, 32, 0, false);
    let npy_headers: Vec<Range<usize>> = stored
        .windows(6)
        .enumerate()
        .filter(|(_, w)| *w == b"\x93NUMPY")
        .map(|(at, _)| at..at + 128)
        .chain(one(stored.len() - 160..stored.len()))
        .collect();
    let valid = [
        ValidFile {
            name: imagenet::train_file(1),
            bytes: stored,
            hot: npy_headers,
        },
        ValidFile {
            name: imagenet::TEST_FILE.into(),
            bytes: formats::imagenet_batch(1, 32, 1, true),
            hot: Vec::new(),
        },
    ];
    fuzz_dataset("imagenet", &valid, 1000, |dir| ImageNet::load(dir, 32));
}

#[test]
fn the_image_folder_loader_never_panics() {
    // A PNG and a JPEG; their headers are hot. (The decoders are the image crate's; what
    // is checked is that a damaged picture comes back as an error naming it.)
    let pixel = |x: u32, y: u32| [(x * 30) as u8, (y * 30) as u8, 128];
    let valid = [
        ValidFile {
            name: "a.png".into(),
            bytes: formats::picture(8, 6, false, pixel),
            hot: one(0..64),
        },
        ValidFile {
            name: "b.jpg".into(),
            bytes: formats::picture(6, 8, true, pixel),
            hot: one(0..256),
        },
    ];
    let options = FolderOptions {
        size: 4,
        channels: 3,
        class_folders: false,
    };
    fuzz_dataset("folder", &valid, 1, |dir| ImageFolder::load(dir, options));
}

// ---------------------------------------------------------------------------------------
// The checkpoint loader.

/// A small model with every kind of state tensor (LU 1x1 convolutions, a split and its
/// zero-initialised convolution, class conditioning), after one Adam step so that the
/// optimiser's moments are saved too: 60 KB. (The learned top prior, a zero-initialised
/// convolution like the split's, would quadruple the file.)
fn small_checkpoint(path: &Path) {
    let config = GlowConfig {
        image_shape: [3, 4, 4],
        levels: 2,
        depth: 1,
        hidden: 4,
        learn_top: false,
        y_condition: true,
        num_classes: 3,
        ..GlowConfig::default()
    };
    let device = Device::Cpu;
    let model = Glow::new(config, &device).expect("a small model");
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: AdamKind::Adam,
        ..OptimizerConfig::default()
    });
    let x = Tensor::rand_uniform(&[2, 3, 4, 4], -0.5, 0.5, 1, &device).expect("a batch");
    let (loss, _) = model.loss(&x, Some(&[0, 2][..])).expect("a loss");
    let grads = loss.backward().expect("gradients");
    opt.step(&model.trainable_params(), &grads).expect("a step");
    let train = TrainState {
        seed: 3,
        step: 1,
        epoch: 0,
        position_in_epoch: 2,
        data_crc32: None,
    };
    save_checkpoint(path, &model, &opt, &train).expect("save the checkpoint");
}

/// The valid file's header member by member, each with its JSON text, and the tensor
/// data after it: a case re-serialises only the member it changes (serialising the whole
/// header each time, in this unoptimised test crate, took most of the test's time).
struct Header {
    members: Vec<(String, Value)>,
    texts: Vec<String>,
    data: Vec<u8>,
}

impl Header {
    /// Splits a valid checkpoint; also returns where the data starts.
    fn parse(bytes: &[u8]) -> (Header, usize) {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + n]).expect("the valid header parses");
        let members: Vec<(String, Value)> = header.into_iter().collect();
        let texts = members
            .iter()
            .map(|(k, v)| Header::member_text(k, v))
            .collect();
        let data = bytes[8 + n..].to_vec();
        (
            Header {
                members,
                texts,
                data,
            },
            8 + n,
        )
    }

    /// `"key":value`.
    fn member_text(key: &str, value: &Value) -> String {
        format!("{}:{value}", Value::String(key.into()))
    }

    /// The file with member `i` replaced by `value` (`None`: removed), the length prefix
    /// consistent.
    fn file_with(&self, i: usize, value: Option<&Value>) -> Vec<u8> {
        let changed = value.map(|v| Header::member_text(&self.members[i].0, v));
        let texts: Vec<&str> = (0..self.texts.len())
            .filter_map(|j| match j == i {
                true => changed.as_deref(),
                false => Some(self.texts[j].as_str()),
            })
            .collect();
        self.file_of(format!("{{{}}}", texts.join(",")).as_bytes())
    }

    /// A file of header text `text` and the valid data.
    fn file_of(&self, text: &[u8]) -> Vec<u8> {
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text);
        out.extend_from_slice(&self.data);
        out
    }

    /// The file with one value of the header changed (see [`mutate_json`]), a member
    /// removed, or the whole header replaced by an odd value.
    fn mutated(&self, rng: &mut StdRng) -> Vec<u8> {
        if rng.random_bool(0.05) {
            return self.file_of(odd_value(rng, &Value::Null).to_string().as_bytes());
        }
        let i = rng.random_range(0..self.members.len());
        if rng.random_bool(0.1) {
            return self.file_with(i, None);
        }
        let mut value = self.members[i].1.clone();
        mutate_json(&mut value, rng);
        self.file_with(i, Some(&value))
    }

    /// The file with one value of the `__metadata__` map changed (see
    /// [`mutate_metadata`]).
    fn metadata_mutated(&self, rng: &mut StdRng) -> Vec<u8> {
        let i = self
            .members
            .iter()
            .position(|(k, _)| k == "__metadata__")
            .expect("a checkpoint has metadata");
        let mut meta = self.members[i].1.clone();
        mutate_metadata(&mut meta, rng);
        self.file_with(i, Some(&meta))
    }
}

/// A JSON value a parser may choke on, most often of the kind of `like`: a number near
/// `like` or at an extreme, a string of another dtype or enum variant, a near-valid shape.
fn odd_value(rng: &mut StdRng, like: &Value) -> Value {
    use serde_json::json;
    if let Some(n) = like.as_u64().filter(|_| rng.random_bool(0.3)) {
        let d = rng.random_range(1..=4);
        let near = [
            n.wrapping_add(d),
            n.wrapping_sub(d),
            n.wrapping_mul(2),
            n / 2,
        ];
        return json!(near[rng.random_range(0..4)]);
    }
    let numbers = || {
        vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(2),
            json!(7),
            json!(33),
            json!(255),
            json!(1u64 << 31),
            json!(1u64 << 32),
            json!((1u64 << 32) + 1),
            json!((1u64 << 32) + 2),
            json!(1u64 << 53),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!(1e308),
            json!(1e-308),
        ]
    };
    let strings = || {
        [
            "",
            "x",
            "F32",
            "F16",
            "F64",
            "U8",
            "adam",
            "Affine",
            "InvconvLu",
            "-1",
            "1",
        ]
        .map(|s| json!(s))
        .to_vec()
    };
    let arrays = || {
        vec![
            json!([]),
            json!([0]),
            json!([0, 0]),
            json!([1, 2, 3]),
            json!([3, 4, 4]),
            json!([0, 1u64 << 62]),
            json!([u64::MAX, u64::MAX]),
            json!([1, 1, 1, 1, 1]),
            json!([0.5, 1]),
        ]
    };
    let values = match like {
        Value::Number(_) if rng.random_bool(0.75) => numbers(),
        Value::String(_) if rng.random_bool(0.75) => strings(),
        Value::Array(_) if rng.random_bool(0.75) => arrays(),
        _ => [
            numbers(),
            strings(),
            arrays(),
            vec![json!(null), json!(true), json!({})],
        ]
        .concat(),
    };
    values[rng.random_range(0..values.len())].clone()
}

/// Replaces a random node of `v` (or removes a random member of an object) in place.
fn mutate_json(v: &mut Value, rng: &mut StdRng) {
    // Walk down a random path, stopping at each container with probability 1/5.
    let mut node = v;
    loop {
        let children = match node {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if children == 0 || rng.random_bool(0.2) {
            break;
        }
        let i = rng.random_range(0..children);
        if let Value::Object(m) = node {
            if rng.random_bool(0.1) {
                let key = m.keys().nth(i).cloned().expect("a key");
                m.remove(&key);
                return;
            }
        }
        node = match node {
            Value::Object(m) => m.values_mut().nth(i).expect("a member"),
            Value::Array(a) => &mut a[i],
            _ => unreachable!("only containers have children"),
        };
    }
    *node = odd_value(rng, node);
}

/// Replaces a value of the safetensors `__metadata__` map: inside the JSON of the model
/// or optimiser configuration, or a whole decimal field.
fn mutate_metadata(meta: &mut Value, rng: &mut StdRng) {
    let Value::Object(meta) = meta else {
        return;
    };
    let keys: Vec<String> = meta.keys().cloned().collect();
    let key = &keys[rng.random_range(0..keys.len())];
    let Some(Value::String(text)) = meta.get_mut(key) else {
        return;
    };
    match serde_json::from_str::<Value>(text) {
        Ok(mut inner) if inner.is_object() => {
            mutate_json(&mut inner, rng);
            *text = inner.to_string();
        }
        _ => {
            const DECIMALS: [&str; 9] = [
                "",
                "-1",
                "0",
                "1",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                "1e3",
                " 1",
            ];
            *text = DECIMALS[rng.random_range(0..DECIMALS.len())].into();
        }
    }
}

/// Whether a loaded checkpoint's configuration is small enough to build here: restoring
/// builds the model the configuration describes. It refuses a configuration that needs
/// more values than the file holds (`tests/checkpoint.rs` tests that), but one within
/// that bound can still be slow to build, and the fuzzing restores thousands.
fn small_enough(c: &GlowConfig) -> bool {
    let [ch, h, w] = c.image_shape;
    c.levels <= 6
        && c.depth <= 8
        && c.hidden <= 64
        && ch <= 16
        && h <= 64
        && w <= 64
        && c.num_classes <= 64
}

#[test]
fn the_checkpoint_loader_never_panics() {
    let seed = seed();
    let scratch = scratch("checkpoint");
    let path = scratch.path("fuzzed.safetensors");
    small_checkpoint(&path);
    let valid = std::fs::read(&path).expect("read the checkpoint");
    let (header, data_start) = Header::parse(&valid);
    let hot = [0..8, 8..data_start];
    let all = [
        &BYTE_MUTATIONS[..],
        &[
            Mutation::HeaderLength,
            Mutation::HeaderJson,
            Mutation::Metadata,
        ][..],
    ]
    .concat();
    let mut failures = Failures::new(seed, "checkpoint");
    let (mut loaded, mut restored) = (0, 0);
    let started = Instant::now();
    let cases = cases();
    let count = cases.len();
    for case in cases {
        let mut rng = case_rng(seed, case);
        let mut how = Vec::new();
        let mut bytes = valid.clone();
        for _ in 0..rng.random_range(1..=2) {
            how.push(all[rng.random_range(0..all.len())]);
        }
        // A header rewrite starts from the valid file: do it first.
        how.sort_by_key(|m| !matches!(m, Mutation::HeaderJson | Mutation::Metadata));
        for &m in &how {
            match m {
                Mutation::HeaderLength if bytes.len() >= 8 => {
                    let n = (data_start - 8) as u64;
                    let length = match rng.random_range(0..5) {
                        0 => n.wrapping_add(rng.random_range(1..=16)),
                        1 => n.wrapping_sub(rng.random_range(1..=16)),
                        2 => [0, u64::MAX, 1 << 63, 100_000_001][rng.random_range(0..4)],
                        3 => bytes.len() as u64 - 8,
                        _ => rng.random(),
                    };
                    bytes[..8].copy_from_slice(&length.to_le_bytes());
                }
                Mutation::HeaderJson => bytes = header.mutated(&mut rng),
                Mutation::Metadata => bytes = header.metadata_mutated(&mut rng),
                m => mutate_bytes(m, &mut bytes, &mut rng, &hot),
            }
        }
        overwrite(&path, &bytes);
        let named = |msg: &str| -> Option<String> {
            (!msg.contains(&path.display().to_string()))
                .then(|| format!("the error names no file: {msg}"))
        };
        let outcome = no_panic(|| load_checkpoint(&path));
        failures.count(&how, matches!(outcome, Ok(Ok(_))));
        let problem = match outcome {
            Err(panic) => Some(format!("load_checkpoint panicked: {panic}")),
            Ok(Err(e)) => named(&e.to_string()),
            Ok(Ok(ckpt)) => {
                loaded += 1;
                restore_problem(&ckpt, &mut restored, &named)
            }
        };
        if let Some(what) = problem {
            failures.record(case, &how, what, &bytes);
        }
    }
    eprintln!("checkpoint: {loaded} inputs loaded, {restored} of them restored");
    failures.assert_none(count, started);
}

/// What is wrong with restoring a checkpoint that loaded: a panic, an error that names no
/// file, or a configuration that passed the loader's checks but cannot describe a model.
fn restore_problem(
    ckpt: &Checkpoint,
    restored: &mut usize,
    named: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let c = &ckpt.config;
    // The loader validated the configuration: every level must halve the image.
    let fits = u32::try_from(c.levels)
        .ok()
        .and_then(|l| 1usize.checked_shl(l))
        .is_some_and(|f| c.image_shape[1].is_multiple_of(f) && c.image_shape[1] >= f);
    if !fits {
        return Some(format!(
            "a configuration with {} levels loaded: {c:?}",
            c.levels
        ));
    }
    if !small_enough(c) {
        return None;
    }
    match no_panic(|| ckpt.restore(&Device::Cpu)) {
        Err(panic) => Some(format!("restore panicked: {panic}")),
        Ok(Err(e)) => named(&e.to_string()),
        Ok(Ok(_)) => {
            *restored += 1;
            None
        }
    }
}

/// The fuzzer's find: 2^32 + 1 levels passed [`GlowConfig::validate`] (the shift amount
/// was cast to 32 bits, wrapping to 1), so such a checkpoint loaded, and restoring it
/// tried to allocate 824 GB for the levels and aborted the process.
#[test]
fn a_checkpoint_with_levels_past_32_bits_is_refused() {
    let scratch = scratch("levels");
    let path = scratch.path("levels.safetensors");
    small_checkpoint(&path);
    let (header, _) = Header::parse(&std::fs::read(&path).expect("read the checkpoint"));
    let i = header
        .members
        .iter()
        .position(|(k, _)| k == "__metadata__")
        .expect("metadata");
    let mut meta = header.members[i].1.clone();
    let key = glow::checkpoint::keys::GLOW_CONFIG;
    let mut config: Value =
        serde_json::from_str(meta[key].as_str().expect("a string")).expect("JSON");
    config["levels"] = serde_json::json!((1u64 << 32) + 1);
    meta[key] = Value::String(config.to_string());
    overwrite(&path, &header.file_with(i, Some(&meta)));
    let msg = load_checkpoint(&path)
        .expect_err("2^32 + 1 levels cannot halve a 4x4 image")
        .to_string();
    assert!(
        msg.contains("levels.safetensors") && msg.contains("2^levels"),
        "{msg}"
    );
}
