//! Ops on tensors (in progress).
