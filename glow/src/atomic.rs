//! Atomic file writes: a file is either its old contents or its complete new contents,
//! never something in between.
//!
//! [`write_atomic`] lets the caller write a temporary file in the target's directory,
//! flushes it to disk (`fsync`), renames it over the target (atomic on POSIX file systems
//! when both lie in one directory) and finally syncs the directory so the rename itself
//! survives a power cut. A crash or an error at any point leaves the target untouched;
//! on an error the temporary file is removed. Checkpoints and pictures are written this
//! way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use engine::{Error, Result};

/// Distinguishes temporary files of concurrent writes from one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary file a write to `path` goes through: `.{name}.tmp.{pid}.{n}` beside it.
/// The name is unique per write, so a stale one left by a crashed process is never
/// reused, and it starts with a dot so that globs for `*.safetensors` skip it.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, "the path names no file"))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.tmp.{}.{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// Writes `path` atomically: `write(tmp)` creates and fills the temporary file `tmp`
/// (beside `path`); then it is synced and renamed over `path`. Errors name `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = write(&tmp).and_then(|()| commit(&tmp, path));
    if result.is_err() {
        // Best effort: the temporary file may not exist if `write` failed early.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs `tmp`, renames it to `path` and syncs the directory.
fn commit(tmp: &Path, path: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::io(path, format!("{what}: {e}"));
    File::options()
        .write(true)
        .open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the temporary file", e))?;
    std::fs::rename(tmp, path).map_err(|e| io("renaming the temporary file over it", e))?;
    // Make the rename durable. Directories cannot be opened for syncing everywhere
    // (e.g. Windows), and the data itself is already safe, so this one is best effort.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the temporary files that interrupted writes to `path` left beside it
/// (`.{name}.tmp.*`), returning how many there were. For a file that nothing else is writing
/// at the same time: a write in progress would lose its temporary file and fail.
pub fn remove_stale_temporaries(path: &Path) -> Result<usize> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, "the path names no file"))?;
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(dir, "cannot list the folder", e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "cannot list the folder", e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let stale = entry.path();
            std::fs::remove_file(&stale).map_err(|e| io_error(&stale, "cannot remove", e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Wraps an I/O error on `path` as an [`Error::Io`] saying what was being done.
pub(crate) fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(path, format!("{what}: {e}"))
}
