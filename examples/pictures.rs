//! Writes the tour's pictures, `docs/pictures/*.svg`, drawn by `glow_rs::pictures` from
//! the code they show (the tiny engine's walk, a model's latents, the GEMM tile's
//! constants). `tests/pictures.rs` fails when the committed files are not what it draws;
//! run this after a change that moves one:
//!
//! ```sh
//! cargo run --example pictures
//! ```

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pictures");
    let result = glow_rs::pictures::all().and_then(|pictures| {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, svg) in pictures {
            let path = dir.join(name);
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
