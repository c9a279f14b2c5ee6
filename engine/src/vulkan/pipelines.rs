//! Compute pipelines: the embedded SPIR-V kernels and a cache of their pipelines.
//!
//! Every `shaders/NAME.comp` is compiled to `shaders/spirv/NAME.spv`, which is committed
//! (`spirv_sources.rs` says how and why, `build.rs` checks it is current); the [`Kernel`]
//! constants below embed them. A pipeline is created on first use of a (kernel,
//! specialization constants) pair and kept for the device's lifetime; a
//! `vk::PipelineCache` lets the driver share compiled code between variants, and is
//! saved to disk (see `VulkanOptions::pipeline_cache`) so that the next run's pipelines
//! are not compiled again: on a real GPU, compiling a few dozen pipelines is most of a
//! short run's start-up.
//!
//! Every kernel binds only storage buffers (bindings `0..n`, set 0) and reads its shapes
//! from push constants (at most [`PUSH_BYTES`], the minimum every device supports), so
//! one descriptor-set layout and pipeline layout per binding count serves all kernels.

use std::collections::HashMap;

use ash::vk;

use crate::{Error, Result};

/// The push-constant range every pipeline layout declares (Vulkan's guaranteed minimum).
pub(crate) const PUSH_BYTES: u32 = 128;

/// One compute shader: its name (for profiles), SPIR-V and number of buffer bindings.
pub(crate) struct Kernel {
    pub name: &'static str,
    spirv: &'static [u8],
    pub bindings: u32,
}

macro_rules! kernel {
    ($const:ident, $name:literal, $bindings:expr) => {
        #[doc = concat!("`shaders/", $name, ".comp`")]
        pub(crate) const $const: Kernel = Kernel {
            name: $name,
            spirv: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shaders/spirv/",
                $name,
                ".spv"
            )),
            bindings: $bindings,
        };
    };
}

kernel!(FILL, "fill", 1);
kernel!(UNARY, "unary", 2);
kernel!(BINARY, "binary", 3);
kernel!(REDUCE, "reduce", 2);
kernel!(REDUCE_SMALL, "reduce_small", 2);
kernel!(MATMUL, "matmul", 3);
kernel!(CONV2D, "conv2d", 4);
kernel!(CONV2D_NAIVE, "conv2d_naive", 4);
kernel!(CONV2D_BACKWARD_INPUT, "conv2d_backward_input", 3);
kernel!(CONV2D_BACKWARD_WEIGHT, "conv2d_backward_weight", 3);
kernel!(STRIDED_COPY, "strided_copy", 2);
kernel!(GATHER, "gather", 3);
kernel!(FILL_RANDOM, "fill_random", 1);
kernel!(ADAM_UPDATE, "adam_update", 4);
kernel!(AFFINE_COUPLING, "affine_coupling", 4);
kernel!(AFFINE_COUPLING_BACKWARD, "affine_coupling_backward", 6);
kernel!(GAUSSIAN_LOG_PROB, "gaussian_log_prob", 3);
kernel!(GAUSSIAN_LOG_PROB_BACKWARD, "gaussian_log_prob_backward", 5);

/// A ready pipeline and the layouts it was made with.
#[derive(Clone, Copy)]
pub(crate) struct Pipeline {
    pub pipeline: vk::Pipeline,
    pub layout: vk::PipelineLayout,
    pub set_layout: vk::DescriptorSetLayout,
}

/// Pipelines created so far. Guarded by `Shared::pipes`.
pub(crate) struct Pipelines {
    layouts: HashMap<u32, (vk::DescriptorSetLayout, vk::PipelineLayout)>,
    pipelines: HashMap<(&'static str, Vec<u32>), Pipeline>,
    cache: vk::PipelineCache,
    /// Pipelines created since the cache was last saved.
    unsaved: u64,
    /// Pipelines created since the device was opened.
    pub created: u64,
    /// Layout pairs created since the device was opened.
    pub layouts_created: u64,
    /// Bytes of an earlier run's cache the pipeline cache started from (0: none).
    pub loaded_bytes: usize,
}

fn vk_err(what: &'static str) -> impl Fn(vk::Result) -> Error {
    move |e| Error::Device(format!("vulkan: {what} failed: {e}"))
}

/// The header a pipeline cache's data starts with (Vulkan spec, `vkGetPipelineCacheData`):
/// header length 32, header version 1, vendor id, device id, pipeline-cache UUID.
fn cache_header(props: &vk::PhysicalDeviceProperties) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    h.extend(32u32.to_le_bytes());
    h.extend(1u32.to_le_bytes());
    h.extend(props.vendor_id.to_le_bytes());
    h.extend(props.device_id.to_le_bytes());
    h.extend(props.pipeline_cache_uuid);
    h
}

impl Pipelines {
    /// An empty set of pipelines over a pipeline cache seeded from `saved` (the bytes of
    /// an earlier run's cache), used only when its header says it was made by this
    /// driver on this device: a driver must reject foreign data, but need not do so
    /// gracefully, and a stale file (after a driver update) is normal.
    pub fn new(
        device: &ash::Device,
        props: &vk::PhysicalDeviceProperties,
        saved: Option<&[u8]>,
    ) -> Result<Self> {
        let saved = saved.filter(|data| data.starts_with(&cache_header(props)));
        let info = match saved {
            Some(data) => vk::PipelineCacheCreateInfo::default().initial_data(data),
            None => vk::PipelineCacheCreateInfo::default(),
        };
        // SAFETY: valid device; the initial data, if any, has this device's header.
        let cache = unsafe { device.create_pipeline_cache(&info, None) }
            .map_err(vk_err("creating the pipeline cache"))?;
        Ok(Pipelines {
            layouts: HashMap::new(),
            pipelines: HashMap::new(),
            cache,
            unsaved: 0,
            created: 0,
            layouts_created: 0,
            loaded_bytes: saved.map_or(0, <[u8]>::len),
        })
    }

    /// The cache's bytes if pipelines were created since the last call (`None` if not),
    /// for [`super::VulkanDevice`] to write to disk.
    pub fn unsaved_cache_data(&mut self, device: &ash::Device) -> Result<Option<Vec<u8>>> {
        if self.unsaved == 0 {
            return Ok(None);
        }
        // SAFETY: valid device and cache.
        let data = unsafe { device.get_pipeline_cache_data(self.cache) }
            .map_err(vk_err("reading the pipeline cache"))?;
        self.unsaved = 0;
        Ok(Some(data))
    }

    fn layouts(
        &mut self,
        device: &ash::Device,
        bindings: u32,
    ) -> Result<(vk::DescriptorSetLayout, vk::PipelineLayout)> {
        if let Some(l) = self.layouts.get(&bindings) {
            return Ok(*l);
        }
        let binding_info: Vec<_> = (0..bindings)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        // SAFETY: valid device and create infos.
        let set_layout = unsafe {
            device.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&binding_info),
                None,
            )
        }
        .map_err(vk_err("creating a descriptor set layout"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .size(PUSH_BYTES)];
        let set_layouts = [set_layout];
        let layout = unsafe {
            device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default()
                    .set_layouts(&set_layouts)
                    .push_constant_ranges(&ranges),
                None,
            )
        }
        .map_err(vk_err("creating a pipeline layout"))?;
        self.layouts.insert(bindings, (set_layout, layout));
        self.layouts_created += 1;
        Ok((set_layout, layout))
    }

    /// The pipeline of `kernel` with specialization constants `spec` (ids `0..`).
    pub fn get(&mut self, device: &ash::Device, kernel: &Kernel, spec: &[u32]) -> Result<Pipeline> {
        if let Some(p) = self.pipelines.get(&(kernel.name, spec.to_vec())) {
            return Ok(*p);
        }
        let (set_layout, layout) = self.layouts(device, kernel.bindings)?;
        let code = ash::util::read_spv(&mut std::io::Cursor::new(kernel.spirv))
            .map_err(|e| Error::Device(format!("vulkan: bad SPIR-V for {}: {e}", kernel.name)))?;
        // SAFETY: SPIR-V produced by shaderc (the compile-shaders tool), checked current by build.rs.
        let module = unsafe {
            device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&code), None)
        }
        .map_err(vk_err("creating a shader module"))?;
        let entries: Vec<_> = (0..spec.len() as u32)
            .map(|i| vk::SpecializationMapEntry {
                constant_id: i,
                offset: 4 * i,
                size: 4,
            })
            .collect();
        let data: Vec<u8> = spec.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let spec_info = vk::SpecializationInfo::default()
            .map_entries(&entries)
            .data(&data);
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main")
            .specialization_info(&spec_info);
        let info = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(layout)];
        let created = unsafe { device.create_compute_pipelines(self.cache, &info, None) };
        // SAFETY: the module is no longer needed once the pipeline exists (or failed).
        unsafe { device.destroy_shader_module(module, None) };
        let pipeline = created.map_err(|(_, e)| {
            Error::Device(format!("vulkan: creating pipeline {}: {e}", kernel.name))
        })?[0];
        let p = Pipeline {
            pipeline,
            layout,
            set_layout,
        };
        self.pipelines.insert((kernel.name, spec.to_vec()), p);
        self.created += 1;
        self.unsaved += 1;
        Ok(p)
    }

    /// Destroys every pipeline and layout (device idle).
    pub fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: the device is idle and nothing refers to these any more.
        unsafe {
            for (_, p) in self.pipelines.drain() {
                device.destroy_pipeline(p.pipeline, None);
            }
            for (_, (s, l)) in self.layouts.drain() {
                device.destroy_pipeline_layout(l, None);
                device.destroy_descriptor_set_layout(s, None);
            }
            device.destroy_pipeline_cache(self.cache, None);
        }
    }
}
