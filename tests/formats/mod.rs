//! Small files in each dataset's official format, written by the tests themselves (no
//! downloads): the inputs of `tests/datasets.rs` and `tests/fuzz_loaders.rs`.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// An IDX file of unsigned bytes: the magic (two zeros, type `0x08`, the rank), the
/// big-endian dimensions, the values.
pub fn idx(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Pixel `p` of digit `i` of a split tagged `tag`: every value 0-255 occurs.
pub fn digit_pixel(tag: u8, i: usize, p: usize) -> u8 {
    (p * 7 + i * 13 + usize::from(tag) * 31) as u8
}

/// The label of digit `i` of a split tagged `tag`.
pub fn digit_label(tag: u8, i: usize) -> u8 {
    ((i + usize::from(tag)) % 10) as u8
}

/// MNIST's images and labels files for `n` 28×28 digits tagged `tag`.
pub fn mnist_files(n: usize, tag: u8) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| (0..28 * 28).map(move |p| digit_pixel(tag, i, p)))
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| digit_label(tag, i)).collect();
    (idx(&[n as u32, 28, 28], &pixels), idx(&[n as u32], &labels))
}

/// Writes MNIST's four files into `dir`: `train` and `test` digits, gzip-compressed
/// (with the official `.gz` names) when `gz`.
pub fn write_mnist(dir: &Path, train: usize, test: usize, gz: bool) {
    for (prefix, n, tag) in [("train", train, 0), ("t10k", test, 1)] {
        let (images, labels) = mnist_files(n, tag);
        for (name, bytes) in [("images-idx3", images), ("labels-idx1", labels)] {
            let name = format!("{prefix}-{name}-ubyte");
            if gz {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// A CIFAR-100 record's coarse and fine labels for record `i` of a file tagged `tag`.
pub fn cifar100_labels(tag: u8, i: usize) -> (u8, u8) {
    let fine = ((i * 37 + usize::from(tag) * 11) % 100) as u8;
    (fine % 20, fine)
}

/// Pixel `p` of record `i` of a CIFAR-100 file tagged `tag`.
pub fn cifar100_pixel(tag: u8, i: usize, p: usize) -> u8 {
    (p * 3 + i * 29 + usize::from(tag) * 101) as u8
}

/// `n` CIFAR-100 records tagged `tag`.
pub fn cifar100_records(n: usize, tag: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let (coarse, fine) = cifar100_labels(tag, i);
        out.extend([coarse, fine]);
        out.extend((0..3072).map(|p| cifar100_pixel(tag, i, p)));
    }
    out
}
