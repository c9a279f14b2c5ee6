//! The loaders of the datasets beyond CIFAR-10 (`glow::data::{mnist, cifar100, svhn,
//! imagenet, folder}`), on
//! small files in each official format that the tests write (`tests/formats/`): shapes,
//! labels, pixel values, padding, and a clear error naming the file, never a panic, for
//! truncated and malformed files; and a model of each geometry training a few steps on
//! every device. `tests/fuzz_loaders.rs` fuzzes the same loaders.

mod formats;

use std::path::Path;

use glow::data::cifar100::{Cifar100, Labels};
use glow::data::folder::{FolderOptions, ImageFolder};
use glow::data::imagenet::{self, ImageNet};
use glow::data::mnist::{Mnist, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use glow::data::svhn::{self, Svhn};
use glow::data::ImageSplits;
use glow::engine::backend::AdamKind;
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Dequantization, Glow, GlowConfig};
use glow_rs::device_test;
use glow_rs::testing::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("datasets-{name}"))
}

/// The error's message, printed (see them with `-- --nocapture`), after checking that it
/// names `file`.
fn names(err: glow::engine::Error, file: &Path) -> String {
    let msg = err.to_string();
    eprintln!("error message: {msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    msg
}

// ---------------------------------------------------------------------------------------
// MNIST

#[test]
fn mnist_is_padded_to_32_with_zeros_and_keeps_every_pixel() {
    let dir = scratch("mnist");
    formats::write_mnist(&dir, 5, 3, false);
    let data = Mnist::load(&dir, true).unwrap();
    assert_eq!(data.image_shape(), [1, 32, 32]);
    assert_eq!((data.train.len(), data.test.len()), (5, 3));
    assert_eq!(data.num_classes(), 10);
    for (tag, split) in [(0, &data.train), (1, &data.test)] {
        for i in 0..split.len() {
            assert_eq!(split.labels[i], u16::from(formats::digit_label(tag, i)));
            let img = split.image(i);
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (2..30).contains(&y) && (2..30).contains(&x);
                    let want = if inside {
                        formats::digit_pixel(tag, i, (y - 2) * 28 + (x - 2))
                    } else {
                        0
                    };
                    assert_eq!(img[y * 32 + x], want, "split {tag} image {i} ({y}, {x})");
                }
            }
        }
    }
    assert!(data.describe().contains("padded"), "{}", data.describe());
}

#[test]
fn mnist_reads_gzip_and_the_28x28_originals() {
    let (plain, gz) = (scratch("mnist-plain"), scratch("mnist-gz"));
    formats::write_mnist(&plain, 4, 2, false);
    formats::write_mnist(&gz, 4, 2, true);
    let a = Mnist::load(&plain, false).unwrap();
    let b = Mnist::load(&gz, false).unwrap();
    assert_eq!(a.image_shape(), [1, 28, 28]);
    assert_eq!((a.train.clone(), a.test.clone()), (b.train, b.test));
    for i in 0..4 {
        let want: Vec<u8> = (0..784).map(|p| formats::digit_pixel(0, i, p)).collect();
        assert_eq!(a.train.image(i), &want[..]);
    }
}

#[test]
fn mnist_files_that_are_not_mnist_are_refused_naming_the_file() {
    let (images, labels) = formats::mnist_files(3, 0);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty", TRAIN_IMAGES, vec![], "not an IDX file"),
        (
            "magic",
            TRAIN_IMAGES,
            [&[1u8][..], &images[1..]].concat(),
            "not an IDX file",
        ),
        (
            "type",
            TRAIN_IMAGES,
            [&images[..2], &[0x0d], &images[3..]].concat(),
            "type 0x0d",
        ),
        (
            "rank",
            TRAIN_LABELS,
            images.clone(),
            "3 dimensions, expected 1",
        ),
        ("header", TRAIN_IMAGES, images[..9].to_vec(), "header"),
        (
            "short",
            TRAIN_IMAGES,
            images[..images.len() - 1].to_vec(),
            "need 2352 values",
        ),
        (
            "long",
            TRAIN_LABELS,
            [&labels[..], &[0]].concat(),
            "need 3 values",
        ),
        (
            "size",
            TRAIN_IMAGES,
            formats::idx(&[3, 27, 28], &[0; 3 * 27 * 28]),
            "27x28",
        ),
        (
            "count",
            TRAIN_LABELS,
            formats::idx(&[2], &[0, 1]),
            "2 labels for the 3 images",
        ),
        (
            "label",
            TRAIN_LABELS,
            formats::idx(&[3], &[0, 10, 1]),
            "label 1 is 10",
        ),
        (
            "gzip",
            TEST_IMAGES,
            formats::gzip(&images)[..30].to_vec(),
            "damaged gzip",
        ),
    ];
    for (name, file, bytes, want) in cases {
        let dir = scratch(&format!("mnist-bad-{name}"));
        formats::write_mnist(&dir, 3, 3, false);
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        let msg = names(Mnist::load(&dir, true).unwrap_err(), &path);
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let dir = scratch("mnist-missing");
    formats::write_mnist(&dir, 3, 3, true);
    std::fs::remove_file(dir.join(format!("{TEST_LABELS}.gz"))).unwrap();
    let msg = names(Mnist::load(&dir, true).unwrap_err(), &dir.join(TEST_LABELS));
    assert!(msg.contains("missing"), "{msg}");
    let file = dir.join(format!("{TRAIN_IMAGES}.gz"));
    let msg = names(Mnist::load(&file, true).unwrap_err(), &file);
    assert!(msg.contains("not a directory"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// CIFAR-100

fn write_cifar100(dir: &Path, train: usize, test: usize) {
    std::fs::write(dir.join("train.bin"), formats::cifar100_records(train, 0)).unwrap();
    std::fs::write(dir.join("test.bin"), formats::cifar100_records(test, 1)).unwrap();
}

#[test]
fn cifar100_keeps_the_fine_or_the_coarse_labels() {
    let root = scratch("cifar100");
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir(&dir).unwrap();
    write_cifar100(&dir, 6, 4);
    for labels in [Labels::Fine, Labels::Coarse] {
        // The folder the archive unpacks into, or the one holding the files.
        for path in [root.to_path_buf(), dir.clone()] {
            let data = Cifar100::load(&path, labels).unwrap();
            assert_eq!(data.image_shape(), [3, 32, 32]);
            assert_eq!(data.num_classes(), labels.count());
            for (tag, split, n) in [(0, &data.train, 6), (1, &data.test, 4)] {
                assert_eq!(split.len(), n);
                for i in 0..n {
                    let (coarse, fine) = formats::cifar100_labels(tag, i);
                    let want = if labels == Labels::Fine { fine } else { coarse };
                    assert_eq!(split.labels[i], u16::from(want));
                    let px: Vec<u8> = (0..3072)
                        .map(|p| formats::cifar100_pixel(tag, i, p))
                        .collect();
                    assert_eq!(split.image(i), &px[..]);
                }
            }
        }
    }
}

#[test]
fn cifar100_files_that_are_not_cifar100_are_refused_naming_the_file() {
    let records = formats::cifar100_records(2, 0);
    let mut coarse = records.clone();
    coarse[3074] = 20;
    let mut fine = records.clone();
    fine[1] = 100;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty", "train.bin", vec![], "not a whole number"),
        ("short", "test.bin", records[..6000].to_vec(), "6000 bytes"),
        (
            "cifar10",
            "train.bin",
            vec![0; 3073 * 2],
            "3074-byte records",
        ),
        ("coarse", "train.bin", coarse, "record 1 (byte 3074)"),
        ("fine", "test.bin", fine, "record 0"),
    ];
    for (name, file, bytes, want) in cases {
        let dir = scratch(&format!("cifar100-bad-{name}"));
        write_cifar100(&dir, 2, 2);
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        let msg = names(Cifar100::load(&dir, Labels::Fine).unwrap_err(), &path);
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let dir = scratch("cifar100-missing");
    std::fs::write(dir.join("train.bin"), &records).unwrap();
    names(
        Cifar100::load(&dir, Labels::Fine).unwrap_err(),
        &dir.join("test.bin"),
    );
}

// ---------------------------------------------------------------------------------------
// Every geometry the loaders give trains, on every device.

device_test!(fn a_model_of_each_geometry_trains_a_few_steps(dev) {
    // MNIST (padded and not; one channel), CIFAR-100, a folder of pictures at 64x64 RGB
    // and at 128x128 greyscale: the images of each loader, a small class-conditional
    // model of their shape with the most levels the size allows (at most 3), five Adamax
    // steps on one batch. The loss must fall.
    let dir = scratch("geometry-mnist");
    formats::write_mnist(&dir, 4, 2, true);
    let cifar = scratch("geometry-cifar100");
    write_cifar100(&cifar, 4, 2);
    let pictures = scratch("geometry-folder");
    for i in 0..4u32 {
        let bytes = formats::picture(40 + 9 * i, 50, i % 2 == 1, |x, y| rgb(x * (i + 1), y));
        std::fs::write(pictures.join(format!("{i}.png")), bytes).unwrap();
    }
    let datasets: Vec<(Box<dyn ImageSplits>, usize)> = vec![
        (Box::new(Mnist::load(&dir, true)?), 3),
        (Box::new(Mnist::load(&dir, false)?), 2),
        (Box::new(Cifar100::load(&cifar, Labels::Fine)?), 3),
        (Box::new(ImageFolder::load(&pictures, folder_options(64, 3, false))?), 3),
        (Box::new(ImageFolder::load(&pictures, folder_options(128, 1, false))?), 3),
    ];
    for (data, levels) in &datasets {
        let train = data.train();
        let cfg = GlowConfig {
            image_shape: train.shape,
            levels: *levels,
            depth: 1,
            hidden: 8,
            learn_top: true,
            y_condition: true,
            num_classes: data.num_classes(),
            ..GlowConfig::default()
        };
        let model = Glow::new(cfg, dev)?;
        let batch = [0, 1, 2, 3];
        let (pixels, labels) = train.batch(&batch);
        let x = model.preprocess(&pixels, batch.len(), Dequantization::Midpoint)?;
        let loss = |m: &Glow| -> glow::engine::Result<f32> {
            Ok(m.loss(&x, Some(&labels))?.0.to_vec()?[0])
        };
        let before = loss(&model)?;
        let mut opt = Optimizer::new(OptimizerConfig {
            kind: AdamKind::Adamax,
            lr: 1e-2,
            ..Default::default()
        });
        for _ in 0..5 {
            let grads = model.loss(&x, Some(&labels))?.0.backward()?;
            opt.step(&model.trainable_params(), &grads)?;
        }
        let after = loss(&model)?;
        assert!(
            after.is_finite() && after < before,
            "{:?} on {}: loss {before} -> {after}",
            train.shape,
            dev.name()
        );
    }
    Ok(())
});

// ---------------------------------------------------------------------------------------
// SVHN

#[test]
fn svhn_images_come_out_row_major_with_0_for_label_10() {
    for (compress, plain_doubles) in [(true, false), (false, true), (false, false)] {
        let dir = scratch("svhn");
        std::fs::write(
            dir.join(svhn::TRAIN_FILE),
            formats::svhn_file(11, 0, compress, plain_doubles),
        )
        .unwrap();
        std::fs::write(
            dir.join(svhn::TEST_FILE),
            formats::svhn_file(3, 1, compress, plain_doubles),
        )
        .unwrap();
        let data = Svhn::load(&dir).unwrap();
        assert_eq!(data.image_shape(), [3, 32, 32]);
        for (tag, split, n) in [(0, &data.train, 11), (1, &data.test, 3)] {
            assert_eq!(split.len(), n);
            for i in 0..n {
                assert_eq!(split.labels[i], u16::from(formats::svhn_label(tag, i) % 10));
                let img = split.image(i);
                for ch in 0..3 {
                    for r in 0..32 {
                        for c in 0..32 {
                            assert_eq!(
                                img[ch * 1024 + r * 32 + c],
                                formats::svhn_pixel(tag, i, r, c, ch),
                                "image {i} channel {ch} ({r}, {c})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn svhn_files_that_are_not_svhn_are_refused_naming_the_file() {
    use formats::{mat_array, mat_file, MatValues};
    let good = formats::svhn_file(2, 0, true, false);
    let x = mat_array("X", &[32, 32, 3, 2], MatValues::UInt8(&[0; 6144]));
    let y = |v: &[u8]| mat_array("y", &[v.len() as i32, 1], MatValues::DoubleAsUInt8(v));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a MATLAB v5 file"),
        (
            "endian",
            [&good[..126], b"XX", &good[128..]].concat(),
            "endian indicator",
        ),
        (
            "inflate",
            [&good[..140], &[0xff; 8][..], &good[148..]].concat(),
            "damaged compressed",
        ),
        ("text", b"X = [1 2 3]".repeat(20), "not a MATLAB v5 file"),
        ("truncated", good[..good.len() / 2].to_vec(), "cut short"),
        (
            "no-y",
            mat_file(std::slice::from_ref(&x), false),
            "no array named y",
        ),
        (
            "shape",
            mat_file(
                &[
                    mat_array("X", &[32, 32, 2], MatValues::UInt8(&[0; 2048])),
                    y(&[1]),
                ],
                false,
            ),
            "X is [32, 32, 2]",
        ),
        (
            "type",
            mat_file(
                &[
                    mat_array("X", &[32, 32, 3, 1], MatValues::Double(&[0.0; 3072])),
                    y(&[1]),
                ],
                false,
            ),
            "not an array of uint8",
        ),
        (
            "count",
            mat_file(&[x.clone(), y(&[1, 2, 3])], false),
            "one label for each",
        ),
        (
            "label",
            mat_file(&[x.clone(), y(&[1, 11])], false),
            "label 1 is 11",
        ),
        (
            "zero",
            mat_file(&[x.clone(), y(&[0, 1])], true),
            "label 0 is 0",
        ),
    ];
    for (name, bytes, want) in cases {
        let dir = scratch(&format!("svhn-bad-{name}"));
        std::fs::write(dir.join(svhn::TRAIN_FILE), &good).unwrap();
        let path = dir.join(svhn::TEST_FILE);
        std::fs::write(&path, bytes).unwrap();
        let msg = names(Svhn::load(&dir).unwrap_err(), &path);
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------
// Downsampled ImageNet

#[test]
fn imagenet_reads_every_batch_in_order_at_either_size() {
    for side in [32, 64] {
        let root = scratch("imagenet");
        let (train_dir, val_dir) = (
            root.join("Imagenet_train_npz"),
            root.join("Imagenet_val_npz"),
        );
        std::fs::create_dir(&train_dir).unwrap();
        std::fs::create_dir(&val_dir).unwrap();
        // Batches 1 and 3 (stored and deflated), and the validation file.
        std::fs::write(
            train_dir.join(imagenet::train_file(3)),
            formats::imagenet_batch(2, side, 3, true),
        )
        .unwrap();
        std::fs::write(
            train_dir.join(imagenet::train_file(1)),
            formats::imagenet_batch(3, side, 1, false),
        )
        .unwrap();
        std::fs::write(
            val_dir.join(imagenet::TEST_FILE),
            formats::imagenet_batch(2, side, 9, true),
        )
        .unwrap();
        let data = ImageNet::load(&root, side).unwrap();
        assert_eq!(data.image_shape(), [3, side, side]);
        assert_eq!(data.num_classes(), 1000);
        let want: Vec<(u8, usize)> = [(1, 0), (1, 1), (1, 2), (3, 0), (3, 1)].to_vec();
        for (split, want) in [(&data.train, want), (&data.test, vec![(9, 0), (9, 1)])] {
            assert_eq!(split.len(), want.len());
            for (j, &(tag, i)) in want.iter().enumerate() {
                assert_eq!(
                    i64::from(split.labels[j]),
                    formats::imagenet_label(tag, i) - 1
                );
                let px: Vec<u8> = (0..3 * side * side)
                    .map(|p| formats::imagenet_pixel(tag, i, p))
                    .collect();
                assert_eq!(split.image(j), &px[..], "image {j}");
            }
        }
        // The other size's files are refused, naming the file and the size.
        let other = if side == 32 { 64 } else { 32 };
        let msg = names(
            ImageNet::load(&root, other).unwrap_err(),
            &train_dir.join(imagenet::train_file(1)),
        );
        assert!(msg.contains("is it the other size?"), "{msg}");
    }
}

#[test]
fn imagenet_files_that_are_not_imagenet_are_refused_naming_the_file() {
    use formats::{npy, npz};
    let data = npy("|u1", &[2, 3072], &[0; 6144]);
    let labels = |v: &[i64]| {
        npy(
            "<i8",
            &[v.len()],
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
    };
    let good = formats::imagenet_batch(2, 32, 0, true);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a .npz (zip) archive"),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "not a .npz (zip) archive",
        ),
        (
            "no-labels",
            npz(&[("data.npy", data.clone())], false),
            "no labels.npy",
        ),
        (
            "not-npy",
            npz(
                &[
                    ("data.npy", b"hello".repeat(9)),
                    ("labels.npy", labels(&[1, 2])),
                ],
                false,
            ),
            "data.npy",
        ),
        (
            "float",
            npz(
                &[
                    ("data.npy", npy("<f4", &[2, 3072], &[0; 24576])),
                    ("labels.npy", labels(&[1, 2])),
                ],
                true,
            ),
            "expected integers",
        ),
        (
            "short",
            npz(
                &[
                    ("data.npy", npy("|u1", &[2, 3072], &[0; 6000])),
                    ("labels.npy", labels(&[1, 2])),
                ],
                false,
            ),
            "needs 6144 bytes",
        ),
        (
            "count",
            npz(
                &[
                    ("data.npy", data.clone()),
                    ("labels.npy", labels(&[1, 2, 3])),
                ],
                false,
            ),
            "one label for each image",
        ),
        (
            "label",
            npz(
                &[
                    ("data.npy", data.clone()),
                    ("labels.npy", labels(&[1, 1001])),
                ],
                false,
            ),
            "label 1 is 1001",
        ),
        (
            "zero",
            npz(
                &[("data.npy", data.clone()), ("labels.npy", labels(&[0, 5]))],
                false,
            ),
            "label 0 is 0",
        ),
        (
            "negative",
            npz(
                &[("data.npy", data.clone()), ("labels.npy", labels(&[-3, 5]))],
                false,
            ),
            "label 0 is -3",
        ),
    ];
    for (name, bytes, want) in cases {
        let dir = scratch(&format!("imagenet-bad-{name}"));
        std::fs::write(dir.join(imagenet::train_file(1)), &good).unwrap();
        let path = dir.join(imagenet::TEST_FILE);
        std::fs::write(&path, bytes).unwrap();
        let msg = names(ImageNet::load(&dir, 32).unwrap_err(), &path);
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let dir = scratch("imagenet-no-val");
    std::fs::write(dir.join(imagenet::train_file(2)), &good).unwrap();
    let msg = names(ImageNet::load(&dir, 32).unwrap_err(), &dir);
    assert!(msg.contains("no val_data.npz"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// A folder of pictures

fn folder_options(size: usize, channels: usize, class_folders: bool) -> FolderOptions {
    FolderOptions {
        size,
        channels,
        class_folders,
    }
}

/// A pixel with distinct values per position and channel.
fn rgb(x: u32, y: u32) -> [u8; 3] {
    [
        (x * 40 + y) as u8,
        (y * 40 + x + 7) as u8,
        (x * 9 + y * 13 + 100) as u8,
    ]
}

#[test]
fn a_folder_gives_the_central_square_planar_and_every_tenth_picture_held_out() {
    let dir = scratch("folder");
    // Twelve 6x4 pictures (PNG) and a hidden one, a text file and a JPEG in a subfolder.
    // Picture i has blue i at (1, 0), the first pixel of its central square (columns
    // 1..5), so which one went where can be read back.
    let pixel = |i: u32| {
        move |x: u32, y: u32| match (x, y) {
            (1, 0) => [0, 0, i as u8],
            _ => rgb(x, y),
        }
    };
    for i in 0..12 {
        let picture = formats::picture(6, 4, false, pixel(i));
        std::fs::write(dir.join(format!("p{i:02}.png")), picture).unwrap();
    }
    std::fs::write(dir.join(".hidden.png"), b"not looked at").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a picture").unwrap();
    std::fs::create_dir(dir.join("more")).unwrap();
    std::fs::write(
        dir.join("more/q.JPG"),
        formats::picture(5, 9, true, |_, _| [200, 100, 50]),
    )
    .unwrap();
    // At the central square's own size, the resize keeps every value.
    let data = ImageFolder::load(&dir, folder_options(4, 3, false)).unwrap();
    assert_eq!(data.image_shape(), [3, 4, 4]);
    assert_eq!(
        (data.train.len(), data.test.len(), data.num_classes()),
        (12, 1, 1)
    );
    // Path order: more/q.JPG first ("more" < "p00.png"), then p00 … p11, of which the
    // 10th picture, p08, is held out.
    let img = data.train.image(1);
    for ch in 0..3 {
        for y in 0..4 {
            for x in 0..4 {
                // Columns 1..5 of 0..6.
                assert_eq!(
                    img[ch * 16 + y * 4 + x],
                    pixel(0)(x as u32 + 1, y as u32)[ch],
                    "({ch}, {y}, {x})"
                );
            }
        }
    }
    let number = |img: &[u8]| img[2 * 16];
    assert_eq!(
        number(data.test.image(0)),
        8,
        "the 10th picture is held out"
    );
    let trained: Vec<u8> = (1..12).map(|i| number(data.train.image(i))).collect();
    assert_eq!(trained, [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11]);
    // q, a solid colour (JPEG), is solid after any resize.
    let data = ImageFolder::load(&dir, folder_options(8, 3, false)).unwrap();
    let q = data.train.image(0);
    for (ch, want) in [200i32, 100, 50].into_iter().enumerate() {
        assert!(
            q[ch * 64..(ch + 1) * 64]
                .iter()
                .all(|&v| (i32::from(v) - want).abs() <= 3),
            "{q:?}"
        );
    }
    // Greyscale: one channel.
    let grey = ImageFolder::load(&dir, folder_options(16, 1, false)).unwrap();
    assert_eq!(grey.image_shape(), [1, 16, 16]);
}

#[test]
fn class_folders_label_pictures_and_train_test_folders_split_them() {
    let dir = scratch("folder-classes");
    for (class, n) in [("cats", 3), ("dogs", 2)] {
        for split in ["train", "test"] {
            std::fs::create_dir_all(dir.join(split).join(class)).unwrap();
            for i in 0..n {
                let path = dir.join(split).join(class).join(format!("{i}.png"));
                std::fs::write(path, formats::picture(3, 3, false, rgb)).unwrap();
            }
        }
    }
    let data = ImageFolder::load(&dir, folder_options(2, 3, true)).unwrap();
    assert_eq!(data.classes, ["cats", "dogs"]);
    assert_eq!(data.train.labels, [0, 0, 0, 1, 1]);
    assert_eq!(data.test.labels, [0, 0, 0, 1, 1]);
    assert_eq!(data.class_name(1), "dogs");
    // A test class the training split lacks, and a picture outside the class folders.
    std::fs::create_dir(dir.join("test/birds")).unwrap();
    names(
        ImageFolder::load(&dir, folder_options(2, 3, true)).unwrap_err(),
        &dir.join("test/birds"),
    );
    std::fs::remove_dir(dir.join("test/birds")).unwrap();
    let stray = dir.join("train/stray.png");
    std::fs::write(&stray, formats::picture(3, 3, false, rgb)).unwrap();
    let msg = names(
        ImageFolder::load(&dir, folder_options(2, 3, true)).unwrap_err(),
        &stray,
    );
    assert!(msg.contains("outside the class subfolders"), "{msg}");
}

#[test]
fn pictures_that_do_not_decode_are_refused_naming_the_file() {
    let png = formats::picture(8, 8, false, rgb);
    let jpeg = formats::picture(8, 8, true, rgb);
    for (name, bytes) in [
        ("cut.png", png[..png.len() / 2].to_vec()),
        ("cut.jpg", jpeg[..jpeg.len() / 3].to_vec()),
        ("text.png", b"hello".to_vec()),
        ("empty.jpeg", vec![]),
    ] {
        let dir = scratch("folder-bad");
        std::fs::write(dir.join("a.png"), &png).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        names(
            ImageFolder::load(&dir, folder_options(4, 3, false)).unwrap_err(),
            &path,
        );
    }
    let empty = scratch("folder-empty");
    let msg = names(
        ImageFolder::load(&empty, folder_options(4, 3, false)).unwrap_err(),
        &empty,
    );
    assert!(msg.contains("no .png, .jpg or .jpeg"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// The ood example, end to end.

#[test]
fn the_ood_example_scores_two_folders_and_draws_them() {
    use std::process::Command;
    let base = scratch("ood");
    let (smooth, noise) = (base.join("smooth"), base.join("noise"));
    std::fs::create_dir(&smooth).unwrap();
    std::fs::create_dir(&noise).unwrap();
    // Gentle gradients to train on; speckle, which no model of them finds likely.
    for i in 0..50u32 {
        let g = formats::picture(8, 8, false, |x, y| {
            [(x * 8 + i) as u8, (y * 8 + 40) as u8, 90]
        });
        std::fs::write(smooth.join(format!("{i:02}.png")), g).unwrap();
        let n = formats::picture(8, 8, false, |x, y| {
            let h = (x * 7919 + y * 104_729 + i * 1_299_709).wrapping_mul(2_654_435_761);
            [(h >> 24) as u8, (h >> 16) as u8, (h >> 8) as u8]
        });
        std::fs::write(noise.join(format!("{i:02}.png")), n).unwrap();
    }
    let run = base.join("run");
    let folder = |data: &Path| -> Vec<String> {
        ["--dataset", "folder", "--image-size", "8", "--data"]
            .map(String::from)
            .into_iter()
            .chain([data.display().to_string()])
            .collect()
    };
    let trained = Command::new(glow_rs::testing::example_binary("train"))
        .args(folder(&smooth))
        .args([
            "--device", "cpu", "--levels", "2", "--depth", "1", "--hidden", "8",
        ])
        .args([
            "--batch",
            "8",
            "--steps",
            "20",
            "--eval-every",
            "0",
            "--sample-every",
            "0",
        ])
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let png = base.join("ood.png");
    let ood = |extra: &[&str]| {
        Command::new(glow_rs::testing::example_binary("ood"))
            .arg("--checkpoint")
            .arg(run.join("checkpoint.safetensors"))
            .args(folder(&smooth))
            .args(["--device", "cpu", "--ood-dataset", "folder", "--ood-data"])
            .arg(&noise)
            .arg("--out")
            .arg(&png)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = ood(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["in"]["images"], 5);
    assert_eq!(summary["out"]["images"], 5);
    let (inside, outside) = (
        summary["in"]["mean_bpd"].as_f64().unwrap(),
        summary["out"]["mean_bpd"].as_f64().unwrap(),
    );
    assert!(
        outside > inside,
        "noise {outside} bits/dim, the training pictures {inside}"
    );
    assert!(summary["auroc"].as_f64().unwrap() > 0.9, "{summary}");
    assert!(png.is_file());
    // --max-images takes the first images of each.
    let first = ood(&["--max-images", "1"]);
    assert!(first.status.success());
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (
            first["in"]["images"].clone(),
            first["out"]["images"].clone()
        ),
        (1.into(), 1.into())
    );
    // A dataset of another image shape is refused (exit 2), naming both shapes.
    let mnist = base.join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    formats::write_mnist(&mnist, 3, 2, true);
    let wrong = Command::new(glow_rs::testing::example_binary("ood"))
        .arg("--checkpoint")
        .arg(run.join("checkpoint.safetensors"))
        .args(folder(&smooth))
        .args(["--device", "cpu", "--ood-dataset", "mnist", "--ood-data"])
        .arg(&mnist)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("[1, 32, 32]") && err.contains("[3, 8, 8]"),
        "{err}"
    );
}
