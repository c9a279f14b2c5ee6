//! The metrics log, `metrics.jsonl`: one JSON line per step, skipped step, evaluation,
//! checkpoint, sample grid, rollback, interrupt and resume, appended by rank 0 alone.
//!
//! On resume the log is cut back to what the checkpoint knew ([`MetricsLog::resume`]):
//! the lines an interrupted run wrote after its checkpoint describe steps that run again.
//! The kept lines are handed back so that the run's [`super::history::History`] can be
//! replayed from them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use engine::Result;
use serde_json::Value;

use crate::atomic::{io_error, write_atomic};

use super::CHECKPOINT_FILE;

/// The log of one run, open for appending; or, on the ranks that do not write, a log
/// that drops what it is given.
#[derive(Debug)]
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: Option<File>,
}

impl MetricsLog {
    /// A new, empty log at `path` (an earlier file there is truncated).
    pub(crate) fn create(path: PathBuf) -> Result<MetricsLog> {
        let file = File::create(&path).map_err(|e| io_error(&path, "cannot create", e))?;
        Ok(MetricsLog {
            path,
            file: Some(file),
        })
    }

    /// A log that writes nothing (the ranks other than 0 of a data-parallel run).
    pub(crate) fn silent(path: PathBuf) -> MetricsLog {
        MetricsLog { path, file: None }
    }

    /// The log at `path` of a run resumed from a checkpoint at `step`, and the parsed
    /// lines it keeps ([`log_up_to_checkpoint`]). A `writer` rewrites the file to those
    /// lines, atomically, and appends from there; the others only read it.
    pub(crate) fn resume(
        path: PathBuf,
        step: u64,
        writer: bool,
    ) -> Result<(MetricsLog, Vec<Value>)> {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(&path, "cannot read", e)),
        };
        let kept = log_up_to_checkpoint(&text, step);
        let file = if writer {
            let mut out = String::new();
            for (line, _) in &kept {
                out.push_str(line);
                out.push('\n');
            }
            write_atomic(&path, |tmp| {
                std::fs::write(tmp, &out).map_err(|e| io_error(&path, "writing", e))
            })?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_error(&path, "cannot open", e))?;
            Some(file)
        } else {
            None
        };
        let values = kept.into_iter().map(|(_, v)| v).collect();
        Ok((MetricsLog { path, file }, values))
    }

    /// Appends one line, in one write.
    pub(crate) fn append(&mut self, line: Value) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let text = format!("{line}\n");
        file.write_all(text.as_bytes())
            .map_err(|e| io_error(&self.path, "writing", e))
    }
}

/// The lines of a metrics log (text and parsed) that a resume from a checkpoint at
/// `step` keeps: up to the last line recording [`CHECKPOINT_FILE`] written at `step`, or,
/// when there is none (the run died between writing the file and its line, or the log
/// predates these lines), every line up to `step`. Unreadable lines (one cut short by a
/// crash) are dropped.
fn log_up_to_checkpoint(text: &str, step: u64) -> Vec<(&str, Value)> {
    let lines: Vec<(&str, Value)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok().map(|v| (l, v)))
        .filter(|(_, v)| v["step"].as_u64().is_some())
        .collect();
    let mark = lines.iter().rposition(|(_, v)| {
        v["checkpoint"].as_str() == Some(CHECKPOINT_FILE) && v["step"].as_u64() == Some(step)
    });
    match mark {
        Some(i) => lines.into_iter().take(i + 1).collect(),
        None => lines
            .into_iter()
            .filter(|(_, v)| v["step"].as_u64().is_some_and(|s| s <= step))
            .collect(),
    }
}

/// The TensorBoard scalars of one metrics-log line: `(tag, value)` for each number of a
/// step line (`train/...`) and of an evaluation line (`test/bpd`, `test/bpd_ema` and
/// `train/bpd_since_eval`); none for the other lines.
pub(crate) fn tensorboard_scalars(line: &Value) -> Vec<(&'static str, f32)> {
    const STEP: [(&str, &str); 8] = [
        ("bpd", "train/bpd"),
        ("loss", "train/loss"),
        ("lr", "train/lr"),
        ("grad_norm", "train/grad_norm"),
        ("images_per_sec", "train/images_per_sec"),
        ("class_loss_bits", "train/class_loss_bits"),
        ("class_accuracy", "train/class_accuracy"),
        ("allreduce_s", "train/allreduce_s"),
    ];
    const EVALUATION: [(&str, &str); 3] = [
        ("test_bpd", "test/bpd"),
        ("test_bpd_ema", "test/bpd_ema"),
        ("train_bpd", "train/bpd_since_eval"),
    ];
    let table: &[(&str, &str)] = if line.get("loss").is_some() {
        &STEP
    } else if line.get("test_bpd").is_some() {
        &EVALUATION
    } else {
        &[]
    };
    table
        .iter()
        .filter_map(|&(key, tag)| line[key].as_f64().map(|v| (tag, v as f32)))
        .collect()
}
