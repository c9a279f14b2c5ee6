//! Drawing the graph a tensor was computed by, as Graphviz DOT text (what micrograd's
//! `draw_dot` draws): one box per tensor (its id, shape, its values when there are few,
//! and its gradient when given), one ellipse per recorded op, and arrows from inputs to
//! op to output. Each op is numbered by the step at which [`Tensor::backward`] visits it:
//! the tape read newest first (see `autograd.rs`).
//!
//! ```
//! use engine::{Device, Tensor};
//! let dev = Device::Cpu;
//! let a = Tensor::from_slice(&[2.0], &[1], &dev)?.with_grad();
//! let b = Tensor::from_slice(&[-3.0], &[1], &dev)?.with_grad();
//! let loss = a.mul(&b)?.add(&a)?.sum_all()?;
//! let grads = loss.backward()?;
//! let dot = loss.to_dot(Some(&grads))?;
//! assert!(dot.starts_with("digraph"));
//! assert!(dot.contains("mul"));
//! // Render it with Graphviz: `dot -Tpng graph.dot -o graph.png`.
//! # Ok::<(), engine::Error>(())
//! ```

use std::collections::HashSet;
use std::fmt::Write;

use crate::{shape, Gradients, Result, Tensor};

/// Tensors with at most this many values show them in their box.
const SHOWN_VALUES: usize = 8;

impl Tensor {
    /// The graph that computed `self`, every tensor it depends on through recorded ops,
    /// as Graphviz DOT text; with `grads` (from `backward()` of this tensor or one that
    /// depends on it), each leaf that has a gradient shows it. Ops are labelled with the
    /// step at which backward reaches them (1 first). Reads the values of every tensor
    /// of at most eight elements.
    pub fn to_dot(&self, grads: Option<&Gradients>) -> Result<String> {
        // Every tensor reachable through recorded nodes, inputs that need no gradient too.
        let mut seen = HashSet::from([self.id()]);
        let mut stack = vec![self.clone()];
        let mut all = Vec::new();
        while let Some(t) = stack.pop() {
            if let Some(node) = &t.0.node {
                for input in &node.inputs {
                    if seen.insert(input.id()) {
                        stack.push(input.clone());
                    }
                }
            }
            all.push(t);
        }
        // Backward's order: newest first, ops only.
        all.sort_unstable_by_key(|t| std::cmp::Reverse(t.id()));
        let mut out = String::from("digraph {\n  rankdir=LR;\n  node [fontname=monospace];\n");
        let mut step = 0;
        for t in &all {
            let mut label = format!("t{}  {}", t.id(), shape::fmt(t.shape()));
            if t.numel() <= SHOWN_VALUES {
                let _ = write!(label, "\\ndata {}", numbers(&t.to_vec()?));
            }
            if let Some(g) = grads.and_then(|g| g.get(t)) {
                if g.numel() <= SHOWN_VALUES {
                    let _ = write!(label, "\\ngrad {}", numbers(&g.to_vec()?));
                } else {
                    label.push_str("\\ngrad (computed)");
                }
            }
            if t.requires_grad() && t.0.node.is_none() {
                label.push_str("\\n(leaf, requires grad)");
            }
            let _ = writeln!(
                out,
                "  t{} [shape=box, label=\"{}\"];",
                t.id(),
                escape(&label)
            );
            if let Some(node) = &t.0.node {
                step += 1;
                let _ = writeln!(
                    out,
                    "  op{} [shape=ellipse, label=\"{}\\nbackward step {step}\"];",
                    t.id(),
                    escape(node.op)
                );
                let _ = writeln!(out, "  op{} -> t{};", t.id(), t.id());
                for input in &node.inputs {
                    let _ = writeln!(out, "  t{} -> op{};", input.id(), t.id());
                }
            }
        }
        out.push_str("}\n");
        Ok(out)
    }
}

/// `[1.0000, -2.5000]`: each value with four decimal places.
fn numbers(values: &[f32]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// `text` with DOT's string metacharacters escaped (its `\n` escapes are kept).
fn escape(text: &str) -> String {
    text.replace('"', "\\\"")
}
