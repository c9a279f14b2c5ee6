//! What is due after a step: evaluation, sample grids, a check that the ranks agree,
//! and a checkpoint. A pure function of the step, the time since the last checkpoint and
//! the run's state, so that it is tested without files or a model.

use std::time::Duration;

use super::event::CheckpointReason;
use super::RunConfig;

/// The periods of a run, from its [`RunConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    /// The last step ([`RunConfig::steps`]).
    pub total: u64,
    /// [`RunConfig::eval_every`].
    pub eval_every: u64,
    /// [`RunConfig::sample_every`].
    pub sample_every: u64,
    /// [`RunConfig::checkpoint_every`].
    pub checkpoint_every: u64,
    /// [`RunConfig::checkpoint_interval`].
    pub checkpoint_interval: Option<Duration>,
}

/// What a run does after a step, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Due {
    /// Check that every rank holds the same weights (at the checkpoint period).
    pub check_replicas: bool,
    /// Evaluate on the test split.
    pub evaluate: bool,
    /// Write sample grids.
    pub samples: bool,
    /// Write the checkpoint, and why.
    pub checkpoint: Option<CheckpointReason>,
}

impl Schedule {
    /// The periods of `config`.
    pub(crate) fn of(config: &RunConfig) -> Schedule {
        Schedule {
            total: config.steps,
            eval_every: config.eval_every,
            sample_every: config.sample_every,
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
        }
    }

    /// What is due after `step`:
    /// - every period's work on its multiples of the step and at the last step (a period
    ///   of 0 never);
    /// - while a stop is pending (`stopping`) nothing, as the stop writes the checkpoint,
    ///   except after the last step, which ends the run as usual;
    /// - no checkpoint after a bad step (`bad_step`: the state may be the one going bad),
    ///   and otherwise one at the end, at the checkpoint period, or once
    ///   `since_checkpoint` reaches the interval, named by the first of these that holds.
    pub(crate) fn after_step(
        &self,
        step: u64,
        since_checkpoint: Duration,
        stopping: bool,
        bad_step: bool,
    ) -> Due {
        let at_end = step == self.total;
        if stopping && !at_end {
            return Due::default();
        }
        let due = |every: u64| every > 0 && (step.is_multiple_of(every) || at_end);
        let checkpoint = if bad_step {
            None
        } else if at_end {
            Some(CheckpointReason::End)
        } else if self.checkpoint_every > 0 && step.is_multiple_of(self.checkpoint_every) {
            Some(CheckpointReason::Steps)
        } else if self
            .checkpoint_interval
            .is_some_and(|t| since_checkpoint >= t)
        {
            Some(CheckpointReason::Time)
        } else {
            None
        };
        Due {
            check_replicas: due(self.checkpoint_every),
            evaluate: due(self.eval_every),
            samples: due(self.sample_every),
            checkpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn schedule() -> Schedule {
        Schedule {
            total: 100,
            eval_every: 20,
            sample_every: 50,
            checkpoint_every: 10,
            checkpoint_interval: Some(3 * MINUTE),
        }
    }

    #[test]
    fn periods_land_on_their_multiples_and_at_the_end() {
        let s = schedule();
        let at = |step| s.after_step(step, Duration::ZERO, false, false);
        assert_eq!(at(7), Due::default());
        let ten = at(10);
        assert!(ten.check_replicas && !ten.evaluate && !ten.samples);
        assert_eq!(ten.checkpoint, Some(CheckpointReason::Steps));
        let fifty = at(50);
        assert!(fifty.check_replicas && !fifty.evaluate && fifty.samples);
        assert!(at(40).evaluate);
        // The last step is due for everything whatever its multiples.
        let end = Schedule { total: 97, ..s }.after_step(97, Duration::ZERO, false, false);
        assert!(end.check_replicas && end.evaluate && end.samples);
        assert_eq!(end.checkpoint, Some(CheckpointReason::End));
    }

    #[test]
    fn time_checkpoints_between_the_periods() {
        let s = schedule();
        assert_eq!(s.after_step(7, 2 * MINUTE, false, false).checkpoint, None);
        assert_eq!(
            s.after_step(7, 3 * MINUTE, false, false).checkpoint,
            Some(CheckpointReason::Time)
        );
        // The step period names the checkpoint when both hold.
        assert_eq!(
            s.after_step(10, 5 * MINUTE, false, false).checkpoint,
            Some(CheckpointReason::Steps)
        );
        let never = Schedule {
            checkpoint_interval: None,
            checkpoint_every: 0,
            ..s
        };
        assert_eq!(
            never.after_step(7, 60 * MINUTE, false, false).checkpoint,
            None
        );
        assert!(
            !never
                .after_step(10, Duration::ZERO, false, false)
                .check_replicas
        );
    }

    #[test]
    fn a_bad_step_is_never_checkpointed_but_still_evaluated() {
        let due = schedule().after_step(20, 5 * MINUTE, false, true);
        assert!(due.evaluate && due.check_replicas);
        assert_eq!(due.checkpoint, None);
        assert_eq!(
            schedule()
                .after_step(100, Duration::ZERO, false, true)
                .checkpoint,
            None
        );
    }

    #[test]
    fn a_pending_stop_defers_everything_but_the_end() {
        let s = schedule();
        assert_eq!(s.after_step(20, 5 * MINUTE, true, false), Due::default());
        let end = s.after_step(100, Duration::ZERO, true, false);
        assert!(end.evaluate && end.samples);
        assert_eq!(end.checkpoint, Some(CheckpointReason::End));
    }
}
