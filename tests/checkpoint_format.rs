//! Keeps `docs/checkpoint-format.md` true: every state name of every model variant
//! matches exactly one documented pattern (and every pattern is used), the metadata
//! examples are what the code writes, and the default model's table of names and shapes
//! is generated from the code (`UPDATE_CHECKPOINT_DOC=1` rewrites it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engine::backend::AdamKind;
use engine::{Device, Result, Tensor};
use glow::checkpoint::{keys, save_checkpoint, TrainState};
use glow::optim::{Optimizer, OptimizerConfig};
use glow::{Coupling, Glow, GlowConfig, Permutation};
use glow_rs::testing::small_glow;

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/checkpoint-format.md")
}

fn doc() -> String {
    std::fs::read_to_string(doc_path()).expect("read docs/checkpoint-format.md")
}

/// The text between `<!-- {tag}:begin -->` and `<!-- {tag}:end -->`.
fn section<'a>(doc: &'a str, tag: &str) -> &'a str {
    let begin = format!("<!-- {tag}:begin -->\n");
    let start = doc.find(&begin).expect("begin marker") + begin.len();
    let end = doc[start..]
        .find(&format!("<!-- {tag}:end -->"))
        .expect("end marker");
    &doc[start..start + end]
}

/// The documented name patterns: the first backticked cell of each table row.
fn patterns(doc: &str) -> Vec<String> {
    section(doc, "patterns")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l[..l.find('`').expect("closing backtick")].to_string())
        .collect()
}

/// Whether `name` matches `pattern`, where `{i}` stands for a decimal number and
/// `{param}` for any non-empty text.
fn matches(pattern: &str, name: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("{i}") {
        let digits = name.chars().take_while(char::is_ascii_digit).count();
        return digits > 0 && matches(rest, &name[digits..]);
    }
    if let Some(rest) = pattern.strip_prefix("{param}") {
        return (1..=name.len())
            .filter(|&k| name.is_char_boundary(k))
            .any(|k| matches(rest, &name[k..]));
    }
    match (pattern.chars().next(), name.chars().next()) {
        (None, None) => true,
        (Some(p), Some(n)) if p == n => matches(&pattern[p.len_utf8()..], &name[n.len_utf8()..]),
        _ => false,
    }
}

fn small(coupling: Coupling, permutation: Permutation, y_condition: bool) -> GlowConfig {
    GlowConfig {
        y_condition,
        num_classes: 3,
        ..small_glow(coupling, permutation)
    }
}

/// The names of the tensors a checkpoint of a model after one optimiser step holds
/// (moments and moving averages included), as written.
fn names_after_a_step(cfg: &GlowConfig) -> Result<Vec<String>> {
    let model = Glow::new(cfg.clone(), &Device::Cpu)?;
    let [c, h, w] = cfg.image_shape;
    let x = Tensor::rand_uniform(&[2, c, h, w], -0.5, 0.5, 3, &Device::Cpu)?;
    let labels = cfg.y_condition.then_some(vec![0, 1]);
    let mut opt = Optimizer::new(OptimizerConfig {
        ema_decay: Some(0.99),
        ..OptimizerConfig::default()
    });
    let (loss, _) = model.loss(&x, labels.as_deref())?;
    opt.step(&model.trainable_params(), &loss.backward()?)?;
    let dir = std::env::temp_dir().join(format!("glow-ckpt-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!(
        "{:?}-{:?}-{}.safetensors",
        cfg.coupling, cfg.permutation, cfg.y_condition
    ));
    save_checkpoint(&path, &model, &opt, &TrainState::default())?;
    let bytes = std::fs::read(&path).expect("read");
    let _ = std::fs::remove_file(&path);
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    Ok(file.names().into_iter().map(str::to_string).collect())
}

#[test]
fn documented_patterns_cover_every_state_name() -> Result<()> {
    let doc = doc();
    let patterns = patterns(&doc);
    assert!(patterns.len() > 30, "found the pattern table");
    let mut used = vec![false; patterns.len()];
    for coupling in [Coupling::Affine, Coupling::Additive] {
        for permutation in [
            Permutation::Invconv,
            Permutation::InvconvLu,
            Permutation::Shuffle,
            Permutation::Reverse,
        ] {
            for y_condition in [false, true] {
                let cfg = small(coupling, permutation, y_condition);
                for name in names_after_a_step(&cfg)? {
                    let hits: Vec<usize> = (0..patterns.len())
                        .filter(|&k| matches(&patterns[k], &name))
                        .collect();
                    assert_eq!(
                        hits.len(),
                        1,
                        "{name} ({cfg:?}) should match exactly one documented pattern, matches {:?}",
                        hits.iter().map(|&k| &patterns[k]).collect::<Vec<_>>()
                    );
                    used[hits[0]] = true;
                }
            }
        }
    }
    let unused: Vec<&String> = (0..patterns.len())
        .filter(|&k| !used[k])
        .map(|k| &patterns[k])
        .collect();
    assert!(
        unused.is_empty(),
        "documented but never produced: {unused:?}"
    );
    Ok(())
}

#[test]
fn documented_metadata_examples_are_what_the_code_writes() -> Result<()> {
    let doc = doc();
    let glow_json = serde_json::to_string(&GlowConfig::default()).expect("json");
    assert!(
        doc.contains(&format!("`{glow_json}`")),
        "the doc's glow.config example should be {glow_json}"
    );

    let cfg = small(Coupling::Affine, Permutation::InvconvLu, false);
    let model = Glow::new(cfg, &Device::Cpu)?;
    let opt = Optimizer::new(OptimizerConfig::default());
    assert_eq!(opt.config.kind, AdamKind::Adamax);
    let dir = std::env::temp_dir().join(format!("glow-ckpt-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("m.safetensors");
    save_checkpoint(&path, &model, &opt, &TrainState::default())?;
    let bytes = std::fs::read(&path).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let meta = header.metadata().clone().expect("metadata");
    let opt_json = &meta[keys::OPTIMIZER_CONFIG];
    assert!(
        doc.contains(&format!("`{opt_json}`")),
        "the doc's optimizer.config example should be {opt_json}"
    );
    for key in meta.keys() {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "metadata key {key} is documented"
        );
    }
    Ok(())
}

/// Consecutive runs of `values` as `a–b` (or `a`), comma-separated.
fn ranges(values: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < values.len() {
        let mut j = k;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        out.push(if j == k {
            values[k].to_string()
        } else {
            format!("{}–{}", values[k], values[j])
        });
        k = j + 1;
    }
    out.join(", ")
}

/// The markdown table of the default model's state: one row per name pattern and shape.
fn default_model_table() -> Result<String> {
    let model = Glow::new(GlowConfig::default(), &Device::Cpu)?;
    let mut rows: Vec<(String, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut index: BTreeMap<(String, Vec<usize>), usize> = BTreeMap::new();
    let mut total = 0usize;
    for p in model.params() {
        total += p.shape().iter().product::<usize>();
    }
    for t in model.state()?.tensors {
        let (pattern, layer) = match t.name.strip_prefix("flow.layers.") {
            Some(rest) => {
                let (i, tail) = rest.split_once('.').expect("a layer index");
                (
                    format!("flow.layers.{{i}}.{tail}"),
                    Some(i.parse::<usize>().expect("a number")),
                )
            }
            None => (t.name.clone(), None),
        };
        let key = (pattern.clone(), t.shape.clone());
        let row = *index.entry(key).or_insert_with(|| {
            rows.push((pattern, t.shape.clone(), Vec::new()));
            rows.len() - 1
        });
        rows[row].2.extend(layer);
    }
    let mut out = String::from("| Name | i | Shape |\n| --- | --- | --- |\n");
    for (pattern, shape, layers) in &rows {
        out += &format!("| `{pattern}` | {} | `{shape:?}` |\n", ranges(layers));
    }
    out += &format!(
        "\n{} tensors in all; {} values in parameters and buffers, of which {} trainable.\n",
        model.state()?.tensors.len(),
        total,
        model.num_parameters()
    );
    Ok(out)
}

#[test]
fn default_model_table_is_current() -> Result<()> {
    let doc = doc();
    let table = default_model_table()?;
    if std::env::var("UPDATE_CHECKPOINT_DOC").is_ok_and(|v| v == "1") {
        let old = section(&doc, "default-model");
        let updated = doc.replacen(
            &format!("<!-- default-model:begin -->\n{old}"),
            &format!("<!-- default-model:begin -->\n{table}"),
            1,
        );
        std::fs::write(doc_path(), updated).expect("write the doc");
        return Ok(());
    }
    assert!(
        section(&doc, "default-model") == table,
        "docs/checkpoint-format.md's default-model table is stale; regenerate it with \
         UPDATE_CHECKPOINT_DOC=1 cargo test --test checkpoint_format"
    );
    Ok(())
}
