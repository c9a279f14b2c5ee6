//! Glow (Kingma & Dhariwal 2018) on the `engine` crate.
//!
//! The flow layers, the multi-scale model, the bits/dim objective and training
//! arrive with the model issue; for now this crate only re-exports the engine so
//! that the workspace builds end to end.

pub use engine;
