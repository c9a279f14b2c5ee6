//! Build script: checks that the committed SPIR-V kernels match the GLSL in `shaders/`.
//!
//! Only with the `vulkan` feature. The Vulkan device embeds `shaders/spirv/NAME.spv`
//! (see `src/vulkan/pipelines.rs`); those files are compiled from `shaders/NAME.comp` by
//! the `compile-shaders` tool (`engine/compile-shaders`) and committed, so this script compiles nothing and needs
//! no C++ toolchain. It hashes the GLSL and compares with `shaders/spirv/SOURCES.md5`:
//! a kernel edited without recompiling fails the build, naming the file and the command
//! that recompiles it, instead of silently running the old kernel. The rules are in
//! `src/vulkan/spirv_sources.rs`, shared with that tool and tested there.

#[cfg(feature = "vulkan")]
#[allow(dead_code)] // the compile tool and the tests use the rest of it
#[path = "src/vulkan/spirv_sources.rs"]
mod spirv_sources;

fn main() {
    #[cfg(feature = "vulkan")]
    check_spirv();
}

#[cfg(feature = "vulkan")]
fn check_spirv() {
    use std::path::PathBuf;
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../shaders");
    // A folder here makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed={}", dir.display());
    let problems = match spirv_sources::read_sources(&dir) {
        Ok(sources) => {
            let manifest =
                std::fs::read_to_string(dir.join(spirv_sources::MANIFEST)).unwrap_or_default();
            let mut problems = spirv_sources::stale(&sources, &manifest);
            problems.extend(spirv_sources::missing_spirv(&dir, &sources));
            problems
        }
        Err(e) => vec![e],
    };
    if problems.is_empty() {
        return;
    }
    eprintln!("error: {}", spirv_sources::report(&problems));
    std::process::exit(1);
}
