//! Fuzz target: the scenario loader (`ccm plan`, `ccm demo`) must never panic and never
//! allocate without bound, whatever the YAML: it answers a scenario or an error naming file,
//! line and field. A parsed scenario must also lower to a planner input.
#![no_main]

use ccm_core::planner::scenario::parse_scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_scenario(text, "fuzz.yaml", None) {
        Ok(s) => {
            let _ = s.input();
        }
        Err(e) => {
            assert!(e.to_string().contains("fuzz.yaml"), "error names the file: {e}");
        }
    }
});
