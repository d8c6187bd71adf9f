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
#[serde(try_from = "RawTimeslot")]
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

/// The earliest instant a stored or booked time may name (0001-01-01T00:00:00Z).
pub fn earliest_valid() -> Timestamp {
    DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest instant a stored or booked time may name (9999-12-31T23:59:59Z): far enough
/// from chrono's limits that adding a lead time, a grace or a horizon never overflows.
pub fn latest_valid() -> Timestamp {
    DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether `t` lies in the years 1 to 9999 ([`earliest_valid`] ..= [`latest_valid`]).
pub fn in_valid_range(t: Timestamp) -> bool {
    t >= earliest_valid() && t <= latest_valid()
}

/// `t + d`, or chrono's latest (earliest for a negative `d`) instant when that overflows:
/// arithmetic on stored times never panics.
///
/// ```
/// use ccm_core::timeslot::saturating_add;
/// let max = chrono::DateTime::<chrono::Utc>::MAX_UTC;
/// assert_eq!(saturating_add(max, chrono::Duration::minutes(5)), max);
/// ```
pub fn saturating_add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// `t − d`, or chrono's earliest (latest for a negative `d`) instant when that overflows.
///
/// ```
/// use ccm_core::timeslot::saturating_sub;
/// let min = chrono::DateTime::<chrono::Utc>::MIN_UTC;
/// assert_eq!(saturating_sub(min, chrono::Duration::minutes(35)), min);
/// ```
pub fn saturating_sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

/// The stored shape of a [`Timeslot`], validated on decode.
#[derive(Deserialize)]
struct RawTimeslot {
    start: Timestamp,
    end: Timestamp,
}

impl TryFrom<RawTimeslot> for Timeslot {
    type Error = String;
    fn try_from(r: RawTimeslot) -> Result<Self, Self::Error> {
        for (name, t) in [("start", r.start), ("end", r.end)] {
            if !in_valid_range(t) {
                return Err(format!(
                    "time slot {name} {t} is outside the years 1 to 9999"
                ));
            }
        }
        Timeslot::new(r.start, r.end).map_err(|e| e.to_string())
    }
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
    ///
    /// Saturates instead of overflowing: a lead reaching past chrono's earliest instant makes
    /// the session due since the beginning of time.
    pub fn due_at(&self, lead: Duration) -> Timestamp {
        saturating_sub(self.start, lead)
    }

    /// The last instant a PENDING session of this slot may still be bound: `start + grace`
    /// (saturating).
    pub fn expires_at(&self, grace: Duration) -> Timestamp {
        saturating_add(self.start, grace)
    }

    /// Length of the slot.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn arithmetic_near_chrono_limits_saturates() {
        let max = DateTime::<Utc>::MAX_UTC;
        let slot = Timeslot {
            start: max - Duration::seconds(1),
            end: max,
        };
        assert_eq!(slot.expires_at(Duration::minutes(5)), max);
        let min = DateTime::<Utc>::MIN_UTC;
        let early = Timeslot {
            start: min,
            end: min + Duration::hours(1),
        };
        assert_eq!(early.due_at(Duration::minutes(35)), min);
        assert_eq!(saturating_add(min, Duration::minutes(-1)), min);
        assert_eq!(saturating_sub(max, Duration::minutes(-1)), max);
    }

    #[test]
    fn decode_validates_order_and_range() {
        let ok: Timeslot = serde_json::from_str(
            r#"{"start":"2026-05-04T08:00:00Z","end":"2026-05-04T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(ok.start, Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap());
        let inverted = serde_json::from_str::<Timeslot>(
            r#"{"start":"2026-05-04T10:00:00Z","end":"2026-05-04T08:00:00Z"}"#,
        )
        .unwrap_err();
        assert!(
            inverted.to_string().contains("not after its start"),
            "{inverted}"
        );
        let far = serde_json::from_str::<Timeslot>(
            r#"{"start":"+262000-01-01T00:00:00Z","end":"+262001-01-01T00:00:00Z"}"#,
        )
        .unwrap_err();
        assert!(far.to_string().contains("outside the years"), "{far}");
    }
}
