//! TensorBoard event files, written without TensorFlow: scalars and PNG images, so that
//! `tensorboard --logdir runs/` shows a run's curves and sample grids beside its
//! `metrics.jsonl` ([`crate::run`] writes one when [`crate::run::RunConfig::tensorboard`]
//! is on).
//!
//! **The file** (`events.out.tfevents.{seconds}.glow-rs.{pid}`, the name TensorBoard looks
//! for) is a sequence of TFRecords, each
//!
//! | bytes | what |
//! |---|---|
//! | 8 | the length `n` of the data, little-endian `u64` |
//! | 4 | the masked CRC-32C of those 8 bytes, little-endian |
//! | `n` | the data: one serialised `Event` protocol buffer |
//! | 4 | the masked CRC-32C of the data |
//!
//! where masking is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping), as TensorFlow's
//! `crc32c::Mask`. The first event holds only `file_version = "brain.Event:2"`.
//!
//! **The messages** (TensorFlow's `event.proto` and `summary.proto`), encoded by hand in
//! this file (field number and wire type in brackets):
//! `Event { wall_time [1, double], step [2, varint], file_version [3, string],
//! summary [5, message], session_log [7, message] }`,
//! `Summary { value [1, repeated message] }`,
//! `Summary.Value { tag [1, string], simple_value [2, float], image [4, message] }`,
//! `Summary.Image { height [1, varint], width [2, varint], colorspace [3, varint],
//! encoded_image_string [4, bytes] }`, `SessionLog { status [1, varint] }` with
//! `START = 1`.
//!
//! **Resume.** A resumed run opens a new file whose first event after the version is a
//! `SessionLog` of status `START` at the step after the checkpoint's: TensorBoard drops
//! the events of earlier files at that step and later (the steps an interrupted run took
//! after its checkpoint, which run again) and keeps the checkpoint's own step, whose
//! figures are not written again, so the curves show each step once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use engine::Result;

use crate::atomic::io_error;

/// The prefix of every event file's name.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// TensorFlow's masking of a CRC-32C stored in a record.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The record framing of `data` (module docs).
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Protocol-buffer encoding, as much as the event messages need.
mod proto {
    /// Appends `v` as a base-128 varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// The key of field `field` with wire type `wire`.
    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A varint field (wire type 0).
    pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }

    /// A `double` field (wire type 1).
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// A `float` field (wire type 5).
    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, 5);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// A length-delimited field (wire type 2): a string, bytes or a message.
    pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        key(out, field, 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// An `Event` with the wall time now, `step` and the fields `body` appends.
fn event(step: u64, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut e = Vec::new();
    proto::double(&mut e, 1, now);
    proto::uint(&mut e, 2, step);
    body(&mut e);
    e
}

/// The `Event` of one scalar.
pub fn scalar_event(step: u64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    proto::bytes(&mut v, 1, tag.as_bytes());
    proto::float(&mut v, 2, value);
    summary_event(step, &v)
}

/// The `Event` of one PNG image of `width × height` RGB pixels.
pub fn image_event(step: u64, tag: &str, png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut image = Vec::new();
    proto::uint(&mut image, 1, u64::from(height));
    proto::uint(&mut image, 2, u64::from(width));
    proto::uint(&mut image, 3, 3); // RGB
    proto::bytes(&mut image, 4, png);
    let mut v = Vec::new();
    proto::bytes(&mut v, 1, tag.as_bytes());
    proto::bytes(&mut v, 4, &image);
    summary_event(step, &v)
}

/// An `Event` whose summary holds the one encoded `Summary.Value` `value`.
fn summary_event(step: u64, value: &[u8]) -> Vec<u8> {
    let mut summary = Vec::new();
    proto::bytes(&mut summary, 1, value);
    event(step, |e| proto::bytes(e, 5, &summary))
}

/// An event file being written.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if need be), starting with the version event;
    /// `restart_at`: the checkpoint's step a resumed run goes on from (see
    /// [`EventWriter::restart`]).
    pub fn create(dir: &Path, restart_at: Option<u64>) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create the folder", e))?;
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut n = 0;
        let path = loop {
            // Two files in the same second (a quick resume) must not share a name.
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let name = format!(
                "{FILE_PREFIX}{seconds}.glow-rs.{}{suffix}",
                std::process::id()
            );
            let path = dir.join(name);
            if !path.exists() {
                break path;
            }
            n += 1;
        };
        let file = File::create(&path).map_err(|e| io_error(&path, "cannot create", e))?;
        let mut writer = EventWriter {
            path,
            file: BufWriter::new(file),
        };
        writer.write(&event(0, |e| proto::bytes(e, 3, b"brain.Event:2")))?;
        if let Some(step) = restart_at {
            writer.restart(step)?;
        }
        writer.flush()?;
        Ok(writer)
    }

    /// Appends a `SessionLog START` at `step + 1`: TensorBoard forgets what was logged
    /// after `step` before it (a resume, or a rollback, to a checkpoint at `step`).
    pub fn restart(&mut self, step: u64) -> Result<()> {
        let mut log = Vec::new();
        proto::uint(&mut log, 1, 1); // START
        self.write(&event(step + 1, |e| proto::bytes(e, 7, &log)))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one serialised `Event`.
    pub fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(event))
            .map_err(|e| io_error(&self.path, "writing", e))
    }

    /// Appends a scalar.
    pub fn scalar(&mut self, step: u64, tag: &str, value: f32) -> Result<()> {
        self.write(&scalar_event(step, tag, value))
    }

    /// Appends a PNG image.
    pub fn image(
        &mut self,
        step: u64,
        tag: &str,
        png: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.write(&image_event(step, tag, png, width, height))
    }

    /// Pushes what was written to the file (TensorBoard reads files as they grow).
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| io_error(&self.path, "writing", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c_masked_as_tensorflow_does() {
        // The CRC-32C check value (RFC 3720, appendix B.4) of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let masked = 0xE306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), masked);
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
    }

    #[test]
    fn varints_are_base_128_little_end_first() {
        let mut out = Vec::new();
        proto::varint(&mut out, 1);
        proto::varint(&mut out, 300);
        assert_eq!(out, [0x01, 0xac, 0x02]);
        let mut f = Vec::new();
        proto::float(&mut f, 2, 1.0);
        assert_eq!(f, [0x15, 0x00, 0x00, 0x80, 0x3f]);
    }
}
