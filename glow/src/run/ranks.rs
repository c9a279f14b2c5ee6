//! Every agreement between the ranks of a data-parallel run, in one place: who writes,
//! when to stop, waiting for each other, checking that the weights agree, and ending the
//! whole job on an error. For one process ([`crate::parallel::Solo`]) each is trivial:
//! no message is exchanged.
//!
//! The gradient all-reduce of each step is not here: it is part of the step
//! ([`crate::train::Trainer`]).

use std::sync::Arc;

use engine::Result;

use crate::parallel::{check_replicas, Collective};

use super::interrupt::SIGTERM;

/// The ranks of a run, as the run loop sees them.
#[derive(Clone)]
pub(crate) struct Ranks(Arc<dyn Collective>);

impl std::fmt::Debug for Ranks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ranks({} of {})", self.0.rank(), self.0.size())
    }
}

impl Ranks {
    /// The ranks of `collective`.
    pub(crate) fn new(collective: Arc<dyn Collective>) -> Ranks {
        Ranks(collective)
    }

    /// Whether this process writes the run's files and evaluates: rank 0 (the only one
    /// outside a data-parallel run).
    pub(crate) fn writer(&self) -> bool {
        self.0.rank() == 0
    }

    /// The number of ranks.
    pub(crate) fn size(&self) -> usize {
        self.0.size()
    }

    /// The stop every rank agrees on, from each rank's `local` request: one all-reduce of
    /// one flag, so that all of them stop after the same step. A rank that was not asked
    /// itself stops as if by SIGTERM. One process needs no agreement.
    pub(crate) fn agree_stop(&self, local: Option<i32>) -> Result<Option<i32>> {
        if self.0.size() == 1 {
            return Ok(local);
        }
        let mut flag = [if local.is_some() { 1.0 } else { 0.0 }];
        self.0.sum_in_place(&mut flag)?;
        Ok((flag[0] > 0.0).then(|| local.unwrap_or(SIGTERM)))
    }

    /// Waits until every rank has come here (one all-reduce of one value).
    pub(crate) fn barrier(&self) -> Result<()> {
        crate::parallel::barrier(self.0.as_ref())
    }

    /// Fails, naming the rank, unless every rank holds the same weights.
    pub(crate) fn check_replicas(&self, model: &crate::Glow) -> Result<()> {
        check_replicas(self.0.as_ref(), model)
    }

    /// Ends the whole job after printing `error` when there are other ranks: they would
    /// otherwise wait for this one in their next all-reduce for ever. Ranks that can be
    /// told without ending the process ([`crate::parallel::InProcess`]) are told instead,
    /// and the error goes back to the caller.
    pub(crate) fn abort_on_error(&self, error: &engine::Error) {
        if self.0.size() > 1 && !self.0.fail() {
            eprintln!(
                "error on rank {} of {}: {error}",
                self.0.rank(),
                self.0.size()
            );
            self.0.abort(1);
        }
    }
}
