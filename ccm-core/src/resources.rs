//! Resource quantities: what a worker offers and what a session needs.

use serde::{Deserialize, Serialize};

/// Compute resources in whole units, as declared by worker templates and lablet definitions.
///
/// ```
/// use ccm_core::resources::Resources;
/// let need = Resources { cpu_cores: 4, memory_gb: 16, storage_gb: 50 };
/// let cap = Resources { cpu_cores: 48, memory_gb: 192, storage_gb: 500 };
/// assert!(need.fits_in(&cap));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, PartialOrd, Ord,
)]
pub struct Resources {
    /// Physical cores.
    pub cpu_cores: u32,
    /// Memory in GB.
    pub memory_gb: u32,
    /// Disk in GB.
    pub storage_gb: u32,
}

impl Resources {
    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_cores <= other.cpu_cores
            && self.memory_gb <= other.memory_gb
            && self.storage_gb <= other.storage_gb
    }

    /// Component-wise saturating subtraction.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_cores: self.cpu_cores.saturating_sub(other.cpu_cores),
            memory_gb: self.memory_gb.saturating_sub(other.memory_gb),
            storage_gb: self.storage_gb.saturating_sub(other.storage_gb),
        }
    }

    /// Component-wise saturating addition.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_cores: self.cpu_cores.saturating_add(other.cpu_cores),
            memory_gb: self.memory_gb.saturating_add(other.memory_gb),
            storage_gb: self.storage_gb.saturating_add(other.storage_gb),
        }
    }

    /// True when any dimension is zero.
    pub fn has_zero(&self) -> bool {
        self.cpu_cores == 0 || self.memory_gb == 0 || self.storage_gb == 0
    }
}

/// The four packed dimensions of a worker: cpu, memory, storage and CML nodes.
///
/// Used both for a worker's capacity (`nodes` = the template's `max_nodes`) and for what its
/// capacity-holding sessions use (`nodes` = Σ `node_count`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, PartialOrd, Ord,
)]
pub struct Load {
    /// Cores.
    pub cpu_cores: u32,
    /// Memory in GB.
    pub memory_gb: u32,
    /// Disk in GB.
    pub storage_gb: u32,
    /// CML nodes.
    pub nodes: u32,
}

impl Load {
    /// Builds a load from resources plus a node count.
    pub fn new(resources: Resources, nodes: u32) -> Self {
        Load {
            cpu_cores: resources.cpu_cores,
            memory_gb: resources.memory_gb,
            storage_gb: resources.storage_gb,
            nodes,
        }
    }

    /// The resource part (without nodes).
    pub fn resources(&self) -> Resources {
        Resources {
            cpu_cores: self.cpu_cores,
            memory_gb: self.memory_gb,
            storage_gb: self.storage_gb,
        }
    }

    /// The dimensions as an array in the fixed order cpu, memory, storage, nodes.
    pub fn dims(&self) -> [u32; 4] {
        [self.cpu_cores, self.memory_gb, self.storage_gb, self.nodes]
    }

    /// Builds a load from an array in the order of [`Load::dims`].
    pub fn from_dims(d: [u32; 4]) -> Self {
        Load {
            cpu_cores: d[0],
            memory_gb: d[1],
            storage_gb: d[2],
            nodes: d[3],
        }
    }

    /// Component-wise saturating addition.
    pub fn saturating_add(&self, o: &Load) -> Load {
        let (a, b) = (self.dims(), o.dims());
        Load::from_dims([
            a[0].saturating_add(b[0]),
            a[1].saturating_add(b[1]),
            a[2].saturating_add(b[2]),
            a[3].saturating_add(b[3]),
        ])
    }

    /// Component-wise saturating subtraction.
    pub fn saturating_sub(&self, o: &Load) -> Load {
        let (a, b) = (self.dims(), o.dims());
        Load::from_dims([
            a[0].saturating_sub(b[0]),
            a[1].saturating_sub(b[1]),
            a[2].saturating_sub(b[2]),
            a[3].saturating_sub(b[3]),
        ])
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_in(&self, other: &Load) -> bool {
        let (a, b) = (self.dims(), other.dims());
        a.iter().zip(b.iter()).all(|(x, y)| x <= y)
    }
}

/// Names of the packed dimensions, in the order of [`Load::dims`].
pub const DIMENSION_NAMES: [&str; 4] = ["cpu", "memory", "storage", "nodes"];
