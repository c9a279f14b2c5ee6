//! What `train_cifar10 --resume` keeps from the checkpoint and what it lets a command
//! line change.
//!
//! The checkpoint defines the model (every flag of [`super::ModelArgs`] but `--memory`),
//! the seed, the optimiser and the data: a flag among [`FROM_CHECKPOINT`] given on the
//! command line with another value than the checkpoint's is refused ([`conflicts`]),
//! and so is a training split other than the one the run trained on. The optimiser's
//! settings ([`OPTIMISER_SETTINGS`]) are the checkpoint's unless given, and then replace
//! it (a rollback's lowered learning rate is the checkpoint's). Everything else is the
//! command line's: the schedule (`--steps`, `--epochs`, `--eval-every`, ...), `--batch`,
//! `--translate`, `--flip`, `--tensorboard`, `--device`, `--memory`, `--matmul-precision`,
//! `--detect-anomaly`.

use std::ffi::OsString;
use std::path::Path;

use glow::checkpoint::CheckpointHeader;

use super::CliResult;
use glow::optim::OptimizerConfig;
use glow::{Coupling, GlowConfig, Permutation};

/// The long names of the flags whose values a checkpoint holds and a resume must not
/// change (checked by [`conflicts`]).
pub const FROM_CHECKPOINT: [&str; 12] = [
    "levels",
    "depth",
    "hidden",
    "coupling",
    "permutation",
    "learn-top",
    "no-learn-top",
    "y-condition",
    "y-weight",
    "n-bits",
    "seed",
    "optimizer",
];

/// The long names of the optimiser's settings: the checkpoint's on resume unless given
/// on the command line, which then replaces them ([`replace_settings`]). Some come in two
/// spellings: `--warmup` or `--warmup-epochs`, `--beta2` or `--polyak-epochs`.
pub const OPTIMISER_SETTINGS: [&str; 10] = [
    "lr",
    "warmup",
    "warmup-epochs",
    "beta1",
    "beta2",
    "polyak-epochs",
    "weight-decay",
    "max-grad-norm",
    "max-grad-value",
    "ema",
];

/// Whether a resume takes the flag with this long name from the checkpoint rather than
/// the command line, unless given ([`FROM_CHECKPOINT`] and [`OPTIMISER_SETTINGS`]).
pub fn held_by_checkpoint(long: &str) -> bool {
    FROM_CHECKPOINT.contains(&long) || OPTIMISER_SETTINGS.contains(&long)
}

/// What a command line asks of a resumed run, beside `--resume`: the model it describes,
/// the optimiser, and which flags it gave explicitly (by long name) rather than left at
/// their defaults.
pub struct Asked<'a> {
    /// The model the flags describe (its `seed` is `--seed`).
    pub model: &'a GlowConfig,
    /// The optimiser the flags describe.
    pub optimizer: &'a OptimizerConfig,
    /// Whether the flag with this long name was on the command line.
    pub given: &'a dyn Fn(&str) -> bool,
    /// The training split it names (its fingerprint is taken only to compare with a
    /// checkpoint that recorded one).
    pub train: &'a glow::data::Dataset,
}

/// Every way `asked` differs from the checkpoint `header`, one phrase each
/// (`--depth 4 (the checkpoint has 8)`): flags of [`FROM_CHECKPOINT`] given with another
/// value, images of another shape than the checkpoint's model takes, and the data when
/// the checkpoint recorded its own. Empty when none.
pub fn conflicts(asked: &Asked, header: &CheckpointHeader) -> Vec<String> {
    let mut out = Vec::new();
    let (m, c) = (asked.model, &header.config);
    if m.image_shape != c.image_shape {
        // Not a flag: the data's shape, which the checkpoint's model must take.
        out.push(format!(
            "the data's {:?} images (the checkpoint's model takes {:?}: give the --dataset \
             and --data it was trained on)",
            m.image_shape, c.image_shape
        ));
    }
    let mut differ = |flag: &str, want: String, have: String| {
        if (asked.given)(flag) && want != have {
            out.push(format!("--{flag} {want} (the checkpoint has {have})"));
        }
    };
    differ("levels", m.levels.to_string(), c.levels.to_string());
    differ("depth", m.depth.to_string(), c.depth.to_string());
    differ("hidden", m.hidden.to_string(), c.hidden.to_string());
    differ("coupling", coupling(m.coupling), coupling(c.coupling));
    differ(
        "permutation",
        permutation(m.permutation),
        permutation(c.permutation),
    );
    // A switch given is on; the checkpoint's off is the difference.
    let switch = |on: bool| if on { "on" } else { "off" }.to_string();
    differ("learn-top", switch(m.learn_top), switch(c.learn_top));
    differ("no-learn-top", switch(!m.learn_top), switch(!c.learn_top));
    differ("y-condition", switch(m.y_condition), switch(c.y_condition));
    differ("y-weight", m.y_weight.to_string(), c.y_weight.to_string());
    differ("n-bits", m.n_bits.to_string(), c.n_bits.to_string());
    differ("seed", m.seed.to_string(), header.train.seed.to_string());
    differ(
        "optimizer",
        format!("{:?}", asked.optimizer.kind).to_lowercase(),
        format!("{:?}", header.optimizer.kind).to_lowercase(),
    );
    if let Some(had) = header.train.data_crc32 {
        let crc = asked.train.fingerprint();
        if had != crc {
            out.push(format!(
                "the data (the checkpoint's training split has CRC-32 {had:08x}, this one \
                 {:08x}: give the --dataset, --data and, for a folder, --image-size and \
                 --channels the run was started with)",
                crc
            ));
        }
    }
    out
}

/// Checks a resume of the run in the folder `out` to `total` steps against its
/// checkpoint, read from the header alone: a usage error listing every [`conflicts`]
/// phrase; `Some(step)` when the checkpoint is at `step`, at or past `total`, so there is
/// nothing to train; `None` to go on.
pub fn check(asked: &Asked, out: &Path, total: u64) -> CliResult<Option<u64>> {
    let header = glow::checkpoint::read_header(out.join(glow::run::CHECKPOINT_FILE))?;
    let conflicts = conflicts(asked, &header);
    if !conflicts.is_empty() {
        return Err(super::usage_error(format!(
            "--resume continues the run in {} as its checkpoint defines it; these differ \
             from it: {} (leave them out, or start a new run with another --out)",
            out.display(),
            conflicts.join(", ")
        )));
    }
    Ok((total <= header.train.step).then_some(header.train.step))
}

/// Replaces the settings of [`OPTIMISER_SETTINGS`] in `config` (a resumed optimiser's)
/// with those `asked` gives explicitly, and returns each change as a phrase
/// (`--lr 0.0005 replaces the checkpoint's 0.001`).
pub fn replace_settings(asked: &Asked, config: &mut OptimizerConfig) -> Vec<String> {
    let mut changes = Vec::new();
    let a = asked.optimizer;
    let mut replace = |flag: &str, now: String, was: String| {
        if now != was {
            changes.push(format!("--{flag} {now} replaces the checkpoint's {was}"));
        }
    };
    let given = asked.given;
    let clip = |c: Option<f32>| c.map_or("0 (off)".into(), |v| v.to_string());
    if given("lr") {
        replace("lr", a.lr.to_string(), config.lr.to_string());
        config.lr = a.lr;
    }
    if given("warmup") || given("warmup-epochs") {
        replace("warmup", a.warmup.to_string(), config.warmup.to_string());
        config.warmup = a.warmup;
    }
    if given("beta1") {
        let (now, was) = (a.betas.0, config.betas.0);
        replace("beta1", now.to_string(), was.to_string());
        config.betas.0 = now;
    }
    if given("beta2") || given("polyak-epochs") {
        let (now, was) = (a.betas.1, config.betas.1);
        replace("beta2", now.to_string(), was.to_string());
        config.betas.1 = now;
    }
    if given("weight-decay") {
        let (now, was) = (a.weight_decay, config.weight_decay);
        replace("weight-decay", now.to_string(), was.to_string());
        config.weight_decay = now;
    }
    if given("max-grad-norm") {
        replace(
            "max-grad-norm",
            clip(a.max_grad_norm),
            clip(config.max_grad_norm),
        );
        config.max_grad_norm = a.max_grad_norm;
    }
    if given("max-grad-value") {
        let (now, was) = (clip(a.max_grad_value), clip(config.max_grad_value));
        replace("max-grad-value", now, was);
        config.max_grad_value = a.max_grad_value;
    }
    if given("ema") {
        // A new decay goes on from the averages kept so far; 0 drops them (the caller
        // clears them).
        let (now, was) = (clip(a.ema_decay), clip(config.ema_decay));
        replace("ema", now, was);
        config.ema_decay = a.ema_decay;
    }
    changes
}

/// `argv`, the command line of a program whose flags `cmd` describes, as a shell
/// command that continues its run: `--resume` added, and the flags
/// whose values the checkpoint now holds (the model, seed and optimiser) and
/// `--overwrite` left out, so that the resumed run is the checkpoint's (a rollback's
/// lowered learning rate included) whatever the first command line said.
pub fn command(argv: &[OsString], cmd: &clap::Command) -> String {
    let held: Vec<&str> = FROM_CHECKPOINT
        .iter()
        .chain(&OPTIMISER_SETTINGS)
        .chain(&["overwrite"])
        .copied()
        .collect();
    let takes_value = |long: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut words: Vec<String> = Vec::new();
    let mut rest = argv.iter().map(|a| a.to_string_lossy().into_owned());
    words.extend(rest.next());
    while let Some(w) = rest.next() {
        let long = w
            .strip_prefix("--")
            .map(|f| f.split('=').next().unwrap_or(f));
        match long {
            Some(name) if held.contains(&name) => {
                if !w.contains('=') && takes_value(name) {
                    rest.next();
                }
            }
            _ => words.push(w),
        }
    }
    if !words.iter().skip(1).any(|w| w == "--resume") {
        words.push("--resume".into());
    }
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn coupling(c: Coupling) -> String {
    match c {
        Coupling::Affine => "affine",
        Coupling::Additive => "additive",
    }
    .into()
}

fn permutation(p: Permutation) -> String {
    match p {
        Permutation::Invconv => "invconv",
        Permutation::InvconvLu => "invconv-lu",
        Permutation::Shuffle => "shuffle",
        Permutation::Reverse => "reverse",
    }
    .into()
}
