//! The TensorBoard event files of a run, decoded here from scratch: the record framing
//! and both CRCs, the protocol buffers of `Event`, `Summary`, `Summary.Value` and
//! `Summary.Image`, and what a run puts in them (every step's figures, the evaluations
//! and the sample grids), and the `SessionLog START` a resume writes (`Event` field 7;
//! field 6 is TensorFlow's deprecated `log_message`).
//! `benches/tensorboard_check.py` reads the same files with TensorBoard's own reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engine::{Device, Result};
use glow::data::Cifar10;
use glow::optim::OptimizerConfig;
use glow::run::{Interrupt, Run, RunConfig};
use glow::tensorboard::{masked_crc32c, FILE_PREFIX};
use glow::train::Trainer;
use glow::{Glow, GlowConfig};
use glow_rs::testing::Scratch;

/// One protocol-buffer field: its number and its value.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(Vec<u8>),
}

/// Reads a varint at `*at`.
fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Every field of message `b`, in order.
fn fields(b: &[u8]) -> Vec<(u32, Field)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let key = varint(b, &mut at);
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(b, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(b[at - 8..at].try_into().unwrap())
            }
            2 => {
                let n = varint(b, &mut at) as usize;
                at += n;
                Field::Bytes(b[at - n..at].to_vec())
            }
            5 => {
                at += 4;
                Field::Fixed32(b[at - 4..at].try_into().unwrap())
            }
            w => panic!("wire type {w} in {b:?}"),
        };
        out.push((number, field));
    }
    out
}

/// The field `number` of `message`, if any.
fn field(message: &[(u32, Field)], number: u32) -> Option<&Field> {
    message.iter().find(|(n, _)| *n == number).map(|(_, f)| f)
}

fn bytes(f: Option<&Field>) -> &[u8] {
    match f {
        Some(Field::Bytes(b)) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}

/// The events of a file, after checking every record's length and both checksums.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read the event file");
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        let len_bytes = &data[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap());
        assert_eq!(
            crc,
            masked_crc32c(len_bytes),
            "length CRC of record at {at}"
        );
        let body = &data[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(data[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(crc, masked_crc32c(body), "data CRC of record at {at}");
        out.push(body.to_vec());
        at += 16 + len;
    }
    assert_eq!(at, data.len(), "the file ends on a record boundary");
    out
}

/// What a run's event files hold: scalars by tag as `(step, value)`, images as `(step,
/// width, height, png)`, the steps of `SessionLog START`s and the version strings.
#[derive(Debug, Default)]
struct Decoded {
    scalars: BTreeMap<String, Vec<(u64, f32)>>,
    images: Vec<(u64, u64, u64, Vec<u8>)>,
    starts: Vec<u64>,
    versions: Vec<String>,
}

fn decode(files: &[PathBuf]) -> Decoded {
    let mut d = Decoded::default();
    for path in files {
        for event in records(path) {
            let e = fields(&event);
            assert!(matches!(field(&e, 1), Some(Field::Fixed64(_))), "wall_time");
            let step = match field(&e, 2) {
                Some(Field::Varint(s)) => *s,
                other => panic!("step: {other:?}"),
            };
            if let Some(v) = field(&e, 3) {
                d.versions
                    .push(String::from_utf8(bytes(Some(v)).to_vec()).unwrap());
            }
            assert!(
                field(&e, 6).is_none(),
                "field 6 is the deprecated log_message"
            );
            if let Some(log) = field(&e, 7) {
                assert_eq!(field(&fields(bytes(Some(log))), 1), Some(&Field::Varint(1)));
                d.starts.push(step);
            }
            let Some(summary) = field(&e, 5) else {
                continue;
            };
            for (n, value) in fields(bytes(Some(summary))) {
                assert_eq!(n, 1, "Summary.value");
                let v = fields(bytes(Some(&value)));
                let tag = String::from_utf8(bytes(field(&v, 1)).to_vec()).unwrap();
                match (field(&v, 2), field(&v, 4)) {
                    (Some(Field::Fixed32(f)), None) => d
                        .scalars
                        .entry(tag)
                        .or_default()
                        .push((step, f32::from_le_bytes(*f))),
                    (None, Some(image)) => {
                        let i = fields(bytes(Some(image)));
                        let num = |k| match field(&i, k) {
                            Some(Field::Varint(v)) => *v,
                            other => panic!("image field {k}: {other:?}"),
                        };
                        assert_eq!(num(3), 3, "RGB");
                        d.images
                            .push((step, num(2), num(1), bytes(field(&i, 4)).to_vec()));
                    }
                    other => panic!("a value with neither a scalar nor an image: {other:?}"),
                }
            }
        }
    }
    d
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the run")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILE_PREFIX))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_run_writes_event_files_that_decode_to_its_metrics() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "tensorboard");
    let cfg = GlowConfig {
        levels: 2,
        depth: 1,
        hidden: 8,
        ..GlowConfig::default()
    };
    let opt = OptimizerConfig {
        ema_decay: Some(0.9),
        ..OptimizerConfig::default()
    };
    let trainer = Trainer::new(Glow::new(cfg, &Device::Cpu)?, opt, 1);
    let config = |steps| RunConfig {
        batch: 4,
        eval_every: 2,
        eval_batch: 100,
        sample_every: 4,
        sample_images: 4,
        checkpoint_every: 0,
        checkpoint_interval: None,
        tensorboard: true,
        ..RunConfig::new(dir.path("run"), steps)
    };
    let mut run = Run::new(config(2), trainer)?;
    run.run(&data, &Interrupt::new(), |_| {})?;
    drop(run);
    let mut run = Run::resume(config(4), &Device::Cpu)?;
    run.run(&data, &Interrupt::new(), |_| {})?;
    drop(run);

    let dir = dir.path("run");
    let files = event_files(&dir);
    assert_eq!(files.len(), 2, "one file per process: {files:?}");
    let d = decode(&files);
    assert_eq!(d.versions, ["brain.Event:2", "brain.Event:2"]);
    // TensorBoard drops the earlier events at this step and later: the checkpoint's
    // step 2 keeps its figures, which the resumed run does not write again.
    assert_eq!(
        d.starts,
        [3],
        "the resume restarts after the checkpoint's step"
    );

    // The scalars are the log's numbers, step by step.
    let log: Vec<serde_json::Value> = std::fs::read_to_string(dir.join(glow::run::METRICS_FILE))
        .expect("the log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let steps: Vec<(u64, f32)> = log
        .iter()
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["bpd"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(steps.len(), 4);
    assert_eq!(d.scalars["train/bpd"], steps);
    for tag in [
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/images_per_sec",
    ] {
        let got: Vec<u64> = d.scalars[tag].iter().map(|p| p.0).collect();
        assert_eq!(got, [1, 2, 3, 4], "{tag}");
    }
    let evals: Vec<(u64, f32)> = log
        .iter()
        .filter(|v| v.get("test_bpd").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["test_bpd_ema"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(d.scalars["test/bpd_ema"], evals);
    assert_eq!(d.scalars["test/bpd"].len(), 2);

    // The sample grids' overviews (at the end of each call of `run`), as the PNG files
    // the run wrote.
    assert_eq!(d.images.iter().map(|i| i.0).collect::<Vec<_>>(), [2, 4]);
    let (_, width, height, png) = &d.images[1];
    let file = std::fs::read(dir.join("samples/step000004_all.png")).expect("the grid");
    assert_eq!(*png, file);
    let decoder = png::Decoder::new(std::io::Cursor::new(png.as_slice()));
    let info = decoder.read_info().expect("a PNG").info().clone();
    assert_eq!(
        (*width, *height),
        (u64::from(info.width), u64::from(info.height))
    );
    Ok(())
}
