//! `--preset`: the training recipes of the reference code and of the PyTorch port as
//! named sets of flags, so that `train_cifar10 --preset paper` trains as openai/glow does
//! on CIFAR-10, and `--preset port` as y0ast/Glow-PyTorch's defaults do.
//!
//! A preset is nothing but flags: [`expand`] puts its flags on the command line before
//! the user's, leaving out every one the user gave (or gave a rival of: `--warmup` for
//! the preset's `--warmup-epochs`), so an explicit flag always wins and the run is what
//! the expanded command line says, which the example prints at start. On `--resume` the
//! preset's model and optimiser flags are left out too: the checkpoint holds those.
//!
//! Where the recipes come from (both public; `train.py` and its helpers):
//! - **paper**: openai/glow's CIFAR-10 command (`--n_level 3 --depth 32
//!   --flow_permutation 2 --flow_coupling 1 --learntop --lr 0.001`) over its defaults:
//!   width 512, batch 64, `--n_batch_init 256`, Adamax with β1 0.9 and β2 (and the
//!   Polyak average's decay) `1 − 1/(steps per epoch · polyak_epochs)` with
//!   `--polyak_epochs 1`, no weight decay, no clipping, a warmup of 10 epochs, and `--dal
//!   1`: random translations by up to 10% of the width, no flip. Its 1x1 convolutions are
//!   plain (not LU-decomposed).
//! - **port**: y0ast/Glow-PyTorch's defaults: L=3, K=32, 512 channels, LU-decomposed 1x1
//!   convolutions, learned top prior, Adam at 5e-4 with PyTorch's betas and a weight
//!   decay of 5e-5, a warmup of 5 epochs (the port raises the rate once an epoch; this
//!   one raises it every step), 8 batches of 64 for ActNorm's initialisation, `--y_weight
//!   0.01` (on the cross-entropy in nats: 0.01 · ln 2 on this one's bits), no clipping,
//!   and translations by up to 10% with horizontal flips.

use std::ffi::OsString;

use clap::ValueEnum;

/// `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// openai/glow's CIFAR-10 recipe (L=3, K=32, width 512, batch 64, Adamax, Polyak
    /// average, translations).
    Paper,
    /// y0ast/Glow-PyTorch's defaults (L=3, K=32, width 512, batch 64, Adam, translations
    /// and flips).
    Port,
}

/// One flag of a preset: its long name and its value (`None` for a switch, or a flag
/// whose value is optional and left out).
pub type PresetFlag = (&'static str, Option<&'static str>);

/// [`PresetArg::Paper`]'s flags.
pub const PAPER: &[PresetFlag] = &[
    ("levels", Some("3")),
    ("depth", Some("32")),
    ("hidden", Some("512")),
    ("coupling", Some("affine")),
    ("permutation", Some("invconv")),
    ("learn-top", None),
    ("batch", Some("64")),
    ("init-batch", Some("256")),
    ("optimizer", Some("adamax")),
    ("lr", Some("0.001")),
    ("warmup-epochs", Some("10")),
    ("beta1", Some("0.9")),
    ("polyak-epochs", Some("1")),
    ("ema", Some("polyak")),
    ("weight-decay", Some("0")),
    ("max-grad-norm", Some("0")),
    ("max-grad-value", Some("0")),
    ("y-weight", Some("0")),
    ("translate", None),
];

/// [`PresetArg::Port`]'s flags.
pub const PORT: &[PresetFlag] = &[
    ("levels", Some("3")),
    ("depth", Some("32")),
    ("hidden", Some("512")),
    ("coupling", Some("affine")),
    ("permutation", Some("invconv-lu")),
    ("learn-top", None),
    ("batch", Some("64")),
    ("init-batch", Some("512")),
    ("optimizer", Some("adam")),
    ("lr", Some("0.0005")),
    ("warmup-epochs", Some("5")),
    ("beta1", Some("0.9")),
    ("beta2", Some("0.999")),
    ("ema", Some("0")),
    ("weight-decay", Some("0.00005")),
    ("max-grad-norm", Some("0")),
    ("max-grad-value", Some("0")),
    // The port's --y_weight 0.01 weighs the cross-entropy in nats; here it is in bits.
    ("y-weight", Some("0.0069315")),
    ("translate", None),
    ("flip", None),
];

/// Flags that set the same thing as another one: a user's `--warmup` replaces a preset's
/// `--warmup-epochs`, and so on, both ways.
pub const RIVALS: &[(&str, &str)] = &[
    ("warmup", "warmup-epochs"),
    ("beta2", "polyak-epochs"),
    ("flip", "no-flip"),
    ("learn-top", "no-learn-top"),
];

impl PresetArg {
    /// The preset's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PresetArg::Paper => "paper",
            PresetArg::Port => "port",
        }
    }

    /// Its flags.
    pub fn flags(self) -> &'static [PresetFlag] {
        match self {
            PresetArg::Paper => PAPER,
            PresetArg::Port => PORT,
        }
    }
}

/// `--preset`'s long help: what it does and every preset's flags, from the tables above.
pub fn long_help() -> String {
    let mut help = String::from(
        "Start from a recipe: its flags are put before yours, and a flag you give wins \
         (--warmup replaces --warmup-epochs, --beta2 --polyak-epochs; --no-flip and \
         --no-learn-top undo those switches). The run prints the \
         flags it took at start. Both recipes train the paper's model (K=32, 512 channels), \
         many times slower a step than the default on a CPU.",
    );
    for p in [PresetArg::Paper, PresetArg::Port] {
        let about = match p {
            PresetArg::Paper => "openai/glow's CIFAR-10 recipe",
            PresetArg::Port => "y0ast/Glow-PyTorch's defaults",
        };
        let flags: Vec<String> = p
            .flags()
            .iter()
            .map(|(f, v)| v.map_or(format!("--{f}"), |v| format!("--{f} {v}")))
            .collect();
        help.push_str(&format!("\n\n{}: {about}: {}", p.name(), flags.join(" ")));
    }
    help
}

/// What [`expand`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    /// The command line to parse: the program, the preset's flags kept, then the user's.
    pub argv: Vec<OsString>,
    /// The preset's flags put on it, as words (`--depth 32`).
    pub applied: Vec<String>,
    /// The preset's flags left out because the user gave them (or a rival).
    pub overridden: Vec<String>,
    /// Those left out because a resume takes them from the checkpoint.
    pub from_checkpoint: Vec<String>,
}

impl Expanded {
    /// Whether the preset put the flag with this long name on the command line.
    pub fn applied_flag(&self, long: &str) -> bool {
        let flag = format!("--{long}");
        self.applied
            .iter()
            .any(|w| w.split(' ').next() == Some(flag.as_str()))
    }
}

/// `argv` with `preset`'s flags put before the user's (module docs). `given` says
/// whether the user gave a flag (by long name); `held` whether a resume takes it from the
/// checkpoint (only asked when `resuming`).
pub fn expand(
    argv: &[OsString],
    preset: PresetArg,
    given: &dyn Fn(&str) -> bool,
    resuming: bool,
    held: &dyn Fn(&str) -> bool,
) -> Expanded {
    let mut out = Expanded {
        argv: argv.iter().take(1).cloned().collect(),
        applied: Vec::new(),
        overridden: Vec::new(),
        from_checkpoint: Vec::new(),
    };
    for &(flag, value) in preset.flags() {
        let words: Vec<String> = std::iter::once(format!("--{flag}"))
            .chain(value.map(str::to_string))
            .collect();
        let shown = words.join(" ");
        let rival_given = RIVALS
            .iter()
            .any(|&(a, b)| (a == flag && given(b)) || (b == flag && given(a)));
        if given(flag) || rival_given {
            out.overridden.push(shown);
        } else if resuming && held(flag) {
            out.from_checkpoint.push(shown);
        } else {
            out.argv.extend(words.iter().map(OsString::from));
            out.applied.push(shown);
        }
    }
    out.argv.extend(argv.iter().skip(1).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn explicit_flags_and_their_rivals_win() {
        let argv: Vec<OsString> = ["prog", "--lr", "0.002", "--warmup", "7"]
            .iter()
            .map(OsString::from)
            .collect();
        let given = |f: &str| f == "lr" || f == "warmup";
        let e = expand(&argv, PresetArg::Paper, &given, false, &|_| false);
        let w = words(&e.argv);
        assert_eq!(w[0], "prog");
        assert_eq!(&w[w.len() - 4..], ["--lr", "0.002", "--warmup", "7"]);
        assert!(!w[..w.len() - 4].contains(&"--lr".to_string()));
        assert!(
            !w.contains(&"--warmup-epochs".to_string()),
            "the rival is left out"
        );
        assert_eq!(e.overridden, ["--lr 0.001", "--warmup-epochs 10"]);
        assert!(w.windows(2).any(|p| p == ["--depth", "32"]));
        assert_eq!(e.applied.len() + e.overridden.len(), PAPER.len());
    }

    #[test]
    fn a_resume_leaves_the_held_flags_to_the_checkpoint() {
        let argv = vec![OsString::from("prog"), OsString::from("--resume")];
        let held = |f: &str| ["depth", "lr"].contains(&f);
        let e = expand(&argv, PresetArg::Port, &|_| false, true, &held);
        assert_eq!(e.from_checkpoint, ["--depth 32", "--lr 0.0005"]);
        assert!(e.applied.contains(&"--batch 64".to_string()));
        assert!(e.applied.contains(&"--flip".to_string()));
    }
}
