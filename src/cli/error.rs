//! How a command-line program fails: [`CliError`], a wrong command line (exit status 2)
//! or a failure while working (exit status 1), each printed as one line.

use glow::run::folder::FolderError;

/// The exit status of a wrong command line: a flag's value outside its rule, or too
/// large for the data it names, or a path that does not exist or is of the wrong kind
/// (see [`super::validate`]). Clap's own usage errors (an unknown flag) exit with it too.
pub const EXIT_USAGE: i32 = 2;

/// The exit status of a failure while working: a file that cannot be read or is not
/// what it should be (a damaged checkpoint), a device error, an output that cannot be
/// written.
pub const EXIT_FAILURE: i32 = 1;

/// Why a program stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum CliError {
    /// The command line is wrong: found after parsing (a value too large for the data it
    /// names, two flags that do not fit together, a folder another run holds). The
    /// message is the whole line after `error: `, in [`super::validate`]'s words:
    /// `--batch must be at most …, got 5000`.
    Usage(String),
    /// A failure while working (a damaged file, a device error).
    Failed(engine::Error),
}

/// The result of a command-line program's work.
pub type CliResult<T> = std::result::Result<T, CliError>;

impl CliError {
    /// [`EXIT_USAGE`] or [`EXIT_FAILURE`].
    pub fn exit_status(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILURE,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(msg) => f.write_str(msg),
            CliError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<engine::Error> for CliError {
    fn from(e: engine::Error) -> CliError {
        CliError::Failed(e)
    }
}

/// A refused claim of a run folder as the one line a program prints, naming its flags
/// (`--resume`, `--out`, `--overwrite`): a usage error, since the command line chose the
/// folder and how to take it.
impl From<FolderError> for CliError {
    fn from(err: FolderError) -> CliError {
        match err {
            FolderError::InUse { folder, holder } => usage_error(format!(
                "{} is in use by another run ({holder}); wait for it to end, or use another --out",
                folder.display()
            )),
            FolderError::HoldsRun {
                folder,
                at,
                resumable,
            } => usage_error(format!(
                "{} holds a run ({at}): {}start elsewhere with another --out, or start again \
             with --overwrite (which moves the old run aside, deleting nothing)",
                folder.display(),
                if resumable {
                    "continue it with --resume, "
                } else {
                    ""
                }
            )),
            FolderError::Io(e) => CliError::Failed(e),
        }
    }
}

/// A [`CliError::Usage`] with the line `msg`.
pub fn usage_error(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Prints `error` as one line, `error: …`, on stderr, and returns its exit status.
pub fn report(error: &CliError) -> i32 {
    eprintln!("error: {error}");
    error.exit_status()
}

/// Ends an example's `run`: on an error, prints one line and exits with its status
/// ([`EXIT_USAGE`] for a wrong command line, [`EXIT_FAILURE`] for any other error).
pub fn exit_on_error(result: CliResult<()>) {
    if let Err(e) = result {
        std::process::exit(report(&e));
    }
}
