//! What the Vulkan tests do where no Vulkan device opens: skip with one notice per test
//! binary, or, under `ENGINE_REQUIRE_VULKAN=1` (CI sets it), fail.
//!
//! The two `vulkan_probe_*` tests ask for the test device as every Vulkan test does
//! (`engine::testing::vulkan_device`). The other tests run this binary again as a child
//! that runs only the probes, with the Vulkan loader told to load a driver manifest that
//! does not exist (`VK_DRIVER_FILES`, and `VK_ICD_FILENAMES` for older loaders), so that
//! no device opens whether or not this machine has one. Where the machine has no loader
//! at all the child finds none either, and the tests hold the same.
#![cfg(feature = "vulkan")]

use std::process::{Command, Output};

#[test]
fn vulkan_probe_1() {
    if let Some(dev) = engine::testing::vulkan_device() {
        let x = engine::Tensor::ones(&[3], &dev).unwrap();
        assert_eq!(x.add(&x).unwrap().to_vec().unwrap(), vec![2.0; 3]);
        engine::testing::assert_no_validation_messages();
    }
}

#[test]
fn vulkan_probe_2() {
    vulkan_probe_1();
}

/// This binary's two probes, in a child process that finds no Vulkan driver, with
/// `ENGINE_REQUIRE_VULKAN` set to `require` (or unset).
fn probes_without_a_driver(require: Option<&str>) -> (Output, String) {
    let missing = std::env::temp_dir().join("no-such-vulkan-driver.json");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["vulkan_probe_", "--test-threads=2"])
        .env("VK_DRIVER_FILES", &missing)
        .env("VK_ICD_FILENAMES", &missing)
        .env_remove("ENGINE_NO_VULKAN")
        .env_remove("ENGINE_REQUIRE_VULKAN");
    if let Some(v) = require {
        cmd.env("ENGINE_REQUIRE_VULKAN", v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn without_a_device_the_vulkan_tests_skip_with_one_notice() {
    let (out, text) = probes_without_a_driver(None);
    assert!(out.status.success(), "the probes should pass:\n{text}");
    assert!(text.contains("2 passed"), "{text}");
    let notices = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("note: this binary's Vulkan tests are skipped"))
        .count();
    assert_eq!(notices, 1, "one notice on stderr for two tests:\n{text}");
    assert!(text.contains("mesa-vulkan-drivers"), "{text}");
}

#[test]
fn require_vulkan_turns_the_skip_into_a_failure() {
    let (out, text) = probes_without_a_driver(Some("1"));
    assert!(!out.status.success(), "the probes should fail:\n{text}");
    assert!(text.contains("2 failed"), "both probes fail:\n{text}");
    assert!(
        text.contains("ENGINE_REQUIRE_VULKAN=1: no Vulkan device"),
        "{text}"
    );
    assert!(
        !text.contains("note: this binary's Vulkan tests are skipped"),
        "{text}"
    );
}

#[test]
fn require_and_skip_together_are_a_contradiction() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    let out = cmd
        .args(["vulkan_probe_1", "--exact"])
        .env("ENGINE_REQUIRE_VULKAN", "1")
        .env("ENGINE_NO_VULKAN", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("contradict"), "{text}");
}
