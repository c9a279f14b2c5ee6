//! The tape: recording ops and walking them backwards (in progress).

/// Gradients from one backward pass.
pub struct Gradients;
/// Turns gradient recording off while alive.
pub struct NoGradGuard;
/// Runs `f` without recording.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    f()
}
