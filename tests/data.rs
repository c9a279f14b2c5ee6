//! The CIFAR-10 pipeline: the loader's errors, the shipped sample and its split, epoch
//! orders, flips, and the download against a loopback HTTP server.
//!
//! Run with `cargo test --test data`. Nothing here leaves the machine: the download test
//! serves its own small archive from `127.0.0.1`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glow::data::{
    default_data_dir, epoch_order, hflip, random_hflip, Cifar10, TestSource, CLASS_NAMES,
    IMAGE_BYTES, IMAGE_SHAPE, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
};
use glow::download::{
    download_cifar100_verified, download_cifar10_verified, download_files, ArchiveSpec, RemoteFile,
};
use glow::engine::Device;
use glow::{Dequantization, Glow, GlowConfig};
use glow_rs::testing::Scratch;
use md5::{Digest, Md5};

mod formats;

fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("data-{name}"))
}

/// `n` valid records whose labels and pixels depend on `tag`.
fn records(n: usize, tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * RECORD_BYTES);
    for r in 0..n {
        out.push((usize::from(tag) + r) as u8 % 10);
        out.extend((0..IMAGE_BYTES).map(|p| (p + 7 * r + 31 * usize::from(tag)) as u8));
    }
    out
}

/// The error's message, also printed (see them with `-- --nocapture`).
fn message(err: glow::engine::Error) -> String {
    let msg = err.to_string();
    eprintln!("error message: {msg}");
    msg
}

// ---------------------------------------------------------------------------------------
// Loader errors: each names the file or directory at fault.

#[test]
fn size_not_a_multiple_of_the_record_names_the_file() {
    let dir = scratch("badsize");
    let file = dir.join("data_batch_1.bin");
    let mut bytes = records(2, 0);
    bytes.extend_from_slice(&[0; 5]);
    std::fs::write(&file, bytes).unwrap();
    for path in [file.clone(), dir.to_path_buf()] {
        let msg = message(Cifar10::load(path).unwrap_err());
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("3073-byte record"), "{msg}");
    }
}

#[test]
fn label_above_nine_names_the_file_and_record() {
    let dir = scratch("badlabel");
    let file = dir.join("data_batch_2.bin");
    let mut bytes = records(3, 0);
    bytes[2 * RECORD_BYTES] = 10;
    std::fs::write(&file, bytes).unwrap();
    let msg = message(Cifar10::load(&dir).unwrap_err());
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains("record 2") && msg.contains("label 10"),
        "{msg}"
    );
}

#[test]
fn bad_test_batch_names_it() {
    let dir = scratch("badtest");
    std::fs::write(dir.join("data_batch_1.bin"), records(2, 0)).unwrap();
    let test = dir.join(TEST_FILE);
    std::fs::write(&test, &records(2, 1)[..RECORD_BYTES + 10]).unwrap();
    let msg = message(Cifar10::load(&dir).unwrap_err());
    assert!(msg.contains(&test.display().to_string()), "{msg}");
}

#[test]
fn missing_training_batch_names_it() {
    let dir = scratch("missing");
    std::fs::write(dir.join(TEST_FILE), records(2, 0)).unwrap();
    let msg = message(Cifar10::load(&dir).unwrap_err());
    let expected = dir.join("data_batch_1.bin");
    assert!(msg.contains(&expected.display().to_string()), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn empty_directory_and_empty_file_are_named() {
    let dir = scratch("emptydir");
    let msg = message(Cifar10::load(&dir).unwrap_err());
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("empty directory"), "{msg}");

    let file = dir.join("data_batch_1.bin");
    std::fs::write(&file, b"").unwrap();
    let msg = message(Cifar10::load(&dir).unwrap_err());
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("empty file"), "{msg}");
}

#[test]
fn nonexistent_path_is_named() {
    let path = scratch("nonexistent").join("no-such-dir");
    let msg = message(Cifar10::load(&path).unwrap_err());
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.starts_with("cifar10: cannot read"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// The shipped sample.

#[test]
fn shipped_sample_loads_with_the_last_300_held_out() {
    let dir = default_data_dir();
    let raw = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(raw.len(), 3_000 * RECORD_BYTES);

    let data = Cifar10::load(&dir).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (2_700, 300));
    assert_eq!(data.train.images.len(), 2_700 * IMAGE_BYTES);
    assert_eq!(data.train.labels[..10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(
        data.test_source,
        TestSource::HeldOut {
            count: 300,
            total: 3_000
        }
    );
    assert!(data.describe().contains("last 10%"), "{}", data.describe());
    assert!(
        data.describe().contains("2700..3000"),
        "{}",
        data.describe()
    );
    assert_eq!(CLASS_NAMES[usize::from(data.train.labels[0])], "frog");

    // Images are the records' pixel bytes unchanged: the test split starts at record 2,700.
    let record = |i: usize| &raw[i * RECORD_BYTES..(i + 1) * RECORD_BYTES];
    assert_eq!(data.train.image(1), &record(1)[1..]);
    assert_eq!(data.test.image(0), &record(2_700)[1..]);
    assert_eq!(data.test.labels[0], u16::from(record(2_700)[0]));

    // A batch is NCHW bytes in index order, with the labels as usize.
    let (pixels, labels) = data.train.batch(&[5, 0]);
    assert_eq!(&pixels[..IMAGE_BYTES], &record(5)[1..]);
    assert_eq!(&pixels[IMAGE_BYTES..], &record(0)[1..]);
    assert_eq!(labels, [1, 6]);

    // The same file given directly loads the same way.
    let single = Cifar10::load(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(single.train, data.train);
    assert_eq!(single.test, data.test);
}

#[test]
fn a_batch_is_what_glow_preprocess_takes() {
    let data = Cifar10::load(default_data_dir()).unwrap();
    let (pixels, _) = data.train.batch(&[0, 1]);
    let config = GlowConfig {
        image_shape: IMAGE_SHAPE,
        levels: 1,
        depth: 1,
        hidden: 4,
        ..GlowConfig::default()
    };
    let glow = Glow::new(config, &Device::Cpu).unwrap();
    let x = glow
        .preprocess(&pixels, 2, Dequantization::Midpoint)
        .unwrap();
    assert_eq!(x.shape(), &[2, 3, 32, 32]);
    // Pixel (c=0, y=0, x=0) of image 1 is byte 0 of its red plane.
    let v = x.to_vec().unwrap()[IMAGE_BYTES];
    let expected = (f32::from(pixels[IMAGE_BYTES]) + 0.5) / 256.0 - 0.5;
    assert!((v - expected).abs() < 1e-6, "{v} vs {expected}");
}

#[test]
fn directory_with_test_batch_uses_it() {
    let dir = scratch("withtest");
    // A gap in the training batches is fine: 1 and 3 are read in order.
    std::fs::write(dir.join("data_batch_3.bin"), records(2, 3)).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), records(5, 1)).unwrap();
    std::fs::write(dir.join(TEST_FILE), records(3, 9)).unwrap();
    // Stray files are ignored.
    std::fs::write(dir.join("data_batch_2.bin.part"), b"junk").unwrap();

    let data = Cifar10::load(&dir).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (7, 3));
    let mut expected = records(5, 1);
    expected.extend(records(2, 3));
    assert_eq!(
        data.train.image(5),
        &expected[5 * RECORD_BYTES + 1..6 * RECORD_BYTES]
    );
    assert_eq!(data.train.labels, [1, 2, 3, 4, 5, 3, 4]);
    assert_eq!(data.test.labels, [9, 0, 1]);
    assert_eq!(data.test_source, TestSource::File(dir.join(TEST_FILE)));
    assert_eq!(
        data.train_files,
        [dir.join(TRAIN_FILES[0]), dir.join(TRAIN_FILES[2])]
    );

    // The parent of `cifar-10-batches-bin/` works too.
    let parent = scratch("parent");
    let inner = parent.join("cifar-10-batches-bin");
    std::fs::rename(&dir, &inner).unwrap();
    let again = Cifar10::load(&parent).unwrap();
    assert_eq!(again.train, data.train);
    assert_eq!(again.test, data.test);
}

// ---------------------------------------------------------------------------------------
// Epoch orders and flips.

#[test]
fn epoch_orders_are_seeded_permutations() {
    let a = epoch_order(7, 0, 1_000);
    assert_eq!(a, epoch_order(7, 0, 1_000));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1_000).collect::<Vec<_>>());
    assert_ne!(a, sorted, "shuffled");
    assert_ne!(a, epoch_order(7, 1, 1_000), "epochs differ");
    assert_ne!(a, epoch_order(8, 0, 1_000), "seeds differ");
    assert!(epoch_order(1, 2, 0).is_empty());
}

#[test]
fn hflip_mirrors_each_row() {
    // Two images of [1, 2, 3]; only the second is flipped.
    let mut pixels = vec![1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16];
    hflip(&mut pixels, [1, 2, 3], &[false, true]).unwrap();
    assert_eq!(pixels, [1, 2, 3, 4, 5, 6, 13, 12, 11, 16, 15, 14]);
    assert!(hflip(&mut pixels, [1, 2, 3], &[true]).is_err());
}

#[test]
fn random_flips_are_deterministic_per_seed_and_step() {
    let data = Cifar10::load(default_data_dir()).unwrap();
    let indices: Vec<usize> = (0..64).collect();
    let (original, _) = data.train.batch(&indices);

    let mut a = original.clone();
    let flips = random_hflip(&mut a, IMAGE_SHAPE, 3, 10).unwrap();
    let mut b = original.clone();
    assert_eq!(random_hflip(&mut b, IMAGE_SHAPE, 3, 10).unwrap(), flips);
    assert_eq!(a, b);
    let count = flips.iter().filter(|&&f| f).count();
    assert!((16..=48).contains(&count), "{count} of 64 flipped");
    for (i, &f) in flips.iter().enumerate() {
        let img = &a[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES];
        assert_eq!(img == data.train.image(i), !f, "image {i}");
    }
    // Flipping again with the same seed and step restores the batch.
    random_hflip(&mut a, IMAGE_SHAPE, 3, 10).unwrap();
    assert_eq!(a, original);

    let mut c = original.clone();
    assert_ne!(random_hflip(&mut c, IMAGE_SHAPE, 3, 11).unwrap(), flips);
    assert!(random_hflip(&mut c[..100], IMAGE_SHAPE, 3, 11).is_err());
}

// ---------------------------------------------------------------------------------------
// Download against a loopback server.

/// One canned HTTP response: the body, and the Content-Length to announce (which may
/// exceed the body to simulate a dropped connection).
struct Reply {
    status: &'static str,
    body: Vec<u8>,
    content_length: usize,
}

impl Reply {
    fn ok(body: &[u8]) -> Reply {
        Reply {
            status: "200 OK",
            body: body.to_vec(),
            content_length: body.len(),
        }
    }
}

/// Serves `replies`, one per connection, on `127.0.0.1` then stops; gives up after 60 s.
fn serve(replies: Vec<Reply>) -> (String, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        for reply in replies {
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break Some(stream),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break None,
                }
            };
            let Some(stream) = stream else { break };
            if respond(stream, &reply).is_ok() {
                served += 1;
            }
        }
        served
    });
    (url, handle)
}

fn respond(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && request.len() < 16_384 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        request.push(byte[0]);
    }
    write!(
        stream,
        "HTTP/1.1 {}\r\nContent-Type: application/x-gzip\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reply.status, reply.content_length
    )?;
    stream.write_all(&reply.body)?;
    stream.flush()
}

/// The six expected files: (name, content), each three valid records.
fn batch_files() -> Vec<(&'static str, Vec<u8>)> {
    TRAIN_FILES
        .iter()
        .copied()
        .chain([TEST_FILE])
        .enumerate()
        .map(|(i, name)| (name, records(3, i as u8)))
        .collect()
}

/// A `.tar.gz` laid out like the official one (a folder entry, the six batches, a stray
/// meta file) plus hostile entries: `../evil`, an absolute path and a symlink.
fn archive() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);

    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, "cifar-10-batches-bin/", std::io::empty())
        .unwrap();

    let mut append_file = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data).unwrap();
    };
    append_file("cifar-10-batches-bin/batches.meta.txt", b"airplane\n");
    for (name, data) in batch_files() {
        append_file(&format!("cifar-10-batches-bin/{name}"), &data);
    }

    // The builder refuses `..` and absolute paths, so write those names into raw headers.
    for raw_name in [&b"../evil"[..], b"/tmp/glow-data-test-evil-absolute"] {
        let data = b"evil";
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..raw_name.len()].copy_from_slice(raw_name);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, &data[..]).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "cifar-10-batches-bin/evil-link", "../../evil")
        .unwrap();

    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file and folder under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn expected_tree() -> BTreeSet<String> {
    let mut out = BTreeSet::from(["cifar-10-batches-bin".to_string()]);
    for (name, _) in batch_files() {
        out.insert(format!("cifar-10-batches-bin/{name}"));
    }
    out
}

#[test]
fn download_extracts_only_the_six_files_and_then_is_a_no_op() {
    let archive = archive();
    let md5 = md5_hex(&archive);
    let spec = ArchiveSpec {
        archive_bytes: archive.len() as u64,
        md5_hex: &md5,
        file_bytes: 3 * RECORD_BYTES as u64,
    };
    // `base/dir` receives the data, so `base/evil` is where `../evil` would land.
    let base = scratch("download");
    let dir = base.join("dir");
    // A killed earlier run left a partial archive, a partial batch and a short batch.
    std::fs::create_dir_all(dir.join("cifar-10-batches-bin")).unwrap();
    std::fs::write(dir.join("cifar-10-binary.tar.gz.part"), b"partial").unwrap();
    std::fs::write(dir.join("cifar-10-batches-bin/test_batch.bin.part"), b"x").unwrap();
    std::fs::write(dir.join("cifar-10-batches-bin/data_batch_2.bin"), b"short").unwrap();

    let (url, server) = serve(vec![Reply::ok(&archive)]);
    let out = download_cifar10_verified(&dir, &url, &spec).unwrap();
    assert_eq!(server.join().unwrap(), 1);
    assert_eq!(out, dir.join("cifar-10-batches-bin"));
    for (name, data) in batch_files() {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        tree(&dir),
        expected_tree(),
        "only the six files, no temporaries"
    );
    assert_eq!(
        tree(&base).len(),
        1 + expected_tree().len(),
        "nothing beside dir"
    );
    assert!(!Path::new("/tmp/glow-data-test-evil-absolute").exists());

    // The loader reads what was written.
    let data = Cifar10::load(&dir).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (15, 3));

    // A second call does not connect: the server is gone, so a request would fail.
    let out2 = download_cifar10_verified(&dir, &url, &spec).unwrap();
    assert_eq!(out2, out);
    assert_eq!(tree(&dir), expected_tree());
}

#[test]
fn bad_downloads_fail_and_leave_no_file() {
    let archive = archive();
    let md5 = md5_hex(&archive);
    let spec = ArchiveSpec {
        archive_bytes: archive.len() as u64,
        md5_hex: &md5,
        file_bytes: 3 * RECORD_BYTES as u64,
    };
    let half = archive.len() / 2;
    let mut corrupt = archive.clone();
    corrupt[half] ^= 0xff;
    let mut longer = archive.clone();
    longer.extend_from_slice(b"trailing");
    let cases = [
        ("MD5", Reply::ok(&corrupt)),
        ("more than", Reply::ok(&longer)),
        ("truncated", Reply::ok(&archive[..half])),
        (
            "after",
            Reply {
                status: "200 OK",
                body: archive[..half].to_vec(),
                content_length: archive.len(),
            },
        ),
        (
            "404",
            Reply {
                status: "404 Not Found",
                body: b"gone".to_vec(),
                content_length: 4,
            },
        ),
    ];
    for (needle, reply) in cases {
        let dir = scratch("baddownload");
        let (url, server) = serve(vec![reply]);
        let msg = message(download_cifar10_verified(&dir, &url, &spec).unwrap_err());
        server.join().unwrap();
        assert!(msg.contains(needle), "{needle}: {msg}");
        assert!(msg.starts_with("download:"), "{msg}");
        assert!(tree(&dir).is_empty(), "{needle}: left {:?}", tree(&dir));
    }

    // An archive whose batches have another size than expected is an error too.
    let wrong_spec = ArchiveSpec {
        file_bytes: 4 * RECORD_BYTES as u64,
        ..spec
    };
    let dir = scratch("wrongsize");
    let (url, server) = serve(vec![Reply::ok(&archive)]);
    let msg = message(download_cifar10_verified(&dir, &url, &wrong_spec).unwrap_err());
    server.join().unwrap();
    assert!(msg.contains("expected 12292"), "{msg}");
    assert!(
        tree(&dir).iter().all(|p| !p.ends_with(".part")),
        "{:?}",
        tree(&dir)
    );
}

/// CRC-32 (IEEE, reflected, as zlib and crc32fast compute it), one bit at a time.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[test]
fn the_fingerprint_hashes_labels_as_bytes_while_they_fit() {
    // Checkpoints written when labels were bytes recorded crc32(images ++ labels): the
    // sample's fingerprint must still be that, so they resume on their data.
    let data = Cifar10::load(default_data_dir()).unwrap();
    let labels: Vec<u8> = data.train.labels.iter().map(|&l| l as u8).collect();
    let old = crc32(&[&data.train.images[..], &labels[..]].concat());
    assert_eq!(data.train.fingerprint(), old);
    // With a label of 256 or more (ImageNet's 1,000 classes), two bytes each.
    let wide = glow::data::Dataset::new([1, 1, 2], vec![1, 2, 3, 4], vec![3, 999]).unwrap();
    assert_eq!(wide.fingerprint(), crc32(&[1, 2, 3, 4, 3, 0, 0xe7, 3]));
}

#[test]
fn plain_files_download_verified_then_are_kept() {
    // MNIST's four files as the official ones are: gzip, loaded as they are.
    let src = scratch("mnist-src");
    formats::write_mnist(&src, 4, 2, true);
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let bodies: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(src.join(n)).unwrap())
        .collect();
    let md5s: Vec<String> = bodies.iter().map(|b| md5_hex(b)).collect();
    let (url, server) = serve(bodies.iter().map(|b| Reply::ok(b)).collect());
    let files: Vec<RemoteFile> = (0..4)
        .map(|i| RemoteFile {
            url: &url,
            name: names[i],
            bytes: bodies[i].len() as u64,
            md5_hex: &md5s[i],
        })
        .collect();
    let dir = scratch("mnist-download");
    assert_eq!(download_files(&dir, &files).unwrap(), dir.to_path_buf());
    assert_eq!(server.join().unwrap(), 4);
    let data = glow::data::mnist::Mnist::load(&dir, true).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (4, 2));
    // Present with their sizes: nothing is fetched (no server is listening).
    download_files(&dir, &files).unwrap();
    // A file whose MD5 is not the expected one is refused, naming the address, and
    // leaves nothing behind.
    let other = scratch("mnist-bad-download");
    let (url, server) = serve(vec![Reply::ok(&bodies[1])]);
    let wrong = RemoteFile {
        url: &url,
        md5_hex: "00000000000000000000000000000000",
        ..files[1]
    };
    let msg = message(download_files(&other, &[wrong]).unwrap_err());
    server.join().unwrap();
    assert!(msg.contains(&url) && msg.contains("MD5"), "{msg}");
    assert!(tree(&other).is_empty(), "{:?}", tree(&other));
}

#[test]
fn the_cifar100_archive_yields_its_two_files() {
    let (train, test) = (
        formats::cifar100_records(3, 0),
        formats::cifar100_records(2, 1),
    );
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in [
        ("cifar-100-binary/fine_label_names.txt", &b"apple\n"[..]),
        ("cifar-100-binary/train.bin", &train[..]),
        ("cifar-100-binary/test.bin", &test[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data).unwrap();
    }
    let archive = tar.into_inner().unwrap().finish().unwrap();
    let md5 = md5_hex(&archive);
    let (url, server) = serve(vec![Reply::ok(&archive)]);
    let remote = RemoteFile {
        url: &url,
        name: "cifar-100-binary.tar.gz",
        bytes: archive.len() as u64,
        md5_hex: &md5,
    };
    let dir = scratch("cifar100-download");
    let (tb, sb) = (train.len() as u64, test.len() as u64);
    let out = download_cifar100_verified(&dir, &remote, tb, sb).unwrap();
    assert_eq!(server.join().unwrap(), 1);
    assert_eq!(out, dir.join("cifar-100-binary"));
    assert_eq!(
        tree(&dir),
        BTreeSet::from(
            [
                "cifar-100-binary",
                "cifar-100-binary/train.bin",
                "cifar-100-binary/test.bin"
            ]
            .map(String::from)
        ),
        "only the two files, no temporaries"
    );
    let data =
        glow::data::cifar100::Cifar100::load(&dir, glow::data::cifar100::Labels::Fine).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (3, 2));
    // Present: a second call does not connect.
    assert_eq!(
        download_cifar100_verified(&dir, &remote, tb, sb).unwrap(),
        out
    );
}

#[test]
fn ranks_download_after_rank_0_and_not_when_it_failed() {
    use glow::parallel::{Collective, InProcess};
    use std::sync::atomic::{AtomicUsize, Ordering};
    for rank0_fails in [false, true] {
        let calls = AtomicUsize::new(0);
        let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = InProcess::world(3)
                .into_iter()
                .map(|comm| {
                    let calls = &calls;
                    s.spawn(move || {
                        glow::download::on_ranks(&comm, || {
                            let order = calls.fetch_add(1, Ordering::SeqCst);
                            match (comm.rank(), rank0_fails) {
                                (0, true) => {
                                    Err(glow::engine::Error::invalid("download", "offline"))
                                }
                                _ => Ok(order),
                            }
                        })
                        .map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        if rank0_fails {
            // Only rank 0 tried; the others were told, and say so.
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert!(results.iter().all(|r| r.is_err()), "{results:?}");
            assert!(results[1]
                .as_ref()
                .unwrap_err()
                .contains("rank 0's download failed"));
        } else {
            // Rank 0 first (call 0), then the others.
            assert_eq!(results[0], Ok(0));
            assert_eq!(calls.load(Ordering::SeqCst), 3);
        }
    }
}
