//! The pictures of the tour (`docs/pictures/*.svg`), drawn by code so that they stay
//! true: the tape is the tiny engine's own walk (`crate::tiny`), Glow's shapes come from
//! a model's latents (`glow::Glow::latent_shapes`), the GEMM tile from the constants in
//! `shaders/gemm_tile.glsl`. `cargo run --example pictures` writes them;
//! `tests/picture.rs` fails when a committed picture is not what this code draws.

use std::fmt::Write;

/// The pictures, by file name inside `docs/pictures/`.
pub fn all() -> Result<Vec<(&'static str, String)>, String> {
    Ok(vec![
        ("layers.svg", layers()),
        ("tape.svg", tape()?),
        ("glow.svg", glow_levels()?),
        (
            "gemm_tile.svg",
            gemm_tile(include_str!("../shaders/gemm_tile.glsl"))?,
        ),
    ])
}

/// An SVG picture under construction.
struct Svg(String);

impl Svg {
    fn new(width: u32, height: u32) -> Svg {
        Svg(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"13\" \
             xml:space=\"preserve\">\n\
             <rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"
        ))
    }

    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, fill: &str) {
        let _ = writeln!(
            self.0,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{fill}\" \
             stroke=\"#333\"/>"
        );
    }

    /// Text centred on `x` (or starting at `x` when `left`).
    fn text(&mut self, x: u32, y: u32, text: &str, left: bool) {
        let anchor = if left { "start" } else { "middle" };
        let text = text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = writeln!(
            self.0,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\">{text}</text>"
        );
    }

    fn arrow(&mut self, x1: u32, y1: u32, x2: u32, y2: u32) {
        let _ = writeln!(
            self.0,
            "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#333\" \
             marker-end=\"url(#head)\"/>"
        );
    }

    /// An arrow from the bottom of one box to the bottom of another, through a lane `d`
    /// pixels below them, so that arrows between the same row of boxes stay apart.
    fn lane_arrow(&mut self, x1: u32, x2: u32, y: u32, d: u32) {
        let _ = writeln!(
            self.0,
            "<polyline points=\"{x1},{y} {x1},{l} {x2},{l} {x2},{y}\" fill=\"none\" \
             stroke=\"#333\" marker-end=\"url(#head)\"/>",
            l = y + d
        );
    }

    fn finish(mut self) -> String {
        self.0.insert_str(
            self.0.find('\n').map_or(0, |i| i + 1),
            "<defs><marker id=\"head\" markerWidth=\"8\" markerHeight=\"8\" refX=\"8\" \
             refY=\"4\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#333\"/></marker>\
             </defs>\n",
        );
        self.0.push_str("</svg>\n");
        self.0
    }
}

/// The layers of the engine, from the user's tensor down to the kernels of each device.
pub fn layers() -> String {
    let mut svg = Svg::new(760, 400);
    let rows: [(&str, &str); 4] = [
        (
            "Tensor and its ops",
            "engine/src/tensor.rs, engine/src/ops/ (forward + VJP side by side)",
        ),
        (
            "The tape and backward()",
            "engine/src/autograd.rs (nodes sorted by id, walked newest first)",
        ),
        (
            "Backend: ~20 core primitives",
            "engine/src/backend/ (and Fused: ops a device may fuse)",
        ),
        ("Devices", ""),
    ];
    for (i, (name, where_)) in rows.iter().enumerate() {
        let y = 20 + 80 * i as u32;
        svg.rect(20, y, 720, 50, "#eef3fb");
        svg.text(380, y + 22, name, false);
        svg.text(380, y + 40, where_, false);
        if i > 0 {
            svg.arrow(380, y - 30, 380, y);
        }
    }
    let devices = [
        ("reference", "ndarray loops in f64", "the oracle"),
        ("CPU", "f32 slices, rayon, SIMD", "conv_kernels.rs"),
        ("Vulkan", "GLSL -> SPIR-V", "shaders/*.comp"),
    ];
    for (i, (name, how, kernels)) in devices.iter().enumerate() {
        let x = 40 + 240 * i as u32;
        svg.rect(x, 305, 200, 80, "#fdf3e6");
        svg.text(x + 100, 327, name, false);
        svg.text(x + 100, 347, how, false);
        svg.text(x + 100, 367, kernels, false);
        svg.arrow(380, 290, x + 100, 305);
    }
    svg.finish()
}

/// The graph of `loss = mean(tanh(a·b + a))` on stop 0's engine, and the steps of its
/// backward walk: which tensor each step reaches, the gradient it received, and the
/// gradients still pending.
pub fn tape() -> Result<String, String> {
    use crate::tiny::{Device, Tensor};
    let dev = Device::Host;
    let a = Tensor::from_vec(vec![0.5], &[1], &dev)?.with_grad();
    let b = Tensor::from_vec(vec![-2.0], &[1], &dev)?.with_grad();
    let ab = a.mul(&b)?;
    let s = ab.add(&a)?;
    let t = s.tanh()?;
    let loss = t.mean_all()?;
    let names = [
        (a.id(), "a"),
        (b.id(), "b"),
        (ab.id(), "a*b"),
        (s.id(), "a*b + a"),
        (t.id(), "tanh"),
        (loss.id(), "loss = mean"),
    ];
    // Ids as counted from `a`'s, so that the picture does not depend on what else the
    // process made first; the gaps are the plain tensors that `with_grad` copied.
    let base = a.id();
    let name = |id: usize| {
        names
            .iter()
            .find(|n| n.0 == id)
            .map_or(format!("t{id}"), |n| n.1.to_string())
    };
    let steps = loss.backward_steps()?;
    let mut svg = Svg::new(900, 160 + 30 * steps.len() as u32);
    // The graph, left to right in creation order (ids), with each tensor's value.
    let tensors = [&a, &b, &ab, &s, &t, &loss];
    let x_of = |i: usize| 20 + 145 * i as u32;
    for (i, tensor) in tensors.iter().enumerate() {
        svg.rect(x_of(i), 20, 125, 44, "#eef3fb");
        svg.text(
            x_of(i) + 62,
            38,
            &format!("t{}: {}", tensor.id() - base, name(tensor.id())),
            false,
        );
        svg.text(
            x_of(i) + 62,
            56,
            &format!("{:.4}", tensor.to_vec()?[0]),
            false,
        );
    }
    // Each input into the op that read it, through its own lane below the boxes.
    let edges = [
        (0, 2, 40),
        (1, 2, 62),
        (2, 3, 40),
        (0, 3, 84),
        (3, 4, 62),
        (4, 5, 62),
    ];
    for (lane, (from, to, into)) in edges.into_iter().enumerate() {
        let x1 = x_of(from) + 30 + 12 * (lane as u32 % 3);
        svg.lane_arrow(x1, x_of(to) + into, 64, 8 + 7 * lane as u32);
    }
    svg.text(
        20,
        125,
        "backward(): the tape, newest first; d loss/d loss = 1 (ids counted from a's)",
        true,
    );
    for (k, step) in steps.iter().enumerate() {
        let pending: Vec<String> = step
            .pending
            .iter()
            .map(|(id, g)| format!("{} {:.4}", name(*id), g[0]))
            .collect();
        svg.text(
            20,
            155 + 30 * k as u32,
            &format!(
                "step {}: {:<12} receives {:>8.4}   pending: {}",
                k + 1,
                name(step.id),
                step.grad[0],
                if pending.is_empty() {
                    "(none)".to_string()
                } else {
                    pending.join(", ")
                }
            ),
            true,
        );
    }
    Ok(svg.finish())
}

/// Glow's multi-scale architecture for 3×32×32 images and L = 3: each level's squeeze,
/// K flow steps and split, with the shapes, and the latents a model of that
/// configuration actually returns (`Glow::latent_shapes`).
pub fn glow_levels() -> Result<String, String> {
    let cfg = glow::GlowConfig {
        image_shape: [3, 32, 32],
        levels: 3,
        depth: 1,
        hidden: 4,
        ..glow::GlowConfig::default()
    };
    let model = glow::Glow::new(cfg.clone(), &engine::Device::Cpu).map_err(|e| e.to_string())?;
    let latents = model.latent_shapes(1);
    let shape = |s: &[usize]| format!("{}x{}x{}", s[0], s[1], s[2]);
    let level_h = 130;
    let mut svg = Svg::new(760, 120 + level_h * cfg.levels as u32);
    let [mut c, mut h, mut w] = cfg.image_shape;
    svg.rect(280, 15, 200, 30, "#ffffff");
    svg.text(380, 35, &format!("x: {c}x{h}x{w}"), false);
    for (l, latent) in latents.iter().enumerate() {
        let y = 70 + level_h * l as u32;
        (c, h, w) = (4 * c, h / 2, w / 2);
        svg.arrow(380, y - 25, 380, y);
        svg.text(40, y + 20, &format!("level {}", l + 1), true);
        svg.rect(200, y, 360, 30, "#eef3fb");
        svg.text(380, y + 20, &format!("squeeze -> {c}x{h}x{w}"), false);
        svg.rect(200, y + 40, 360, 30, "#eef3fb");
        let steps = format!("K steps: ActNorm, 1x1 conv, coupling ({c}x{h}x{w})");
        svg.text(380, y + 60, &steps, false);
        svg.arrow(380, y + 30, 380, y + 40);
        let z = &latent[1..];
        svg.rect(580, y + 40, 160, 30, "#fdf3e6");
        svg.arrow(560, y + 55, 580, y + 55);
        if l + 1 < cfg.levels {
            c /= 2;
            svg.text(
                660,
                y + 60,
                &format!("z2 of level {}: {}", l + 1, shape(z)),
                false,
            );
            let split = format!("split: z1 {c}x{h}x{w} goes on, z2 leaves");
            svg.text(380, y + 92, &split, false);
        } else {
            svg.text(660, y + 60, &format!("z top: {}", shape(z)), false);
        }
    }
    let total: usize = latents
        .iter()
        .map(|s| s[1..].iter().product::<usize>())
        .sum();
    svg.text(
        20,
        95 + level_h * cfg.levels as u32,
        &format!(
            "latents hold {total} values = 3x32x32: a bijection that only moves where dimensions are modelled"
        ),
        true,
    );
    Ok(svg.finish())
}

/// One workgroup of `shaders/gemm_tile.glsl`, with TILE, WM and WN read from the source
/// `glsl`: the BM × BN block of C it computes, the invocations (each a TILE-strided
/// WM × WN set of outputs), and the A and B slabs staged in shared memory per step.
pub fn gemm_tile(glsl: &str) -> Result<String, String> {
    let constant = |name: &str| -> Result<u32, String> {
        glsl.lines()
            .find_map(|l| {
                l.split_once(&format!("const uint {name} = "))
                    .and_then(|(_, v)| v.trim_end_matches(';').trim().parse().ok())
            })
            .ok_or(format!("no `const uint {name}` in gemm_tile.glsl"))
    };
    let (tile, wm, wn) = (constant("TILE")?, constant("WM")?, constant("WN")?);
    let (bm, bn) = (tile * wm, tile * wn);
    let cell = 6; // pixels per output
    let (x0, y0) = (160, 150);
    let mut svg = Svg::new(x0 + bn * cell + 40, y0 + bm * cell + 80);
    // C's block, with the outputs of two invocations marked.
    svg.rect(x0, y0, bn * cell, bm * cell, "#ffffff");
    for ((tx, ty), fill) in [((0, 0), "#4c72b0"), ((5, 3), "#dd8452")] {
        for i in 0..wm {
            for j in 0..wn {
                let (r, c) = (ty + tile * i, tx + tile * j);
                svg.rect(x0 + c * cell, y0 + r * cell, cell, cell, fill);
            }
        }
    }
    // The slabs: A (BM x TILE) to the left, B (TILE x BN) above, drawn at half scale.
    let slab = tile * cell / 2;
    svg.rect(x0 - 20 - slab, y0, slab, bm * cell, "#eef3fb");
    svg.rect(x0, y0 - 20 - slab, bn * cell, slab, "#eef3fb");
    let slabs = format!("A slab {bm}x{tile} (left), B slab {tile}x{bn} (above): shared memory");
    svg.text(20, 30, &slabs, true);
    svg.text(
        20,
        50,
        "for one step of k; every invocation loads a few of them",
        true,
    );
    let block = format!("C block {bm}x{bn}, computed by a {tile}x{tile} workgroup");
    svg.text(20, y0 + bm * cell + 25, &block, true);
    let marked =
        format!("blue, orange: the {wm}x{wn} sums of invocations (0,0) and (5,3), {tile} apart");
    svg.text(20, y0 + bm * cell + 45, &marked, true);
    Ok(svg.finish())
}
