//! Finite-difference gradient checks (in progress).
