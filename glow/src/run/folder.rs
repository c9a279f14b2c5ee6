//! A run's output folder, owned by one run at a time.
//!
//! A run folder holds one training run: the files of [`RUN_FILES`] (checkpoint, best
//! model, metrics log, loss curve, sample grids). [`RunFolder::claim`] is how a run takes
//! it, and it keeps two promises:
//!
//! - **One run per folder at a time.** The claim holds an exclusive lock on
//!   [`LOCK_FILE`] in the folder for as long as the [`RunFolder`] lives. The operating
//!   system releases the lock when the process ends, however it ends, so a killed run
//!   leaves nothing stale behind: the next claim simply takes it. A second claim while
//!   the lock is held fails at once with [`FolderError::InUse`], naming the process that
//!   holds it (the holder writes its process id and start time into the lock file).
//!   Readers of the folder (evaluation, sampling) take no lock: checkpoints and pictures
//!   are replaced by an atomic rename, so a reader sees a whole file, old or new; the
//!   metrics log grows one line per write (a reader may see its last line still being
//!   written, and should drop a line that does not parse), and a resume cuts it back
//!   to its checkpoint, again by an atomic rename.
//!   The lock is advisory on Unix; on Windows it is mandatory, so there a second run
//!   cannot read the holder's line and names no process.
//! - **A fresh run never replaces a run.** [`Claim::Fresh`] in a folder that holds any
//!   of [`RUN_FILES`] fails with [`FolderError::HoldsRun`], naming the step the folder
//!   is at. [`Claim::Overwrite`] moves those files aside first, into a sibling folder
//!   named after the folder and the time (`runs/cifar10.2026-12-03_09-40-01`), and
//!   deletes nothing. [`Claim::Resume`] takes the folder as it is.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use engine::Error;

use crate::atomic::io_error;

use super::{BEST_FILE, CHECKPOINT_FILE, LOSS_CURVE_FILE, METRICS_FILE, SAMPLES_DIR};

/// The lock file in a run folder (see the module documentation).
pub const LOCK_FILE: &str = ".run.lock";

/// What a run writes into its folder; a folder holding any of them holds a run.
pub const RUN_FILES: [&str; 5] = [
    CHECKPOINT_FILE,
    BEST_FILE,
    METRICS_FILE,
    LOSS_CURVE_FILE,
    SAMPLES_DIR,
];

/// How a run takes its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Start a run: the folder must not hold one.
    Fresh,
    /// Start a run, moving a run the folder holds aside first.
    Overwrite,
    /// Continue the run the folder holds.
    Resume,
}

/// Why a folder could not be claimed.
#[derive(Debug, Clone, PartialEq)]
pub enum FolderError {
    /// Another run holds the folder's lock.
    InUse {
        /// The folder.
        folder: PathBuf,
        /// Who holds it, as the holder wrote it (`process 1234, since …`), or a note
        /// that it could not be read.
        holder: String,
    },
    /// A fresh run was asked for in a folder that holds a run.
    HoldsRun {
        /// The folder.
        folder: PathBuf,
        /// Where that run is: `step 168`, or why no step is known.
        at: String,
        /// Whether it has a checkpoint to resume from.
        resumable: bool,
    },
    /// Creating, locking, reading or moving failed.
    Io(Error),
}

impl std::fmt::Display for FolderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FolderError::InUse { folder, holder } => write!(
                f,
                "{} is in use by another run ({holder}); wait for it to end or use another folder",
                folder.display()
            ),
            FolderError::HoldsRun {
                folder,
                at,
                resumable,
            } => write!(
                f,
                "{} holds a run ({at}): {}use another folder, or overwrite it (which \
                 moves the old run aside)",
                folder.display(),
                if *resumable { "resume it, " } else { "" }
            ),
            FolderError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<FolderError> for Error {
    fn from(e: FolderError) -> Error {
        match e {
            FolderError::Io(e) => e,
            e => Error::invalid(OP, e.to_string()),
        }
    }
}

/// The `op` of an [`Error::Invalid`] made from a refused claim ([`FolderError::InUse`]
/// or [`FolderError::HoldsRun`]).
pub const OP: &str = "run folder";

/// A run folder claimed by this process; the lock is released when it is dropped.
#[derive(Debug)]
pub struct RunFolder {
    path: PathBuf,
    /// Holds the lock.
    _lock: File,
    moved_aside: Option<PathBuf>,
}

impl RunFolder {
    /// Creates `folder` if need be, locks it, and checks it against `claim` (see the
    /// module documentation).
    pub fn claim(folder: impl AsRef<Path>, claim: Claim) -> Result<RunFolder, FolderError> {
        let path = folder.as_ref().to_path_buf();
        let io = |what: &str, e: std::io::Error| FolderError::Io(io_error(&path, what, e));
        std::fs::create_dir_all(&path).map_err(|e| io("cannot create the folder", e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io("cannot open the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(FolderError::InUse {
                    holder: read_holder(&mut lock),
                    folder: path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("cannot lock the folder", e)),
        }
        // Ours now: say who holds it, for a second run to name.
        let me = format!(
            "process {}, since {} UTC",
            std::process::id(),
            utc_timestamp(SystemTime::now(), " ", ":")
        );
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(me.as_bytes()))
            .and_then(|()| lock.flush())
            .map_err(|e| io("cannot write the lock file", e))?;
        let mut claimed = RunFolder {
            path,
            _lock: lock,
            moved_aside: None,
        };
        match claim {
            Claim::Resume => {}
            Claim::Fresh => {
                if claimed.holds_run() {
                    return Err(FolderError::HoldsRun {
                        at: run_position(&claimed.path),
                        resumable: claimed.path.join(CHECKPOINT_FILE).is_file(),
                        folder: claimed.path.clone(),
                    });
                }
            }
            Claim::Overwrite => {
                if claimed.holds_run() {
                    claimed.moved_aside = Some(claimed.move_run_aside()?);
                }
            }
        }
        Ok(claimed)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where [`Claim::Overwrite`] moved the earlier run, if there was one.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref()
    }

    /// Whether the folder holds any of [`RUN_FILES`].
    fn holds_run(&self) -> bool {
        RUN_FILES.iter().any(|f| self.path.join(f).exists())
    }

    /// The run's TensorBoard event files in the folder (`crate::tensorboard`), which a
    /// run moved aside takes with it.
    fn event_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(crate::tensorboard::FILE_PREFIX))
            .collect()
    }

    /// Moves every one of [`RUN_FILES`] present, and the TensorBoard event files, into a
    /// new sibling folder named after this one and the time, and returns it.
    fn move_run_aside(&self) -> Result<PathBuf, FolderError> {
        let io = |p: &Path, what: &str, e: std::io::Error| FolderError::Io(io_error(p, what, e));
        // A folder given as `.` or `runs/x/..` has no name of its own: use its real one.
        let real = self
            .path
            .canonicalize()
            .map_err(|e| io(&self.path, "cannot resolve the folder", e))?;
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(FolderError::Io(Error::io(
                &self.path,
                "cannot move a run aside from the root folder",
            )));
        };
        let stamp = utc_timestamp(SystemTime::now(), "_", "-");
        let base = format!("{}.{stamp}", name.to_string_lossy());
        let mut aside = parent.join(&base);
        let mut n = 2;
        // Two overwrites within one second: a suffix. create_dir (not _all) fails on an
        // existing folder, so no earlier run is ever mixed into this one.
        loop {
            match std::fs::create_dir(&aside) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    aside = parent.join(format!("{base}-{n}"));
                    n += 1;
                }
                Err(e) => return Err(io(&aside, "cannot create the folder", e)),
            }
        }
        let events = self.event_files();
        for f in RUN_FILES
            .iter()
            .copied()
            .chain(events.iter().map(String::as_str))
        {
            let from = self.path.join(f);
            if from.exists() {
                std::fs::rename(&from, aside.join(f)).map_err(|e| {
                    io(
                        &from,
                        &format!("cannot move it into {}", aside.display()),
                        e,
                    )
                })?;
            }
        }
        Ok(aside)
    }
}

/// Removes the temporary files of writes into the folder of `config` that a crash
/// interrupted (harmless, but they would pile up over many crashes).
pub(super) fn remove_stale_temporaries(config: &super::RunConfig) -> engine::Result<()> {
    let written = [
        config.checkpoint_path(),
        config.best_path(),
        config.metrics_path(),
        config.out.join(LOSS_CURVE_FILE),
    ];
    for file in written {
        crate::atomic::remove_stale_temporaries(&file)?;
    }
    Ok(())
}

/// The holder's line of a lock file: `process {pid}, since …`. A holder writes it right
/// after taking the lock, so a lock taken a moment ago may still be empty or hold the
/// line of a holder that has since died (its line is not cleared when it is killed):
/// wait up to a second for the line of a live process.
fn read_holder(lock: &mut File) -> String {
    for _ in 0..200 {
        let mut text = String::new();
        if lock.rewind().is_ok() && lock.read_to_string(&mut text).is_ok() {
            let line = text.trim();
            if !line.is_empty() && holder_alive(line) != Some(false) {
                return line.to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    "a process that has not written its id yet".into()
}

/// Whether the process a holder's line names is alive, where the system says (`/proc`);
/// `None` where it cannot be told.
fn holder_alive(line: &str) -> Option<bool> {
    let pid: u32 = line
        .strip_prefix("process ")?
        .split(',')
        .next()?
        .parse()
        .ok()?;
    let proc = Path::new("/proc");
    proc.is_dir().then(|| proc.join(pid.to_string()).exists())
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        // A run that ends cleanly leaves no line naming it; the lock itself goes with
        // the file handle.
        let _ = self._lock.set_len(0);
    }
}

/// Where the run in `folder` stands, for [`FolderError::HoldsRun`]: the step of its
/// checkpoint, else the last step of its metrics log, else that neither says.
pub fn run_position(folder: &Path) -> String {
    let checkpoint = folder.join(CHECKPOINT_FILE);
    if checkpoint.exists() {
        return match crate::checkpoint::read_header(&checkpoint) {
            Ok(h) => format!("step {}", h.train.step),
            Err(_) => format!("an unreadable {CHECKPOINT_FILE}"),
        };
    }
    let last_step = std::fs::read_to_string(folder.join(METRICS_FILE))
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["step"].as_u64())
        });
    match last_step {
        Some(s) => format!("metrics up to step {s}, no checkpoint"),
        None => "no checkpoint".into(),
    }
}

/// `time` in UTC as `YYYY-MM-DD{sep}HH{colon}MM{colon}SS`.
pub fn utc_timestamp(time: SystemTime, sep: &str, colon: &str) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}{colon}{:02}{colon}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of the day `z` days after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, which counts in 400-year eras of 146,097 days from 0000-03-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_known_days() {
        // Days since 1970-01-01, worked out by hand from the calendar.
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(31 + 28), (1970, 3, 1));
        // 2000 is a leap year: 10,957 days from 1970 (30 years, 7 leap days) to
        // 2000-01-01, then 31 + 28 to 2000-02-29.
        assert_eq!(civil_from_days(10_957 + 59), (2000, 2, 29));
        assert_eq!(civil_from_days(10_957 + 60), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamps_are_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(10_957 * 86_400 + 3_723);
        assert_eq!(utc_timestamp(t, " ", ":"), "2000-01-01 01:02:03");
        assert_eq!(utc_timestamp(t, "_", "-"), "2000-01-01_01-02-03");
    }
}
