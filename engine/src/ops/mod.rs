//! The ops on [`Tensor`](crate::Tensor), one file per family.
//!
//! Each op checks its arguments (errors name the op and the shapes), runs one backend
//! primitive, and records the closure that computes its inputs' gradients right beside
//! the forward. Backward closures are written with ordinary tensor ops; they run with
//! recording off (see `autograd.rs`).
//!
//! | file | ops |
//! |---|---|
//! | `unary.rs` | neg, exp, log, sigmoid, softplus, relu, sqrt, recip, square, abs, tanh, scale, add_scalar, powf, step |
//! | `binary.rs` | add, sub, mul, div (broadcasting), maximum, relu_grad |
//! | `reduce.rs` | sum, mean, sum_all, mean_all, max, expand, sum_to |
//! | `matmul.rs` | matmul (batched, broadcast operand) |
//! | `conv.rs` | conv2d (stride 1, same padding, optional bias) |
//! | `layout.rs` | reshape, permute, transpose, slice, concat, gather |
//! | `det.rs` | log_abs_det, inverse (host `f64`, on `crate::linalg`) |
//! | `composite.rs` | log_softmax, one_hot (no derivative code of their own) |
//! | `fused.rs` | Glow's affine coupling and Gaussian log-density, fused |
//! | `optim.rs` | the fused Adam/Adamax update (in place, not differentiated) |

mod binary;
mod composite;
mod conv;
mod det;
mod fused;
mod layout;
mod matmul;
mod optim;
mod reduce;
mod unary;
