//! The committed SPIR-V of the Vulkan kernels, and the check that it matches its GLSL.
//!
//! The GLSL in `shaders/` is the source of truth. Its compiled form, `shaders/spirv/NAME.spv`
//! for each `shaders/NAME.comp`, is committed, so a default build needs no GLSL compiler:
//! shaderc is C++ (glslang, SPIRV-Tools) and takes many minutes to build, once per cargo
//! profile (`docs/measurements.md`). `shaders/spirv/SOURCES.md5` records the MD5 of every GLSL
//! file (kernels and the `.glsl` files they include) as it was when the SPIR-V was last
//! compiled, in `md5sum` format, so `cd shaders && md5sum -c spirv/SOURCES.md5` checks it
//! by hand as well.
//!
//! This file is used, through `#[path]`, from three places:
//! - `engine/build.rs`: every build with the Vulkan device fails, naming the file and
//!   [`REGENERATE`], when a GLSL file differs from what the committed SPIR-V was made from;
//! - `engine/compile-shaders` (its own package): compiles the kernels with
//!   the shaderc crate and writes the SPIR-V and the manifest, or with `--check` compares
//!   a fresh compile with the committed files byte for byte (CI runs that);
//! - the engine's unit tests, which check the staleness rules below.
//!
//! Only `std` and the `md-5` crate, so that the build script stays small.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use md5::{Digest, Md5};

/// The command that recompiles the kernels and rewrites `shaders/spirv/`.
pub const REGENERATE: &str = "cargo run -p compile-shaders --features compile-shaders";

/// The folder, inside `shaders/`, that holds the compiled kernels and the manifest.
pub const SPIRV_DIR: &str = "spirv";

/// The manifest's path inside `shaders/`.
pub const MANIFEST: &str = "spirv/SOURCES.md5";

/// The GLSL sources of the kernels in `dir` (a `shaders/` folder): every `*.comp` (a
/// kernel) and `*.glsl` (an include), by file name, with their text.
pub fn read_sources(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut sources = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let is_glsl = path.extension().is_some_and(|x| x == "comp" || x == "glsl");
        if !is_glsl {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        sources.insert(name, text);
    }
    Ok(sources)
}

/// The kernel names (`NAME` of each `NAME.comp`) among `sources`, sorted.
pub fn kernels(sources: &BTreeMap<String, String>) -> Vec<String> {
    sources
        .keys()
        .filter_map(|name| name.strip_suffix(".comp"))
        .map(str::to_string)
        .collect()
}

/// The files named by `#include "..."` lines in `text`, in order.
pub fn includes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("#include"))
        .filter_map(|rest| {
            let rest = rest.trim();
            rest.strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect()
}

/// The manifest text for `sources`: one `md5sum` line per file, sorted by name.
pub fn manifest(sources: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (name, source) in sources {
        let digest = Md5::digest(source.as_bytes());
        for byte in digest {
            write!(text, "{byte:02x}").unwrap();
        }
        writeln!(text, "  {name}").unwrap();
    }
    text
}

/// What is out of date between `sources` and a committed `manifest` text (empty when
/// all is current): one line per GLSL file, naming it and the kernels it reaches.
pub fn stale(sources: &BTreeMap<String, String>, manifest_text: &str) -> Vec<String> {
    let recorded: BTreeMap<&str, &str> = manifest_text
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(digest, name)| (name.trim(), digest.trim()))
        .collect();
    let current = manifest(sources);
    let current: BTreeMap<&str, &str> = current
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(digest, name)| (name, digest))
        .collect();
    let mut problems = Vec::new();
    for (name, digest) in &current {
        let changed = match recorded.get(name) {
            Some(old) if old == digest => continue,
            Some(_) => true,
            None => false,
        };
        problems.push(match (name.strip_suffix(".comp"), changed) {
            (Some(kernel), true) => {
                format!(
                    "shaders/{name} changed since shaders/{SPIRV_DIR}/{kernel}.spv was compiled"
                )
            }
            (Some(_), false) => format!("shaders/{name} is new: it has no compiled SPIR-V yet"),
            (None, _) => format!(
                "shaders/{name} {} since the SPIR-V was compiled{}",
                if changed { "changed" } else { "is new" },
                included_by(&kernels_reaching(sources, name))
            ),
        });
    }
    for name in recorded.keys() {
        if !current.contains_key(name) {
            problems.push(format!(
                "shaders/{name} is gone but {MANIFEST} still lists it"
            ));
        }
    }
    problems
}

/// The `.spv` files a committed `shaders/spirv/` should hold but does not.
pub fn missing_spirv(dir: &Path, sources: &BTreeMap<String, String>) -> Vec<String> {
    kernels(sources)
        .into_iter()
        .map(|k| format!("{SPIRV_DIR}/{k}.spv"))
        .filter(|spv| !dir.join(spv).is_file())
        .map(|spv| format!("shaders/{spv} is missing"))
        .collect()
}

/// The kernels whose compile reads `name` (itself, or through nested includes).
fn kernels_reaching(sources: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    kernels(sources)
        .into_iter()
        .filter(|kernel| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![format!("{kernel}.comp")];
            while let Some(file) = todo.pop() {
                if file == name {
                    return true;
                }
                if seen.insert(file.clone()) {
                    if let Some(text) = sources.get(&file) {
                        todo.extend(includes(text));
                    }
                }
            }
            false
        })
        .collect()
}

fn included_by(kernels: &[String]) -> String {
    match kernels {
        [] => String::new(),
        [one] => format!(" (included by {one}.comp)"),
        many => format!(" (included by {}.comp)", many.join(".comp, ")),
    }
}

/// The message for `problems`: what is out of date and the command that fixes it.
pub fn report(problems: &[String]) -> String {
    let mut text =
        String::from("the compiled kernels in shaders/spirv/ do not match the GLSL in shaders/:\n");
    for p in problems {
        writeln!(text, "  - {p}").unwrap();
    }
    write!(
        text,
        "Recompile them with\n    {REGENERATE}\nand commit shaders/spirv/. The first run builds \
         shaderc from source: it needs cmake, ninja-build, python3, git and a C++ compiler, \
         and takes about 15 minutes on 2 cores."
    )
    .unwrap();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    const KERNEL_A: &str = "#version 450\n#include \"common.glsl\"\nvoid main() {}\n";
    const KERNEL_B: &str = "#version 450\n  #include \"tile.glsl\"\nvoid main() {}\n";
    const TILE: &str = "#include \"common.glsl\"\n";

    fn three_files() -> BTreeMap<String, String> {
        sources(&[
            ("a.comp", KERNEL_A),
            ("b.comp", KERNEL_B),
            ("common.glsl", "uint f() { return 1u; }\n"),
            ("tile.glsl", TILE),
        ])
    }

    #[test]
    fn manifest_lines_are_md5sum_lines() {
        // md5("") is the well-known d41d8cd98f00b204e9800998ecf8427e.
        let m = manifest(&sources(&[("empty.comp", "")]));
        assert_eq!(m, "d41d8cd98f00b204e9800998ecf8427e  empty.comp\n");
    }

    #[test]
    fn includes_are_read_from_include_lines_only() {
        assert_eq!(includes(KERNEL_B), vec!["tile.glsl"]);
        assert!(includes("// #include \"x.glsl\" in a comment\n").is_empty());
    }

    #[test]
    fn an_unchanged_tree_is_current() {
        let s = three_files();
        assert!(stale(&s, &manifest(&s)).is_empty());
    }

    #[test]
    fn an_edited_kernel_is_named() {
        let s = three_files();
        let m = manifest(&s);
        let mut edited = s.clone();
        edited.insert("a.comp".into(), KERNEL_A.replace("{}", "{ }"));
        assert_eq!(
            stale(&edited, &m),
            vec!["shaders/a.comp changed since shaders/spirv/a.spv was compiled"]
        );
    }

    #[test]
    fn an_edited_include_names_every_kernel_it_reaches() {
        let s = three_files();
        let m = manifest(&s);
        let mut edited = s.clone();
        edited.insert("common.glsl".into(), "uint f() { return 2u; }\n".into());
        // b.comp reaches common.glsl through tile.glsl.
        assert_eq!(
            stale(&edited, &m),
            vec![
                "shaders/common.glsl changed since the SPIR-V was compiled \
                  (included by a.comp, b.comp)"
            ]
        );
    }

    #[test]
    fn new_and_removed_kernels_are_named() {
        let s = three_files();
        let m = manifest(&s);
        let mut edited = s.clone();
        edited.remove("b.comp");
        edited.insert("c.comp".into(), KERNEL_A.into());
        assert_eq!(
            stale(&edited, &m),
            vec![
                "shaders/c.comp is new: it has no compiled SPIR-V yet".to_string(),
                format!("shaders/b.comp is gone but {MANIFEST} still lists it"),
            ]
        );
    }

    #[test]
    fn the_report_names_the_regenerating_command() {
        let r = report(&["shaders/a.comp changed".into()]);
        assert!(r.contains("  - shaders/a.comp changed\n"), "{r}");
        assert!(r.contains(REGENERATE), "{r}");
    }
}
