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
    println!("Vulkan devices with a compute queue:");
    for d in &devices {
        println!(
            "  {}: {} ({:?}, Vulkan {})",
            d.index, d.name, d.kind, d.api_version
        );
    }
    match engine::vulkan::VulkanDevice::default_device() {
        Ok(dev) => println!("chosen: {}", dev.describe()),
        Err(e) => {
            eprintln!("no device chosen: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(not(feature = "vulkan"))]
fn main() {
    eprintln!("built without the `vulkan` feature; rebuild with `--features vulkan`");
    std::process::exit(1);
}
