//! Data-parallel training across processes: every process (a *rank*) holds the same
//! model, takes its own shard of every global batch, and the ranks average their
//! gradients before each update, so every rank applies the same update and the models
//! stay identical. With `N` ranks and a global batch of `B`, a step computes what one
//! process computes on the whole batch, up to the order of summation.
//!
//! [`Collective`] is what training needs from a communicator: a rank, a size and an
//! element-wise sum over ranks. [`Solo`] is the one-process case. [`InProcess`] runs the
//! ranks as threads of one process (`train_cifar10 --shards N`: each thread a shard of the
//! batch on its own share of the cores). With the `mpi` cargo feature, `mpi::MpiWorld`
//! is MPI's world communicator through the `mpi` crate (Open MPI on Debian).
//!
//! What the ranks exchange:
//! - Every step, one all-reduce of one buffer ([`average_gradients`]): every gradient
//!   laid end to end, then the loss and bits/dim. Every rank then sees the same averaged
//!   loss and gradient norm, so they all take the same decision on a non-finite step.
//! - Every step, one flag: whether any rank was asked to stop (`crate::run`), so that
//!   all of them stop after the same step.
//! - Once, when the ActNorms initialise from data: two small all-reduces per ActNorm
//!   (the mean, then the variance about that global mean), so the statistics are those
//!   of the whole global batch ([`init_scope`]).
//! - At a rollback and at a stop, one empty sum as a barrier; at every
//!   `--checkpoint-every` step and at the end of a run, one gather of every rank's
//!   CRC-32 of its weights ([`check_replicas`]).
//!
//! Every rank starts from the same seed, so the models are identical before the first
//! step without a broadcast; a resumed run loads the same checkpoint on every rank, so
//! the run's folder (`--out`) must be one that every rank sees (one machine, or a shared
//! filesystem). The design relies on the all-reduce giving every rank bitwise the same
//! sum, which MPI implementations do for the same buffer on every rank in practice
//! (the standard recommends it); [`check_replicas`] catches a run where it did not.

use std::cell::RefCell;
use std::sync::Arc;

use engine::{no_grad, Error, Gradients, Result, Tensor};

use crate::param::Param;

/// A communicator over the ranks of a data-parallel run.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `values` on every rank by their element-wise sum over all ranks. Every
    /// rank must call it with the same length, in the same order of calls.
    fn sum_in_place(&self, values: &mut [f32]) -> Result<()>;
    /// Ends every rank's process with `code`: what a rank that fails must do, since the
    /// others would wait for it in their next sum for ever. The default ends this
    /// process only.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    /// Tells the other ranks that this one failed, where they can hear it without
    /// ending the process ([`InProcess`]: their sums fail at once), and says whether it
    /// could; the default cannot (then only [`Collective::abort`] ends their wait).
    fn fail(&self) -> bool {
        false
    }
}

/// The one-process communicator: rank 0 of 1, and sums are the values themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_in_place(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

/// Ranks as threads of one process: [`InProcess::world`] makes one per thread, and a sum
/// meets at a barrier, each rank adding up every rank's buffer in rank order (so every
/// rank gets bitwise the same sum). A rank that fails calls [`Collective::fail`]: the
/// others' sums then fail at once instead of waiting for it for ever.
pub struct InProcess {
    rank: usize,
    size: usize,
    shared: Arc<Meeting>,
}

/// Where the ranks of an [`InProcess`] world meet.
struct Meeting {
    state: std::sync::Mutex<MeetingState>,
    turn: std::sync::Condvar,
    slots: std::sync::RwLock<Vec<Vec<f32>>>,
}

/// Who has arrived at the barrier, which meeting it is, and whether a rank failed.
struct MeetingState {
    arrived: usize,
    generation: u64,
    failed: bool,
}

/// The error of a sum that a failed rank broke off.
const ANOTHER_RANK_FAILED: &str = "another rank failed";

impl InProcess {
    /// The `size` ranks of one world, rank 0 first: hand one to each thread.
    pub fn world(size: usize) -> Vec<InProcess> {
        let shared = Arc::new(Meeting {
            state: std::sync::Mutex::new(MeetingState {
                arrived: 0,
                generation: 0,
                failed: false,
            }),
            turn: std::sync::Condvar::new(),
            slots: std::sync::RwLock::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| InProcess {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Whether `e` is the error of a sum broken off because another rank failed (its
    /// own error says what went wrong).
    pub fn is_another_ranks_failure(e: &Error) -> bool {
        e.to_string().contains(ANOTHER_RANK_FAILED)
    }

    /// Waits until every rank has arrived, or fails once a rank has failed.
    fn barrier(&self) -> Result<()> {
        let broken = || Error::invalid("data-parallel run", ANOTHER_RANK_FAILED);
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.failed {
            return Err(broken());
        }
        state.arrived += 1;
        if state.arrived == self.size {
            state.arrived = 0;
            state.generation += 1;
            self.shared.turn.notify_all();
            return Ok(());
        }
        let generation = state.generation;
        while state.generation == generation && !state.failed {
            state = self
                .shared
                .turn
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.generation == generation {
            return Err(broken());
        }
        Ok(())
    }
}

/// Runs `rank` as every rank of an [`InProcess`] world of `size`, each on a thread of its
/// own with a rayon pool of `threads` threads (so the CPU device's ops of that rank run
/// there), and returns the world's outcome: the first failure in rank order that is not
/// just the news of another rank's (`is_news`), else rank 0's result.
///
/// A rank that fails in any way (its pool cannot be built, an error, a panic) tells the
/// others through [`Collective::fail`], whose next sum then fails at once instead of
/// waiting for it. `what` names the caller in the errors made here (`"--shards"`).
pub fn run_ranks<T, E>(
    size: usize,
    threads: usize,
    what: &'static str,
    rank: impl Fn(Arc<InProcess>) -> std::result::Result<T, E> + Sync,
    is_news: impl Fn(&E) -> bool,
) -> std::result::Result<T, E>
where
    T: Send,
    E: Send + From<Error>,
{
    let panicked = || E::from(Error::invalid(what, "a rank's thread panicked"));
    let world: Vec<Arc<InProcess>> = InProcess::world(size).into_iter().map(Arc::new).collect();
    let outcomes: Vec<std::result::Result<T, E>> = std::thread::scope(|s| {
        let threads_of_ranks: Vec<_> = world
            .iter()
            .map(|comm| {
                let (comm, rank) = (comm.clone(), &rank);
                s.spawn(move || {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            // A deep model's graph is dropped recursively.
                            .stack_size(16 << 20)
                            .build()
                            .map_err(|e| Error::invalid(what, e.to_string()))?;
                        pool.install(|| rank(comm.clone()))
                    }));
                    let result = run.unwrap_or_else(|_| Err(panicked()));
                    if result.is_err() {
                        comm.fail();
                    }
                    result
                })
            })
            .collect();
        threads_of_ranks
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    });
    let own = |r: &std::result::Result<T, E>| r.as_ref().is_err_and(|e| !is_news(e));
    match outcomes.iter().position(own) {
        Some(i) => outcomes.into_iter().nth(i).expect("found"),
        None => outcomes.into_iter().next().expect("at least one rank"),
    }
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InProcess(rank {} of {})", self.rank, self.size)
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_in_place(&self, values: &mut [f32]) -> Result<()> {
        {
            let mut slots = self.shared.slots.write().unwrap_or_else(|e| e.into_inner());
            let slot = &mut slots[self.rank];
            slot.clear();
            slot.extend_from_slice(values);
        }
        self.barrier()?;
        {
            // Every rank reads at once.
            let slots = self.shared.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = slots.iter().find(|s| s.len() != values.len()) {
                let (mine, theirs) = (values.len(), other.len());
                drop(slots);
                self.fail();
                return Err(Error::invalid(
                    "data-parallel run",
                    format!("ranks summed {mine} and {theirs} values"),
                ));
            }
            // (0 + slot 0) + slot 1 + ..., in rank order, a slot at a time so the adds
            // vectorise: the same sums as element by element, in the same order.
            values.fill(0.0);
            for slot in slots.iter() {
                for (v, &s) in values.iter_mut().zip(slot) {
                    *v += s;
                }
            }
        }
        // Nobody may overwrite a slot before every rank has read them all.
        self.barrier()
    }
    fn fail(&self) -> bool {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failed = true;
        self.shared.turn.notify_all();
        true
    }
}

/// The ranks of this run: MPI's world when built with the `mpi` feature (one rank when
/// not started by `mpirun`), else [`Solo`]. When several ranks share
/// this machine and `RAYON_NUM_THREADS` is not set, the CPU device's thread pool gets
/// an equal share of the cores, so the ranks do not fight over them.
pub fn from_env() -> Result<Arc<dyn Collective>> {
    #[cfg(feature = "mpi")]
    {
        let world = mpi::MpiWorld::init()?;
        let local: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(world.size());
        if local > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            // Fails only when the pool exists already; then it keeps its size.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads((cores / local).max(1))
                .build_global();
        }
        Ok(Arc::new(world))
    }
    #[cfg(not(feature = "mpi"))]
    {
        // Started by a launcher as one of several ranks, a build without MPI would be N
        // separate runs writing the same files.
        let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find_map(|v| v.parse::<usize>().ok().filter(|&n| n > 1));
        if let Some(n) = launched {
            return Err(Error::invalid(
                "data-parallel run",
                format!(
                    "started as one of {n} MPI ranks, but this build has no MPI: build with \
                     `--features mpi`"
                ),
            ));
        }
        Ok(Arc::new(Solo))
    }
}

/// This rank's images of a global batch of `global` images: `(first, count)`, the
/// `rank`-th of `size` equal shards. Fails unless `size` divides `global`.
pub fn shard(global: usize, rank: usize, size: usize) -> Result<(usize, usize)> {
    if size == 0 || rank >= size || !global.is_multiple_of(size) {
        return Err(Error::invalid(
            "data-parallel batch",
            format!(
                "a global batch of {global} does not split into {size} equal shards \
                 (choose a batch that is a multiple of the number of ranks)"
            ),
        ));
    }
    let count = global / size;
    Ok((rank * count, count))
}

/// Waits until every rank of `comm` has come here (one all-reduce of one value; nothing
/// for one process).
pub fn barrier(comm: &dyn Collective) -> Result<()> {
    if comm.size() > 1 {
        comm.sum_in_place(&mut [0.0])?;
    }
    Ok(())
}

/// Averages `values` over the ranks in place (a sum, then a division by the size).
pub fn average_in_place(comm: &dyn Collective, values: &mut [f32]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    comm.sum_in_place(values)?;
    let n = comm.size() as f32;
    for v in values.iter_mut() {
        *v /= n;
    }
    Ok(())
}

/// Averages the gradients of `params` in `grads` and the scalars `extra` (e.g. the loss)
/// over the ranks, in one all-reduce of one buffer: the gradients in `params`' order,
/// then `extra`. Every rank must pass the same parameters in the same order; a parameter
/// without a gradient takes part as zeros and is given none. Returns the averaged
/// `extra`.
pub fn average_gradients(
    comm: &dyn Collective,
    params: &[&Param],
    grads: &mut Gradients,
    extra: &[f32],
) -> Result<Vec<f32>> {
    if comm.size() == 1 {
        return Ok(extra.to_vec());
    }
    let leaves: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    // On the CPU device each gradient is read out (a copy) into the buffer and made back
    // from its part of the buffer; elsewhere there is one read-back and one upload for the
    // whole buffer, since on a GPU each read-back stalls the queue. Either way the same
    // values.
    let on_cpu = leaves.first().is_some_and(|l| l.device().is_cpu());
    let mut buffer = no_grad(|| -> Result<Vec<f32>> {
        if on_cpu {
            let mut buffer = Vec::with_capacity(leaves.iter().map(Tensor::numel).sum());
            for leaf in &leaves {
                match grads.get(leaf) {
                    Some(g) if g.numel() != leaf.numel() => {
                        return Err(Error::invalid(
                            "average_gradients",
                            format!(
                                "a gradient of shape {:?} for a parameter of shape {:?}",
                                g.shape(),
                                leaf.shape()
                            ),
                        ))
                    }
                    Some(g) => buffer.extend_from_slice(&g.to_vec()?),
                    None => buffer.resize(buffer.len() + leaf.numel(), 0.0),
                }
            }
            return Ok(buffer);
        }
        let flat = leaves
            .iter()
            .map(|leaf| match grads.get(leaf) {
                Some(g) => g.reshape(&[leaf.numel()]),
                None => Tensor::zeros(&[leaf.numel()], leaf.device()),
            })
            .collect::<Result<Vec<_>>>()?;
        if flat.is_empty() {
            return Ok(Vec::new());
        }
        Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?.to_vec()
    })?;
    buffer.extend_from_slice(extra);
    average_in_place(comm, &mut buffer)?;
    let total: usize = leaves.iter().map(Tensor::numel).sum();
    if let Some(first) = leaves.first() {
        let all = if on_cpu {
            None
        } else {
            Some(no_grad(|| {
                Tensor::from_slice(&buffer[..total], &[total], first.device())
            })?)
        };
        let mut at = 0;
        for leaf in &leaves {
            let n = leaf.numel();
            // A parameter without a gradient keeps none, as in one process (every rank
            // builds the same graph, so it has none on any rank).
            if grads.get(leaf).is_some() {
                let g = no_grad(|| match &all {
                    None => Tensor::from_slice(&buffer[at..at + n], leaf.shape(), leaf.device()),
                    Some(all) => all.slice(0, at, n)?.reshape(leaf.shape()),
                })?;
                grads.insert(leaf, g)?;
            }
            at += n;
        }
    }
    Ok(buffer[total..].to_vec())
}

/// Checks that every rank holds the same weights: each rank's CRC-32 of its model state
/// is gathered by one all-reduce (two exact 16-bit halves per rank), and a rank whose
/// state differs from rank 0's fails the check on every rank, naming it.
pub fn check_replicas(comm: &dyn Collective, model: &crate::Glow) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut hasher = crc32fast::Hasher::new();
    for t in model.state()?.tensors {
        hasher.update(t.name.as_bytes());
        for v in &t.data {
            hasher.update(&v.to_le_bytes());
        }
    }
    let crc = hasher.finalize();
    let mut all = vec![0.0f32; 2 * comm.size()];
    all[2 * comm.rank()] = (crc >> 16) as f32;
    all[2 * comm.rank() + 1] = (crc & 0xffff) as f32;
    comm.sum_in_place(&mut all)?;
    let crcs: Vec<u32> = all
        .chunks(2)
        .map(|h| ((h[0] as u32) << 16) | h[1] as u32)
        .collect();
    match crcs.iter().position(|&c| c != crcs[0]) {
        None => Ok(()),
        Some(rank) => Err(Error::invalid(
            "data-parallel run",
            format!(
                "rank {rank} holds other weights than rank 0 (CRC-32 {:08x} against {:08x}): \
                 the ranks diverged",
                crcs[rank], crcs[0]
            ),
        )),
    }
}

thread_local! {
    static INIT: RefCell<Option<Arc<dyn Collective>>> = const { RefCell::new(None) };
}

/// While the returned guard lives, ActNorms that initialise on this thread average their
/// statistics over the ranks of `comm` (see the module doc). The previous scope comes
/// back when it drops.
pub fn init_scope(comm: Arc<dyn Collective>) -> InitScope {
    let previous = INIT.with(|c| c.borrow_mut().replace(comm));
    InitScope { previous }
}

/// The guard of [`init_scope`].
pub struct InitScope {
    previous: Option<Arc<dyn Collective>>,
}

impl Drop for InitScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        INIT.with(|c| *c.borrow_mut() = previous);
    }
}

/// `t` averaged over the ranks of the current [`init_scope`] (unchanged outside one).
pub(crate) fn average_for_init(t: Tensor) -> Result<Tensor> {
    let Some(comm) = INIT.with(|c| c.borrow().clone()) else {
        return Ok(t);
    };
    if comm.size() == 1 {
        return Ok(t);
    }
    let mut values = t.to_vec()?;
    average_in_place(comm.as_ref(), &mut values)?;
    Tensor::from_slice(&values, t.shape(), t.device())
}

/// MPI's world communicator (cargo feature `mpi`).
#[cfg(feature = "mpi")]
pub mod mpi {
    use ::mpi::collective::SystemOperation;
    use ::mpi::environment::Universe;
    use ::mpi::topology::SimpleCommunicator;
    use ::mpi::traits::{Communicator, CommunicatorCollectives};

    use super::Collective;
    use engine::{Error, Result};

    /// The ranks `mpirun` started, through MPI's world communicator. MPI is initialised
    /// when this is made and finalised when it drops; make one per process.
    pub struct MpiWorld {
        // Dropped last: finalises MPI.
        _universe: Universe,
        world: SimpleCommunicator,
    }

    // The communicator is used from the training thread only; MPI is initialised with
    // the default thread level, and `Collective` needs `Send + Sync` to be shared.
    unsafe impl Send for MpiWorld {}
    unsafe impl Sync for MpiWorld {}

    impl MpiWorld {
        /// Initialises MPI. Fails when it was initialised already.
        pub fn init() -> Result<MpiWorld> {
            let universe = ::mpi::initialize().ok_or_else(|| {
                Error::invalid("MPI", "MPI was already initialised in this process")
            })?;
            let world = universe.world();
            Ok(MpiWorld {
                _universe: universe,
                world,
            })
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn sum_in_place(&self, values: &mut [f32]) -> Result<()> {
            // MPI's default error handler aborts the whole job on a failure (a rank that
            // died included), so a return here has succeeded.
            let send = values.to_vec();
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}
