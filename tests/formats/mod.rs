//! Small files in each dataset's official format, written by the tests themselves (no
//! downloads): the inputs of `tests/datasets.rs` and `tests/fuzz_loaders.rs`.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// An IDX file of unsigned bytes: the magic (two zeros, type `0x08`, the rank), the
/// big-endian dimensions, the values.
pub fn idx(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Pixel `p` of digit `i` of a split tagged `tag`: every value 0-255 occurs.
pub fn digit_pixel(tag: u8, i: usize, p: usize) -> u8 {
    (p * 7 + i * 13 + usize::from(tag) * 31) as u8
}

/// The label of digit `i` of a split tagged `tag`.
pub fn digit_label(tag: u8, i: usize) -> u8 {
    ((i + usize::from(tag)) % 10) as u8
}

/// MNIST's images and labels files for `n` 28×28 digits tagged `tag`.
pub fn mnist_files(n: usize, tag: u8) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| (0..28 * 28).map(move |p| digit_pixel(tag, i, p)))
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| digit_label(tag, i)).collect();
    (idx(&[n as u32, 28, 28], &pixels), idx(&[n as u32], &labels))
}

/// Writes MNIST's four files into `dir`: `train` and `test` digits, gzip-compressed
/// (with the official `.gz` names) when `gz`.
pub fn write_mnist(dir: &Path, train: usize, test: usize, gz: bool) {
    for (prefix, n, tag) in [("train", train, 0), ("t10k", test, 1)] {
        let (images, labels) = mnist_files(n, tag);
        for (name, bytes) in [("images-idx3", images), ("labels-idx1", labels)] {
            let name = format!("{prefix}-{name}-ubyte");
            if gz {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// A CIFAR-100 record's coarse and fine labels for record `i` of a file tagged `tag`.
pub fn cifar100_labels(tag: u8, i: usize) -> (u8, u8) {
    let fine = ((i * 37 + usize::from(tag) * 11) % 100) as u8;
    (fine % 20, fine)
}

/// Pixel `p` of record `i` of a CIFAR-100 file tagged `tag`.
pub fn cifar100_pixel(tag: u8, i: usize, p: usize) -> u8 {
    (p * 3 + i * 29 + usize::from(tag) * 101) as u8
}

/// `n` CIFAR-100 records tagged `tag`.
pub fn cifar100_records(n: usize, tag: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let (coarse, fine) = cifar100_labels(tag, i);
        out.extend([coarse, fine]);
        out.extend((0..3072).map(|p| cifar100_pixel(tag, i, p)));
    }
    out
}

/// A MATLAB v5 data element: its tag (type, byte count) and data, padded to 8 bytes.
fn mat_element(data_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&data_type.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(8), 0);
    out
}

/// How a MAT array's values are stored: `(MATLAB class, storage type, value bytes)`.
pub enum MatValues<'a> {
    /// `uint8` values (class `mxUINT8`, storage `miUINT8`).
    UInt8(&'a [u8]),
    /// `double` values stored as `miDOUBLE`.
    Double(&'a [f64]),
    /// `double` values MATLAB stored compactly as `miUINT8` (what `save` does with small
    /// whole numbers).
    DoubleAsUInt8(&'a [u8]),
}

/// A MATLAB v5 `miMATRIX` element: a real numeric array `name` of `dims`.
pub fn mat_array(name: &str, dims: &[i32], values: MatValues) -> Vec<u8> {
    const MI_INT8: u32 = 1;
    const MI_UINT8: u32 = 2;
    const MI_INT32: u32 = 5;
    const MI_UINT32: u32 = 6;
    const MI_DOUBLE: u32 = 9;
    const MI_MATRIX: u32 = 14;
    const MX_DOUBLE: u32 = 6;
    const MX_UINT8: u32 = 9;
    let (class, storage, bytes) = match values {
        MatValues::UInt8(v) => (MX_UINT8, MI_UINT8, v.to_vec()),
        MatValues::Double(v) => (
            MX_DOUBLE,
            MI_DOUBLE,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        MatValues::DoubleAsUInt8(v) => (MX_DOUBLE, MI_UINT8, v.to_vec()),
    };
    let flags: Vec<u8> = [class, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    let body = [
        mat_element(MI_UINT32, &flags),
        mat_element(MI_INT32, &dims),
        mat_element(MI_INT8, name.as_bytes()),
        mat_element(storage, &bytes),
    ]
    .concat();
    mat_element(MI_MATRIX, &body)
}

/// A MATLAB v5 file of `elements`: the 128-byte header (text, version 0x0100, little
/// endian), then each element, wrapped in a zlib-compressed `miCOMPRESSED` element when
/// `compress` (as MATLAB's default `save` writes them).
pub fn mat_file(elements: &[Vec<u8>], compress: bool) -> Vec<u8> {
    let mut out = b"MATLAB 5.0 MAT-file, written by the glow-rs tests".to_vec();
    out.resize(116, b' ');
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for e in elements {
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(e).unwrap();
            let packed = z.finish().unwrap();
            out.extend_from_slice(&15u32.to_le_bytes());
            out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            out.extend_from_slice(&packed);
        } else {
            out.extend_from_slice(e);
        }
    }
    out
}

/// Pixel (row, column, channel) of SVHN image `i` of a file tagged `tag`.
pub fn svhn_pixel(tag: u8, i: usize, r: usize, c: usize, ch: usize) -> u8 {
    (r * 3 + c * 5 + ch * 7 + i * 11 + usize::from(tag) * 13) as u8
}

/// SVHN's label of image `i` of a file tagged `tag`: 1 to 10, 10 for the digit 0.
pub fn svhn_label(tag: u8, i: usize) -> u8 {
    ((i + usize::from(tag)) % 10 + 1) as u8
}

/// An SVHN file of `n` images tagged `tag`: `X` uint8 `[32, 32, 3, n]` in MATLAB's
/// column-major order, `y` `[n, 1]` doubles stored as MATLAB does (`miUINT8`, or
/// `miDOUBLE` when `plain_doubles`).
pub fn svhn_file(n: usize, tag: u8, compress: bool, plain_doubles: bool) -> Vec<u8> {
    let mut x = vec![0u8; 32 * 32 * 3 * n];
    for i in 0..n {
        for ch in 0..3 {
            for c in 0..32 {
                for r in 0..32 {
                    x[r + 32 * (c + 32 * (ch + 3 * i))] = svhn_pixel(tag, i, r, c, ch);
                }
            }
        }
    }
    let y: Vec<u8> = (0..n).map(|i| svhn_label(tag, i)).collect();
    let yd: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let y_values = match plain_doubles {
        true => MatValues::Double(&yd),
        false => MatValues::DoubleAsUInt8(&y),
    };
    mat_file(
        &[
            mat_array("X", &[32, 32, 3, n as i32], MatValues::UInt8(&x)),
            mat_array("y", &[n as i32, 1], y_values),
        ],
        compress,
    )
}

/// A NumPy `.npy` file (format 1.0) of `values` with type string `descr` and `shape`:
/// the magic, the header dict padded with spaces to a multiple of 64 bytes, the values.
pub fn npy(descr: &str, shape: &[usize], values: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(values);
    out
}

/// A `.npz` archive of `members` (`(name, npy bytes)`), stored as `np.savez` writes them
/// or deflated as `np.savez_compressed` does.
pub fn npz(members: &[(&str, Vec<u8>)], compress: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = match compress {
        true => zip::CompressionMethod::Deflated,
        false => zip::CompressionMethod::Stored,
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Pixel `p` of image `i` of an ImageNet batch tagged `tag`.
pub fn imagenet_pixel(tag: u8, i: usize, p: usize) -> u8 {
    (p * 5 + i * 17 + usize::from(tag) * 3) as u8
}

/// ImageNet's label (1 to 1000) of image `i` of a batch tagged `tag`.
pub fn imagenet_label(tag: u8, i: usize) -> i64 {
    ((i * 389 + usize::from(tag) * 97) % 1000 + 1) as i64
}

/// A batch of `n` images of `side`×`side` tagged `tag`, as the official files hold them:
/// `data` uint8 `[n, 3·side²]`, `labels` int64 `[n]`.
pub fn imagenet_batch(n: usize, side: usize, tag: u8, compress: bool) -> Vec<u8> {
    let row = 3 * side * side;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| (0..row).map(move |p| imagenet_pixel(tag, i, p)))
        .collect();
    let labels: Vec<u8> = (0..n)
        .flat_map(|i| imagenet_label(tag, i).to_le_bytes())
        .collect();
    npz(
        &[
            ("data.npy", npy("|u1", &[n, row], &data)),
            ("labels.npy", npy("<i8", &[n], &labels)),
        ],
        compress,
    )
}

/// An RGB picture of `w`×`h` whose pixel (x, y) is `f(x, y)`, encoded as PNG, or as JPEG
/// at quality 95 when `jpeg`.
pub fn picture(w: u32, h: u32, jpeg: bool, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    match jpeg {
        true => img
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out, 95,
            ))
            .unwrap(),
        false => img.write_to(&mut out, image::ImageFormat::Png).unwrap(),
    }
    out.into_inner()
}
