//! Build script: checks that the committed SPIR-V kernels match the GLSL in `shaders/`.
//!
//! Only with the `vulkan` feature. The Vulkan device embeds `shaders/spirv/NAME.spv`
//! (see `src/vulkan/pipelines.rs`); those files are compiled from `shaders/NAME.comp` by
//! the `compile-shaders` tool (`engine/compile-shaders`) and committed, so this script
//! compiles nothing and needs no C++ toolchain. It hashes the GLSL and compares with `shaders/spirv/SOURCES.md5`:
//! a kernel edited without recompiling fails the build, naming the file and the command
//! that recompiles it, instead of silently running the old kernel. The rules are in
//! `src/vulkan/spirv_sources.rs`, shared with that tool and tested there.
//!
//! It also generates the elementwise kernels' op codes from their one source,
//! `shaders/opcodes.txt` (rules in `src/vulkan/opcode_table.rs`): the Rust side into
//! `OUT_DIR/opcodes.rs`, and a check that the committed GLSL side,
//! `shaders/opcodes.glsl`, is what the table generates.

#[cfg(feature = "vulkan")]
#[allow(dead_code)] // the compile tool and the tests use the rest of it
#[path = "src/vulkan/spirv_sources.rs"]
mod spirv_sources;

#[cfg(feature = "vulkan")]
#[allow(dead_code)] // the compile tool and the tests use the rest of it
#[path = "src/vulkan/opcode_table.rs"]
mod opcode_table;

fn main() {
    #[cfg(feature = "vulkan")]
    {
        let problems = opcodes();
        check_spirv(problems);
    }
}

/// Writes `OUT_DIR/opcodes.rs`; returns what is wrong with `shaders/opcodes.glsl`.
#[cfg(feature = "vulkan")]
fn opcodes() -> Vec<String> {
    use std::path::PathBuf;
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../shaders");
    let ops = match opcode_table::read(&dir) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("opcodes.rs");
    std::fs::write(&out, opcode_table::rust_source(&ops)).expect("writing OUT_DIR/opcodes.rs");
    let header = std::fs::read_to_string(dir.join(opcode_table::GLSL_HEADER)).unwrap_or_default();
    if header == opcode_table::glsl_source(&ops) {
        Vec::new()
    } else {
        vec![format!(
            "shaders/{} is not what shaders/{} generates",
            opcode_table::GLSL_HEADER,
            opcode_table::TABLE
        )]
    }
}

#[cfg(feature = "vulkan")]
fn check_spirv(mut problems: Vec<String>) {
    use std::path::PathBuf;
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../shaders");
    // A folder here makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed={}", dir.display());
    match spirv_sources::read_sources(&dir) {
        Ok(sources) => {
            let manifest =
                std::fs::read_to_string(dir.join(spirv_sources::MANIFEST)).unwrap_or_default();
            problems.extend(spirv_sources::stale(&sources, &manifest));
            problems.extend(spirv_sources::missing_spirv(&dir, &sources));
        }
        Err(e) => problems.push(e),
    }
    if problems.is_empty() {
        return;
    }
    eprintln!("error: {}", spirv_sources::report(&problems));
    std::process::exit(1);
}
