//! PNG pictures of training: grids of sample images and loss curves.
//!
//! - [`save_grid`] / [`save_strip`]: a batch `[N, C, H, W]` in the flow's range
//!   `[-0.5, 0.5]` (as [`crate::Glow::sample`] returns it) laid out in a grid, 8-bit RGB.
//! - [`save_tensor_grid`] / [`save_sample_grids`]: the same for a tensor, and a model's
//!   samples at every temperature of [`TEMPERATURES`] (what a training run writes).
//! - [`save_loss_curve`]: a line plot of one or more series with axes, ticks, labels and
//!   a legend, drawn with the 5x7 font of [`crate::font`]; [`save_histogram`]: the same
//!   axes and legend around overlaid histograms (the `ood` example's).
//!
//! Everything is drawn on a plain RGB [`Canvas`] and written with the `png` crate; every
//! write is atomic ([`crate::atomic`]), so a viewer never sees half a picture.

use std::path::{Path, PathBuf};

use engine::{Error, Result, Tensor};

use crate::atomic::{io_error, write_atomic};
use crate::font;
use crate::model::Glow;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// A batch of images `[N, C, H, W]`, row-major, values in the flow's range `[-0.5, 0.5]`.
#[derive(Debug, Clone, Copy)]
pub struct ImageBatch<'a> {
    data: &'a [f32],
    shape: [usize; 4],
}

impl<'a> ImageBatch<'a> {
    /// Checks that `data` holds `[n, c, h, w]` values and that `c` is 1 (grey) or 3 (RGB).
    pub fn new(data: &'a [f32], shape: [usize; 4]) -> Result<Self> {
        let [n, c, h, w] = shape;
        if data.len() != n * c * h * w {
            return Err(Error::shape(
                "ImageBatch",
                format!("{} values do not make images {shape:?}", data.len()),
            ));
        }
        if c != 1 && c != 3 {
            return Err(Error::shape(
                "ImageBatch",
                format!("images need 1 or 3 channels, got {c}"),
            ));
        }
        Ok(ImageBatch { data, shape })
    }

    /// `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The colour of pixel `(x, y)` of image `k`: `(v + 0.5) · 255`, rounded and clamped
    /// to `0..=255` (NaN gives 0); a grey image repeats its channel.
    pub fn pixel(&self, k: usize, x: usize, y: usize) -> Rgb {
        let [_, c, h, w] = self.shape;
        let at = |ch: usize| to_byte(self.data[((k * c + ch) * h + y) * w + x]);
        if c == 1 {
            [at(0); 3]
        } else {
            [at(0), at(1), at(2)]
        }
    }
}

/// `[-0.5, 0.5] → 0..=255`.
fn to_byte(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0.
    ((v + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8
}

/// An 8-bit RGB picture, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A `width × height` picture filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Canvas {
        Canvas {
            width,
            height,
            pixels: background.repeat(width * height),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour at `(x, y)`, or `None` outside.
    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| {
            let i = 3 * (y * self.width + x);
            [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
        })
    }

    /// Sets `(x, y)`; points outside are ignored, so drawing needs no clipping.
    pub fn set(&mut self, x: usize, y: usize, colour: Rgb) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    /// Fills the rectangle `[x0, x1) × [y0, y1)`.
    pub fn fill_rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, colour: Rgb) {
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                self.set(x, y, colour);
            }
        }
    }

    /// A line from `(x0, y0)` to `(x1, y1)` (Bresenham), `thickness` pixels wide.
    pub fn line(&mut self, from: (i64, i64), to: (i64, i64), thickness: usize, colour: Rgb) {
        let ((mut x, mut y), (x1, y1)) = (from, to);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        let t = thickness.max(1) as i64;
        loop {
            for oy in 0..t {
                for ox in 0..t {
                    let (px, py) = (x + ox - t / 2, y + oy - t / 2);
                    if px >= 0 && py >= 0 {
                        self.set(px as usize, py as usize, colour);
                    }
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`.
    pub fn text(&mut self, text: &str, x: usize, y: usize, scale: usize, colour: Rgb) {
        font::render(text, x, y, scale, |px, py| self.set(px, py, colour));
    }

    /// The picture `factor` times larger each way, every pixel a `factor × factor` block
    /// (so pixels stay sharp; a factor of 0 or 1 gives a copy).
    pub fn upscaled(&self, factor: usize) -> Canvas {
        let k = factor.max(1);
        let mut out = Canvas::new(self.width * k, self.height * k, GRID_BACKGROUND);
        for y in 0..out.height {
            for x in 0..out.width {
                let i = 3 * ((y / k) * self.width + x / k);
                let o = 3 * (y * out.width + x);
                out.pixels[o..o + 3].copy_from_slice(&self.pixels[i..i + 3]);
            }
        }
        out
    }

    /// Writes the picture to `path` as an 8-bit RGB PNG, atomically.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (w, h) = match (u32::try_from(self.width), u32::try_from(self.height)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(Error::io(
                    path,
                    format!("cannot write a {}x{} picture", self.width, self.height),
                ))
            }
        };
        write_atomic(path, |tmp| {
            let file = std::fs::File::create(tmp)
                .map_err(|e| io_error(path, "creating the temporary file", e))?;
            let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| io_error(path, "writing the PNG", e))?;
            writer
                .write_image_data(&self.pixels)
                .map_err(|e| io_error(path, "writing the PNG", e))?;
            writer
                .finish()
                .map_err(|e| io_error(path, "writing the PNG", e))
        })
    }
}

/// Colour of the padding between grid cells.
pub const GRID_BACKGROUND: Rgb = [0, 0, 0];

/// Lays `images` out in rows of `columns` cells with `padding` pixels around every cell.
/// Cell `k` is at row `k / columns`, column `k % columns`; its top-left pixel is at
/// `(padding + col · (W + padding), padding + row · (H + padding))`.
pub fn grid(images: &ImageBatch, columns: usize, padding: usize) -> Result<Canvas> {
    let [n, _, h, w] = images.shape();
    if columns == 0 || n == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            "grid",
            format!(
                "need at least one column and a non-empty batch, got {columns} columns for {:?}",
                images.shape()
            ),
        ));
    }
    let columns = columns.min(n);
    let rows = n.div_ceil(columns);
    let mut canvas = Canvas::new(
        columns * w + (columns + 1) * padding,
        rows * h + (rows + 1) * padding,
        GRID_BACKGROUND,
    );
    for k in 0..n {
        let (x0, y0) = (
            padding + (k % columns) * (w + padding),
            padding + (k / columns) * (h + padding),
        );
        for y in 0..h {
            for x in 0..w {
                canvas.set(x0 + x, y0 + y, images.pixel(k, x, y));
            }
        }
    }
    Ok(canvas)
}

/// Writes `images` as a grid PNG (see [`grid`] for the layout).
pub fn save_grid(
    path: impl AsRef<Path>,
    images: &ImageBatch,
    columns: usize,
    padding: usize,
) -> Result<()> {
    grid(images, columns, padding)?.save_png(path)
}

/// Writes `images` side by side in one row.
pub fn save_strip(path: impl AsRef<Path>, images: &ImageBatch, padding: usize) -> Result<()> {
    save_grid(path, images, images.shape()[0], padding)
}

/// The temperatures of the paper's sample figure.
pub const TEMPERATURES: [f32; 8] = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Writes `images` `[N, 3, H, W]` (flow range) as a grid PNG with `columns` columns.
pub fn save_tensor_grid(path: &Path, images: &Tensor, columns: usize) -> Result<()> {
    tensor_grid(path, images, columns)?.save_png(path)
}

/// `images` `[N, C, H, W]` (flow range) as a grid with `columns` columns; `path` is named
/// in errors.
fn tensor_grid(path: &Path, images: &Tensor, columns: usize) -> Result<Canvas> {
    let s = images.shape();
    if s.len() != 4 {
        return Err(Error::io(
            path,
            format!("a grid needs images [N, C, H, W], got shape {s:?}"),
        ));
    }
    let data = images.to_vec()?;
    let batch = ImageBatch::new(&data, [s[0], s[1], s[2], s[3]])?;
    grid(&batch, columns, 2)
}

/// The largest picture [`save_samples`] draws, in pixels (about 400 MB of RGB).
pub const MAX_PICTURE_PIXELS: usize = 1 << 27;

/// What [`save_samples`] draws.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// Images per temperature.
    pub n: usize,
    /// Seed of the latent draws (the same draws at every temperature).
    pub seed: u64,
    /// One grid per temperature, in this order.
    pub temperatures: Vec<f32>,
    /// The class of every image, for a class-conditional model (`None`: image `i` is of
    /// class `i mod classes`); refused by an unconditional model.
    pub class: Option<usize>,
    /// Every picture this many times larger, pixels kept sharp (1: as drawn).
    pub upscale: usize,
}

impl SampleOptions {
    /// Why a model of `config` cannot draw these samples, if it cannot: a class it does
    /// not have (or any class, for an unconditional model), no images or no
    /// temperatures, two temperatures whose files would share a name (they are named to
    /// two decimals), or a picture (a grid, or the overview of up to 8 images a row,
    /// upscaled) over [`MAX_PICTURE_PIXELS`]. [`save_samples`] checks it first; a
    /// program can check its flags with it before it loads the model.
    pub fn check(&self, config: &crate::GlowConfig) -> std::result::Result<(), String> {
        let SampleOptions {
            n,
            ref temperatures,
            class,
            upscale,
            ..
        } = *self;
        let classes = config.num_classes;
        match (config.y_condition, class) {
            (true, Some(c)) if c >= classes => {
                return Err(format!(
                    "class {c} is not one of the model's {classes} classes"
                ))
            }
            (false, Some(_)) => {
                return Err("a class was asked for, but the model is not class-conditional".into())
            }
            _ => {}
        }
        if n == 0 || temperatures.is_empty() {
            return Err("nothing to draw: no images or no temperatures".into());
        }
        let name = |t: f32| format!("{t:.2}");
        for (i, &t) in temperatures.iter().enumerate() {
            if temperatures[..i].iter().any(|&u| name(u) == name(t)) {
                return Err(format!(
                    "temperature {t} repeats an earlier one (files are named to two decimals)"
                ));
            }
        }
        // An upscaled grid grows with the square of both.
        let [c, h, w] = config.image_shape;
        let side = (n as f64).sqrt().ceil();
        let grid = (side * (w + 2) as f64) * (side * (h + 2) as f64);
        let overview = (n.min(8) * (w + 2) + 64) as f64 * (temperatures.len() * (h + 2)) as f64;
        let pixels = grid.max(overview) * (upscale * upscale) as f64;
        if pixels > MAX_PICTURE_PIXELS as f64 {
            return Err(format!(
                "{n} images of {c}x{h}x{w} upscaled {upscale} times would make a picture of \
                 {pixels:.0} pixels, more than {MAX_PICTURE_PIXELS}; draw fewer or upscale less"
            ));
        }
        Ok(())
    }

    /// `n` images at each of the paper's [`TEMPERATURES`], drawn with `seed`.
    pub fn paper(n: usize, seed: u64) -> SampleOptions {
        SampleOptions {
            n,
            seed,
            temperatures: TEMPERATURES.to_vec(),
            class: None,
            upscale: 1,
        }
    }
}

/// Sample grids at every temperature of [`TEMPERATURES`]: one PNG per temperature
/// (`{prefix}_t{T}.png`, `n` images) and an overview with one row per temperature
/// (`{prefix}_all.png`), in `dir` (created if need be). Returns the paths written.
pub fn save_sample_grids(
    model: &Glow,
    dir: &Path,
    prefix: &str,
    n: usize,
    seed: u64,
) -> Result<Vec<PathBuf>> {
    save_samples(model, dir, prefix, &SampleOptions::paper(n, seed))
}

/// Sample grids as `options` says: one PNG per temperature (`{prefix}_t{T}.png`, `n`
/// images in a square-ish grid) and, for more than one temperature, an overview with one
/// row of up to 8 images per temperature, its temperature written on its left
/// (`{prefix}_all.png`), in `dir` (created if need be). Returns the paths written.
pub fn save_samples(
    model: &Glow,
    dir: &Path,
    prefix: &str,
    options: &SampleOptions,
) -> Result<Vec<PathBuf>> {
    let SampleOptions {
        n,
        seed,
        ref temperatures,
        class,
        upscale,
    } = *options;
    options
        .check(model.config())
        .map_err(|why| Error::invalid("samples", why))?;
    let classes = model.config().num_classes;
    let labels: Option<Vec<usize>> = match (model.config().y_condition, class) {
        (true, Some(c)) => Some(vec![c; n]),
        (true, None) => Some((0..n).map(|i| i % classes).collect()),
        (false, _) => None,
    };
    let name = |t: f32| format!("{prefix}_t{t:.2}.png");
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create the folder", e))?;
    let mut rows = Vec::new();
    let mut written = Vec::new();
    for &t in temperatures {
        let images = model.sample(n, t, labels.as_deref(), seed)?;
        let path = dir.join(name(t));
        let columns = (n as f64).sqrt().ceil() as usize;
        tensor_grid(&path, &images, columns)?
            .upscaled(upscale)
            .save_png(&path)?;
        written.push(path);
        rows.push(images.slice(0, 0, n.min(8))?);
    }
    if temperatures.len() > 1 {
        let all = Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0)?;
        let path = dir.join(format!("{prefix}_all.png"));
        let columns = n.min(8);
        let grid = tensor_grid(&path, &all, columns)?;
        // A margin on the left for "T=0.25", centred on each row.
        let label = |t: f32| format!("T={t:.2}");
        let widest = temperatures
            .iter()
            .map(|&t| label(t).len())
            .max()
            .unwrap_or(0);
        let margin = 2 + widest * font::ADVANCE;
        let mut canvas = Canvas::new(grid.width + margin, grid.height, GRID_BACKGROUND);
        for y in 0..grid.height {
            for x in 0..grid.width {
                let i = 3 * (y * grid.width + x);
                let o = 3 * (y * canvas.width + x + margin);
                canvas.pixels[o..o + 3].copy_from_slice(&grid.pixels[i..i + 3]);
            }
        }
        let row_height = all.shape()[2] + 2;
        for (r, &t) in temperatures.iter().enumerate() {
            let y = 2 + r * row_height + row_height.saturating_sub(font::HEIGHT + 2) / 2;
            canvas.text(&label(t), 2, y, 1, [255, 255, 255]);
        }
        canvas.upscaled(upscale).save_png(&path)?;
        written.push(path);
    }
    Ok(written)
}

/// Size and labels of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Picture width in pixels.
    pub width: usize,
    /// Picture height in pixels.
    pub height: usize,
    /// Drawn above the plot (empty: none).
    pub title: String,
    /// Drawn under the x axis.
    pub x_label: String,
    /// Drawn above the y axis.
    pub y_label: String,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 800,
            height: 500,
            title: String::new(),
            x_label: "step".into(),
            y_label: "loss".into(),
        }
    }
}

/// Line colours, one per series in order (repeating after the last).
pub const SERIES_COLOURS: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID_LINE: Rgb = [225, 225, 225];
/// Space for the y tick labels, the x tick labels and axis label, the title.
const MARGIN_LEFT: usize = 80;
const MARGIN_RIGHT: usize = 20;
const MARGIN_TOP: usize = 36;
const MARGIN_BOTTOM: usize = 56;

/// Where a plot's data lands in its picture: the data rectangle
/// `[x_min, x_max] × [y_min, y_max]` fills the pixel rectangle `[left, right] × [top,
/// bottom]` (y grows upwards in data, downwards in pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotFrame {
    /// Data range of the x axis.
    pub x_range: (f64, f64),
    /// Data range of the y axis.
    pub y_range: (f64, f64),
    /// Pixel column of `x_min`.
    pub left: usize,
    /// Pixel column of `x_max`.
    pub right: usize,
    /// Pixel row of `y_max`.
    pub top: usize,
    /// Pixel row of `y_min`.
    pub bottom: usize,
}

impl PlotFrame {
    /// The pixel `(column, row)` of data point `(x, y)` (unclamped, may lie outside).
    pub fn pixel(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x_range.0) / (self.x_range.1 - self.x_range.0);
        let fy = (y - self.y_range.0) / (self.y_range.1 - self.y_range.0);
        let px = self.left as f64 + fx * (self.right - self.left) as f64;
        let py = self.bottom as f64 - fy * (self.bottom - self.top) as f64;
        (px.round() as i64, py.round() as i64)
    }
}

/// Tick positions for `[lo, hi]`: multiples of a "nice" step (1, 2 or 5 × 10^k) giving
/// about `target` ticks, and the widened range that starts and ends on a tick.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64, (f64, f64)) {
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (start, end) = ((lo / step).floor(), (hi / step).ceil());
    let ticks = (0..=(end - start) as i64)
        .map(|i| (start + i as f64) * step)
        .collect();
    (ticks, step, (start * step, end * step))
}

/// A tick label with as many decimals as the tick step needs.
fn tick_label(v: f64, step: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || step < 1e-4) {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    // "-0.0" reads oddly on an axis.
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// The data range of the finite points of all series, widened when it is a single value.
fn data_range(series: &[(&str, &[(f64, f64)])], axis: fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, pts)| pts.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(axis)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.5 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    }
}

/// Series with at most this many points get a marker at each point.
const MAX_MARKED_POINTS: usize = 100;

/// Draws `series` (name, points `(step, value)`) as lines in [`SERIES_COLOURS`], with
/// axes, tick labels, axis labels and a legend. Non-finite points break a line. Returns
/// the data-to-pixel mapping.
pub fn loss_curve(
    series: &[(&str, &[(f64, f64)])],
    options: &PlotOptions,
) -> Result<(Canvas, PlotFrame)> {
    let x = data_range(series, |p| p.0);
    let y = data_range(series, |p| p.1);
    let (mut canvas, frame) = axes("loss_curve", x, y, options)?;
    // The series, each broken at non-finite points. Sparse series (an evaluation every
    // few hundred steps, or a single one) also get a 5x5 marker per point, so that a
    // lone point is visible.
    for (i, (_, points)) in series.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        let markers = points.len() <= MAX_MARKED_POINTS;
        let mut last: Option<(i64, i64)> = None;
        for &(x, y) in points.iter() {
            if !(x.is_finite() && y.is_finite()) {
                last = None;
                continue;
            }
            let p = frame.pixel(x, y);
            canvas.line(last.unwrap_or(p), p, 2, colour);
            if markers {
                let (px, py) = (p.0.max(2) as usize, p.1.max(2) as usize);
                canvas.fill_rect(px - 2, py - 2, px + 3, py + 3, colour);
            }
            last = Some(p);
        }
    }
    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    legend(&mut canvas, &frame, &names);
    Ok((canvas, frame))
}

/// Histograms of `series` (name, values) over `bins` common bins spanning every finite
/// value, each bar the fraction of its series' values in the bin, drawn translucent in
/// [`SERIES_COLOURS`] (so overlaps show) with an outline, with axes, labels and a
/// legend. Non-finite values are left out. Returns the data-to-pixel mapping.
pub fn histogram(
    series: &[(&str, &[f64])],
    bins: usize,
    options: &PlotOptions,
) -> Result<(Canvas, PlotFrame)> {
    if bins == 0 {
        return Err(Error::invalid("histogram", "needs at least one bin"));
    }
    let finite = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>()
    };
    let values: Vec<Vec<f64>> = series.iter().map(|(_, v)| finite(v)).collect();
    let points: Vec<(f64, f64)> = values.iter().flatten().map(|&v| (v, 0.0)).collect();
    let (lo, hi) = data_range(&[("", &points)], |p| p.0);
    let width = (hi - lo) / bins as f64;
    let fractions: Vec<Vec<f64>> = values
        .iter()
        .map(|v| {
            let mut counts = vec![0usize; bins];
            for &x in v {
                counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
            }
            let n = v.len().max(1) as f64;
            counts.into_iter().map(|c| c as f64 / n).collect()
        })
        .collect();
    let top = fractions.iter().flatten().fold(0.0f64, |m, &f| m.max(f));
    let (mut canvas, frame) = axes("histogram", (lo, hi), (0.0, top.max(1e-9)), options)?;
    for (i, bars) in fractions.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        for (b, &f) in bars.iter().enumerate() {
            if f == 0.0 {
                continue;
            }
            let (x0, y0) = frame.pixel(lo + b as f64 * width, f);
            let (x1, y1) = frame.pixel(lo + (b + 1) as f64 * width, 0.0);
            let (x0, x1, y0, y1) = (x0 as usize, x1 as usize, y0 as usize, y1 as usize);
            // Translucent fill: 40% of the colour over what is there.
            for y in y0..y1 {
                for x in x0..x1 {
                    if let Some(under) = canvas.get(x, y) {
                        let mix =
                            |k: usize| ((under[k] as u32 * 3 + colour[k] as u32 * 2) / 5) as u8;
                        canvas.set(x, y, [mix(0), mix(1), mix(2)]);
                    }
                }
            }
            canvas.fill_rect(x0, y0, x1 + 1, y0 + 2, colour);
            canvas.fill_rect(x0, y0, x0 + 1, y1, colour);
            canvas.fill_rect(x1, y0, x1 + 1, y1, colour);
        }
    }
    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    legend(&mut canvas, &frame, &names);
    Ok((canvas, frame))
}

/// Writes [`histogram`]'s plot to `path` as a PNG; returns its frame.
pub fn save_histogram(
    path: impl AsRef<Path>,
    series: &[(&str, &[f64])],
    bins: usize,
    options: &PlotOptions,
) -> Result<PlotFrame> {
    let (canvas, frame) = histogram(series, bins, options)?;
    canvas.save_png(path)?;
    Ok(frame)
}

/// A white picture of `options`' size with the plot frame for the data ranges `x` and
/// `y` (widened to whole ticks): grid lines, ticks and their labels, the frame, the axis
/// labels and the title. `op` names the caller in the error for too small a picture.
fn axes(
    op: &'static str,
    x: (f64, f64),
    y: (f64, f64),
    options: &PlotOptions,
) -> Result<(Canvas, PlotFrame)> {
    let (w, h) = (options.width, options.height);
    if w < MARGIN_LEFT + MARGIN_RIGHT + 100 || h < MARGIN_TOP + MARGIN_BOTTOM + 60 {
        return Err(Error::invalid(
            op,
            format!("a {w}x{h} picture is too small for a plot (at least 200x152)"),
        ));
    }
    let mut canvas = Canvas::new(w, h, WHITE);
    let (x_ticks, x_step, x_range) = nice_ticks(x.0, x.1, 8);
    let (y_ticks, y_step, y_range) = nice_ticks(y.0, y.1, 6);
    let frame = PlotFrame {
        x_range,
        y_range,
        left: MARGIN_LEFT,
        right: w - MARGIN_RIGHT,
        top: MARGIN_TOP,
        bottom: h - MARGIN_BOTTOM,
    };

    // Grid lines and ticks with labels.
    for &x in &x_ticks {
        let (px, _) = frame.pixel(x, 0.0);
        let px = px as usize;
        canvas.fill_rect(px, frame.top, px + 1, frame.bottom, GRID_LINE);
        canvas.fill_rect(px, frame.bottom, px + 1, frame.bottom + 6, INK);
        let label = tick_label(x, x_step);
        let half = font::text_width(&label, 1) / 2;
        canvas.text(&label, px.saturating_sub(half), frame.bottom + 10, 1, INK);
    }
    for &y in &y_ticks {
        let (_, py) = frame.pixel(0.0, y);
        let py = py as usize;
        canvas.fill_rect(frame.left, py, frame.right, py + 1, GRID_LINE);
        canvas.fill_rect(frame.left - 6, py, frame.left, py + 1, INK);
        let label = tick_label(y, y_step);
        let x = frame.left.saturating_sub(10 + font::text_width(&label, 1));
        canvas.text(&label, x, py.saturating_sub(font::HEIGHT / 2), 1, INK);
    }
    // The frame.
    canvas.fill_rect(frame.left, frame.top, frame.right + 1, frame.top + 1, INK);
    canvas.fill_rect(
        frame.left,
        frame.bottom,
        frame.right + 1,
        frame.bottom + 1,
        INK,
    );
    canvas.fill_rect(frame.left, frame.top, frame.left + 1, frame.bottom + 1, INK);
    canvas.fill_rect(
        frame.right,
        frame.top,
        frame.right + 1,
        frame.bottom + 1,
        INK,
    );
    // Labels.
    let centre = |text: &str, scale: usize| (w.saturating_sub(font::text_width(text, scale))) / 2;
    canvas.text(
        &options.x_label,
        centre(&options.x_label, 1),
        h - 20,
        1,
        INK,
    );
    canvas.text(&options.y_label, 8, frame.top - 14, 1, INK);
    canvas.text(&options.title, centre(&options.title, 2), 6, 2, INK);
    Ok((canvas, frame))
}

/// The legend of the series `names` in the top-right corner of `frame`: a swatch of each
/// one's colour and its name.
fn legend(canvas: &mut Canvas, frame: &PlotFrame, names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let text_w = names
        .iter()
        .map(|name| font::text_width(name, 1))
        .max()
        .unwrap_or(0);
    let (row_h, swatch) = (14, 20);
    let box_w = 8 + swatch + 6 + text_w + 8;
    let box_h = 6 + names.len() * row_h;
    let (x0, y0) = (frame.right.saturating_sub(box_w + 8), frame.top + 8);
    canvas.fill_rect(x0, y0, x0 + box_w, y0 + box_h, WHITE);
    canvas.fill_rect(x0, y0, x0 + box_w, y0 + 1, INK);
    canvas.fill_rect(x0, y0 + box_h, x0 + box_w, y0 + box_h + 1, INK);
    canvas.fill_rect(x0, y0, x0 + 1, y0 + box_h, INK);
    canvas.fill_rect(x0 + box_w, y0, x0 + box_w + 1, y0 + box_h + 1, INK);
    for (i, name) in names.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        let y = y0 + 6 + i * row_h;
        canvas.fill_rect(x0 + 8, y + 3, x0 + 8 + swatch, y + 5, colour);
        canvas.text(name, x0 + 8 + swatch + 6, y, 1, INK);
    }
}

/// Writes [`loss_curve`]'s plot of `series` to `path` as a PNG; returns its frame.
pub fn save_loss_curve(
    path: impl AsRef<Path>,
    series: &[(&str, &[(f64, f64)])],
    options: &PlotOptions,
) -> Result<PlotFrame> {
    let (canvas, frame) = loss_curve(series, options)?;
    canvas.save_png(path)?;
    Ok(frame)
}
