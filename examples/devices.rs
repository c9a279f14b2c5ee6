//! Lists the Vulkan devices this machine offers and the one the engine would choose.
//!
//! Run: `cargo run --example devices`. Pick another device with
//! `ENGINE_VULKAN_DEVICE=<index or name substring>`.

#[cfg(feature = "vulkan")]
fn main() {
    let devices = match engine::vulkan::enumerate_devices() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    eprintln!("Vulkan devices with a compute queue:");
    for d in &devices {
        eprintln!(
            "  {}: {} ({:?}, Vulkan {})",
            d.index, d.name, d.kind, d.api_version
        );
    }
    let chosen = match engine::vulkan::VulkanDevice::default_device() {
        Ok(dev) => dev.describe(),
        Err(e) => {
            eprintln!("no device chosen: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("chosen: {chosen}");
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            serde_json::json!({"index": d.index, "name": d.name, "kind": format!("{:?}", d.kind), "api_version": d.api_version})
        })
        .collect();
    // The machine-readable last line, as every example ends.
    println!("{}", serde_json::json!({"devices": list, "chosen": chosen}));
}

#[cfg(not(feature = "vulkan"))]
fn main() {
    eprintln!("built without the `vulkan` feature; rebuild with `--features vulkan`");
    std::process::exit(1);
}
