//! Fuzz target: the worker templates loader (`WORKER_TEMPLATES_CONFIG_PATH`, the spec store
//! seed) must never panic and never allocate without bound, whatever the YAML; an error names
//! the file.
#![no_main]

use ccm_core::template::parse_templates;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_templates(text, "fuzz-templates.yaml") {
        Ok(ts) => {
            for t in &ts {
                let _ = t.load_capacity();
                let _ = ccm_core::template::drain_timeout(t.drain_timeout_hours);
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz-templates.yaml"), "{e}"),
    }
});
