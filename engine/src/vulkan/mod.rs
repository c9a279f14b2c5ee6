//! The Vulkan compute device (in progress).
