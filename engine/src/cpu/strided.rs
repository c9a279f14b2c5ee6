//! Walking several strided arrays in step: the shared core of broadcasting, reduction
//! and permutation on the CPU.
//!
//! A strided loop nest is described by dims `(extent, [stride of operand k; N])`, outer
//! to inner. [`collapse`] first drops extent-1 dims and merges neighbours that every
//! operand walks contiguously, so `[N, C, H, W] + [1, C, 1, 1]` becomes three dims
//! `[N, C, H·W]` and a same-shape op becomes one. The kernels then loop over the
//! innermost dim themselves (a slice loop the compiler vectorises) and use [`Odometer`]
//! only to step the outer dims, one increment per row rather than per element.

/// One loop of a strided nest: its extent and the stride of each of `N` operands.
pub(crate) type Dim<const N: usize> = (usize, [usize; N]);

/// Drops extent-1 dims and merges an outer dim into its inner neighbour wherever, for
/// every operand, `outer stride == inner stride · inner extent` (true for contiguous
/// walks and for broadcast walks with stride 0). The element order is unchanged.
pub(crate) fn collapse<const N: usize>(dims: &[Dim<N>]) -> Vec<Dim<N>> {
    let mut out: Vec<Dim<N>> = Vec::with_capacity(dims.len());
    for &(ext, strides) in dims {
        if ext == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if (0..N).all(|k| last.1[k] == strides[k] * ext) {
                last.0 *= ext;
                last.1 = strides;
                continue;
            }
        }
        out.push((ext, strides));
    }
    out
}

/// Steps through the index tuples of a loop nest in row-major order, keeping each
/// operand's offset up to date with one add per step (a carry costs one more).
pub(crate) struct Odometer<'a, const N: usize> {
    dims: &'a [Dim<N>],
    index: Vec<usize>,
    /// The current offset of each operand.
    pub offsets: [usize; N],
}

impl<'a, const N: usize> Odometer<'a, N> {
    /// Starts at the `linear`-th index tuple of `dims` (so a parallel chunk can begin
    /// mid-way).
    pub fn new(dims: &'a [Dim<N>], mut linear: usize) -> Self {
        let mut index = vec![0; dims.len()];
        let mut offsets = [0; N];
        for (d, &(ext, strides)) in dims.iter().enumerate().rev() {
            index[d] = linear % ext;
            linear /= ext;
            for k in 0..N {
                offsets[k] += index[d] * strides[k];
            }
        }
        Odometer {
            dims,
            index,
            offsets,
        }
    }

    /// Moves to the next index tuple (wrapping to all zeros after the last).
    #[inline]
    pub fn advance(&mut self) {
        for (d, &(ext, strides)) in self.dims.iter().enumerate().rev() {
            self.index[d] += 1;
            if self.index[d] < ext {
                for k in 0..N {
                    self.offsets[k] += strides[k];
                }
                return;
            }
            self.index[d] = 0;
            for k in 0..N {
                self.offsets[k] -= (ext - 1) * strides[k];
            }
        }
    }
}
