//! The training example's progress display: a progress bar on a terminal, and a plain
//! line every 50 steps where there is none (a log file, CI), with the run's evaluations,
//! skipped steps, rollbacks and checkpoints as lines between.

use std::io::IsTerminal;

use glow::run::{CheckpointReason, Event};
use indicatif::{ProgressBar, ProgressStyle};

/// Shows a run's [`Event`]s on stderr.
pub struct Progress {
    bar: ProgressBar,
    /// Whether stderr is a terminal (else the bar is hidden and plain lines stand in).
    interactive: bool,
    /// The run's last step.
    total: u64,
    /// Images per step, for the time left.
    batch: f64,
}

impl Progress {
    /// A display for a run of `total` steps of `batch` images.
    pub fn new(total: u64, batch: usize) -> Progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
            )
            .expect("valid template"),
        );
        Progress {
            bar,
            interactive: std::io::stderr().is_terminal(),
            total,
            batch: batch as f64,
        }
    }

    /// Shows one event.
    pub fn show(&self, event: &Event) {
        let (bar, interactive, total) = (&self.bar, self.interactive, self.total);
        match event {
            Event::Started { step, .. } => bar.set_position(*step),
            Event::Step {
                stats: s,
                images_per_sec: rate,
            } => {
                bar.set_position(s.step);
                bar.set_message(format!("{:.3} bits/dim, {rate:.1} img/s", s.bpd));
                if !interactive && s.step % 50 == 0 {
                    // No terminal: the bar is hidden, so print a plain line.
                    let eta = (total - s.step) as f64 * self.batch / rate;
                    eprintln!(
                        "step {}/{total}: {:.3} bits/dim, {rate:.1} images/s, ETA {eta:.0} s",
                        s.step, s.bpd
                    );
                }
            }
            Event::Skipped { skipped, in_a_row } => bar.println(format!(
                "step {}: skipped, {} ({in_a_row} in a row)",
                skipped.step, skipped.why
            )),
            Event::RolledBack {
                from_step,
                to_step,
                lr,
            } => bar.println(format!(
                "step {from_step}: rolled back to the checkpoint at step {to_step}, learning rate now {lr:e}"
            )),
            Event::Evaluated {
                step,
                train_bpd,
                test_bpd,
                test_bpd_ema,
                best,
            } => bar.println(format!(
                "step {step}: train {} bits/dim, test {test_bpd:.3} bits/dim{}{}",
                train_bpd.map_or("n/a".into(), |v| format!("{v:.3}")),
                test_bpd_ema.map_or(String::new(), |v| format!(", EMA {v:.3}")),
                if *best { " (best so far)" } else { "" }
            )),
            Event::Checkpoint { step, path, reason } => {
                if !matches!(reason, CheckpointReason::Best) && !interactive {
                    eprintln!("step {step}: wrote {} ({})", path.display(), reason.name());
                }
            }
            Event::Samples { .. } | Event::Interrupted { .. } => {}
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
