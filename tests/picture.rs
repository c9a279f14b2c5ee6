//! PNG output: sample grids land each image in its cell, loss curves draw their series
//! in their colours; files are decoded back with the `png` crate.

use std::path::Path;

use engine::Result;
use glow::picture::{
    grid, save_grid, save_histogram, save_loss_curve, save_strip, ImageBatch, PlotOptions,
    GRID_BACKGROUND, SERIES_COLOURS,
};
use glow_rs::testing::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("picture-{name}"))
}

/// Decodes an 8-bit RGB PNG: `(width, height, pixels)`.
fn decode(path: &Path) -> (usize, usize, Vec<u8>) {
    let file = std::fs::File::open(path).expect("open the PNG");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

fn at(pixels: &[u8], width: usize, x: usize, y: usize) -> [u8; 3] {
    let i = 3 * (y * width + x);
    [pixels[i], pixels[i + 1], pixels[i + 2]]
}

/// Image `k` of a batch `[n, 3, h, w]`: channel values `-0.5 + k/8`, `0`, `0.5`, except
/// pixel (1, 0) of channel 0, which is `+0.7` (clamps to 255).
fn batch(n: usize, h: usize, w: usize) -> Vec<f32> {
    let mut data = Vec::with_capacity(n * 3 * h * w);
    for k in 0..n {
        for ch in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    data.push(match (ch, x, y) {
                        (0, 1, 0) => 0.7,
                        (0, ..) => -0.5 + k as f32 / 8.0,
                        (1, ..) => 0.0,
                        _ => 0.5,
                    });
                }
            }
        }
    }
    data
}

#[test]
fn grid_puts_image_k_in_its_cell() -> Result<()> {
    let dir = scratch("grid");
    let (n, h, w, columns, pad) = (5, 4, 6, 3, 2);
    let data = batch(n, h, w);
    let images = ImageBatch::new(&data, [n, 3, h, w])?;
    let path = dir.join("grid.png");
    save_grid(&path, &images, columns, pad)?;

    let (width, height, px) = decode(&path);
    // 3 columns, 2 rows, padding around every cell.
    assert_eq!(width, 3 * w + 4 * pad);
    assert_eq!(height, 2 * h + 3 * pad);
    for k in 0..n {
        let (x0, y0) = (
            pad + (k % columns) * (w + pad),
            pad + (k / columns) * (h + pad),
        );
        // (-0.5 + k/8 + 0.5) · 255 = 31.875k, rounded; 0 → 128 (127.5 rounds up); 0.5 → 255.
        let red = [0, 32, 64, 96, 128][k];
        assert_eq!(at(&px, width, x0 + 3, y0 + 2), [red, 128, 255], "image {k}");
        assert_eq!(
            at(&px, width, x0 + 1, y0),
            [255, 128, 255],
            "clamped, image {k}"
        );
    }
    assert_eq!(at(&px, width, 0, 0), GRID_BACKGROUND);
    // The sixth cell is empty.
    let (x5, y5) = (pad + 2 * (w + pad), pad + (h + pad));
    assert_eq!(at(&px, width, x5 + 1, y5 + 1), GRID_BACKGROUND);

    // The strip is one row of all five.
    let strip = dir.join("strip.png");
    save_strip(&strip, &images, 1)?;
    let (sw, sh, _) = decode(&strip);
    assert_eq!((sw, sh), (5 * w + 6, h + 2));
    Ok(())
}

#[test]
fn grey_images_and_bad_shapes() -> Result<()> {
    let data = [-0.5, 0.5, f32::NAN, 2.0];
    let images = ImageBatch::new(&data, [1, 1, 2, 2])?;
    let canvas = grid(&images, 4, 0)?;
    assert_eq!((canvas.width(), canvas.height()), (2, 2));
    assert_eq!(canvas.get(0, 0), Some([0, 0, 0]));
    assert_eq!(canvas.get(1, 0), Some([255, 255, 255]));
    assert_eq!(canvas.get(0, 1), Some([0, 0, 0]), "NaN draws black");
    assert_eq!(canvas.get(1, 1), Some([255, 255, 255]), "clamped");
    assert!(ImageBatch::new(&data, [1, 1, 2, 3]).is_err());
    assert!(ImageBatch::new(&data, [1, 4, 1, 1]).is_err());
    assert!(grid(&images, 0, 1).is_err());
    Ok(())
}

#[test]
fn loss_curve_draws_each_series_in_its_colour() -> Result<()> {
    let dir = scratch("curve");
    // A flat series at 1.0 and a falling one that stays well below it.
    let flat: Vec<(f64, f64)> = (0..=100).map(|s| (s as f64 * 10.0, 1.0)).collect();
    let falling: Vec<(f64, f64)> = (0..=100)
        .map(|s| (s as f64 * 10.0, 0.5 * (-(s as f64) / 30.0).exp()))
        .collect();
    let path = dir.join("loss.png");
    let options = PlotOptions {
        title: "glow bits/dim".into(),
        ..PlotOptions::default()
    };
    let frame = save_loss_curve(
        &path,
        &[("train", &flat[..]), ("test", &falling[..])],
        &options,
    )?;
    let (width, height, px) = decode(&path);
    assert_eq!((width, height), (800, 500));
    assert!(frame.x_range.0 <= 0.0 && frame.x_range.1 >= 1000.0);
    assert!(frame.y_range.0 <= 0.0 && frame.y_range.1 >= 1.0);

    // Points on each line, away from the legend in the top-right corner.
    for (x, y, colour) in [
        (300.0, 1.0, SERIES_COLOURS[0]),
        (100.0, 1.0, SERIES_COLOURS[0]),
        (0.0, 0.5, SERIES_COLOURS[1]),
        (600.0, 0.5 * (-2.0f64).exp(), SERIES_COLOURS[1]),
    ] {
        let (col, row) = frame.pixel(x, y);
        assert_eq!(
            at(&px, width, col as usize, row as usize),
            colour,
            "({x}, {y}) at pixel ({col}, {row})"
        );
    }
    // The legend has a swatch of each colour; the background is white.
    let count = |c: [u8; 3]| px.chunks_exact(3).filter(|p| *p == c).count();
    assert!(count(SERIES_COLOURS[0]) > 600, "a long flat line");
    assert!(count(SERIES_COLOURS[1]) > 600);
    assert_eq!(at(&px, width, 2, height - 2), [255, 255, 255]);
    // The frame: the axes are drawn in dark ink (at y ≈ 0.75, where no series passes).
    let ink = at(
        &px,
        width,
        frame.left,
        frame.top + (frame.bottom - frame.top) / 4,
    );
    assert!(ink.iter().all(|&v| v < 100), "y axis {ink:?}");
    // Some tick label text sits left of the y axis.
    let dark_left = (0..frame.left - 8)
        .flat_map(|x| (frame.top..frame.bottom).map(move |y| (x, y)))
        .filter(|&(x, y)| at(&px, width, x, y).iter().all(|&v| v < 100))
        .count();
    assert!(dark_left > 20, "tick labels drawn: {dark_left} dark pixels");
    Ok(())
}

#[test]
fn a_lone_evaluation_point_gets_a_visible_marker() -> Result<()> {
    // A short run evaluates once, at its end: that single point must show.
    let dir = scratch("marker");
    let train: Vec<(f64, f64)> = (0..=200)
        .map(|s| (s as f64, 5.0 - s as f64 / 100.0))
        .collect();
    let test = [(200.0, 4.5)];
    let path = dir.join("m.png");
    let frame = save_loss_curve(
        &path,
        &[("train", &train[..]), ("test", &test[..])],
        &PlotOptions::default(),
    )?;
    let (width, _, px) = decode(&path);
    let (col, row) = frame.pixel(200.0, 4.5);
    let marked = (-2i64..=2)
        .flat_map(|dx| (-2i64..=2).map(move |dy| (dx, dy)))
        .filter(|&(dx, dy)| {
            at(&px, width, (col + dx) as usize, (row + dy) as usize) == SERIES_COLOURS[1]
        })
        .count();
    assert!(
        marked >= 20,
        "only {marked} of 25 marker pixels in the test colour"
    );
    Ok(())
}

#[test]
fn degenerate_series_do_not_panic() -> Result<()> {
    let dir = scratch("degenerate");
    let one = [(5.0, 2.0)];
    let broken = [
        (0.0, 1.0),
        (1.0, f64::NAN),
        (2.0, f64::INFINITY),
        (3.0, 1.5),
    ];
    for series in [
        vec![],
        vec![("one", &one[..])],
        vec![("broken", &broken[..]), ("empty", &[][..])],
    ] {
        save_loss_curve(dir.join("d.png"), &series, &PlotOptions::default())?;
        decode(&dir.join("d.png"));
    }
    let tiny = PlotOptions {
        width: 10,
        height: 10,
        ..PlotOptions::default()
    };
    assert!(save_loss_curve(dir.join("t.png"), &[], &tiny).is_err());
    Ok(())
}

/// What `SampleOptions::check` refuses, for `save_samples` and for the `sample` example
/// before it loads a model: a class the model lacks, repeated temperatures, nothing to
/// draw, and pictures over `MAX_PICTURE_PIXELS` (the grid's or the overview's).
#[test]
fn sample_options_are_checked_against_the_model() {
    use glow::picture::{SampleOptions, MAX_PICTURE_PIXELS};
    let plain = glow::GlowConfig::default();
    let conditional = glow::GlowConfig {
        y_condition: true,
        num_classes: 10,
        ..glow::GlowConfig::default()
    };
    let ok = SampleOptions::paper(16, 0);
    assert_eq!(ok.check(&plain), Ok(()));
    let class = |c| SampleOptions {
        class: Some(c),
        ..ok.clone()
    };
    assert_eq!(class(9).check(&conditional), Ok(()));
    assert!(class(10)
        .check(&conditional)
        .unwrap_err()
        .contains("10 classes"));
    assert!(class(0)
        .check(&plain)
        .unwrap_err()
        .contains("not class-conditional"));
    let temps = |t: Vec<f32>| SampleOptions {
        temperatures: t,
        ..ok.clone()
    };
    assert!(temps(vec![0.5, 0.501])
        .check(&plain)
        .unwrap_err()
        .contains("repeats"));
    assert!(temps(vec![]).check(&plain).is_err());
    assert!(SampleOptions { n: 0, ..ok.clone() }.check(&plain).is_err());
    // 4096 images of 32x32 upscaled 16 times: a grid of 64x64 cells of 34 pixels,
    // 2176² · 256 ≈ 1.2e9 pixels.
    let big = SampleOptions {
        n: 4096,
        upscale: 16,
        ..ok.clone()
    };
    let why = big.check(&plain).unwrap_err();
    assert!(why.contains(&MAX_PICTURE_PIXELS.to_string()), "{why}");
    // The overview alone: 8 images a row, one row per temperature; 1,000 temperatures
    // at upscale 16 is (8·34 + 64) × 1000·34 × 256 ≈ 2.9e9 pixels though a grid of one
    // image would be small.
    let many = SampleOptions {
        n: 8,
        upscale: 16,
        temperatures: (0..1000).map(|i| i as f32 / 100.0).collect(),
        ..ok.clone()
    };
    assert!(many.check(&plain).is_err());
}

#[test]
fn histograms_draw_each_series_as_translucent_bars_with_a_legend() -> Result<()> {
    let dir = scratch("histogram");
    // Two separated clusters: 0-1 (three values) and 4-5 (two), 5 bins over [0, 5].
    let low = [0.1, 0.2, 0.9];
    let high = [4.2, 5.0];
    let path = dir.join("h.png");
    let options = PlotOptions {
        x_label: "bits/dim".into(),
        y_label: "fraction".into(),
        ..PlotOptions::default()
    };
    let frame = save_histogram(
        &path,
        &[("low", &low[..]), ("high", &high[..])],
        5,
        &options,
    )?;
    let (width, _, px) = decode(&path);
    // Five bins over [0.1, 5.0], 0.98 wide: "low" has all its values in bin 0 (fraction
    // 1), "high" in bin 4 (fraction 1); bins 1-3 are empty.
    let inside = |x: f64, y: f64| {
        let (c, r) = frame.pixel(x, y);
        at(&px, width, c as usize, r as usize)
    };
    let tint = |c: [u8; 3]| c.map(|v| ((255 * 3 + v as u32 * 2) / 5) as u8);
    // Inside a bar, under its outline, away from the legend.
    assert_eq!(inside(0.5, 0.5), tint(SERIES_COLOURS[0]));
    assert_eq!(inside(4.5, 0.3), tint(SERIES_COLOURS[1]));
    assert_eq!(inside(2.5, 0.5), [255, 255, 255], "an empty bin");
    // Each bar's top edge is the series' colour, at the fraction 1.
    let (c, r) = frame.pixel(0.5, 1.0);
    assert_eq!(at(&px, width, c as usize, r as usize), SERIES_COLOURS[0]);
    assert!(frame.y_range.1 >= 1.0 && frame.y_range.0 == 0.0);
    assert!(save_histogram(dir.join("none.png"), &[("a", &low[..])], 0, &options).is_err());
    Ok(())
}

#[test]
fn the_committed_tour_pictures_are_what_the_code_draws() {
    // docs/pictures/ is written by `cargo run --example pictures`; a change to what a
    // picture shows (the tape's walk, Glow's shapes, the GEMM tile) must be redrawn.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pictures");
    for (name, svg) in glow_rs::pictures::all().unwrap() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == svg,
            "docs/pictures/{name} is not what glow_rs::pictures draws: run `cargo run --example pictures`"
        );
    }
}
