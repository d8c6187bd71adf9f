//! The fast placer: an index over a snapshot of workers.
//!
//! Workers with the same static attributes (RUNNING, region, licence, CML version, node
//! definitions, AMI name, capacity) form an *equivalence class*: the static filters run once per
//! class. Inside a class every worker has the same capacity, so the score order of its workers
//! does not depend on the request: the class keeps them sorted by score key (then id) together
//! with their free vectors (cpu, memory, storage, nodes, ports) and, per block of
//! [`BLOCK`] workers, the component-wise maximum of those vectors. The best feasible worker of
//! a class is the first one in order whose free vector covers the need; blocks whose maximum
//! does not cover it are skipped whole. The class winners are then compared by exact score.

use super::explain::Unschedulable;
use super::filter::{check_dynamic, Rejection, Requirements};
use super::score::{Basis, Score, Scoring, Strategy, U320};
use crate::license::LicenseType;
use crate::ports::PortError;
use crate::resources::Load;
use crate::template::WorkerTemplate;
use crate::version::{CmlVersion, VersionRange};
use crate::worker::{Worker, WorkerState};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Workers per block of the skip index inside a class.
pub const BLOCK: usize = 32;

const NO_CLASS: u32 = u32::MAX;

/// The worker a session should go to (a decision only; see [`Fleet::commit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// Chosen worker's id.
    pub worker: String,
    /// Its index in the snapshot the placer was given.
    pub worker_index: usize,
    /// Its exact score with the session placed.
    pub score: Score,
    /// The load the session adds.
    pub load: Load,
    /// The port names the session needs, in allocation order.
    pub ports: Vec<String>,
}

impl Choice {
    pub(crate) fn new(w: &Worker, index: usize, score: Score, req: &Requirements) -> Self {
        Choice {
            worker: w.id.clone(),
            worker_index: index,
            score,
            load: req.load,
            ports: req.ports.clone(),
        }
    }
}

/// A session committed to a worker, with its host ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Session id.
    pub session: String,
    /// Worker id.
    pub worker: String,
    /// Load it holds.
    pub load: Load,
    /// Port name → host port.
    pub ports: BTreeMap<String, u16>,
}

/// A snapshot that cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// Two workers share an id.
    #[error("worker id {0:?} appears twice in the snapshot")]
    DuplicateWorker(String),
}

/// Why a choice could not be committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The choice names a worker this fleet does not have at that index.
    #[error("worker {worker} (index {index}) is not in this fleet")]
    UnknownWorker {
        /// Worker id in the choice.
        worker: String,
        /// Index in the choice.
        index: usize,
    },
    /// The session is already bound elsewhere or with other requirements.
    #[error("session {session} is already bound to worker {worker}")]
    AlreadyBound {
        /// Session id.
        session: String,
        /// Worker it is bound to.
        worker: String,
    },
    /// The worker no longer has room (the choice is stale).
    #[error("worker {worker} can no longer take the session: {reason}")]
    NoLongerFits {
        /// Worker id.
        worker: String,
        /// The failing filter.
        reason: Rejection,
    },
    /// Port allocation failed.
    #[error("worker {worker}: {source}")]
    Ports {
        /// Worker id.
        worker: String,
        /// The allocator's error.
        source: PortError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    region: String,
    license: crate::license::LicenseType,
    cml_version: String,
    node_definitions: BTreeSet<String>,
    ami_name: String,
    capacity: Load,
}

impl ClassKey {
    fn of(w: &Worker) -> Self {
        ClassKey {
            region: w.region.clone(),
            license: w.license_type,
            cml_version: w.cml_version.to_string(),
            node_definitions: w.node_definitions.clone(),
            ami_name: w.ami_name.clone(),
            capacity: w.capacity,
        }
    }
}

/// Free cpu, memory, storage, nodes and ports.
type FreeVec = [u32; 5];

#[derive(Debug, Clone)]
struct Class {
    /// Index of each static attribute in [`Attributes`]: region, licence, CML version,
    /// node-definition set, AMI name.
    attrs: [usize; 5],
    basis: Basis,
    /// Worker indices, best score key first.
    order: Vec<usize>,
    /// Free vectors, parallel to `order`.
    free: Vec<FreeVec>,
    /// Component-wise maximum of `free` per block of `BLOCK` positions.
    block_max: Vec<FreeVec>,
}

impl Class {
    /// Puts worker `wi` (free capacity `free`) into the order at its place by `cmp` (the
    /// class order, see [`order_cmp`]); returns the position. Positions after it shift by one.
    fn insert_ordered(
        &mut self,
        wi: usize,
        free: FreeVec,
        cmp: impl Fn(usize, usize) -> Ordering,
    ) -> usize {
        let at = self
            .order
            .partition_point(|o| cmp(*o, wi) == Ordering::Less);
        self.order.insert(at, wi);
        self.free.insert(at, free);
        at
    }

    fn first_fit(&self, need: &FreeVec) -> Option<usize> {
        for (b, m) in self.block_max.iter().enumerate() {
            if !covers(m, need) {
                continue;
            }
            let start = b * BLOCK;
            let end = (start + BLOCK).min(self.free.len());
            if let Some(p) = self.free[start..end].iter().position(|f| covers(f, need)) {
                return Some(start + p);
            }
        }
        None
    }

    fn refresh_blocks(&mut self, lo: usize, hi: usize) {
        for b in lo / BLOCK..=hi / BLOCK {
            let start = b * BLOCK;
            let end = (start + BLOCK).min(self.free.len());
            let mut m = [0u32; 5];
            for f in &self.free[start..end] {
                for (md, fd) in m.iter_mut().zip(f) {
                    *md = (*md).max(*fd);
                }
            }
            if let Some(slot) = self.block_max.get_mut(b) {
                *slot = m;
            }
        }
    }
}

#[inline]
fn covers(free: &FreeVec, need: &FreeVec) -> bool {
    free[0] >= need[0]
        && free[1] >= need[1]
        && free[2] >= need[2]
        && free[3] >= need[3]
        && free[4] >= need[4]
}

fn free_vec(w: &Worker) -> FreeVec {
    let f = w.capacity.saturating_sub(&w.allocated);
    [
        f.cpu_cores,
        f.memory_gb,
        f.storage_gb,
        f.nodes,
        w.ports.free(),
    ]
}

fn need_vec(req: &Requirements) -> FreeVec {
    let n = req.load;
    [
        n.cpu_cores,
        n.memory_gb,
        n.storage_gb,
        n.nodes,
        req.ports.len() as u32,
    ]
}

/// The distinct static attribute values of the RUNNING workers. The static filters run once
/// per distinct value and request; a class passes when all five of its values pass.
#[derive(Debug, Clone, Default)]
struct Attributes {
    regions: Vec<String>,
    versions: Vec<CmlVersion>,
    node_sets: Vec<BTreeSet<String>>,
    amis: Vec<String>,
}

fn intern<T: PartialEq + Clone>(values: &mut Vec<T>, v: &T) -> usize {
    match values.iter().position(|x| x == v) {
        Some(i) => i,
        None => {
            values.push(v.clone());
            values.len() - 1
        }
    }
}

impl Attributes {
    fn ids_of(&mut self, w: &Worker) -> [usize; 5] {
        [
            intern(&mut self.regions, &w.region),
            w.license_type as usize,
            intern(&mut self.versions, &w.cml_version),
            intern(&mut self.node_sets, &w.node_definitions),
            intern(&mut self.amis, &w.ami_name),
        ]
    }

    /// Which values pass `req`'s static filters (region, licence, CML version, node
    /// definitions, AMI) — the same outcome as [`super::filter::check_static`], without
    /// building a [`Rejection`]. Laid out as five consecutive ranges, see [`Attributes::offsets`].
    fn passing(&self, req: &Requirements) -> Vec<bool> {
        let mut ok = Vec::with_capacity(self.offsets()[4] + self.amis.len());
        ok.extend(
            self.regions
                .iter()
                .map(|r| req.region.as_ref().is_none_or(|x| x == r)),
        );
        ok.extend(
            LicenseType::ALL
                .iter()
                .map(|l| l.serves_any(&req.license_affinity)),
        );
        ok.extend(self.versions.iter().map(|v| req.cml_versions.contains(v)));
        ok.extend(
            self.node_sets
                .iter()
                .map(|set| req.node_definitions.iter().all(|d| set.contains(d))),
        );
        ok.extend(
            self.amis
                .iter()
                .map(|a| req.ami.as_ref().is_none_or(|g| g.matches(a))),
        );
        ok
    }

    fn offsets(&self) -> [usize; 5] {
        let r = self.regions.len();
        let l = r + LicenseType::ALL.len();
        let v = l + self.versions.len();
        let n = v + self.node_sets.len();
        [0, r, l, v, n]
    }
}

/// The fast placer over a snapshot of workers.
///
/// ```
/// use ccm_core::placement::{Fleet, Requirements, Scoring};
/// use ccm_core::resources::Load;
/// use ccm_core::worker::{Worker, WorkerState};
/// let t = &ccm_core::template::seed_templates().unwrap()[0];
/// let mk = |id: &str| Worker::from_template(id, t, "us-east-1", WorkerState::Running,
///     "2.9.0".parse().unwrap(), "CML-2.9.0");
/// let mut fleet = Fleet::new(vec![mk("w1"), mk("w2")], Scoring::default()).unwrap();
/// let req = Requirements { load: Load { cpu_cores: 4, memory_gb: 16, storage_gb: 50, nodes: 3 },
///     license_affinity: vec![], cml_versions: Default::default(), node_definitions: vec![],
///     ami: None, ports: vec!["ssh".into(), "console".into()], region: None };
///
/// let choice = fleet.place(&req).unwrap();          // decide: equal scores → smallest id
/// assert_eq!(choice.worker, "w1");
/// let b = fleet.commit("s1", &choice).unwrap();      // take capacity and ports
/// assert_eq!(b.ports["ssh"], 2000);
/// assert_eq!(fleet.commit("s1", &choice).unwrap(), b); // idempotent per session
/// assert_eq!(fleet.place(&req).unwrap().worker, "w1"); // bin-packing: the fuller one
/// fleet.release("s1");
/// assert_eq!(fleet.worker("w1").unwrap().allocated, Load::default());
/// ```
#[derive(Debug, Clone)]
pub struct Fleet {
    workers: Vec<Worker>,
    scoring: Scoring,
    /// Position of each worker in id order (the tie-break).
    rank: Vec<u32>,
    /// Score numerator of each worker's current allocation over its class basis.
    key: Vec<U320>,
    class_of: Vec<u32>,
    /// Position of each worker in its class order.
    pos: Vec<usize>,
    classes: Vec<Class>,
    /// Index in `classes` of each class key (for workers added later).
    class_ids: HashMap<ClassKey, u32>,
    attributes: Attributes,
    /// Each class's attribute ids shifted by [`Attributes::offsets`].
    class_checks: Vec<[usize; 5]>,
    by_id: HashMap<String, usize>,
    /// Sessions committed through this fleet.
    sessions: HashMap<String, (usize, Binding)>,
    /// Sessions holding ports in the snapshot, by worker index.
    snapshot_sessions: HashMap<String, usize>,
}

impl Fleet {
    /// Indexes `workers` (their `allocated` loads and port tables are taken as they are).
    pub fn new(workers: Vec<Worker>, scoring: Scoring) -> Result<Fleet, FleetError> {
        let n = workers.len();
        let mut by_id = HashMap::with_capacity(n);
        let mut snapshot_sessions = HashMap::new();
        for (i, w) in workers.iter().enumerate() {
            if by_id.insert(w.id.clone(), i).is_some() {
                return Err(FleetError::DuplicateWorker(w.id.clone()));
            }
            for s in w.ports.owners().keys() {
                snapshot_sessions.insert(s.clone(), i);
            }
        }
        let mut by_rank: Vec<usize> = (0..n).collect();
        by_rank.sort_by(|a, b| workers[*a].id.cmp(&workers[*b].id));
        let mut rank = vec![0u32; n];
        for (r, i) in by_rank.iter().enumerate() {
            rank[*i] = r as u32;
        }
        let mut class_ids: HashMap<ClassKey, u32> = HashMap::new();
        let mut attributes = Attributes::default();
        let mut classes: Vec<Class> = Vec::new();
        let mut class_of = vec![NO_CLASS; n];
        let mut key = vec![U320::ZERO; n];
        for (i, w) in workers.iter().enumerate() {
            if w.state != WorkerState::Running {
                continue;
            }
            let ci = *class_ids.entry(ClassKey::of(w)).or_insert_with(|| {
                classes.push(Class {
                    attrs: attributes.ids_of(w),
                    basis: Basis::new(&w.capacity, &scoring.weights),
                    order: Vec::new(),
                    free: Vec::new(),
                    block_max: Vec::new(),
                });
                (classes.len() - 1) as u32
            });
            class_of[i] = ci;
            let class = &mut classes[ci as usize];
            key[i] = class.basis.numerator(&w.allocated);
            class.order.push(i);
        }
        let mut pos = vec![0usize; n];
        for class in &mut classes {
            class
                .order
                .sort_by(|a, b| order_cmp(scoring.strategy, &key, &rank, *a, *b));
            class.free = class.order.iter().map(|i| free_vec(&workers[*i])).collect();
            for (p, i) in class.order.iter().enumerate() {
                pos[*i] = p;
            }
            class.block_max = vec![[0; 5]; class.order.len().div_ceil(BLOCK)];
            let last = class.order.len().saturating_sub(1);
            class.refresh_blocks(0, last);
        }
        let class_checks = class_checks_of(&classes, &attributes);
        tracing::debug!(
            workers = n,
            classes = classes.len(),
            "placement index built"
        );
        Ok(Fleet {
            workers,
            scoring,
            rank,
            key,
            class_of,
            pos,
            classes,
            class_ids,
            attributes,
            class_checks,
            by_id,
            sessions: HashMap::new(),
            snapshot_sessions,
        })
    }

    /// Adds `w` after the snapshot (e.g. a worker about to be launched) and returns its index.
    ///
    /// The fleet then places exactly as if `w` had been the last worker given to
    /// [`Fleet::new`]: a RUNNING worker joins its class (a new one when its static attributes
    /// are new), equal scores still go to the smallest id, and sessions holding ports on `w`
    /// count as bound there. Costs O(workers) for the id order. A duplicate id is refused and
    /// changes nothing.
    ///
    /// ```
    /// use ccm_core::placement::{Fleet, Requirements, Scoring};
    /// use ccm_core::resources::Load;
    /// use ccm_core::worker::{Worker, WorkerState};
    /// let t = &ccm_core::template::seed_templates().unwrap()[0];
    /// let mk = |id: &str| Worker::from_template(id, t, "us-east-1", WorkerState::Running,
    ///     "2.9.0".parse().unwrap(), "CML-2.9.0");
    /// let mut fleet = Fleet::new(vec![mk("w2")], Scoring::default()).unwrap();
    /// let req = Requirements { load: Load { cpu_cores: 4, memory_gb: 16, storage_gb: 50, nodes: 3 },
    ///     license_affinity: vec![], cml_versions: Default::default(), node_definitions: vec![],
    ///     ami: None, ports: vec![], region: None };
    /// assert_eq!(fleet.add_worker(mk("w1")).unwrap(), 1);
    /// assert_eq!(fleet.place(&req).unwrap().worker, "w1"); // equal scores → smallest id
    /// assert!(fleet.add_worker(mk("w1")).is_err());
    /// ```
    pub fn add_worker(&mut self, w: Worker) -> Result<usize, FleetError> {
        if self.by_id.contains_key(&w.id) {
            return Err(FleetError::DuplicateWorker(w.id));
        }
        let wi = self.workers.len();
        // Its place in id order: every worker with a larger id moves one rank down.
        let r = self.workers.iter().filter(|o| o.id < w.id).count() as u32;
        for rk in &mut self.rank {
            if *rk >= r {
                *rk += 1;
            }
        }
        self.rank.push(r);
        for s in w.ports.owners().keys() {
            self.snapshot_sessions.insert(s.clone(), wi);
        }
        self.by_id.insert(w.id.clone(), wi);
        self.pos.push(0);
        if w.state != WorkerState::Running {
            self.key.push(U320::ZERO);
            self.class_of.push(NO_CLASS);
            self.workers.push(w);
            return Ok(wi);
        }
        let ci = match self.class_ids.get(&ClassKey::of(&w)) {
            Some(ci) => *ci,
            None => {
                let ci = self.classes.len() as u32;
                self.classes.push(Class {
                    attrs: self.attributes.ids_of(&w),
                    basis: Basis::new(&w.capacity, &self.scoring.weights),
                    order: Vec::new(),
                    free: Vec::new(),
                    block_max: Vec::new(),
                });
                self.class_ids.insert(ClassKey::of(&w), ci);
                // New attribute values shift the offsets of every class's checks.
                self.class_checks = class_checks_of(&self.classes, &self.attributes);
                ci
            }
        };
        self.class_of.push(ci);
        self.key
            .push(self.classes[ci as usize].basis.numerator(&w.allocated));
        self.workers.push(w);
        let Fleet {
            workers,
            scoring,
            rank,
            key,
            pos,
            classes,
            ..
        } = self;
        let class = &mut classes[ci as usize];
        let at = class.insert_ordered(wi, free_vec(&workers[wi]), |a, b| {
            order_cmp(scoring.strategy, key, rank, a, b)
        });
        for (p, o) in class.order.iter().enumerate().skip(at) {
            pos[*o] = p;
        }
        class
            .block_max
            .resize(class.order.len().div_ceil(BLOCK), [0; 5]);
        let last = class.order.len() - 1;
        class.refresh_blocks(at, last);
        tracing::debug!(worker = %workers[wi].id, class = ci, "worker added to the placement index");
        Ok(wi)
    }

    /// The workers, in snapshot order, with their current allocations and ports.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// One worker by id.
    pub fn worker(&self, id: &str) -> Option<&Worker> {
        self.by_id.get(id).map(|i| &self.workers[*i])
    }

    /// The scoring in use.
    pub fn scoring(&self) -> &Scoring {
        &self.scoring
    }

    /// Number of equivalence classes of RUNNING workers.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The binding of a session committed through this fleet.
    pub fn binding(&self, session: &str) -> Option<&Binding> {
        self.sessions.get(session).map(|(_, b)| b)
    }

    /// Picks the best RUNNING worker for `req` without changing anything.
    ///
    /// Returns exactly what [`super::naive::place`] returns on [`Fleet::workers`].
    pub fn place(&self, req: &Requirements) -> Result<Choice, Unschedulable> {
        let need = need_vec(req);
        let mut best: Option<(usize, Score)> = None;
        let ok = self.attributes.passing(req);
        for (class, checks) in self.classes.iter().zip(&self.class_checks) {
            if !checks.iter().all(|i| ok[*i]) {
                continue;
            }
            let Some(p) = class.first_fit(&need) else {
                continue;
            };
            let wi = class.order[p];
            let score = class
                .basis
                .score(self.key[wi].add(&class.basis.numerator(&req.load)));
            let better = match &best {
                None => true,
                Some((bi, bs)) => match self.scoring.compare(&score, bs) {
                    Ordering::Less => true,
                    Ordering::Equal => self.rank[wi] < self.rank[*bi],
                    Ordering::Greater => false,
                },
            };
            if better {
                best = Some((wi, score));
            }
        }
        match best {
            Some((wi, score)) => Ok(Choice::new(&self.workers[wi], wi, score, req)),
            None => Err(Unschedulable::explain(&self.workers, req)),
        }
    }

    /// [`Fleet::place`], adding a template hint to the explanation when nothing fits.
    pub fn place_or_explain(
        &self,
        req: &Requirements,
        templates: &[WorkerTemplate],
    ) -> Result<Choice, Unschedulable> {
        self.place(req).map_err(|u| u.with_hint(req, templates))
    }

    /// Binds `session` to the chosen worker: adds its load and allocates its ports
    /// (lowest first). Committing the same session with the same choice again returns the same
    /// binding; a stale choice that no longer fits is refused and changes nothing.
    pub fn commit(&mut self, session: &str, choice: &Choice) -> Result<Binding, CommitError> {
        if let Some((wi, b)) = self.sessions.get(session) {
            let same = *wi == choice.worker_index
                && b.load == choice.load
                && b.ports.len() == choice.ports.len()
                && choice.ports.iter().all(|p| b.ports.contains_key(p));
            if same {
                return Ok(b.clone());
            }
            return Err(CommitError::AlreadyBound {
                session: session.to_string(),
                worker: b.worker.clone(),
            });
        }
        if let Some(wi) = self.snapshot_sessions.get(session) {
            return Err(CommitError::AlreadyBound {
                session: session.to_string(),
                worker: self.workers[*wi].id.clone(),
            });
        }
        let wi = choice.worker_index;
        let Some(w) = self.workers.get_mut(wi).filter(|w| w.id == choice.worker) else {
            return Err(CommitError::UnknownWorker {
                worker: choice.worker.clone(),
                index: wi,
            });
        };
        if w.state != WorkerState::Running {
            return Err(CommitError::NoLongerFits {
                worker: w.id.clone(),
                reason: Rejection::State { state: w.state },
            });
        }
        let dynamic = Requirements {
            load: choice.load,
            license_affinity: Vec::new(),
            cml_versions: VersionRange::default(),
            node_definitions: Vec::new(),
            ami: None,
            ports: choice.ports.clone(),
            region: None,
        };
        check_dynamic(&w.capacity, &w.allocated, w.ports.free(), &dynamic).map_err(|reason| {
            CommitError::NoLongerFits {
                worker: w.id.clone(),
                reason,
            }
        })?;
        let ports =
            w.ports
                .allocate(session, &choice.ports)
                .map_err(|source| CommitError::Ports {
                    worker: w.id.clone(),
                    source,
                })?;
        w.allocated = w.allocated.saturating_add(&choice.load);
        let binding = Binding {
            session: session.to_string(),
            worker: w.id.clone(),
            load: choice.load,
            ports,
        };
        self.reposition(wi);
        self.sessions
            .insert(session.to_string(), (wi, binding.clone()));
        tracing::debug!(session, worker = %binding.worker, "session committed");
        Ok(binding)
    }

    /// Frees the capacity and ports of a session committed through this fleet; returns its
    /// binding, or `None` when it was not committed here.
    pub fn release(&mut self, session: &str) -> Option<Binding> {
        let (wi, binding) = self.sessions.remove(session)?;
        let w = &mut self.workers[wi];
        w.allocated = w.allocated.saturating_sub(&binding.load);
        w.ports.release(session);
        self.reposition(wi);
        tracing::debug!(session, worker = %binding.worker, "session released");
        Some(binding)
    }

    /// Moves worker `wi` to its place in its class after its allocation changed.
    fn reposition(&mut self, wi: usize) {
        let ci = self.class_of[wi];
        if ci == NO_CLASS {
            return;
        }
        let Fleet {
            workers,
            scoring,
            rank,
            key,
            pos,
            classes,
            ..
        } = self;
        let class = &mut classes[ci as usize];
        key[wi] = class.basis.numerator(&workers[wi].allocated);
        let old = pos[wi];
        class.order.remove(old);
        class.free.remove(old);
        let new = class.insert_ordered(wi, free_vec(&workers[wi]), |a, b| {
            order_cmp(scoring.strategy, key, rank, a, b)
        });
        let (lo, hi) = (old.min(new), old.max(new));
        for p in lo..=hi {
            pos[class.order[p]] = p;
        }
        class.refresh_blocks(lo, hi);
    }
}

/// Each class's attribute ids shifted by the offsets of `attributes`' value ranges.
fn class_checks_of(classes: &[Class], attributes: &Attributes) -> Vec<[usize; 5]> {
    let off = attributes.offsets();
    classes
        .iter()
        .map(|c| std::array::from_fn(|k| off[k] + c.attrs[k]))
        .collect()
}

/// Order inside a class: best key first (highest for bin-packing, lowest for spreading),
/// then smallest id.
fn order_cmp(strategy: Strategy, key: &[U320], rank: &[u32], a: usize, b: usize) -> Ordering {
    let by_key = match strategy {
        Strategy::BinPack => key[b].cmp(&key[a]),
        Strategy::Spread => key[a].cmp(&key[b]),
    };
    by_key.then(rank[a].cmp(&rank[b]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::naive;
    use crate::template::seed_templates;

    fn worker(id: &str, template: usize, region: &str, a: (u32, u32, u32)) -> Worker {
        let templates = seed_templates().expect("seed templates");
        let mut w = Worker::from_template(
            id,
            &templates[template],
            region,
            WorkerState::Running,
            "2.9.0".parse().expect("version"),
            "CML-2.9.0",
        );
        w.allocated = Load {
            cpu_cores: a.0,
            memory_gb: a.1,
            storage_gb: 0,
            nodes: a.2,
        };
        w
    }

    fn req(cpu: u32, memory: u32, nodes: u32, ports: usize, region: Option<&str>) -> Requirements {
        Requirements {
            load: Load {
                cpu_cores: cpu,
                memory_gb: memory,
                storage_gb: 0,
                nodes,
            },
            license_affinity: Vec::new(),
            cml_versions: VersionRange::default(),
            node_definitions: Vec::new(),
            ami: None,
            ports: (0..ports).map(|i| format!("p{i}")).collect(),
            region: region.map(str::to_string),
        }
    }

    /// The added fleet decides like the naive placer and like a fleet built in one go.
    fn agree(fleet: &Fleet, r: &Requirements) -> Option<Choice> {
        let fast = fleet.place(r).ok();
        let naive = naive::place(fleet.workers(), r, fleet.scoring()).ok();
        let rebuilt = Fleet::new(fleet.workers().to_vec(), *fleet.scoring()).expect("rebuild");
        assert_eq!(fast, naive);
        assert_eq!(fast, rebuilt.place(r).ok());
        fast
    }

    #[test]
    fn added_workers_are_placed_as_if_given_to_new() {
        for scoring in [Scoring::default(), Scoring::spread()] {
            let mut fleet = Fleet::new(
                vec![
                    worker("w5", 0, "us-east-1", (8, 32, 2)),
                    worker("w2", 0, "us-east-1", (0, 0, 0)),
                ],
                scoring,
            )
            .expect("fleet");
            let mut stopped = worker("w0", 0, "us-east-1", (0, 0, 0));
            stopped.state = WorkerState::Stopped;
            let mut held = worker("w4", 0, "us-east-1", (8, 32, 2));
            held.ports
                .allocate("old", &["p0".to_string()])
                .expect("ports");
            let mut added = vec![
                stopped,
                held,
                worker("w1", 0, "us-east-1", (8, 32, 2)), // ties w5 and w4: smaller id
                worker("w9", 0, "us-west-2", (40, 100, 10)), // new region: new class and values
                worker("w3", 1, "us-east-1", (20, 50, 5)), // new capacity: new class
            ];
            // More than a block of one class, so the skip index grows while workers are added.
            added.extend(
                (0..40).map(|i| worker(&format!("m{i:02}"), 0, "us-east-1", (i, i * 4, i % 20))),
            );
            let reqs = [
                req(4, 16, 2, 1, None),
                req(4, 16, 2, 1, Some("us-west-2")),
                req(30, 100, 2, 0, None),
                req(1, 1, 1, 0, None),
                req(48, 192, 1, 0, None),
            ];
            for w in added {
                let n = fleet.workers().len();
                assert_eq!(fleet.add_worker(w).expect("added"), n);
                for r in &reqs {
                    agree(&fleet, r);
                }
            }
            assert_eq!(fleet.class_count(), 3);
            // Commits move the added workers inside their classes like the others.
            for i in 0..60 {
                let r = &reqs[i % reqs.len()];
                let Some(c) = agree(&fleet, r) else { continue };
                fleet.commit(&format!("s{i}"), &c).expect("commit");
            }
            // Ports held in an added worker count as bound there.
            let w4 = fleet.by_id["w4"];
            let w = &fleet.workers()[w4];
            let score = fleet
                .scoring()
                .score_after(&w.capacity, &w.allocated, &reqs[3].load);
            let c = Choice::new(w, w4, score, &reqs[3]);
            assert!(matches!(
                fleet.commit("old", &c),
                Err(CommitError::AlreadyBound { .. })
            ));
        }
    }

    #[test]
    fn a_duplicate_added_worker_is_refused_and_changes_nothing() {
        let mut fleet = Fleet::new(
            vec![worker("w1", 0, "us-east-1", (0, 0, 0))],
            Scoring::default(),
        )
        .expect("fleet");
        let e = fleet
            .add_worker(worker("w1", 1, "us-west-2", (1, 1, 1)))
            .expect_err("duplicate");
        assert_eq!(e, FleetError::DuplicateWorker("w1".into()));
        assert_eq!(fleet.workers().len(), 1);
        assert_eq!(fleet.class_count(), 1);
        assert_eq!(
            fleet.worker("w1").map(|w| w.region.as_str()),
            Some("us-east-1")
        );
    }
}
