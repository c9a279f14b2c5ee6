//! Helpers shared by the top-level examples, integration tests and benchmarks.
//!
//! The real code lives in the `engine` and `glow` crates; this package only holds
//! `tests/`, `examples/` and `benches/` and what they have in common.

pub use engine;
pub use glow;
