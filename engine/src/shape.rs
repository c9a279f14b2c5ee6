//! Shape helpers (in progress).
