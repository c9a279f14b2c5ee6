//! Anyone's pictures: a folder of PNG and JPEG files (CelebA-HQ, LSUN, your own), each
//! centre-cropped to a square and resized to `size`×`size` with a Lanczos filter (the
//! `image` crate decodes and resizes), in RGB or greyscale.
//!
//! **Which files.** Every `.png`, `.jpg` and `.jpeg` file under the folder, at any depth,
//! in the order of their paths (hidden files and folders, named `.…`, are skipped; links
//! are followed, each folder walked once).
//!
//! **Classes.** With [`FolderOptions::class_folders`], each subfolder of the folder is
//! a class (labels in the order of the subfolders' names) and every picture must lie in
//! one; without it, every picture has label 0 of one class.
//!
//! **The test split.** A folder with `train/` and `test/` subfolders gives those two
//! splits (class subfolders inside each). Otherwise every tenth picture in path order
//! (the 10th, 20th, …) is held out, which takes a tenth of each class too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use engine::{Error, Result};
use image::imageops::FilterType;
use rayon::prelude::*;

use super::{Dataset, ImageSplits};

/// The op name in this module's errors.
const OP: &str = "image folder";

fn data_error(msg: String) -> Error {
    Error::invalid(OP, msg)
}

/// How [`ImageFolder::load`] turns pictures into images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// The side of the square images.
    pub size: usize,
    /// 3 (RGB) or 1 (greyscale).
    pub channels: usize,
    /// Whether each subfolder is a class.
    pub class_folders: bool,
}

/// A folder of pictures loaded into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// The class names (subfolder names), or one empty name without classes.
    pub classes: Vec<String>,
    /// The folder.
    pub dir: PathBuf,
    /// How the pictures were turned into images.
    pub options: FolderOptions,
}

impl ImageFolder {
    /// Reads every picture under `dir` as the module doc says.
    pub fn load(dir: impl AsRef<Path>, options: FolderOptions) -> Result<ImageFolder> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(data_error(format!(
                "{}: not a directory of PNG or JPEG pictures",
                dir.display()
            )));
        }
        if options.size == 0 || !matches!(options.channels, 1 | 3) {
            return Err(data_error(format!(
                "{}: pictures of side {} with {} channels: the side must be positive and \
                 the channels 1 or 3",
                dir.display(),
                options.size,
                options.channels
            )));
        }
        let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
        let split_folders = train_dir.is_dir() && test_dir.is_dir();
        let root = if split_folders { &train_dir } else { dir };
        let classes = match options.class_folders {
            true => class_names(root)?,
            false => vec![String::new()],
        };
        let (train_files, test_files) = if split_folders {
            (
                labelled(&train_dir, &classes, options)?,
                labelled(&test_dir, &classes, options)?,
            )
        } else {
            let all = labelled(dir, &classes, options)?;
            let (test, train): (Vec<_>, Vec<_>) =
                all.into_iter().enumerate().partition(|(i, _)| i % 10 == 9);
            (
                train.into_iter().map(|(_, f)| f).collect(),
                test.into_iter().map(|(_, f)| f).collect(),
            )
        };
        if train_files.is_empty() {
            return Err(data_error(format!(
                "{}: no .png, .jpg or .jpeg file for training",
                root.display()
            )));
        }
        Ok(ImageFolder {
            train: read_all(&train_files, options)?,
            test: read_all(&test_files, options)?,
            classes,
            dir: dir.to_path_buf(),
            options,
        })
    }
}

impl ImageSplits for ImageFolder {
    fn train(&self) -> &Dataset {
        &self.train
    }

    fn test(&self) -> &Dataset {
        &self.test
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn describe(&self) -> String {
        let s = self.options.size;
        format!(
            "image folder {}: {} train and {} test pictures as {s}x{s} {}, {}",
            self.dir.display(),
            self.train.len(),
            self.test.len(),
            if self.options.channels == 1 {
                "greyscale"
            } else {
                "RGB"
            },
            match self.options.class_folders {
                true => format!("{} classes (its subfolders)", self.classes.len()),
                false => "no classes".into(),
            }
        )
    }

    fn class_name(&self, label: usize) -> String {
        match self.classes.get(label) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => label.to_string(),
        }
    }
}

/// Whether a file or folder name is hidden (`.…`).
fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The entries of `dir`, sorted, hidden ones left out.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| data_error(format!("cannot read {}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| data_error(format!("cannot read {}: {e}", dir.display())))?;
    out.retain(|p| !hidden(p));
    out.sort();
    Ok(out)
}

/// The names of the class subfolders of `dir`.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(data_error(format!(
            "{}: no subfolder to take as a class (drop the class-folders option to train \
             without classes)",
            dir.display()
        )));
    }
    if names.len() > usize::from(u16::MAX) {
        return Err(data_error(format!(
            "{}: {} class subfolders, more than the {} labels can count",
            dir.display(),
            names.len(),
            u16::MAX
        )));
    }
    Ok(names)
}

/// Whether `path` names a PNG or JPEG file, by its extension.
fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Every picture under `dir` at any depth, in path order. Links are followed (a dataset
/// folder is often a link), each directory walked once: `seen` holds the canonical
/// paths walked, so a link back up the tree ends the walk there instead of looping.
fn pictures(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
        let canonical = dir
            .canonicalize()
            .map_err(|e| data_error(format!("cannot read {}: {e}", dir.display())))?;
        if !seen.insert(canonical) {
            return Ok(());
        }
        for p in entries(dir)? {
            if p.is_dir() {
                walk(&p, out, seen)?;
            } else if is_picture(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    walk(dir, out, &mut HashSet::new())
}

/// The pictures under `dir` with their labels: each class subfolder's (in `classes`),
/// or all of them with label 0.
fn labelled(dir: &Path, classes: &[String], options: FolderOptions) -> Result<Vec<(PathBuf, u16)>> {
    if !options.class_folders {
        let mut files = Vec::new();
        pictures(dir, &mut files)?;
        return Ok(files.into_iter().map(|f| (f, 0)).collect());
    }
    let mut out = Vec::new();
    for p in entries(dir)? {
        if p.is_file() && is_picture(&p) {
            return Err(data_error(format!(
                "{}: a picture outside the class subfolders of {}",
                p.display(),
                dir.display()
            )));
        }
        if !p.is_dir() {
            continue;
        }
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(label) = classes.iter().position(|c| Some(c) == name.as_ref()) else {
            return Err(data_error(format!(
                "{}: a class folder the training split does not have",
                p.display()
            )));
        };
        let mut files = Vec::new();
        pictures(&p, &mut files)?;
        out.extend(files.into_iter().map(|f| (f, label as u16)));
    }
    Ok(out)
}

/// The images of `files`, decoded in parallel, in order.
fn read_all(files: &[(PathBuf, u16)], options: FolderOptions) -> Result<Dataset> {
    let images = files
        .par_iter()
        .map(|(path, _)| read_picture(path, options))
        .collect::<Result<Vec<Vec<u8>>>>()?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    Dataset::new(
        [options.channels, options.size, options.size],
        images.concat(),
        labels,
    )
}

/// One picture as `[C, size, size]` bytes: its central square, resized.
fn read_picture(path: &Path, options: FolderOptions) -> Result<Vec<u8>> {
    let fail = |what: String| data_error(format!("{}: {what}", path.display()));
    let picture = image::ImageReader::open(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .decode()
        .map_err(|e| fail(format!("not a picture this program can decode: {e}")))?;
    let (w, h) = (picture.width(), picture.height());
    let side = w.min(h);
    if side == 0 {
        return Err(fail("an empty picture".into()));
    }
    let size = u32::try_from(options.size).map_err(|_| fail("too large a size".into()))?;
    let square = picture
        .crop_imm((w - side) / 2, (h - side) / 2, side, side)
        .resize_exact(size, size, FilterType::Lanczos3);
    let planes = |pixels: &[u8], c: usize| -> Vec<u8> {
        // Interleaved (H, W, C) to planar (C, H, W).
        (0..c)
            .flat_map(|ch| pixels.iter().skip(ch).step_by(c).copied())
            .collect()
    };
    Ok(match options.channels {
        1 => square.to_luma8().into_raw(),
        _ => planes(&square.to_rgb8().into_raw(), 3),
    })
}
