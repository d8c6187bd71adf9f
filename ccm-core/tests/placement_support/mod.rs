//! Shared builders for the placement tests.
#![allow(dead_code)]

use ccm_core::license::LicenseType;
use ccm_core::placement::Requirements;
use ccm_core::resources::{Load, Resources};
use ccm_core::template::{PortRange, WorkerTemplate};
use ccm_core::worker::{Worker, WorkerState};

/// The seed templates: `personal-standard` (48/192/500, 20 nodes, us-east-1 + us-west-2) and
/// `enterprise-large` (48/192/1000, 500 nodes, us-east-1).
pub fn seed_templates() -> Vec<WorkerTemplate> {
    ccm_core::template::seed_templates().unwrap()
}

/// A template with the given licence, capacity and port range.
pub fn template(
    name: &str,
    license: LicenseType,
    cap: (u32, u32, u32),
    max_nodes: u32,
    ports: (u16, u16),
) -> WorkerTemplate {
    let mut t = seed_templates()[0].clone();
    t.name = name.to_string();
    t.license_type = license;
    t.capacity = Resources {
        cpu_cores: cap.0,
        memory_gb: cap.1,
        storage_gb: cap.2,
    };
    t.max_nodes = max_nodes;
    t.port_range = PortRange {
        start: ports.0,
        end: ports.1,
    };
    t
}

/// A RUNNING worker of `t` in us-east-1 on CML 2.9.0.
pub fn worker(id: &str, t: &WorkerTemplate) -> Worker {
    Worker::from_template(
        id,
        t,
        "us-east-1",
        WorkerState::Running,
        "2.9.0".parse().unwrap(),
        "CML-2.9.0",
    )
}

/// Requirements asking only for a load and some ports.
pub fn req(cpu: u32, mem: u32, sto: u32, nodes: u32, ports: usize) -> Requirements {
    Requirements {
        load: Load {
            cpu_cores: cpu,
            memory_gb: mem,
            storage_gb: sto,
            nodes,
        },
        license_affinity: vec![],
        cml_versions: Default::default(),
        node_definitions: vec![],
        ami: None,
        ports: (0..ports).map(|i| format!("p{i}")).collect(),
        region: None,
    }
}

/// A load.
pub fn load(cpu: u32, mem: u32, sto: u32, nodes: u32) -> Load {
    Load {
        cpu_cores: cpu,
        memory_gb: mem,
        storage_gb: sto,
        nodes,
    }
}
