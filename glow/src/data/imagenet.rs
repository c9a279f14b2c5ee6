//! Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017) at 32×32 or 64×64, in
//! its official `.npz` batches: `train_data_batch_1.npz` … `train_data_batch_10.npz`
//! (1,281,167 images) and `val_data.npz` (50,000, the test split). Each is a NumPy zip
//! archive whose `data.npy` is a `uint8` array `[N, 3·S·S]`, each row an image as
//! CIFAR-10 stores one (the red plane, then green, then blue, rows top to bottom), and
//! whose `labels.npy` holds the classes 1 to 1,000 (read here as 0 to 999).
//!
//! [`ImageNet::load`] takes the directory holding the files, or one whose immediate
//! subdirectories do (the official zips unpack into `Imagenet32_train_npz/` and
//! `Imagenet32_val_npz/`, say). Every training batch present is read, in batch order, so
//! a folder with a few of them trains on those. The whole split is held in memory: at
//! 32×32 the ten batches are 3.9 GB of pixels, at 64×64 15.7 GB.
//!
//! The archives are read by the `zip` crate, each member's `.npy` header by `npyz`; the
//! values are read as they lie after the header, after their size is checked against the
//! header's shape.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use engine::{Error, Result};

use super::{Dataset, ImageSplits};

/// The test split's file.
pub const TEST_FILE: &str = "val_data.npz";

/// The name of training batch `k` (1 to 10).
pub fn train_file(k: usize) -> String {
    format!("train_data_batch_{k}.npz")
}

/// The op name in this module's errors.
const OP: &str = "imagenet";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// Downsampled ImageNet loaded into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageNet {
    /// The training split.
    pub train: Dataset,
    /// The test split (the official validation images).
    pub test: Dataset,
    /// The files read, training batches first.
    pub files: Vec<PathBuf>,
}

impl ImageNet {
    /// Reads the training batches and `val_data.npz` of side `side` (32 or 64) from `dir`
    /// or its subdirectories.
    pub fn load(dir: impl AsRef<Path>, side: usize) -> Result<ImageNet> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(data_error(format!(
                "{}: not a directory; expected one holding train_data_batch_1.npz … and \
                 {TEST_FILE}, or their folders",
                dir.display()
            )));
        }
        let mut places = vec![dir.to_path_buf()];
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| data_error(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        // Subfolders named for this size first (Imagenet64_train_npz/ for 64), so that a
        // folder holding both sizes' folders gives the one asked for.
        let other_size = |p: &PathBuf| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            !name.is_some_and(|n| n.contains(&side.to_string()))
        };
        subdirs.sort_by_key(|p| (other_size(p), p.clone()));
        places.extend(subdirs);
        let find = |name: &str| places.iter().map(|d| d.join(name)).find(|p| p.is_file());
        let train_files: Vec<PathBuf> = (1..=10).filter_map(|k| find(&train_file(k))).collect();
        if train_files.is_empty() {
            return Err(data_error(format!(
                "{}: no training batch (train_data_batch_1.npz … train_data_batch_10.npz) \
                 in it or its subdirectories",
                dir.display()
            )));
        }
        let test_file = find(TEST_FILE).ok_or_else(|| {
            data_error(format!(
                "{}: no {TEST_FILE} (the test split) in it or its subdirectories",
                dir.display()
            ))
        })?;
        let shape = [3, side, side];
        let mut train = Dataset::empty(shape);
        for file in &train_files {
            let (images, labels) = read_batch(file, side)?;
            train.images.extend_from_slice(&images);
            train.labels.extend_from_slice(&labels);
        }
        let (images, labels) = read_batch(&test_file, side)?;
        let test = Dataset::new(shape, images, labels)?;
        let mut files = train_files;
        files.push(test_file);
        Ok(ImageNet { train, test, files })
    }
}

impl ImageSplits for ImageNet {
    fn train(&self) -> &Dataset {
        &self.train
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn num_classes(&self) -> usize {
        1000
    }

    fn describe(&self) -> String {
        let side = self.train.shape[1];
        format!(
            "ImageNet {side}x{side}: {} train and {} test images, from {} batch file(s) and {}",
            self.train.len(),
            self.test.len(),
            self.files.len() - 1,
            self.files
                .last()
                .map_or(String::new(), |f| f.display().to_string())
        )
    }
}

/// The images and labels (0-999) of one batch file.
fn read_batch(path: &Path, side: usize) -> Result<(Vec<u8>, Vec<u16>)> {
    let fail = |what: String| data_error(format!("{}: {what}", path.display()));
    let file = File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("not a .npz (zip) archive: {e}")))?;
    let (data_shape, data_type, pixels) = member(&mut archive, "data.npy").map_err(&fail)?;
    let row = 3 * side * side;
    let n = match data_shape[..] {
        [n, r] if r == row as u64 && data_type == "|u1" => n as usize,
        _ => {
            return Err(fail(format!(
                "data.npy is {data_type} {data_shape:?}, expected |u1 (uint8) [N, {row}]: \
                 {side}x{side} RGB images (is it the other size?)"
            )))
        }
    };
    let (label_shape, label_type, raw) = member(&mut archive, "labels.npy").map_err(&fail)?;
    if label_shape.iter().product::<u64>() != n as u64 || label_shape.len() > 2 {
        return Err(fail(format!(
            "labels.npy is {label_shape:?}, expected [{n}]: one label for each image"
        )));
    }
    let width = raw.len() / n.max(1);
    let signed = label_type.as_bytes().get(1) == Some(&b'i');
    let big = label_type.starts_with('>');
    let labels = raw
        .chunks_exact(width.max(1))
        .enumerate()
        .map(|(i, b)| {
            let mut v: i128 = 0;
            let bytes: Vec<u8> = if big {
                b.to_vec()
            } else {
                b.iter().rev().copied().collect()
            };
            for &x in &bytes {
                v = (v << 8) | i128::from(x);
            }
            if signed && bytes[0] & 0x80 != 0 {
                v -= 1i128 << (8 * bytes.len());
            }
            match v {
                1..=1000 => Ok((v - 1) as u16),
                _ => Err(fail(format!("label {i} is {v}, expected 1 to 1000"))),
            }
        })
        .collect::<Result<Vec<u16>>>()?;
    Ok((pixels, labels))
}

/// The shape, type string and raw values of the `.npy` member `name` of `archive`:
/// integers only (the type's letter `i` or `u`), in C order.
fn member(
    archive: &mut zip::ZipArchive<File>,
    name: &str,
) -> std::result::Result<(Vec<u64>, String, Vec<u8>), String> {
    let mut entry = archive
        .by_name(name)
        .map_err(|e| format!("no {name} in the archive ({e})"))?;
    // Nothing read from the member may exceed what the archive says it unpacks to: a
    // .npy header claiming a longer header or more values than that is refused, and a
    // deflated member cannot unpack to more.
    let size = entry.size();
    let header = npyz::NpyHeader::from_reader((&mut entry).take(size))
        .map_err(|e| format!("{name}: {e}"))?;
    let npyz::DType::Plain(ty) = header.dtype() else {
        return Err(format!("{name} is a structured array, expected integers"));
    };
    let type_str = ty.to_string();
    let integer = matches!(ty.type_char(), npyz::TypeChar::Int | npyz::TypeChar::Uint);
    let item = ty.num_bytes().filter(|&b| integer && (1..=8).contains(&b));
    let Some(item) = item else {
        return Err(format!("{name} holds {type_str}, expected integers"));
    };
    if header.order() == npyz::Order::Fortran {
        return Err(format!("{name} is in Fortran order, expected C order"));
    }
    let shape = header.shape().to_vec();
    let bytes = shape
        .iter()
        .try_fold(item as u64, |p, &d| p.checked_mul(d))
        .ok_or_else(|| format!("{name}: shape {shape:?} overflows"))?;
    // Read what is there, up to what the shape needs: a header that claims more than the
    // member holds costs no more memory than the member.
    if bytes > size {
        return Err(format!(
            "{name}: shape {shape:?} of {type_str} needs {bytes} bytes, more than the whole \
             member's {size}"
        ));
    }
    let mut values = Vec::with_capacity(bytes as usize);
    entry
        .take(bytes)
        .read_to_end(&mut values)
        .map_err(|e| format!("{name}: {e}"))?;
    if values.len() as u64 != bytes {
        return Err(format!(
            "{name}: shape {shape:?} of {type_str} needs {bytes} bytes, it holds {}",
            values.len()
        ));
    }
    Ok((shape, type_str, values))
}
