//! Choosing the device a program computes on: the one asked for, or with
//! [`Choice::Auto`] a GPU when there is one, else the faster of the CPU device and a CPU
//! Vulkan driver (timed on one training-shaped convolution); in a data-parallel run, one
//! device per rank ([`pick_for_rank`]). Each choice comes with the reason, for a log line.

#[cfg(feature = "vulkan")]
use engine::Tensor;
use engine::{Device, Result};

/// Which device to compute on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A real GPU if present, else the faster of the CPU device and a CPU Vulkan driver.
    Auto,
    /// The CPU device.
    Cpu,
    /// The reference device: plain ndarray loops in f64, the oracle of the tests (slow).
    Reference,
    /// The Vulkan device (`ENGINE_VULKAN_DEVICE` picks one by index or name).
    Vulkan,
}

/// [`pick`] for rank `rank` of `size`: with more than one rank, `--device vulkan`
/// (and `auto` on a machine with GPUs) takes GPU `rank mod count` (any Vulkan device
/// when there is no GPU), so one machine with several GPUs runs one rank per GPU; `auto`
/// without a GPU is the CPU device on every rank, since ranks that timed the devices
/// each for itself could choose differently and round differently.
pub fn pick_for_rank(choice: Choice, rank: usize, size: usize) -> Result<(Device, String)> {
    if size == 1 {
        return pick(choice);
    }
    #[cfg(feature = "vulkan")]
    {
        use engine::vulkan::{enumerate_devices, DeviceKind, DeviceSelector, VulkanOptions};
        let gpus = || -> Result<Vec<usize>> {
            Ok(enumerate_devices()?
                .iter()
                .filter(|d| d.kind != DeviceKind::Cpu)
                .map(|d| d.index)
                .collect())
        };
        let open = |index: usize, count: usize| -> Result<(Device, String)> {
            let options = VulkanOptions {
                device: Some(DeviceSelector::Index(index)),
                ..VulkanOptions::from_env()
            };
            let dev = Device::Vulkan(engine::vulkan::VulkanDevice::new(options)?);
            Ok((
                dev,
                format!("rank {rank} of {size}: Vulkan device {index}, rank mod {count}"),
            ))
        };
        match choice {
            Choice::Vulkan => {
                let gpus = gpus()?;
                if !gpus.is_empty() {
                    return open(gpus[rank % gpus.len()], gpus.len());
                }
                let count = enumerate_devices()?.len();
                if count == 0 {
                    return Err(engine::Error::Device("no Vulkan device found".into()));
                }
                return open(rank % count, count);
            }
            Choice::Auto => {
                let gpus = gpus()?;
                if !gpus.is_empty() {
                    return open(gpus[rank % gpus.len()], gpus.len());
                }
            }
            _ => {}
        }
    }
    if choice == Choice::Auto {
        return Ok((
            Device::Cpu,
            format!("rank {rank} of {size}: no GPU, the CPU device on every rank"),
        ));
    }
    pick(choice)
}

/// Picks the device for `choice` and says why.
pub fn pick(choice: Choice) -> Result<(Device, String)> {
    match choice {
        Choice::Cpu => Ok((Device::Cpu, "requested".into())),
        Choice::Reference => Ok((Device::Reference, "requested".into())),
        Choice::Vulkan => vulkan_device(),
        Choice::Auto => auto_device(),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan_device() -> Result<(Device, String)> {
    let dev = Device::vulkan()?;
    Ok((dev, "requested".into()))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan_device() -> Result<(Device, String)> {
    Err(engine::Error::Device(
        "this build has no Vulkan device (built without the `vulkan` feature)".into(),
    ))
}

#[cfg(not(feature = "vulkan"))]
fn auto_device() -> Result<(Device, String)> {
    Ok((Device::Cpu, "built without the `vulkan` feature".into()))
}

#[cfg(feature = "vulkan")]
fn auto_device() -> Result<(Device, String)> {
    use engine::vulkan::{enumerate_devices, DeviceKind};
    let devices = match enumerate_devices() {
        Ok(d) => d,
        Err(e) => return Ok((Device::Cpu, format!("no Vulkan: {e}"))),
    };
    if let Some(gpu) = devices.iter().find(|d| d.kind != DeviceKind::Cpu) {
        let dev = Device::vulkan()?;
        return Ok((
            dev,
            format!("a real GPU is present ({}, {:?})", gpu.name, gpu.kind),
        ));
    }
    if devices.is_empty() {
        return Ok((Device::Cpu, "no Vulkan device found".into()));
    }
    // Only CPU Vulkan drivers: time one training-shaped convolution on each.
    let vk = Device::vulkan()?;
    let (cpu_ms, vk_ms) = (calibrate(&Device::Cpu)?, calibrate(&vk)?);
    if vk_ms < cpu_ms {
        Ok((vk, format!("no GPU; the CPU Vulkan driver was faster ({vk_ms:.1} ms vs {cpu_ms:.1} ms for a conv step)")))
    } else {
        Ok((Device::Cpu, format!("no GPU; the CPU device was faster than the CPU Vulkan driver ({cpu_ms:.1} ms vs {vk_ms:.1} ms for a conv step)")))
    }
}

/// Milliseconds for a forward and backward 3x3 convolution at Glow's first-level shape
/// (best of three after a warm-up).
#[cfg(feature = "vulkan")]
fn calibrate(dev: &Device) -> Result<f64> {
    let x = Tensor::randn(&[16, 6, 16, 16], 0.0, 1.0, 1, dev)?;
    let w = Tensor::randn(&[128, 6, 3, 3], 0.0, 0.05, 2, dev)?.with_grad();
    let run = || -> Result<f64> {
        let t = std::time::Instant::now();
        let g = x.conv2d(&w, None)?.square()?.sum_all()?.backward()?;
        g.get(&w).map(|g| g.to_vec()).transpose()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(run()?);
    }
    Ok(best)
}
