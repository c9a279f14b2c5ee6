//! Every numeric flag of every example, given bad values, must stop the program before
//! any work with exit status 2, one line `error: --FLAG must be …, got VALUE` on stderr
//! and nothing on stdout; and each example given good values must pass the checks and
//! run (a tiny real run on the CPU device). The rules are `glow_rs::cli::validate`.
//!
//! **The example binaries.** `cargo test` builds the examples as plain programs, in the
//! test profile, into `target/<profile>/examples/`, beside `target/<profile>/deps/` where
//! this test binary lives; [`example`] finds them from [`std::env::current_exe`]: its
//! folder's parent, then `examples/NAME`. `cargo test --test flags` alone does not build
//! (or rebuild) them: run `cargo build --profile test --examples` first, or the test
//! fails naming the missing file (and would test stale binaries after an edit).
//!
//! Run with `cargo test --test flags`; `-- --nocapture` prints every command and its
//! error line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use glow::data::RECORD_BYTES;
use glow_rs::testing::Scratch;

/// The built example `name`, found beside this test binary (see the module doc).
fn example(name: &str) -> PathBuf {
    glow_rs::testing::example_binary(name)
}

/// A fresh directory for one test (see `glow_rs::testing::Scratch`).
fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("flags-{name}"))
}

/// What a run of an example did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// No run may take longer: a flag that slipped through validation would start real work.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs example `name` with `args`, its output captured in files of `scratch` (no pipe to
/// drain), killed after [`TIMEOUT`].
fn run(scratch: &Scratch, name: &str, args: &[String]) -> Outcome {
    let (out_path, err_path) = (scratch.path("stdout"), scratch.path("stderr"));
    let file = |p: &Path| std::fs::File::create(p).expect("create an output file");
    let started = Instant::now();
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} still ran after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| std::fs::read_to_string(p).expect("read an output file");
    Outcome {
        code: status.code(),
        stdout: read(&out_path),
        stderr: read(&err_path),
        elapsed: started.elapsed(),
    }
}

/// `values` as owned arguments.
fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// Bad values of a count (at least 1).
const BAD_COUNT: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "NaN",
    "inf",
    "abc",
    "",
    "1e3",
    "99999999999999999999",
];
/// Bad values of any integer >= 0 (a seed, an index before it meets the data).
const BAD_INTEGER: &[&str] = &["-1", "1.5", "NaN", "-inf", "x", "", "99999999999999999999"];
/// Bad values of a number > 0.
const BAD_POSITIVE: &[&str] = &[
    "0", "-1", "-0.001", "NaN", "nan", "inf", "-inf", "1e40", "1e-50", "abc", "",
];
/// Bad values of a number >= 0.
const BAD_NON_NEGATIVE: &[&str] = &["-1", "-1e-7", "NaN", "inf", "-inf", "1e40", "abc", ""];

/// Bad values of a number in [0, 1).
const BAD_UNIT: &[&str] = &["1", "1.5", "-0.1", "NaN", "inf", "abc", ""];

/// The bad values of each numeric flag of each example: `(example, flag, values)`.
fn sweep() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let with = |base: &[&'static str], more: &[&'static str]| [base, more].concat();
    vec![
        ("train_cifar10", "--levels", with(BAD_COUNT, &["17", "64"])),
        ("train_cifar10", "--depth", with(BAD_COUNT, &["1025"])),
        ("train_cifar10", "--hidden", with(BAD_COUNT, &["8193"])),
        ("train_cifar10", "--n-bits", with(BAD_COUNT, &["9", "32"])),
        ("train_cifar10", "--batch", BAD_COUNT.to_vec()),
        ("train_cifar10", "--init-batch", BAD_COUNT.to_vec()),
        ("train_cifar10", "--steps", with(BAD_COUNT, &["4294967296"])),
        ("train_cifar10", "--epochs", with(BAD_COUNT, &["1000001"])),
        ("train_cifar10", "--lr", BAD_POSITIVE.to_vec()),
        (
            "train_cifar10",
            "--warmup",
            with(BAD_INTEGER, &["4294967296"]),
        ),
        ("train_cifar10", "--weight-decay", BAD_NON_NEGATIVE.to_vec()),
        (
            "train_cifar10",
            "--max-grad-norm",
            BAD_NON_NEGATIVE.to_vec(),
        ),
        (
            "train_cifar10",
            "--max-grad-value",
            BAD_NON_NEGATIVE.to_vec(),
        ),
        ("train_cifar10", "--y-weight", BAD_NON_NEGATIVE.to_vec()),
        ("train_cifar10", "--beta1", BAD_UNIT.to_vec()),
        ("train_cifar10", "--beta2", with(BAD_UNIT, &["0"])),
        ("train_cifar10", "--ema", with(BAD_UNIT, &["Polyak", "ema"])),
        ("train_cifar10", "--polyak-epochs", BAD_POSITIVE.to_vec()),
        (
            "train_cifar10",
            "--warmup-epochs",
            BAD_NON_NEGATIVE.to_vec(),
        ),
        // The flag alone is 10% of the width; a value must be a whole number of pixels.
        (
            "train_cifar10",
            "--translate",
            vec!["1.5", "x", "99999999999999999999"],
        ),
        ("train_cifar10", "--shards", with(BAD_COUNT, &["65"])),
        ("train_cifar10", "--seed", BAD_INTEGER.to_vec()),
        // 0 is "never" for these three.
        ("train_cifar10", "--eval-every", BAD_INTEGER.to_vec()),
        ("train_cifar10", "--sample-every", BAD_INTEGER.to_vec()),
        ("train_cifar10", "--checkpoint-every", BAD_INTEGER.to_vec()),
        (
            "train_cifar10",
            "--checkpoint-minutes",
            BAD_NON_NEGATIVE.to_vec(),
        ),
        (
            "train_cifar10",
            "--max-bad-steps",
            with(BAD_COUNT, &["4294967296"]),
        ),
        ("evaluate", "--batch", BAD_COUNT.to_vec()),
        ("evaluate", "--seed", BAD_INTEGER.to_vec()),
        ("evaluate", "--iw-samples", with(BAD_COUNT, &["1025"])),
        ("sample", "--n", with(BAD_COUNT, &["4097"])),
        ("sample", "--seed", BAD_INTEGER.to_vec()),
        ("sample", "--temperature", BAD_NON_NEGATIVE.to_vec()),
        ("sample", "--upscale", with(BAD_COUNT, &["17"])),
        ("encode", "--count", BAD_COUNT.to_vec()),
        ("encode", "--batch", BAD_COUNT.to_vec()),
        ("encode", "--seed", BAD_INTEGER.to_vec()),
        ("interpolate", "--a", BAD_INTEGER.to_vec()),
        ("interpolate", "--b", BAD_INTEGER.to_vec()),
        ("interpolate", "--steps", with(BAD_COUNT, &["1", "1025"])),
        ("manipulate", "--class", with(BAD_INTEGER, &["65536"])),
        ("train_cifar10", "--image-size", with(BAD_COUNT, &["4097"])),
        ("train_cifar10", "--channels", with(BAD_COUNT, &["4"])),
        ("evaluate", "--image-size", with(BAD_COUNT, &["4097"])),
        ("ood", "--max-images", BAD_COUNT.to_vec()),
        ("ood", "--batch", BAD_COUNT.to_vec()),
        ("ood", "--bins", with(BAD_COUNT, &["1001"])),
        ("ood", "--seed", BAD_INTEGER.to_vec()),
        ("manipulate", "--index", BAD_INTEGER.to_vec()),
        ("manipulate", "--per-group", BAD_COUNT.to_vec()),
        (
            "manipulate",
            "--alphas",
            vec![
                "NaN", "inf", "-inf", "1e40", "abc", "", "-1,NaN", "0,,1", "1;2",
            ],
        ),
    ]
}

/// Files the runs point at: a data file and a checkpoint that pass the flags' checks but
/// fail at once when read (exit status 1), so a bad value that slipped through would
/// show as status 1, not hang in real work.
struct Bait {
    data: PathBuf,
    checkpoint: PathBuf,
}

impl Bait {
    fn new(scratch: &Scratch) -> Bait {
        let data = scratch.path("five-bytes.bin");
        std::fs::write(&data, b"12345").expect("write");
        let checkpoint = scratch.path("garbage.safetensors");
        std::fs::write(&checkpoint, b"not a checkpoint").expect("write");
        Bait { data, checkpoint }
    }

    /// The arguments every run of `name` gets besides the flag under test.
    fn args(&self, name: &str, out: &Path) -> Vec<String> {
        let (data, ckpt) = (self.data.display(), self.checkpoint.display());
        let out = out.display();
        match name {
            "train_cifar10" => vec![format!("--data={data}"), format!("--out={out}")],
            "sample" => vec![format!("--checkpoint={ckpt}"), format!("--out={out}")],
            "ood" => vec![
                format!("--checkpoint={ckpt}"),
                format!("--data={data}"),
                "--ood-dataset=folder".into(),
                format!("--ood-data={data}"),
            ],
            _ => vec![format!("--checkpoint={ckpt}"), format!("--data={data}")],
        }
    }
}

/// Asserts that `o` is a refusal of `flag`: status 2, nothing on stdout, one line on
/// stderr, `error: FLAG …`, saying `got SHOWN` when `shown` is given.
fn assert_refused(o: &Outcome, what: &str, flag: &str, shown: Option<&str>) {
    let lines: Vec<&str> = o.stderr.lines().collect();
    eprintln!("{what}: {}", o.stderr.trim_end());
    assert_eq!(o.code, Some(2), "{what}: exit status; stderr: {}", o.stderr);
    assert!(o.stdout.is_empty(), "{what}: stdout {:?}", o.stdout);
    assert_eq!(
        lines.len(),
        1,
        "{what}: one line on stderr, got {:?}",
        o.stderr
    );
    assert!(
        lines[0].starts_with(&format!("error: {flag} ")),
        "{what}: the line names the flag: {}",
        lines[0]
    );
    if let Some(shown) = shown {
        assert!(
            lines[0].contains(&format!("got {shown}")),
            "{what}: the line names the value {shown:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn every_bad_numeric_flag_exits_2_with_one_line_before_any_work() {
    let scratch = scratch("sweep");
    let bait = Bait::new(&scratch);
    let (mut cases, mut slowest) = (0, Duration::ZERO);
    let started = Instant::now();
    for (name, flag, values) in sweep() {
        for value in values {
            let out = scratch.path(&format!("out-{cases}"));
            // `--flag=value` passes an empty value too; the form `--flag value` is
            // tried below.
            let mut args = vec![format!("{flag}={value}")];
            args.extend(bait.args(name, &out));
            let o = run(&scratch, name, &args);
            let shown = match value {
                "" => Some("an empty value"),
                v if v.contains([',', ';']) => None,
                v => Some(v),
            };
            assert_refused(&o, &format!("{name} {flag}={value:?}"), flag, shown);
            assert!(
                !out.exists(),
                "{name} {flag}={value:?} created {}",
                out.display()
            );
            slowest = slowest.max(o.elapsed);
            cases += 1;
        }
    }
    // The separate form `--flag value` reaches the rule for negative values too.
    let o = run(&scratch, "train_cifar10", &strings(&["--lr", "-1"]));
    assert_refused(&o, "train_cifar10 --lr -1", "--lr", Some("-1"));
    eprintln!(
        "{cases} bad values refused in {:.2?} (slowest run {slowest:.2?})",
        started.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(10),
        "a refusal took {slowest:?}: validation must come before any work"
    );
}

/// The first `n` records of the shipped sample, with every label set to `label` if given.
fn sample_records(n: usize, label: Option<u8>) -> Vec<u8> {
    let path = glow::data::default_data_dir().join("data_batch_1.bin");
    let bytes = std::fs::read(&path).expect("the shipped sample");
    let mut records = bytes[..n * RECORD_BYTES].to_vec();
    if let Some(label) = label {
        records
            .chunks_exact_mut(RECORD_BYTES)
            .for_each(|r| r[0] = label);
    }
    records
}

#[test]
fn values_too_large_for_the_data_exit_2_with_one_line() {
    let scratch = scratch("data");
    let bait = Bait::new(&scratch);
    // 9 records hold none out for testing; 20 of one class leave no others for a direction.
    let no_test = scratch.path("nine.bin");
    std::fs::write(&no_test, sample_records(9, None)).expect("write");
    let one_class = scratch.path("one-class.bin");
    std::fs::write(&one_class, sample_records(20, Some(3))).expect("write");
    let empty_run = scratch.path("empty-run");
    std::fs::create_dir(&empty_run).expect("mkdir");
    let ckpt = bait.checkpoint.display().to_string();
    let train_out = scratch.path("train-out");
    let train_out = format!("--out={}", train_out.display());
    let cases: Vec<(&str, Vec<String>, &str, Option<&str>)> = vec![
        // The shipped sample: 2,700 training images, 300 held out.
        (
            "train_cifar10",
            vec!["--batch=2701".into(), train_out.clone()],
            "--batch",
            Some("2701"),
        ),
        (
            "train_cifar10",
            vec!["--init-batch=2701".into(), train_out.clone()],
            "--init-batch",
            Some("2701"),
        ),
        // A shift of the whole 32-pixel width leaves nothing of the image.
        (
            "train_cifar10",
            vec!["--translate=32".into(), train_out.clone()],
            "--translate",
            Some("32"),
        ),
        // The dataset flags go together, checked before any data is read or fetched.
        (
            "train_cifar10",
            vec!["--image-size=32".into(), train_out.clone()],
            "--image-size",
            None,
        ),
        (
            "train_cifar10",
            vec![
                "--dataset=folder".into(),
                "--channels=2".into(),
                format!("--data={}", scratch.display()),
                train_out.clone(),
            ],
            "--channels",
            Some("2"),
        ),
        (
            "train_cifar10",
            vec![
                "--dataset=imagenet32".into(),
                format!("--download={}", scratch.path("never").display()),
                train_out.clone(),
            ],
            "--download",
            None,
        ),
        (
            "train_cifar10",
            vec!["--dataset=mnist".into(), train_out.clone()],
            "--dataset",
            None,
        ),
        // A batch of 16 does not split into 3 shards.
        (
            "train_cifar10",
            vec!["--shards=3".into(), train_out.clone()],
            "--batch",
            None,
        ),
        // One epoch of 2,700 / 16 = 168 steps: a Polyak average over 1e9 epochs is
        // β2 = 1 in f32.
        (
            "train_cifar10",
            vec!["--polyak-epochs=1e9".into(), train_out.clone()],
            "--polyak-epochs",
            None,
        ),
        // Its 32x32 images halve 5 times.
        (
            "train_cifar10",
            vec!["--levels=6".into(), train_out.clone()],
            "--levels",
            Some("6"),
        ),
        (
            "train_cifar10",
            vec!["--resume".into(), format!("--out={}", empty_run.display())],
            "--resume",
            None,
        ),
        (
            "train_cifar10",
            vec![
                format!("--data={}", no_test.display()),
                "--batch=2".into(),
                train_out.clone(),
            ],
            "--data",
            None,
        ),
        (
            "evaluate",
            vec![
                format!("--checkpoint={ckpt}"),
                format!("--data={}", no_test.display()),
            ],
            "--data",
            None,
        ),
        (
            "interpolate",
            vec![format!("--checkpoint={ckpt}"), "--a=300".into()],
            "--a",
            Some("300"),
        ),
        (
            "interpolate",
            vec![format!("--checkpoint={ckpt}"), "--b=1000000".into()],
            "--b",
            Some("1000000"),
        ),
        (
            "manipulate",
            vec![format!("--checkpoint={ckpt}"), "--index=300".into()],
            "--index",
            Some("300"),
        ),
        (
            "manipulate",
            vec![
                format!("--checkpoint={ckpt}"),
                format!("--data={}", one_class.display()),
                "--class=3".into(),
            ],
            "--class",
            Some("3"),
        ),
        (
            "manipulate",
            vec![format!("--checkpoint={ckpt}"), "--class=10".into()],
            "--class",
            Some("10"),
        ),
        // Paths of the wrong kind, or missing.
        (
            "evaluate",
            vec!["--checkpoint=no-such-file.safetensors".into()],
            "--checkpoint",
            Some("no-such-file.safetensors"),
        ),
        (
            "sample",
            vec![format!("--checkpoint={}", scratch.display())],
            "--checkpoint",
            None,
        ),
        (
            "train_cifar10",
            vec!["--data=no/such/dir".into()],
            "--data",
            Some("no/such/dir"),
        ),
        (
            "train_cifar10",
            vec![format!("--out={ckpt}")],
            "--out",
            None,
        ),
        (
            "interpolate",
            vec![
                format!("--checkpoint={ckpt}"),
                format!("--out={}", scratch.display()),
            ],
            "--out",
            None,
        ),
    ];
    for (name, args, flag, shown) in cases {
        let o = run(&scratch, name, &args);
        assert_refused(&o, &format!("{name} {args:?}"), flag, shown);
        assert!(
            o.elapsed < Duration::from_secs(10),
            "{name} {args:?} took {:?}",
            o.elapsed
        );
    }
    assert!(
        !scratch.path("train-out").exists(),
        "a refused run created its --out"
    );
    // The positional argument of mlp follows the same form.
    let o = run(&scratch, "mlp", &strings(&["gpu"]));
    assert_eq!(o.code, Some(2), "mlp gpu: {}", o.stderr);
    assert!(
        o.stderr.starts_with("error: ") && o.stderr.lines().count() == 1,
        "{}",
        o.stderr
    );
}

#[test]
fn a_damaged_input_file_is_one_line_with_exit_status_1() {
    let scratch = scratch("damaged");
    let bait = Bait::new(&scratch);
    for (name, args) in [
        (
            "train_cifar10",
            bait.args("train_cifar10", &scratch.path("out")),
        ),
        ("evaluate", bait.args("evaluate", &scratch.path("out"))),
        ("sample", bait.args("sample", &scratch.path("out"))),
        ("encode", bait.args("encode", &scratch.path("out"))),
        (
            "decode",
            vec![
                format!("--checkpoint={}", bait.checkpoint.display()),
                format!("--latents={}", bait.checkpoint.display()),
            ],
        ),
    ] {
        let o = run(&scratch, name, &args);
        let what = format!("{name} {args:?}");
        eprintln!("{what}: {}", o.stderr.trim_end());
        assert_eq!(o.code, Some(1), "{what}: {}", o.stderr);
        let line = o.stderr.lines().last().unwrap_or_default();
        assert!(line.starts_with("error: "), "{what}: {}", o.stderr);
        assert!(
            line.contains("five-bytes.bin") || line.contains("garbage.safetensors"),
            "{what}: the error names the file: {line}"
        );
        assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
    }
}

#[test]
fn every_example_answers_help() {
    let scratch = scratch("help");
    for name in [
        "train_cifar10",
        "evaluate",
        "sample",
        "interpolate",
        "manipulate",
        "encode",
        "decode",
        "train",
        "ood",
    ] {
        let o = run(&scratch, name, &strings(&["--help"]));
        assert_eq!(o.code, Some(0), "{name} --help: {}", o.stderr);
        assert!(o.stdout.contains("Usage:"), "{name} --help: {}", o.stdout);
    }
}

/// The JSON of the last line of `o`'s stdout, after checking that the run succeeded.
fn summary(o: &Outcome, what: &str) -> serde_json::Value {
    assert_eq!(o.code, Some(0), "{what}: {}", o.stderr);
    let last = o.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: last line {last:?}: {e}"))
}

#[test]
fn good_values_pass_the_checks_and_every_example_runs() {
    let scratch = scratch("good");
    // 20 records: 18 to train on, the last 2 held out.
    let data = scratch.path("twenty.bin");
    std::fs::write(&data, sample_records(20, None)).expect("write");
    let data_flag = format!("--data={}", data.display());
    let run_dir = scratch.path("run");
    let train: Vec<String> = [
        &data_flag,
        &format!("--out={}", run_dir.display()),
        "--device=cpu",
        "--levels=1",
        "--depth=1",
        "--hidden=4",
        "--n-bits=5",
        "--batch=2",
        "--steps=2",
        "--epochs=3",
        "--lr=1e-3",
        "--warmup=0",
        "--weight-decay=0",
        "--max-grad-norm=0",
        "--max-grad-value=1",
        "--beta1=0.8",
        "--polyak-epochs=2",
        "--ema=polyak",
        "--translate=1",
        "--flip",
        "--shards=2",
        "--seed=1",
        "--eval-every=1",
        "--sample-every=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = run(&scratch, "train_cifar10", &train);
    assert_eq!(summary(&o, "train_cifar10")["steps"], 2);
    let ckpt = format!(
        "--checkpoint={}",
        run_dir.join("checkpoint.safetensors").display()
    );

    let cpu = "--device=cpu".to_string();
    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "evaluate",
            vec![
                ckpt.clone(),
                data_flag.clone(),
                cpu.clone(),
                "--batch=1".into(),
                "--seed=3".into(),
            ],
        ),
        (
            "sample",
            vec![
                ckpt.clone(),
                cpu.clone(),
                "--n=2".into(),
                "--seed=0".into(),
                format!("--out={}", scratch.path("samples").display()),
            ],
        ),
        (
            "interpolate",
            vec![
                ckpt.clone(),
                data_flag.clone(),
                cpu.clone(),
                "--a=0".into(),
                "--b=1".into(),
                "--steps=2".into(),
                format!("--out={}", scratch.path("i.png").display()),
            ],
        ),
        (
            "manipulate",
            vec![
                ckpt.clone(),
                data_flag.clone(),
                cpu.clone(),
                "--class=9".into(),
                "--index=1".into(),
                "--per-group=2".into(),
                "--alphas=-1,0,1".into(),
                format!("--out={}", scratch.path("m.png").display()),
            ],
        ),
        (
            "sample",
            vec![
                ckpt.clone(),
                cpu.clone(),
                "--n=2".into(),
                "--temperature=0.5".into(),
                "--upscale=2".into(),
                "--weights=raw".into(),
                format!("--out={}", scratch.path("t05").display()),
            ],
        ),
        (
            "evaluate",
            vec![
                ckpt.clone(),
                data_flag.clone(),
                cpu.clone(),
                "--split=train".into(),
                "--weights=ema".into(),
                "--iw-samples=3".into(),
            ],
        ),
        (
            "encode",
            vec![
                ckpt.clone(),
                data_flag.clone(),
                cpu.clone(),
                "--batch=1".into(),
                format!("--out={}", scratch.path("z.safetensors").display()),
            ],
        ),
        (
            "decode",
            vec![
                ckpt.clone(),
                cpu.clone(),
                format!("--latents={}", scratch.path("z.safetensors").display()),
                format!("--out={}", scratch.path("decoded.png").display()),
                format!("--out-bin={}", scratch.path("decoded.bin").display()),
            ],
        ),
        ("mlp", strings(&["cpu"])),
    ];
    for (name, args) in runs {
        let o = run(&scratch, name, &args);
        summary(&o, &format!("{name} {args:?}"));
    }
    assert!(scratch.path("i.png").is_file() && scratch.path("m.png").is_file());
    // One temperature: its grid alone, no overview.
    assert!(scratch.path("t05/sample_t0.50.png").is_file());
    assert!(!scratch.path("t05/sample_all.png").exists());
    // Encoding the two test images and decoding them gives their records back, bit for
    // bit as the 5-bit model sees them (midpoint dequantisation: the round trip's error
    // is far below half a bin), the labels included.
    let decoded = std::fs::read(scratch.path("decoded.bin")).expect("decoded records");
    let mut want = sample_records(20, None)[18 * RECORD_BYTES..].to_vec();
    for record in want.chunks_exact_mut(RECORD_BYTES) {
        record[1..].iter_mut().for_each(|p| *p &= 0xF8);
    }
    assert_eq!(decoded, want);

    // --drift reports reversible mode's reconstruction drift on every test batch (2).
    let args = vec![
        ckpt,
        data_flag,
        cpu,
        "--memory=reversible".into(),
        "--drift".into(),
    ];
    let o = run(&scratch, "evaluate", &args);
    let json = summary(&o, &format!("evaluate {args:?}"));
    let (max, median) = (json["drift_max"].as_f64(), json["drift_median"].as_f64());
    assert!(
        matches!((max, median), (Some(m), Some(d)) if d <= m && m < 1e-5),
        "drift {max:?}, median {median:?}"
    );
}

/// A build without the `mpi` feature started as one of several MPI ranks (as `mpirun`
/// would start it) refuses to run, rather than being N separate runs writing the same
/// files.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_be_one_of_several_ranks() {
    let scratch = scratch("no-mpi");
    let out = format!("--out={}", scratch.path("run").display());
    let started = Instant::now();
    let o = Command::new(example("train_cifar10"))
        .args(["--steps=1", "--device=cpu", &out])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .stdin(Stdio::null())
        .output()
        .expect("run train_cifar10");
    assert!(started.elapsed() < TIMEOUT);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("one of 2 MPI ranks") && stderr.contains("--features mpi"),
        "{stderr}"
    );
    assert!(!scratch.path("run").exists(), "nothing may be written");
}

/// `--preset port` puts the port's flags before the user's: those given explicitly win
/// (and are listed as such at start), the rest reach the run, as the checkpoint shows.
#[test]
fn a_preset_applies_its_flags_and_explicit_ones_win() {
    let scratch = scratch("preset");
    let data = scratch.path("twenty.bin");
    std::fs::write(&data, sample_records(20, None)).expect("write");
    let run_dir = scratch.path("run");
    let args = strings(&[
        "--preset",
        "port",
        "--device=cpu",
        "--levels=1",
        "--depth=1",
        "--hidden=4",
        "--batch=2",
        "--steps=1",
        "--eval-every=0",
        "--sample-every=0",
        "--warmup=3",
        "--no-flip",
    ]);
    let mut args = args;
    args.push(format!("--data={}", data.display()));
    args.push(format!("--out={}", run_dir.display()));
    let o = run(&scratch, "train_cifar10", &args);
    assert_eq!(summary(&o, "train_cifar10 --preset port")["steps"], 1);
    let line = |prefix: &str| {
        o.stderr
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {}", o.stderr))
            .to_string()
    };
    let applied = line("preset port:");
    // The preset's --init-batch 512 reaches the run as a default, bounded by the 18
    // training images as the built-in one is, rather than refused.
    for flag in [
        "--permutation invconv-lu",
        "--learn-top",
        "--optimizer adam ",
        "--init-batch 512",
        "--translate",
    ] {
        assert!(applied.contains(flag), "{flag} applied: {applied}");
    }
    assert!(!applied.contains("--depth"), "{applied}");
    assert_eq!(
        line("given instead:"),
        "  given instead: --levels 3, --depth 32, --hidden 512, --batch 64, --warmup-epochs 5, \
         --flip"
    );
    let training = line("training:");
    // --no-flip undid the preset's --flip.
    assert!(
        training.contains("augmentation translate ±3 px,") && training.contains("warmup 3 steps"),
        "{training}"
    );
    let header =
        glow::checkpoint::read_header(run_dir.join(glow::run::CHECKPOINT_FILE)).expect("header");
    let (m, opt) = (&header.config, &header.optimizer);
    assert_eq!((m.levels, m.depth, m.hidden), (1, 1, 4));
    assert_eq!(m.permutation, glow::Permutation::InvconvLu);
    assert!(m.learn_top && (m.y_weight - 0.0069315).abs() < 1e-9);
    assert_eq!(opt.kind, engine::backend::AdamKind::Adam);
    assert_eq!((opt.lr, opt.warmup, opt.betas), (5e-4, 3, (0.9, 0.999)));
    assert_eq!(
        (opt.weight_decay, opt.max_grad_norm, opt.ema_decay),
        (5e-5, None, None)
    );

    // With --shards, a refusal only rank 0 meets (the folder holds a run) still exits 2
    // with one line, rather than leaving the other shard waiting for it.
    let mut again = args.clone();
    again.push("--shards=2".into());
    let o = run(&scratch, "train_cifar10", &again);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", o.stderr);
    assert!(errors[0].contains("holds a run"), "{}", o.stderr);

    // A flag and its rival together are refused like any conflict: exit 2.
    let o = run(
        &scratch,
        "train_cifar10",
        &strings(&["--warmup=3", "--warmup-epochs=1", "--steps=1"]),
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
}
