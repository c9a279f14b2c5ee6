//! The numeric arrays of a MATLAB v5 file (MathWorks, "MAT-File Format", level 5), as
//! much of the format as SVHN's files use: the 128-byte header, then data elements, each
//! an 8-byte tag (type, byte count; or the 4-byte "small element" form) and its data
//! padded to 8 bytes. A `miMATRIX` element is an array (flags with its class, dimensions,
//! name, real part); a `miCOMPRESSED` element is a zlib stream that unpacks to one
//! element. Arrays of other kinds (cells, structs, sparse, complex) are skipped.
//!
//! Written here rather than taken from the `matfile` crate, which was tried first: on
//! damaged files the fuzz test found it printing inflate errors to standard output and
//! panicking on dimensions whose product overflows.

use std::io::Read;

/// `miMATRIX`: an array.
const MI_MATRIX: u32 = 14;
/// `miCOMPRESSED`: a zlib stream holding one element.
const MI_COMPRESSED: u32 = 15;
/// `mxUINT8_CLASS`.
const MX_UINT8: u32 = 9;
/// The complex flag of an array's flags.
const COMPLEX: u32 = 0x0800;
/// The most bytes one compressed element may unpack to: above SVHN's largest array (its
/// `extra` split's images, 1.6 GB), and a bound on what a damaged file can allocate.
const MAX_UNPACKED: u64 = 2 << 30;

/// One numeric array: its name, dimensions (MATLAB's column-major order) and values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Array {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: Values,
}

/// An array's values: `uint8` arrays as bytes, every other class as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Values {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

/// The numeric arrays of the MAT v5 file `bytes`, or what is wrong with it.
pub(crate) fn read_arrays(bytes: &[u8]) -> Result<Vec<Array>, String> {
    if bytes.len() < 128 || !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err(
            "not a MATLAB v5 file (its 128-byte header starts \"MATLAB 5.0 MAT-file\")".into(),
        );
    }
    let big_endian = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!(
                "endian indicator {:?}, expected \"IM\" or \"MI\"",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let r = Reader { big_endian };
    let mut arrays = Vec::new();
    r.elements(&bytes[128..], &mut arrays, true)?;
    Ok(arrays)
}

/// Reads numbers in the file's byte order.
#[derive(Clone, Copy)]
struct Reader {
    big_endian: bool,
}

impl Reader {
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// The element at the start of `b`: `(type, data, bytes taken)`.
    fn element(self, b: &[u8]) -> Result<(u32, &[u8], usize), String> {
        if b.len() < 8 {
            return Err(format!(
                "{} bytes left, too few for an element's tag",
                b.len()
            ));
        }
        let first = self.u32(b);
        if first >> 16 != 0 {
            // The small element form: type and size in one word, data in the next four.
            let (ty, size) = (first & 0xffff, (first >> 16) as usize);
            if size > 4 {
                return Err(format!("a small element of {size} bytes (at most 4)"));
            }
            return Ok((ty, &b[4..4 + size], 8));
        }
        let size = self.u32(&b[4..]) as usize;
        if size > b.len() - 8 {
            return Err(format!(
                "an element of {size} bytes where {} are left: the file is cut short",
                b.len() - 8
            ));
        }
        // Compressed elements are not padded; the others are, to 8 bytes.
        let taken = match first {
            MI_COMPRESSED => 8 + size,
            _ => (8 + size).next_multiple_of(8).min(b.len()),
        };
        Ok((first, &b[8..8 + size], taken))
    }

    /// Appends the arrays among the elements of `b` to `out`; `top` when `b` is the
    /// file's body (where compressed elements may appear).
    fn elements(self, mut b: &[u8], out: &mut Vec<Array>, top: bool) -> Result<(), String> {
        while !b.is_empty() {
            let (ty, data, taken) = self.element(b)?;
            match ty {
                MI_MATRIX => out.extend(self.matrix(data)?),
                MI_COMPRESSED if top => {
                    let mut unpacked = Vec::new();
                    flate2::read::ZlibDecoder::new(data)
                        .take(MAX_UNPACKED + 1)
                        .read_to_end(&mut unpacked)
                        .map_err(|e| format!("a damaged compressed element: {e}"))?;
                    if unpacked.len() as u64 > MAX_UNPACKED {
                        return Err(format!("an element unpacks to over {MAX_UNPACKED} bytes"));
                    }
                    self.elements(&unpacked, out, false)?;
                }
                _ => {}
            }
            b = &b[taken..];
        }
        Ok(())
    }

    /// The array of a `miMATRIX` element's data, or `None` for a kind this reader skips.
    fn matrix(self, b: &[u8]) -> Result<Option<Array>, String> {
        if b.is_empty() {
            return Ok(None); // MATLAB's empty array
        }
        let (_, flags, n) = self.element(b)?;
        if flags.len() < 8 {
            return Err("an array without its 8 bytes of flags".into());
        }
        let flags = self.u32(flags);
        let class = flags & 0xff;
        if !(6..=15).contains(&class) || flags & COMPLEX != 0 {
            return Ok(None); // not a real numeric array
        }
        let b = &b[n..];
        let (_, dims, n) = self.element(b)?;
        let dims: Vec<usize> = dims
            .chunks_exact(4)
            .map(|d| self.u32(d) as i32)
            .map(|d| usize::try_from(d).map_err(|_| format!("a negative dimension, {d}")))
            .collect::<Result<_, _>>()?;
        let b = &b[n..];
        let (_, name, n) = self.element(b)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let (ty, data, _) = self.element(&b[n..])?;
        let count = dims
            .iter()
            .try_fold(1usize, |p, &d| p.checked_mul(d))
            .ok_or_else(|| format!("array {name}: dimensions {dims:?} overflow"))?;
        let values = if class == MX_UINT8 && ty == 2 {
            Values::U8(data.to_vec())
        } else {
            Values::F64(
                self.numbers(ty, data)
                    .map_err(|e| format!("array {name}: {e}"))?,
            )
        };
        let len = match &values {
            Values::U8(v) => v.len(),
            Values::F64(v) => v.len(),
        };
        if len != count {
            return Err(format!(
                "array {name}: dimensions {dims:?} need {count} values, it holds {len}"
            ));
        }
        Ok(Some(Array { name, dims, values }))
    }

    /// The values of a numeric element of type `ty` as `f64`.
    fn numbers(self, ty: u32, b: &[u8]) -> Result<Vec<f64>, String> {
        let be = self.big_endian;
        macro_rules! each {
            ($t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                b.chunks_exact(N)
                    .map(|c| {
                        let a: [u8; N] = c.try_into().unwrap();
                        (if be {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }) as f64
                    })
                    .collect()
            }};
        }
        Ok(match ty {
            1 => each!(i8),
            2 => each!(u8),
            3 => each!(i16),
            4 => each!(u16),
            5 => each!(i32),
            6 => each!(u32),
            7 => each!(f32),
            9 => each!(f64),
            12 => each!(i64),
            13 => each!(u64),
            _ => return Err(format!("values of data type {ty}, not a numeric type")),
        })
    }
}
