//! Build script: compiles the GLSL compute kernels in `shaders/` to SPIR-V.
//!
//! Only with the `vulkan` feature. Each `shaders/NAME.comp` becomes `$OUT_DIR/NAME.spv`,
//! which `src/vulkan/kernels.rs` embeds with `include_bytes!`. Compiling here (rather than
//! at first use) means a broken kernel fails the build, not a user's run.

fn main() {
    #[cfg(feature = "vulkan")]
    compile_shaders();
}

#[cfg(feature = "vulkan")]
fn compile_shaders() {
    use std::path::PathBuf;
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../shaders");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", dir.display());
    let compiler = shaderc::Compiler::new().expect("shaderc: cannot create a compiler");
    let mut opts = shaderc::CompileOptions::new().expect("shaderc: cannot create options");
    opts.set_optimization_level(shaderc::OptimizationLevel::Performance);
    opts.set_target_env(
        shaderc::TargetEnv::Vulkan,
        shaderc::EnvVersion::Vulkan1_1 as u32,
    );
    let include_dir = dir.clone();
    opts.set_include_callback(move |name, _ty, _src, _depth| {
        let path = include_dir.join(name);
        std::fs::read_to_string(&path)
            .map(|content| shaderc::ResolvedInclude {
                resolved_name: path.display().to_string(),
                content,
            })
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ directory missing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "comp"))
        .collect();
    entries.sort();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let src = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let art = compiler
            .compile_into_spirv(
                &src,
                shaderc::ShaderKind::Compute,
                &name,
                "main",
                Some(&opts),
            )
            .unwrap_or_else(|e| panic!("shader {name} failed to compile:\n{e}"));
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        std::fs::write(out.join(format!("{stem}.spv")), art.as_binary_u8()).unwrap();
    }
}
