//! Downloads the datasets whose official files are public: CIFAR-10 and CIFAR-100 (their
//! binary archives, unpacked), MNIST and SVHN (their files as they are), each checked
//! against its size and MD5.
//!
//! CIFAR-10 in detail (CIFAR-100's archive goes the same way, [`download_cifar100`]):
//!
//! [`download_cifar10`] fetches `cifar-10-binary.tar.gz` ([`CIFAR10_URL`]) into a temporary
//! file in the target directory, printing progress on stderr, checks its size and MD5
//! against [`ArchiveSpec::OFFICIAL`], then writes exactly the six files the loader reads
//! ([`data::TRAIN_FILES`](crate::data::TRAIN_FILES) and `test_batch.bin`) to
//! `DIR/cifar-10-batches-bin/`. Pass that folder (or `DIR`) to
//! [`Cifar10::load`](crate::data::Cifar10::load).
//!
//! Safety of what lands on disk:
//! - Only those six names are written; every other entry of the archive is skipped, and
//!   so is any entry whose path is absolute, holds `..`, or is a link.
//! - Each file is written under a `.part` name and renamed into place once complete, so an
//!   interrupted run never leaves a half-written batch. A failed run removes its `.part`
//!   files; one left by a killed process is overwritten by the next run.
//! - When all six files are already present with the expected size, nothing is fetched.
//!
//! Run it with e.g. `glow::download::download_cifar10("data", glow::download::CIFAR10_URL)`.
//!
//! MNIST and SVHN ([`download_files`] of [`MNIST_FILES`] or [`SVHN_FILES`]) are files the
//! loaders read as they are: each is fetched under a `.part` name, checked, and renamed
//! into place; one already there with the expected size is not fetched again.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use engine::{Error, Result};
use md5::{Digest, Md5};

use crate::data::{BATCHES_DIR, RECORD_BYTES, TEST_FILE, TRAIN_FILES};

/// Where the official archive lives.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

/// What a downloaded archive must be, and what each of its six batch files must weigh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSpec<'a> {
    /// The archive's size in bytes.
    pub archive_bytes: u64,
    /// The archive's MD5 as 32 lowercase hex digits.
    pub md5_hex: &'a str,
    /// The size of each of the six batch files inside.
    pub file_bytes: u64,
}

impl ArchiveSpec<'static> {
    /// The official `cifar-10-binary.tar.gz`: 170,052,171 bytes; six batches of 10,000
    /// records.
    pub const OFFICIAL: ArchiveSpec<'static> = ArchiveSpec {
        archive_bytes: 170_052_171,
        md5_hex: "c32a1d4ab5d03f1284b67883e8d87530",
        file_bytes: 10_000 * RECORD_BYTES as u64,
    };
}

/// One file of a dataset's official distribution: where it is, and what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile<'a> {
    /// Its address.
    pub url: &'a str,
    /// The name it is saved under.
    pub name: &'a str,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its MD5 as 32 lowercase hex digits.
    pub md5_hex: &'a str,
}

/// MNIST's four files, from the mirror torchvision downloads them from (the original
/// page, yann.lecun.com/exdb/mnist/, refuses many clients); sizes and MD5s of the
/// original files.
pub const MNIST_FILES: [RemoteFile<'static>; 4] = [
    RemoteFile {
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        name: "train-images-idx3-ubyte.gz",
        bytes: 9_912_422,
        md5_hex: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    },
    RemoteFile {
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
        name: "train-labels-idx1-ubyte.gz",
        bytes: 28_881,
        md5_hex: "d53e105ee54ea40749a09fcbcd1e9432",
    },
    RemoteFile {
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        name: "t10k-images-idx3-ubyte.gz",
        bytes: 1_648_877,
        md5_hex: "9fb629c4189551a2d022fa330f9573f3",
    },
    RemoteFile {
        url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        name: "t10k-labels-idx1-ubyte.gz",
        bytes: 4_542,
        md5_hex: "ec29112dd5afa0611ce80d1b7f02629c",
    },
];

/// SVHN's cropped digits, training and test files (the `extra` split is left out).
pub const SVHN_FILES: [RemoteFile<'static>; 2] = [
    RemoteFile {
        url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        name: "train_32x32.mat",
        bytes: 182_040_794,
        md5_hex: "e26dedcc434d2e4c54c9b2d4a06d8373",
    },
    RemoteFile {
        url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        name: "test_32x32.mat",
        bytes: 64_275_384,
        md5_hex: "eb5a983be6a315427106f1b164d9cef3",
    },
];

/// CIFAR-100's binary archive; [`download_cifar100`] unpacks `train.bin` and `test.bin`.
pub const CIFAR100_ARCHIVE: RemoteFile<'static> = RemoteFile {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    name: "cifar-100-binary.tar.gz",
    bytes: 168_513_733,
    md5_hex: "03b5dce01913d631647c71ecec9e9cb8",
};

/// The op name in this module's errors.
const OP: &str = "download";

fn download_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// The six files to extract, by bare name.
fn expected_names() -> impl Iterator<Item = &'static str> {
    TRAIN_FILES.iter().copied().chain([TEST_FILE])
}

/// Downloads the official CIFAR-10 archive from `url` (normally [`CIFAR10_URL`]) and
/// unpacks its six batch files into `dir/cifar-10-batches-bin/`, which it returns. Does
/// nothing but return that folder when the six files are already there.
pub fn download_cifar10(dir: impl AsRef<Path>, url: &str) -> Result<PathBuf> {
    download_cifar10_verified(dir, url, &ArchiveSpec::OFFICIAL)
}

/// A download `fetch` in a data-parallel run over `comm`: rank 0 runs it while the other
/// ranks wait, then tells them whether it succeeded (one all-reduce of one value); if it
/// did, each of them runs `fetch` too and finds the files in place (the folder must be
/// one every rank sees); if not, they fail at once rather than all download together.
pub fn on_ranks<T>(
    comm: &dyn crate::parallel::Collective,
    fetch: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if comm.size() == 1 {
        return fetch();
    }
    if comm.rank() == 0 {
        let fetched = fetch();
        let mut failed = [if fetched.is_err() { 1.0 } else { 0.0 }];
        comm.sum_in_place(&mut failed)?;
        return fetched;
    }
    let mut failed = [0.0];
    comm.sum_in_place(&mut failed)?;
    if failed[0] > 0.0 {
        return Err(download_error(format!(
            "rank {}: rank 0's download failed (its own error says why)",
            comm.rank()
        )));
    }
    fetch()
}

/// [`download_cifar10`] against the archive described by `spec` instead of the official one
/// (tests use a small archive of their own).
pub fn download_cifar10_verified(
    dir: impl AsRef<Path>,
    url: &str,
    spec: &ArchiveSpec<'_>,
) -> Result<PathBuf> {
    let archive = RemoteFile {
        url,
        name: "cifar-10-binary.tar.gz",
        bytes: spec.archive_bytes,
        md5_hex: spec.md5_hex,
    };
    let files: Vec<(&str, u64)> = expected_names().map(|n| (n, spec.file_bytes)).collect();
    download_archive(dir.as_ref(), "CIFAR-10", &archive, BATCHES_DIR, &files)
}

/// Downloads the `.tar.gz` `archive` into `dir` (as `NAME.part`, checked, removed when
/// done) and writes the `files` (name, size) found in its `folder/` into `dir/folder/`,
/// which it returns; `label` names the dataset in messages. When every file is there
/// with its size, nothing is fetched. The output folder is created only once the
/// archive has been verified, so a failed download leaves no folder behind.
fn download_archive(
    dir: &Path,
    label: &str,
    archive: &RemoteFile<'_>,
    folder: &str,
    files: &[(&str, u64)],
) -> Result<PathBuf> {
    let out = dir.join(folder);
    let archive_part = dir.join(format!("{}.part", archive.name));
    if files
        .iter()
        .all(|(name, bytes)| present(&out.join(name), *bytes))
    {
        // Best-effort removal of `.part` files a killed run may have left.
        let _ = std::fs::remove_file(&archive_part);
        for (name, _) in files {
            let _ = std::fs::remove_file(part_name(&out.join(name)));
        }
        eprintln!("{label} already in {}; skipping download", out.display());
        return Ok(out);
    }
    create_dir(dir)?;
    let part = PartFile::new(archive_part);
    fetch(archive.url, &part.path, archive.bytes, archive.md5_hex)?;
    create_dir(&out)?;
    extract(&part.path, archive.url, &out, folder, files)?;
    // `part` is dropped here, which removes the temporary archive.
    Ok(out)
}

/// Whether `path` is a file of `bytes` bytes.
fn present(path: &Path, bytes: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes)
}

/// Creates `dir` and its parents.
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| download_error(format!("cannot create {}: {e}", dir.display())))
}

fn part_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// A temporary file that is removed when dropped unless [`PartFile::keep`] renamed it.
struct PartFile {
    path: PathBuf,
    kept: bool,
}

impl PartFile {
    fn new(path: PathBuf) -> PartFile {
        PartFile { path, kept: false }
    }

    /// Renames the finished file to `dest` (atomic on one file system).
    fn keep(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|e| {
            download_error(format!(
                "cannot rename {} to {}: {e}",
                self.path.display(),
                dest.display()
            ))
        })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams `url` to `dest`, checking its size (`bytes`) and MD5 (`md5_hex`), with
/// progress on stderr.
fn fetch(url: &str, dest: &Path, bytes: u64, md5_hex: &str) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| download_error(format!("GET {url}: {e}")))?;
    let mut body = response.into_body().into_reader();

    let file = File::create(dest)
        .map_err(|e| download_error(format!("cannot create {}: {e}", dest.display())))?;
    let mut file = BufWriter::new(file);
    let write_error = |e: std::io::Error| download_error(format!("{}: {e}", dest.display()));
    eprintln!("downloading {url} to {}", dest.display());
    let streamed = stream_body(&mut body, &mut file, bytes);
    eprintln!(); // ends the progress line
    let (received, md5) = streamed.map_err(|e| match e {
        StreamError::Read(received, e) => {
            download_error(format!("GET {url}: after {received} bytes: {e}"))
        }
        StreamError::TooLong => {
            download_error(format!("GET {url}: more than the expected {bytes} bytes"))
        }
        StreamError::Write(e) => write_error(e),
    })?;
    file.into_inner()
        .map_err(|e| write_error(e.into_error()))?
        .sync_all()
        .map_err(write_error)?;

    if received != bytes {
        return Err(download_error(format!(
            "GET {url}: got {received} bytes, expected {bytes} (truncated download?)"
        )));
    }
    let digest: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if !digest.eq_ignore_ascii_case(md5_hex) {
        return Err(download_error(format!(
            "GET {url}: MD5 {digest}, expected {md5_hex} (corrupt download?)"
        )));
    }
    Ok(())
}

/// Why [`stream_body`] stopped early.
enum StreamError {
    /// Reading the body failed after this many bytes.
    Read(u64, std::io::Error),
    /// The body is longer than expected.
    TooLong,
    /// Writing the file failed.
    Write(std::io::Error),
}

/// Copies `body` into `file`, hashing it and printing `bytes / total` on stderr as it goes;
/// returns the byte count and the MD5 state.
fn stream_body(
    body: &mut impl Read,
    file: &mut impl Write,
    total: u64,
) -> std::result::Result<(u64, Md5), StreamError> {
    let mut md5 = Md5::new();
    let mut received: u64 = 0;
    let mut shown_percent = None;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| StreamError::Read(received, e))?;
        if n == 0 {
            return Ok((received, md5));
        }
        received += n as u64;
        if received > total {
            return Err(StreamError::TooLong);
        }
        md5.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(StreamError::Write)?;
        let percent = received * 100 / total.max(1);
        if shown_percent != Some(percent) {
            shown_percent = Some(percent);
            eprint!("\r  {received} / {total} bytes ({percent}%)");
        }
    }
}

/// The bare file name when `path` is `FOLDER/NAME` (optionally behind `./`) for one of
/// the expected `names` in `folder`; `None` for anything else, including any path that is
/// absolute or holds `..`.
fn expected_entry<'n>(path: &Path, folder: &str, names: &[&'n str]) -> Option<&'n str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    match parts.as_slice() {
        [dir, name] if *dir == folder => names.iter().copied().find(|n| *name == *n),
        _ => None,
    }
}

/// Writes the `files` (name, size) found in `folder/` of the `.tar.gz` at `archive`,
/// fetched from `url`, into `out`.
fn extract(
    archive: &Path,
    url: &str,
    out: &Path,
    folder: &str,
    files: &[(&str, u64)],
) -> Result<()> {
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let archive_error =
        |e: std::io::Error| download_error(format!("{url} (saved as {}): {e}", archive.display()));
    let file = File::open(archive).map_err(archive_error)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut written = Vec::new();
    for entry in tar.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let path = entry.path().map_err(archive_error)?.into_owned();
        let kind = entry.header().entry_type();
        let Some(name) = expected_entry(&path, folder, &names) else {
            let unsafe_path =
                path.is_absolute() || path.components().any(|c| c == Component::ParentDir);
            if unsafe_path || kind.is_symlink() || kind.is_hard_link() {
                eprintln!("skipping unsafe archive entry {}", path.display());
            }
            continue;
        };
        if !kind.is_file() {
            return Err(download_error(format!(
                "{url}: entry {} is a {kind:?}, not a regular file",
                path.display()
            )));
        }
        let dest = out.join(name);
        let part = PartFile::new(part_name(&dest));
        let mut writer = File::create(&part.path)
            .map_err(|e| download_error(format!("cannot create {}: {e}", part.path.display())))?;
        let part_error =
            |e: std::io::Error| download_error(format!("{}: {e}", part.path.display()));
        let copied = std::io::copy(&mut entry, &mut writer).map_err(archive_error)?;
        let file_bytes = files.iter().find(|(n, _)| *n == name).map_or(0, |f| f.1);
        if copied != file_bytes {
            return Err(download_error(format!(
                "{url}: {} has {copied} bytes, expected {file_bytes}",
                path.display()
            )));
        }
        writer.sync_all().map_err(part_error)?;
        drop(writer);
        part.keep(&dest)?;
        written.push(name);
    }
    let missing: Vec<&str> = names.into_iter().filter(|n| !written.contains(n)).collect();
    if !missing.is_empty() {
        return Err(download_error(format!(
            "{url}: no {folder}/{} in the archive",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Downloads each of `files` into `dir` (created if missing) under its name, checking
/// its size and MD5, and returns `dir`. A file already there with its size is kept.
pub fn download_files(dir: impl AsRef<Path>, files: &[RemoteFile<'_>]) -> Result<PathBuf> {
    let dir = dir.as_ref();
    create_dir(dir)?;
    for f in files {
        let dest = dir.join(f.name);
        if present(&dest, f.bytes) {
            eprintln!("{} already there; skipping download", dest.display());
            continue;
        }
        let part = PartFile::new(part_name(&dest));
        fetch(f.url, &part.path, f.bytes, f.md5_hex)?;
        part.keep(&dest)?;
    }
    Ok(dir.to_path_buf())
}

/// Downloads CIFAR-100's binary archive ([`CIFAR100_ARCHIVE`]) and unpacks `train.bin`
/// and `test.bin` into `dir/cifar-100-binary/`, which it returns; nothing is fetched
/// when both are there with their sizes.
pub fn download_cifar100(dir: impl AsRef<Path>) -> Result<PathBuf> {
    use crate::data::cifar100::RECORD_BYTES as R;
    download_cifar100_verified(dir, &CIFAR100_ARCHIVE, 50_000 * R as u64, 10_000 * R as u64)
}

/// [`download_cifar100`] of the archive `archive`, whose `train.bin` and `test.bin` have
/// `train_bytes` and `test_bytes` (tests use a small archive of their own).
pub fn download_cifar100_verified(
    dir: impl AsRef<Path>,
    archive: &RemoteFile<'_>,
    train_bytes: u64,
    test_bytes: u64,
) -> Result<PathBuf> {
    use crate::data::cifar100::{BATCHES_DIR, TEST_FILE, TRAIN_FILE};
    let files = [(TRAIN_FILE, train_bytes), (TEST_FILE, test_bytes)];
    download_archive(dir.as_ref(), "CIFAR-100", archive, BATCHES_DIR, &files)
}
