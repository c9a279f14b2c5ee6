//! `compile-shaders`: compiles the Vulkan kernels `shaders/*.comp` to the committed
//! `shaders/spirv/*.spv` with the shaderc crate, and checks that they agree.
//!
//! ```text
//! cargo run -p compile-shaders --features compile-shaders             # rewrite
//! cargo run -p compile-shaders --features compile-shaders -- --check  # compare
//! ```
//!
//! Rewriting first writes `shaders/opcodes.glsl` from `shaders/opcodes.txt` (the op
//! codes of the elementwise kernels, see `engine/src/vulkan/opcode_table.rs`), then
//! compiles every kernel, writes the `.spv` files that changed, removes those
//! whose kernel is gone, and writes `shaders/spirv/SOURCES.md5` (what `engine/build.rs`
//! checks on every build). `--check` writes nothing: it compiles every kernel and exits
//! with status 1, naming each file, when a committed file differs from the fresh output.
//! CI runs it, so the SPIR-V and the GLSL never drift apart.
//!
//! A package of its own rather than a binary of `engine`, so that it builds while the
//! engine cannot (a new kernel's `kernel!` line embeds SPIR-V this tool has yet to write).
//!
//! The shaderc crate builds shaderc from source (`build-from-source`), pinned by
//! `Cargo.lock`, so every machine compiles the same GLSL to the same bytes; that build
//! needs cmake, ninja-build, python3, git and a C++ compiler, and takes about 15 minutes
//! on 2 cores, once per cargo profile.

#[allow(dead_code)] // build.rs and the tests use the rest of it
#[path = "../../src/vulkan/spirv_sources.rs"]
mod spirv_sources;

#[allow(dead_code)] // build.rs and the tests use the rest of it
#[path = "../../src/vulkan/opcode_table.rs"]
mod opcode_table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use spirv_sources::{MANIFEST, SPIRV_DIR};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.as_slice() {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => {
            eprintln!(
                "usage: {} [-- --check]\n  compiles shaders/*.comp into shaders/spirv/; \
                 --check only compares",
                spirv_sources::REGENERATE
            );
            return ExitCode::from(2);
        }
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    match run(&dir, check) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Compiles every kernel under `dir` and writes or (with `check`) compares the results;
/// returns how many files differ.
fn run(dir: &Path, check: bool) -> Result<usize, String> {
    // The op-code header first: the kernels include it. With --check it is only
    // compared (below, with the SPIR-V); the compile then uses the header it should be.
    let header = opcode_table::glsl_source(&opcode_table::read(dir)?);
    let header_path = dir.join(opcode_table::GLSL_HEADER);
    let header_differs = std::fs::read_to_string(&header_path).ok().as_ref() != Some(&header);
    if !check && header_differs {
        std::fs::write(&header_path, &header)
            .map_err(|e| format!("{}: {e}", header_path.display()))?;
        println!("wrote shaders/{}", opcode_table::GLSL_HEADER);
    }
    let mut sources = spirv_sources::read_sources(dir)?;
    sources.insert(opcode_table::GLSL_HEADER.to_string(), header);
    // Every file shaders/spirv/ should hold, by its path inside shaders/.
    let mut wanted: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for kernel in spirv_sources::kernels(&sources) {
        let spirv = compile(dir, &sources, &kernel)?;
        wanted.insert(format!("{SPIRV_DIR}/{kernel}.spv"), spirv);
    }
    wanted.insert(
        MANIFEST.to_string(),
        spirv_sources::manifest(&sources).into_bytes(),
    );

    if !check {
        let spirv_dir = dir.join(SPIRV_DIR);
        std::fs::create_dir_all(&spirv_dir).map_err(|e| format!("{}: {e}", spirv_dir.display()))?;
    }
    // What differs, and (when rewriting) what was done about it.
    let mut differing = Vec::new();
    if check && header_differs {
        differing.push(format!(
            "shaders/{} is not what shaders/{} generates",
            opcode_table::GLSL_HEADER,
            opcode_table::TABLE
        ));
    }
    let mut done = Vec::new();
    for (file, bytes) in &wanted {
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(old) if &old == bytes => continue,
            Ok(_) => differing.push(match file.strip_suffix(".spv") {
                Some(spv) => format!(
                    "shaders/{file} differs from what shaders/{}.comp compiles to",
                    &spv[SPIRV_DIR.len() + 1..]
                ),
                None => format!("shaders/{file} does not match the MD5s of the GLSL"),
            }),
            Err(_) => differing.push(format!("shaders/{file} is missing")),
        }
        if !check {
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            done.push(format!("wrote shaders/{file}"));
        }
    }
    for path in spirv_files(&dir.join(SPIRV_DIR))? {
        let file = format!(
            "{SPIRV_DIR}/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        if !wanted.contains_key(&file) {
            differing.push(format!("shaders/{file} has no kernel in shaders/"));
            if !check {
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                done.push(format!("removed shaders/{file}"));
            }
        }
    }

    let kernels = wanted.len() - 1;
    if check {
        if differing.is_empty() {
            println!("compile-shaders: all {kernels} kernels in shaders/spirv/ match their GLSL");
        } else {
            eprintln!("error: {}", spirv_sources::report(&differing));
        }
    } else {
        for line in &done {
            println!("{line}");
        }
        println!(
            "compile-shaders: {kernels} kernels compiled, {} files changed in shaders/spirv/",
            done.len()
        );
    }
    Ok(if check { differing.len() } else { 0 })
}

/// The `.spv` files now in `spirv_dir` (none if it does not exist).
fn spirv_files(spirv_dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !spirv_dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(spirv_dir).map_err(|e| format!("{}: {e}", spirv_dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "spv") {
            files.push(path);
        }
    }
    Ok(files)
}

/// `shaders/KERNEL.comp` compiled to SPIR-V for Vulkan 1.1, optimised for speed, with
/// `#include "..."` resolved among `sources`.
fn compile(
    dir: &Path,
    sources: &BTreeMap<String, String>,
    kernel: &str,
) -> Result<Vec<u8>, String> {
    let compiler =
        shaderc::Compiler::new().map_err(|e| format!("shaderc: cannot create a compiler: {e}"))?;
    let mut opts = shaderc::CompileOptions::new()
        .map_err(|e| format!("shaderc: cannot create options: {e}"))?;
    opts.set_optimization_level(shaderc::OptimizationLevel::Performance);
    opts.set_target_env(
        shaderc::TargetEnv::Vulkan,
        shaderc::EnvVersion::Vulkan1_1 as u32,
    );
    let includes = sources.clone();
    opts.set_include_callback(move |name, _ty, _from, _depth| {
        includes
            .get(name)
            .map(|content| shaderc::ResolvedInclude {
                resolved_name: name.to_string(),
                content: content.clone(),
            })
            .ok_or_else(|| format!("shaders/{name}: no such include"))
    });
    let name = format!("{kernel}.comp");
    let artifact = compiler
        .compile_into_spirv(
            &sources[&name],
            shaderc::ShaderKind::Compute,
            &name,
            "main",
            Some(&opts),
        )
        .map_err(|e| format!("{}: {e}", dir.join(&name).display()))?;
    Ok(artifact.as_binary_u8().to_vec())
}
