//! Stopping a run after its current step: [`Interrupt`], set by a signal handler (Ctrl-C,
//! SIGTERM), another thread or a test, and read by the loop once per step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use engine::{Error, Result};

/// A request to stop a run after its current step, shared between the loop and whoever
/// asks (a signal handler, another thread, a test). Clones share the request.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    /// Set once a stop is requested.
    requested: Arc<AtomicBool>,
    /// The signal number of the request (0: none given).
    signal: Arc<AtomicUsize>,
}

/// SIGINT (Ctrl-C) on POSIX systems.
pub const SIGINT: i32 = 2;
/// SIGTERM (a polite kill) on POSIX systems.
pub const SIGTERM: i32 = 15;

impl Interrupt {
    /// No stop requested yet.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// An interrupt requested by SIGINT (Ctrl-C) or SIGTERM: the first one asks the run
    /// to stop after its current step; a second one exits the process at once with
    /// status 128 + the signal's number (130, 143), as a shell reports a process killed
    /// by it. Installs process-wide signal handlers, so call it once, just before the run.
    pub fn on_signals() -> Result<Interrupt> {
        use signal_hook::consts::signal;
        use signal_hook::flag;
        let me = Interrupt::new();
        let fail = |e: std::io::Error| Error::invalid("signal handlers", e.to_string());
        for (sig, status) in [(signal::SIGINT, 130), (signal::SIGTERM, 143)] {
            // Registered first, so it sees the flag as it was before this signal: clear
            // on the first, set on the second.
            flag::register_conditional_shutdown(sig, status, Arc::clone(&me.requested))
                .map_err(fail)?;
            flag::register(sig, Arc::clone(&me.requested)).map_err(fail)?;
            flag::register_usize(sig, Arc::clone(&me.signal), sig as usize).map_err(fail)?;
        }
        Ok(me)
    }

    /// Asks the run to stop after its current step, as if by `signal` (e.g. [`SIGINT`]).
    pub fn request(&self, signal: i32) {
        self.signal.store(signal.max(0) as usize, Ordering::SeqCst);
        self.requested.store(true, Ordering::SeqCst);
    }

    /// The signal a stop was requested with, once one was (0 when none was given).
    pub fn requested(&self) -> Option<i32> {
        self.requested
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}
