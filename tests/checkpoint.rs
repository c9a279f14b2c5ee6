//! Checkpoints: a save → load round trip restores the model and optimiser bit for bit,
//! an interrupted or failed write never damages the checkpoint already on disk, and bad
//! files give errors that name them. CPU only: the file format does not depend on the
//! device.

use std::path::{Path, PathBuf};

use engine::backend::AdamKind;
use engine::{Device, Error, Result, Tensor};
use glow::atomic::write_atomic;
use glow::checkpoint::{
    keys, load_checkpoint, read_header, resume, save_checkpoint, tensor_checksum, Checkpoint,
    TrainState, FORMAT, FORMAT_VERSION, OPTIMIZER_PREFIX,
};
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Coupling, Glow, GlowConfig, Permutation};
use glow_rs::testing::small_glow;
use glow_rs::testing::Scratch;

fn small(coupling: Coupling, permutation: Permutation, y_condition: bool) -> GlowConfig {
    GlowConfig {
        y_condition,
        num_classes: 3,
        seed: 7,
        ..small_glow(coupling, permutation)
    }
}

fn labels(cfg: &GlowConfig, b: usize) -> Option<Vec<usize>> {
    cfg.y_condition
        .then(|| (0..b).map(|i| i % cfg.num_classes).collect())
}

fn batch(cfg: &GlowConfig, b: usize, seed: u64) -> Result<Tensor> {
    let [c, h, w] = cfg.image_shape;
    Tensor::rand_uniform(&[b, c, h, w], -0.5, 0.5, seed, &Device::Cpu)
}

/// A model and optimiser after `steps` Adam steps (0: ActNorms not yet initialised).
fn trained(cfg: &GlowConfig, steps: usize) -> Result<(Glow, Optimizer)> {
    let model = Glow::new(cfg.clone(), &Device::Cpu)?;
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: AdamKind::Adam,
        lr: 3e-3,
        warmup: 5,
        betas: (0.85, 0.995),
        eps: 1e-7,
        weight_decay: 1e-5,
        max_grad_norm: Some(50.0),
        max_grad_value: Some(2.0),
        ema_decay: Some(0.95),
    });
    let x = batch(cfg, 4, 1)?;
    let y = labels(cfg, 4);
    for _ in 0..steps {
        let (loss, _) = model.loss(&x, y.as_deref())?;
        opt.step(&model.trainable_params(), &loss.backward()?)?;
    }
    Ok((model, opt))
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.to_vec()?.into_iter().map(f32::to_bits).collect())
}

const TRAIN: TrainState = TrainState {
    seed: 0xdead_beef_1234,
    step: 3,
    epoch: 2,
    position_in_epoch: 40,
    data_crc32: Some(0x0123_abcd),
};

/// Saves, loads and restores; everything must come back bit for bit.
fn round_trip(cfg: &GlowConfig, steps: usize, dir: &Scratch) -> Result<()> {
    let (model, opt) = trained(cfg, steps)?;
    let path = dir.path("model.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;

    let ckpt = load_checkpoint(&path)?;
    assert_eq!(ckpt.config, *cfg);
    assert_eq!(ckpt.train, TRAIN);
    assert_eq!(ckpt.optimizer.config, opt.config);
    assert_eq!(ckpt.optimizer.step, opt.step);
    let (restored, ropt) = ckpt.restore(&Device::Cpu)?;
    assert_eq!(restored.state()?, model.state()?, "model state");
    assert_eq!(restored.is_initialized(), model.is_initialized());
    assert_eq!(ropt.config, opt.config);
    assert_eq!(ropt.step, opt.step);
    assert_eq!(
        ropt.moments.keys().collect::<Vec<_>>(),
        opt.moments.keys().collect::<Vec<_>>()
    );
    assert_eq!(opt.moments.is_empty(), steps == 0);
    for (name, (m, v)) in &opt.moments {
        let (rm, rv) = &ropt.moments[name];
        assert_eq!(bits(rm)?, bits(m)?, "{name}.m");
        assert_eq!(bits(rv)?, bits(v)?, "{name}.v");
        assert_eq!(rm.shape(), m.shape());
    }
    // The moving average of the weights comes back bit for bit too.
    assert_eq!(opt.averages.is_empty(), steps == 0);
    assert_eq!(
        ropt.averages.keys().collect::<Vec<_>>(),
        opt.averages.keys().collect::<Vec<_>>()
    );
    for (name, avg) in &opt.averages {
        assert_eq!(bits(&ropt.averages[name])?, bits(avg)?, "ema.{name}");
    }

    let probe = batch(cfg, 3, 99)?;
    let y = labels(cfg, 3);
    let want = model.log_prob(&probe, y.as_deref())?;
    let got = restored.log_prob(&probe, y.as_deref())?;
    assert_eq!(bits(&got)?, bits(&want)?, "log_prob on the probe batch");

    // Training goes on identically from the restored pair.
    let x = batch(cfg, 4, 5)?;
    let y4 = labels(cfg, 4);
    let mut opt = opt;
    let mut ropt = ropt;
    for (m, o) in [(&model, &mut opt), (&restored, &mut ropt)] {
        let (loss, _) = m.loss(&x, y4.as_deref())?;
        o.step(&m.trainable_params(), &loss.backward()?)?;
    }
    assert_eq!(
        restored.state()?,
        model.state()?,
        "state after one more step"
    );
    Ok(())
}

#[test]
fn round_trip_is_bit_identical() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-roundtrip");
    round_trip(
        &small(Coupling::Affine, Permutation::InvconvLu, true),
        3,
        &dir,
    )?;
    Ok(())
}

#[test]
fn round_trip_every_variant() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-variants");
    for (coupling, permutation, y_condition, steps) in [
        (Coupling::Affine, Permutation::Invconv, false, 2),
        (Coupling::Additive, Permutation::Shuffle, false, 1),
        (Coupling::Additive, Permutation::Reverse, true, 1),
        // Fresh: ActNorms not initialised, no moments yet.
        (Coupling::Affine, Permutation::InvconvLu, false, 0),
    ] {
        round_trip(&small(coupling, permutation, y_condition), steps, &dir)?;
    }
    Ok(())
}

#[test]
fn resume_restores_train_state() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-resume");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let path = dir.path("a.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    let (m, o, train) = resume(&path, &Device::Cpu)?;
    assert_eq!(train, TRAIN);
    assert_eq!(o.step, 1);
    assert_eq!(m.state()?, model.state()?);
    Ok(())
}

/// The header alone says what the whole file says, and a file written before the
/// data's fingerprint was recorded (no `train.data_crc32`) loads with `None`.
#[test]
fn the_header_alone_gives_the_metadata() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-header");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 2)?;
    let path = dir.path("a.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    let header = read_header(&path)?;
    let full = load_checkpoint(&path)?;
    assert_eq!(header.train, TRAIN);
    assert_eq!(header.train.data_crc32, Some(0x0123_abcd));
    assert_eq!(
        (
            header.format_version,
            &header.config,
            header.optimizer,
            header.optimizer_step
        ),
        (
            full.format_version,
            &full.config,
            full.optimizer.config,
            full.optimizer.step
        )
    );

    let older = dir.path("older.safetensors");
    rewritten(
        &path,
        &older,
        |_, d| d.to_vec(),
        |meta| {
            meta.remove(keys::TRAIN_DATA_CRC32);
        },
    );
    let old = load_checkpoint(&older)?;
    assert_eq!(old.train.data_crc32, None);
    assert_eq!(read_header(&older)?.train.data_crc32, None);
    assert_eq!(old.model_state, full.model_state);

    // A header length past the file, or absurd, is an error naming the file.
    let bad = dir.path("bad.safetensors");
    std::fs::write(&bad, u64::MAX.to_le_bytes()).unwrap();
    let msg = read_header(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("bad.safetensors") && msg.contains("header"),
        "{msg}"
    );
    Ok(())
}

/// The file's raw bytes.
/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the scratch directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read back")
}

#[test]
fn a_failed_write_leaves_the_old_checkpoint() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-atomic");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let path = dir.path("ckpt.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    let before = read(&path);

    // A write interrupted half-way (the closure stands in for a crash or a full disk).
    let err = write_atomic(&path, |tmp| {
        std::fs::write(tmp, &before[..before.len() / 2]).expect("write half");
        Err(Error::io(tmp, "simulated crash"))
    })
    .expect_err("the write fails");
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(read(&path), before, "the checkpoint is untouched");
    assert_eq!(
        listing(&dir),
        ["ckpt.safetensors"],
        "no temporary file left"
    );
    load_checkpoint(&path)?;

    // A save that fails before writing (a learning rate JSON cannot hold).
    let mut bad = Optimizer::new(OptimizerConfig {
        lr: f32::NAN,
        ..opt.config
    });
    bad.step = 1;
    let err = save_checkpoint(&path, &model, &bad, &TRAIN).expect_err("NaN lr");
    assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
    assert_eq!(read(&path), before);
    assert_eq!(listing(&dir), ["ckpt.safetensors"]);
    Ok(())
}

#[test]
fn a_stale_temporary_file_is_harmless() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-stale");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let path = dir.path("ckpt.safetensors");
    // What a crash during an earlier save might leave behind, with the names a save by
    // this process would try first.
    let pid = std::process::id();
    for n in 0..4 {
        let stale = dir.path(&format!(".ckpt.safetensors.tmp.{pid}.{n}"));
        std::fs::write(&stale, b"half a checkpoint").expect("write stale");
    }
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    let (restored, _) = load_checkpoint(&path)?.restore(&Device::Cpu)?;
    assert_eq!(restored.state()?, model.state()?);
    Ok(())
}

#[test]
fn a_directory_in_the_way_is_an_error_not_damage() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-dir-target");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 0)?;
    let target = dir.path("ckpt.safetensors");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("keep"), b"x").expect("write");
    let err = save_checkpoint(&target, &model, &opt, &TRAIN).expect_err("a directory");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
    assert_eq!(
        listing(&dir),
        ["ckpt.safetensors"],
        "no temporary file left"
    );
    assert_eq!(read(&target.join("keep")), b"x");
    Ok(())
}

/// The error of loading `path`, which must fail, as text; it must name the file.
fn load_error(path: &Path) -> String {
    let err = load_checkpoint(path).expect_err("loading must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "the error names the file: {msg}"
    );
    msg
}

#[test]
fn bad_files_give_errors_naming_them() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-errors");
    let msg = load_error(&dir.path("missing.safetensors"));
    assert!(msg.contains("cannot read"), "{msg}");

    let empty = dir.path("empty.safetensors");
    std::fs::write(&empty, b"").expect("write");
    assert!(load_error(&empty).contains("not a safetensors file"));

    let garbage = dir.path("garbage.safetensors");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\n definitely not tensors").expect("write");
    assert!(load_error(&garbage).contains("not a safetensors file"));

    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let good = dir.path("good.safetensors");
    save_checkpoint(&good, &model, &opt, &TRAIN)?;
    let bytes = read(&good);
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        let truncated = dir.path(&format!("truncated-{keep}.safetensors"));
        std::fs::write(&truncated, &bytes[..keep]).expect("write");
        let msg = load_error(&truncated);
        assert!(msg.contains("truncated"), "{msg}");
    }

    // Valid safetensors, but not one of our checkpoints.
    let foreign = dir.path("foreign.safetensors");
    let one = [0u8; 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &one).expect("view");
    std::fs::write(
        &foreign,
        safetensors::serialize([("w", view)], None).expect("serialize"),
    )
    .expect("write");
    let msg = load_error(&foreign);
    assert!(msg.contains("\"format\"") && msg.contains(FORMAT), "{msg}");
    Ok(())
}

/// Rewrites the checkpoint at `from` to `to` without the tensors `drop` selects.
fn without(from: &Path, to: &Path, drop: impl Fn(&str) -> bool) {
    let bytes = read(from);
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let kept: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !drop(name))
        .collect();
    let out = safetensors::serialize(kept, header.metadata().clone()).expect("serialize");
    std::fs::write(to, out).expect("write");
}

#[test]
fn a_missing_tensor_is_named() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-missing-tensor");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let good = dir.path("good.safetensors");
    save_checkpoint(&good, &model, &opt, &TRAIN)?;

    let gone = "flow.layers.2.block.2.conv.weight";
    let holed = dir.path("holed.safetensors");
    without(&good, &holed, |n| n == gone);
    let ckpt: Checkpoint = load_checkpoint(&holed)?;
    let err = ckpt.restore(&Device::Cpu).expect_err("a tensor is missing");
    let msg = err.to_string();
    assert!(
        msg.contains("holed.safetensors") && msg.contains(gone),
        "{msg}"
    );
    let err = resume(&holed, &Device::Cpu).expect_err("resume too");
    assert!(err.to_string().contains(gone));

    let flag = "flow.layers.1.actnorm.initialized";
    let no_flag = dir.path("no-flag.safetensors");
    without(&good, &no_flag, |n| n == flag);
    let msg = resume(&no_flag, &Device::Cpu)
        .expect_err("a flag is missing")
        .to_string();
    assert!(
        msg.contains("no-flag.safetensors") && msg.contains(flag),
        "{msg}"
    );

    let half = format!("{OPTIMIZER_PREFIX}flow.layers.1.actnorm.bias.v");
    let no_v = dir.path("no-v.safetensors");
    without(&good, &no_v, |n| n == half);
    let msg = load_error(&no_v);
    assert!(msg.contains(&half), "{msg}");
    Ok(())
}

#[test]
fn a_checkpoint_of_another_architecture_is_refused() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-mismatch");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let path = dir.path("ckpt.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    let mut ckpt = load_checkpoint(&path)?;
    ckpt.config.hidden = 4;
    let msg = ckpt
        .restore(&Device::Cpu)
        .expect_err("shapes differ")
        .to_string();
    assert!(
        msg.contains("ckpt.safetensors") && msg.contains("shape"),
        "{msg}"
    );
    Ok(())
}

/// Rewrites the checkpoint at `from` to `to` with each tensor's bytes passed through
/// `data(name, bytes)` and the metadata through `meta`.
fn rewritten(
    from: &Path,
    to: &Path,
    data: impl Fn(&str, &[u8]) -> Vec<u8>,
    meta: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    let bytes = read(from);
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let mut metadata = header.metadata().clone().expect("metadata");
    meta(&mut metadata);
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let d = data(&name, v.data());
            (name, v.dtype(), v.shape().to_vec(), d)
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, d)| {
            let view =
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), d).expect("view");
            (name.as_str(), view)
        })
        .collect();
    let out = safetensors::serialize(views, Some(metadata)).expect("serialize");
    std::fs::write(to, out).expect("write");
}

/// A one-step checkpoint of the small affine model in `dir`, and its path.
fn good_checkpoint(dir: &Scratch) -> Result<PathBuf> {
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let good = dir.path("good.safetensors");
    save_checkpoint(&good, &model, &opt, &TRAIN)?;
    Ok(good)
}

#[test]
fn a_damaged_tensor_is_named() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-damaged");
    let good = good_checkpoint(&dir)?;
    let mut bytes = read(&good);
    let (header_len, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let victim = "flow.layers.2.block.0.conv.weight";
    let (start, end) = header.info(victim).expect("the tensor").data_offsets;
    // One flipped bit in the middle of the tensor, as a bad sector or a cosmic ray would.
    bytes[8 + header_len + (start + end) / 2] ^= 0x10;
    let damaged = dir.path("damaged.safetensors");
    std::fs::write(&damaged, &bytes).expect("write");
    let msg = load_error(&damaged);
    assert!(msg.contains(victim) && msg.contains("damaged"), "{msg}");

    // A tensor without a recorded checksum is refused as well.
    let unlisted = dir.path("unlisted.safetensors");
    rewritten(
        &good,
        &unlisted,
        |_, d| d.to_vec(),
        |meta| {
            let key = keys::CHECKSUMS;
            let mut sums: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&meta[key]).expect("checksums");
            sums.remove(victim);
            meta.insert(key.into(), serde_json::to_string(&sums).expect("json"));
        },
    );
    let msg = load_error(&unlisted);
    assert!(msg.contains(victim) && msg.contains("no checksum"), "{msg}");
    Ok(())
}

#[test]
fn a_non_finite_tensor_is_refused_on_load() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-non-finite-load");
    let good = good_checkpoint(&dir)?;
    for (victim, value, shown) in [
        ("flow.layers.1.actnorm.logs", f32::NAN, "NaN"),
        (
            "optimizer.flow.layers.5.block.4.conv.bias.m",
            f32::INFINITY,
            "inf",
        ),
    ] {
        // A well-formed file with a correct checksum: only the value is wrong.
        let bytes = read(&good);
        let file = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
        let mut bad = file.tensor(victim).expect("the tensor").data().to_vec();
        bad[4..8].copy_from_slice(&value.to_le_bytes());
        let sum = tensor_checksum(&bad);
        let poisoned = dir.path("poisoned.safetensors");
        let data = |name: &str, d: &[u8]| {
            if name == victim {
                bad.clone()
            } else {
                d.to_vec()
            }
        };
        rewritten(&good, &poisoned, data, |meta| {
            let mut all: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&meta[keys::CHECKSUMS]).expect("checksums");
            all.insert(victim.into(), sum);
            meta.insert(
                keys::CHECKSUMS.into(),
                serde_json::to_string(&all).expect("json"),
            );
        });
        let msg = load_error(&poisoned);
        assert!(
            msg.contains(victim) && msg.contains(shown) && msg.contains("index 1"),
            "{msg}"
        );
    }
    Ok(())
}

#[test]
fn a_non_finite_model_is_not_saved() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-non-finite-save");
    let good = good_checkpoint(&dir)?;
    let before = read(&good);
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, opt) = trained(&cfg, 1)?;
    let victim = "flow.layers.2.invconv.lower";
    let p = model
        .params()
        .into_iter()
        .find(|p| p.name() == victim)
        .expect("the parameter");
    let mut values = p.get().to_vec()?;
    values[3] = f32::NAN;
    p.set(&Tensor::from_vec(values, &p.shape(), &Device::Cpu)?)?;
    let msg = save_checkpoint(&good, &model, &opt, &TRAIN)
        .expect_err("a NaN parameter")
        .to_string();
    assert!(
        msg.contains("good.safetensors") && msg.contains(victim) && msg.contains("NaN"),
        "{msg}"
    );
    assert_eq!(read(&good), before, "the checkpoint on disk is untouched");
    assert_eq!(listing(&dir), ["good.safetensors"]);
    Ok(())
}

#[test]
fn a_version_1_checkpoint_still_loads_and_other_versions_are_refused() -> Result<()> {
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-versions");
    let good = good_checkpoint(&dir)?;
    let v1 = dir.path("v1.safetensors");
    rewritten(
        &good,
        &v1,
        |_, d| d.to_vec(),
        |meta| {
            meta.insert(keys::FORMAT_VERSION.into(), "1".into());
            meta.remove(keys::CHECKSUMS);
        },
    );
    let old = load_checkpoint(&v1)?;
    let new = load_checkpoint(&good)?;
    assert_eq!(
        (old.format_version, new.format_version),
        (1, FORMAT_VERSION)
    );
    assert_eq!(old.model_state, new.model_state);
    assert_eq!(old.optimizer, new.optimizer);
    old.restore(&Device::Cpu)?;

    // Version 2 must carry its checksums.
    let stripped = dir.path("stripped.safetensors");
    rewritten(
        &good,
        &stripped,
        |_, d| d.to_vec(),
        |meta| {
            meta.remove(keys::CHECKSUMS);
        },
    );
    assert!(load_error(&stripped).contains(keys::CHECKSUMS));

    // A version 2 file: no averages and an optimiser config without the settings of
    // version 3, which read as off.
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let (model, mut opt) = trained(&cfg, 1)?;
    opt.config.max_grad_value = None;
    opt.config.ema_decay = None;
    opt.averages.clear();
    let plain = dir.path("plain.safetensors");
    save_checkpoint(&plain, &model, &opt, &TRAIN)?;
    let v2 = dir.path("v2.safetensors");
    rewritten(
        &plain,
        &v2,
        |_, d| d.to_vec(),
        |meta| {
            meta.insert(keys::FORMAT_VERSION.into(), "2".into());
            let json = meta[keys::OPTIMIZER_CONFIG]
                .replace(",\"max_grad_value\":null,\"ema_decay\":null", "");
            assert!(!json.contains("ema_decay"), "{json}");
            meta.insert(keys::OPTIMIZER_CONFIG.into(), json);
        },
    );
    let old = load_checkpoint(&v2)?;
    assert_eq!(old.format_version, 2);
    assert_eq!(old.optimizer.config, opt.config);
    assert!(old.optimizer.averages.is_empty());
    old.restore(&Device::Cpu)?;

    for version in ["0", "4"] {
        let other = dir.path(&format!("v{version}.safetensors"));
        rewritten(
            &good,
            &other,
            |_, d| d.to_vec(),
            |meta| {
                meta.insert(keys::FORMAT_VERSION.into(), version.into());
            },
        );
        let msg = load_error(&other);
        assert!(
            msg.contains(&format!("format version {version}")) && msg.contains("1 to 3"),
            "{msg}"
        );
    }
    Ok(())
}

#[test]
fn a_configuration_larger_than_its_file_is_refused_before_anything_is_built() -> Result<()> {
    // Restoring builds the model the configuration describes; a damaged one asking for
    // 2^40 channels would abort the process on the allocation. Each must be refused first.
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "ckpt-huge");
    let cfg = small(Coupling::Affine, Permutation::InvconvLu, true);
    let (model, opt) = trained(&cfg, 0)?;
    let path = dir.path("model.safetensors");
    save_checkpoint(&path, &model, &opt, &TRAIN)?;
    type Change = fn(&mut GlowConfig);
    let huge: [(&str, Change); 5] = [
        ("hidden", |c| c.hidden = 1 << 40),
        ("depth", |c| c.depth = 1 << 40),
        ("channels", |c| c.image_shape[0] = 1 << 30),
        ("levels", |c| {
            (c.levels, c.image_shape) = (30, [3, 1 << 30, 1 << 30])
        }),
        ("classes", |c| c.num_classes = 1 << 40),
    ];
    for (what, change) in huge {
        let mut ckpt = load_checkpoint(&path)?;
        change(&mut ckpt.config);
        let err = ckpt
            .restore(&Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{what}: restored"));
        assert!(err.to_string().contains("more than the"), "{what}: {err}");
    }
    Ok(())
}
