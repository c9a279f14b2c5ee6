//! Compute pipelines: the embedded SPIR-V kernels and a cache of their pipelines.
//!
//! Every `shaders/NAME.comp` is compiled to `shaders/spirv/NAME.spv`, which is committed
//! (`spirv_sources.rs` says how and why, `build.rs` checks it is current); the [`Kernel`]
//! constants below embed them. A pipeline is created on first use of a (kernel,
//! specialization constants) pair and kept for the device's lifetime; a
//! `vk::PipelineCache` lets the driver share compiled code between variants.
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
kernel!(CONV2D_BACKWARD_INPUT, "conv2d_backward_input", 3);
kernel!(CONV2D_BACKWARD_WEIGHT, "conv2d_backward_weight", 3);
kernel!(STRIDED_COPY, "strided_copy", 2);
kernel!(GATHER, "gather", 3);
kernel!(FILL_RANDOM, "fill_random", 1);
kernel!(ADAM_UPDATE, "adam_update", 4);
kernel!(AFFINE_COUPLING, "affine_coupling", 4);
kernel!(AFFINE_COUPLING_BACKWARD, "affine_coupling_backward", 5);
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
}

fn vk_err(what: &'static str) -> impl Fn(vk::Result) -> Error {
    move |e| Error::Device(format!("vulkan: {what} failed: {e}"))
}

impl Pipelines {
    pub fn new(device: &ash::Device) -> Result<Self> {
        // SAFETY: valid device; an empty cache.
        let cache =
            unsafe { device.create_pipeline_cache(&vk::PipelineCacheCreateInfo::default(), None) }
                .map_err(vk_err("creating the pipeline cache"))?;
        Ok(Pipelines {
            layouts: HashMap::new(),
            pipelines: HashMap::new(),
            cache,
        })
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
