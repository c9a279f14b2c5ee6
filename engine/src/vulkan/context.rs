//! Vulkan bring-up: loading the loader, the instance, choosing a physical device, and
//! the logical device with one compute queue.
//!
//! Everything here runs once per [`super::VulkanDevice`]. The loader is opened at run
//! time (ash's `loaded` feature), so a binary built with the `vulkan` feature still
//! starts on a machine without libvulkan; asking for a Vulkan device there returns a
//! one-line [`Error::Device`].
//!
//! Device choice: devices with a compute queue are ranked discrete GPU, integrated GPU,
//! virtual GPU, CPU (e.g. lavapipe), other; the user can override the choice by index
//! (in enumeration order) or by a case-insensitive name substring, through
//! [`super::VulkanOptions::device`] or the `ENGINE_VULKAN_DEVICE` environment variable.
//!
//! Validation: with [`super::VulkanOptions::validation`] (or `ENGINE_VULKAN_VALIDATION=1`)
//! the Khronos validation layer is enabled when installed, with a debug messenger that
//! prints each warning or error and counts it ([`validation_message_count`]), so tests
//! can fail on any message. Synchronization validation is switched on with it, so a
//! missing barrier is reported too.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use ash::vk;

use crate::{Error, Result};

/// Warnings and errors reported by the validation layer since the process started.
static VALIDATION_MESSAGES: AtomicUsize = AtomicUsize::new(0);

/// How many validation warnings and errors have been reported in this process (by any
/// device). Tests assert this stays 0.
pub fn validation_message_count() -> usize {
    VALIDATION_MESSAGES.load(Ordering::SeqCst)
}

const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// The kind of a physical device, in the order the default choice prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// A discrete GPU.
    Discrete,
    /// A GPU integrated with the CPU.
    Integrated,
    /// A GPU in a virtual machine.
    Virtual,
    /// A software implementation on the CPU (e.g. Mesa's lavapipe).
    Cpu,
    /// Anything else.
    Other,
}

impl DeviceKind {
    fn from_vk(t: vk::PhysicalDeviceType) -> Self {
        match t {
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceKind::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceKind::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceKind::Virtual,
            vk::PhysicalDeviceType::CPU => DeviceKind::Cpu,
            _ => DeviceKind::Other,
        }
    }
}

/// One physical device with a compute queue, as [`super::enumerate_devices`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Position in the driver's enumeration order (what `ENGINE_VULKAN_DEVICE=N` selects).
    pub index: usize,
    /// The driver's name for it, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`.
    pub name: String,
    /// Discrete, integrated, virtual, CPU.
    pub kind: DeviceKind,
    /// The Vulkan version it supports, as `"major.minor.patch"`.
    pub api_version: String,
}

/// Which device to open: by enumeration index or by name substring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The device at this index of [`super::enumerate_devices`].
    Index(usize),
    /// The first device whose name contains this (case-insensitive).
    Name(String),
}

impl DeviceSelector {
    /// Parses `ENGINE_VULKAN_DEVICE`'s syntax: a number is an index, anything else a name.
    pub fn parse(s: &str) -> Self {
        match s.trim().parse::<usize>() {
            Ok(i) => DeviceSelector::Index(i),
            Err(_) => DeviceSelector::Name(s.trim().to_string()),
        }
    }
}

/// The loaded library, the instance and its optional debug messenger.
pub(crate) struct Instance {
    /// Keeps libvulkan loaded for as long as the instance lives.
    _entry: ash::Entry,
    pub instance: ash::Instance,
    debug: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
}

impl Instance {
    /// Whether the validation layer is on with a messenger counting its messages.
    pub fn validating(&self) -> bool {
        self.debug.is_some()
    }
}

fn vk_err(what: &str) -> impl Fn(vk::Result) -> Error + '_ {
    move |e| Error::Device(format!("vulkan: {what} failed: {e}"))
}

impl Instance {
    /// Loads libvulkan and creates an instance (with validation if asked and installed).
    pub fn new(validation: bool) -> Result<Self> {
        // SAFETY: loading the system Vulkan loader; its initialisers are trusted.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| {
            Error::Device(format!(
                "vulkan: no Vulkan loader found ({e}); install libvulkan1 and a driver such as mesa-vulkan-drivers"
            ))
        })?;
        // SAFETY: plain queries on a loaded entry.
        let layers = unsafe { entry.enumerate_instance_layer_properties() }
            .map_err(vk_err("enumerating instance layers"))?;
        let has_layer = layers
            .iter()
            .any(|l| l.layer_name_as_c_str().ok() == Some(VALIDATION_LAYER));
        let extensions = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(vk_err("enumerating instance extensions"))?;
        let has_ext = |name: &CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str().ok() == Some(name))
        };
        let validation = validation
            && {
                if !has_layer {
                    eprintln!("engine: Vulkan validation requested but VK_LAYER_KHRONOS_validation is not installed (vulkan-validationlayers); continuing without it");
                }
                has_layer
            };
        let mut ext_names = Vec::new();
        let debug_ext = validation && has_ext(ash::ext::debug_utils::NAME);
        if debug_ext {
            ext_names.push(ash::ext::debug_utils::NAME.as_ptr());
        }
        // The layer's own extension turns on synchronization validation, which checks
        // the recorder's barriers (a missing one is reported as a hazard).
        let layer_exts = if validation {
            unsafe { entry.enumerate_instance_extension_properties(Some(VALIDATION_LAYER)) }
                .unwrap_or_default()
        } else {
            vec![]
        };
        let sync_validation = layer_exts
            .iter()
            .any(|e| e.extension_name_as_c_str().ok() == Some(ash::ext::validation_features::NAME));
        if sync_validation {
            ext_names.push(ash::ext::validation_features::NAME.as_ptr());
        }
        let enables = [vk::ValidationFeatureEnableEXT::SYNCHRONIZATION_VALIDATION];
        let mut features =
            vk::ValidationFeaturesEXT::default().enabled_validation_features(&enables);
        // MoltenVK and other portability drivers are hidden unless asked for.
        let mut flags = vk::InstanceCreateFlags::empty();
        if has_ext(ash::khr::portability_enumeration::NAME) {
            ext_names.push(ash::khr::portability_enumeration::NAME.as_ptr());
            flags |= vk::InstanceCreateFlags::ENUMERATE_PORTABILITY_KHR;
        }
        let layer_names = if validation {
            vec![VALIDATION_LAYER.as_ptr()]
        } else {
            vec![]
        };
        let app = vk::ApplicationInfo::default()
            .application_name(c"engine")
            .engine_name(c"engine")
            .api_version(vk::API_VERSION_1_1);
        let mut messenger_info = debug_messenger_info();
        let mut info = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_layer_names(&layer_names)
            .enabled_extension_names(&ext_names)
            .flags(flags);
        if sync_validation {
            info = info.push_next(&mut features);
        }
        if debug_ext {
            // Also catches messages from vkCreateInstance/vkDestroyInstance themselves.
            info = info.push_next(&mut messenger_info);
        }
        // SAFETY: every pointer in `info` outlives the call.
        let instance = unsafe { entry.create_instance(&info, None) }.map_err(|e| match e {
            vk::Result::ERROR_INCOMPATIBLE_DRIVER => Error::Device(
                "vulkan: the loader found no Vulkan driver; install one (e.g. mesa-vulkan-drivers)"
                    .into(),
            ),
            e => Error::Device(format!("vulkan: creating the instance failed: {e}")),
        })?;
        let debug = if debug_ext {
            let loader = ash::ext::debug_utils::Instance::new(&entry, &instance);
            // SAFETY: valid instance; the callback is a plain function.
            let messenger =
                unsafe { loader.create_debug_utils_messenger(&debug_messenger_info(), None) }
                    .map_err(vk_err("creating the debug messenger"))?;
            Some((loader, messenger))
        } else {
            None
        };
        Ok(Instance {
            _entry: entry,
            instance,
            debug,
        })
    }

    /// Physical devices with a compute queue, with their descriptions.
    pub fn devices(&self) -> Result<Vec<(vk::PhysicalDevice, DeviceInfo, u32)>> {
        // SAFETY: queries on a valid instance.
        let physical = unsafe { self.instance.enumerate_physical_devices() }
            .map_err(vk_err("enumerating physical devices"))?;
        let mut out = Vec::new();
        for (index, pd) in physical.into_iter().enumerate() {
            let props = unsafe { self.instance.get_physical_device_properties(pd) };
            let families = unsafe {
                self.instance
                    .get_physical_device_queue_family_properties(pd)
            };
            // Prefer a compute queue; any graphics queue also does compute.
            let Some(family) = families
                .iter()
                .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            else {
                continue;
            };
            let v = props.api_version;
            out.push((
                pd,
                DeviceInfo {
                    index,
                    name: props
                        .device_name_as_c_str()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    kind: DeviceKind::from_vk(props.device_type),
                    api_version: format!(
                        "{}.{}.{}",
                        vk::api_version_major(v),
                        vk::api_version_minor(v),
                        vk::api_version_patch(v)
                    ),
                },
                family as u32,
            ));
        }
        Ok(out)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the logical device (if any) was destroyed first (see `Context::drop`).
        unsafe {
            if let Some((loader, messenger)) = self.debug.take() {
                loader.destroy_debug_utils_messenger(messenger, None);
            }
            self.instance.destroy_instance(None);
        }
    }
}

fn debug_messenger_info() -> vk::DebugUtilsMessengerCreateInfoEXT<'static> {
    vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        )
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(debug_callback))
}

/// Prints and counts every validation warning or error.
unsafe extern "system" fn debug_callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    VALIDATION_MESSAGES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the layer passes a valid callback-data struct for the call's duration.
    let msg = unsafe { data.as_ref() }
        .and_then(|d| unsafe { d.message_as_c_str() })
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!("vulkan validation [{severity:?}]: {msg}");
    vk::FALSE
}

/// Picks a device: the selector if given, else the best-ranked kind.
pub(crate) fn choose(
    devices: &[(vk::PhysicalDevice, DeviceInfo, u32)],
    selector: Option<&DeviceSelector>,
) -> Result<usize> {
    if devices.is_empty() {
        return Err(Error::Device(
            "vulkan: no Vulkan device with a compute queue found (for a CPU fallback install mesa-vulkan-drivers)".into(),
        ));
    }
    let listing = || {
        devices
            .iter()
            .map(|(_, d, _)| format!("{}: {}", d.index, d.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selector {
        Some(DeviceSelector::Index(i)) => devices
            .iter()
            .position(|(_, d, _)| d.index == *i)
            .ok_or_else(|| {
                Error::Device(format!(
                    "vulkan: no device with index {i} (have {})",
                    listing()
                ))
            }),
        Some(DeviceSelector::Name(n)) => {
            let n = n.to_lowercase();
            devices
                .iter()
                .position(|(_, d, _)| d.name.to_lowercase().contains(&n))
                .ok_or_else(|| {
                    Error::Device(format!(
                        "vulkan: no device named like {n:?} (have {})",
                        listing()
                    ))
                })
        }
        None => Ok((0..devices.len())
            .min_by_key(|&i| (devices[i].1.kind, devices[i].1.index))
            .unwrap_or(0)),
    }
}

/// An open logical device with its compute queue.
pub(crate) struct Context {
    pub device: ash::Device,
    pub physical: vk::PhysicalDevice,
    pub queue: vk::Queue,
    pub queue_family: u32,
    pub info: DeviceInfo,
    /// Nanoseconds per timestamp tick; `None` when the queue has no timestamps.
    pub timestamp_period: Option<f64>,
    /// The largest buffer a kernel may bind (`maxStorageBufferRange`), in bytes.
    pub max_storage_bytes: u64,
    /// The physical device's properties (ids and limits).
    pub props: vk::PhysicalDeviceProperties,
    /// Invocations per subgroup (Vulkan 1.1's `subgroupSize`; 32 on NVIDIA, 64 on older
    /// AMD, 8 to 16 on CPU drivers).
    pub subgroup_size: u32,
    /// The memory heaps: size in bytes, and whether each is device-local.
    pub heaps: Vec<(u64, bool)>,
    /// Declared last so it is dropped after the device.
    pub instance: Instance,
}

impl Context {
    /// Opens the chosen device.
    pub fn new(validation: bool, selector: Option<&DeviceSelector>) -> Result<Self> {
        let instance = Instance::new(validation)?;
        let devices = instance.devices()?;
        let chosen = choose(&devices, selector)?;
        let (physical, info, family) = devices[chosen].clone();
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let create = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        // SAFETY: valid physical device and create info.
        let device = unsafe { instance.instance.create_device(physical, &create, None) }
            .map_err(vk_err("creating the logical device"))?;
        let queue = unsafe { device.get_device_queue(family, 0) };
        let props = unsafe { instance.instance.get_physical_device_properties(physical) };
        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
        // SAFETY: a Vulkan 1.1 instance (see `Instance::new`) on a valid physical device.
        unsafe {
            instance
                .instance
                .get_physical_device_properties2(physical, &mut props2)
        };
        let subgroup_size = subgroup.subgroup_size.max(1);
        // SAFETY: a query on a valid physical device.
        let memory = unsafe {
            instance
                .instance
                .get_physical_device_memory_properties(physical)
        };
        let heaps = memory.memory_heaps[..memory.memory_heap_count as usize]
            .iter()
            .map(|h| (h.size, h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL)))
            .collect();
        let families = unsafe {
            instance
                .instance
                .get_physical_device_queue_family_properties(physical)
        };
        let timestamp_period = (families[family as usize].timestamp_valid_bits > 0
            && props.limits.timestamp_period > 0.0)
            .then_some(props.limits.timestamp_period as f64);
        Ok(Context {
            device,
            physical,
            queue,
            queue_family: family,
            info,
            timestamp_period,
            max_storage_bytes: props.limits.max_storage_buffer_range as u64,
            props,
            subgroup_size,
            heaps,
            instance,
        })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object made from the device is destroyed before (see `Shared`).
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
        }
    }
}

/// Lists devices without opening one (creates and drops a temporary instance).
pub(crate) fn enumerate() -> Result<Vec<DeviceInfo>> {
    let instance = Instance::new(false)?;
    Ok(instance.devices()?.into_iter().map(|(_, d, _)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: usize, name: &str, kind: DeviceKind) -> (vk::PhysicalDevice, DeviceInfo, u32) {
        let info = DeviceInfo {
            index,
            name: name.into(),
            kind,
            api_version: "1.3.0".into(),
        };
        (vk::PhysicalDevice::null(), info, 0)
    }

    #[test]
    fn default_choice_prefers_discrete_then_integrated_then_cpu() {
        let devices = [
            dev(0, "llvmpipe", DeviceKind::Cpu),
            dev(1, "Intel UHD", DeviceKind::Integrated),
            dev(2, "NVIDIA H200", DeviceKind::Discrete),
        ];
        assert_eq!(choose(&devices, None).unwrap(), 2);
        assert_eq!(choose(&devices[..2], None).unwrap(), 1);
        assert_eq!(choose(&devices[..1], None).unwrap(), 0);
    }

    #[test]
    fn selector_by_index_or_name() {
        let devices = [
            dev(0, "llvmpipe", DeviceKind::Cpu),
            dev(1, "NVIDIA H200", DeviceKind::Discrete),
        ];
        assert_eq!(DeviceSelector::parse(" 1 "), DeviceSelector::Index(1));
        assert_eq!(
            choose(&devices, Some(&DeviceSelector::parse("0"))).unwrap(),
            0
        );
        assert_eq!(
            choose(&devices, Some(&DeviceSelector::parse("nvidia"))).unwrap(),
            1
        );
        assert!(matches!(
            choose(&devices, Some(&DeviceSelector::Index(7))),
            Err(Error::Device(_))
        ));
        assert!(matches!(choose(&[], None), Err(Error::Device(_))));
    }
}
