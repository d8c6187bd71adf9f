//! Time slots `[start, end)` and the lead time rule.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A point in time (UTC).
pub type Timestamp = DateTime<Utc>;

/// A booked interval `[start, end)`.
///
/// ```
/// use ccm_core::timeslot::Timeslot;
/// use chrono::{TimeZone, Utc, Duration};
/// let s = Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap();
/// let slot = Timeslot::new(s, s + Duration::hours(2)).unwrap();
/// assert_eq!(slot.due_at(Duration::minutes(35)), s - Duration::minutes(35));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timeslot {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

/// A slot whose end is not after its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time slot end {end} is not after its start {start}")]
pub struct TimeslotError {
    /// Start given.
    pub start: Timestamp,
    /// End given.
    pub end: Timestamp,
}

impl Timeslot {
    /// A slot; `end` must be after `start`.
    pub fn new(start: Timestamp, end: Timestamp) -> Result<Self, TimeslotError> {
        if end <= start {
            return Err(TimeslotError { start, end });
        }
        Ok(Timeslot { start, end })
    }

    /// Whether two slots share an instant.
    pub fn overlaps(&self, other: &Timeslot) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `t` lies inside the slot.
    pub fn contains(&self, t: Timestamp) -> bool {
        t >= self.start && t < self.end
    }

    /// When a session in this slot becomes due for binding: `start − lead`.
    pub fn due_at(&self, lead: Duration) -> Timestamp {
        self.start - lead
    }

    /// Length of the slot.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}
