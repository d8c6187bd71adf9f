//! Domain values ↔ BSON documents, in the schema documented in the module docs.

use super::version_key::version_key;
use ccm_core::definition::LabletDefinition;
use ccm_core::store::spec::{AuditEvent, SpecError};
use ccm_core::template::WorkerTemplate;
use ccm_core::timeslot::Timestamp;
use mongodb::bson::{self, doc, Bson, Document};

fn id_text(d: &Document) -> String {
    d.get("_id")
        .map(|b| b.to_string())
        .unwrap_or_else(|| "<no _id>".to_string())
}

/// Nanoseconds since the Unix epoch (exact), or an error naming the time.
pub(crate) fn time_ns(t: Timestamp) -> Result<i64, SpecError> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        SpecError::Backend(format!(
            "time {t} cannot be stored: audit times must lie between 1677 and 2262"
        ))
    })
}

pub(crate) fn definition_to(def: &LabletDefinition) -> Result<Document, SpecError> {
    let body = bson::to_document(def).map_err(|e| {
        SpecError::Backend(format!(
            "cannot encode definition {} {} for MongoDB: {e}",
            def.name, def.version
        ))
    })?;
    let mut out = doc! { "_id": format!("{}@{}", def.name, def.version) };
    out.extend(body);
    out.insert("version_key", version_key(&def.version));
    Ok(out)
}

pub(crate) fn definition_from(mut d: Document) -> Result<LabletDefinition, SpecError> {
    let id = id_text(&d);
    d.remove("_id");
    d.remove("version_key");
    bson::from_document(d).map_err(|e| {
        SpecError::Backend(format!(
            "stored lablet definition {id} does not match the schema: {e}"
        ))
    })
}

pub(crate) fn template_to(t: &WorkerTemplate) -> Result<Document, SpecError> {
    let body = bson::to_document(t).map_err(|e| {
        SpecError::Backend(format!(
            "cannot encode worker template {:?} for MongoDB: {e}",
            t.name
        ))
    })?;
    let mut out = doc! { "_id": t.name.as_str() };
    out.extend(body);
    Ok(out)
}

pub(crate) fn template_from(mut d: Document) -> Result<WorkerTemplate, SpecError> {
    let id = id_text(&d);
    d.remove("_id");
    bson::from_document(d).map_err(|e| {
        SpecError::Backend(format!(
            "stored worker template {id} does not match the schema: {e}"
        ))
    })
}

pub(crate) fn audit_to(e: &AuditEvent) -> Result<Document, SpecError> {
    let ns = time_ns(e.time)?;
    let data = bson::to_bson(&e.data).map_err(|err| {
        SpecError::Backend(format!(
            "audit event {:?}: data cannot be stored in MongoDB: {err}",
            e.id
        ))
    })?;
    Ok(doc! {
        "_id": e.id.as_str(),
        "subject": e.subject.as_str(),
        "event_type": e.event_type.as_str(),
        "time": bson::DateTime::from_millis(e.time.timestamp_millis()),
        "time_ns": ns,
        "actor": e.actor.as_str(),
        "reason": e.reason.as_str(),
        "data": data,
    })
}

pub(crate) fn audit_from(mut d: Document) -> Result<AuditEvent, SpecError> {
    let id = id_text(&d);
    let bad = |field: &str, what: &str| {
        SpecError::Backend(format!("stored audit event {id}: field `{field}` {what}"))
    };
    let text = |d: &mut Document, field: &str| match d.remove(field) {
        Some(Bson::String(s)) => Ok(s),
        Some(other) => Err(bad(
            field,
            &format!("is {:?}, expected a string", other.element_type()),
        )),
        None => Err(bad(field, "is missing")),
    };
    let event_id = text(&mut d, "_id")?;
    let subject = text(&mut d, "subject")?;
    let event_type = text(&mut d, "event_type")?;
    let actor = text(&mut d, "actor")?;
    let reason = text(&mut d, "reason")?;
    let ns = match d.get("time_ns") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(other) => {
            return Err(bad(
                "time_ns",
                &format!("is {:?}, expected a long", other.element_type()),
            ))
        }
        None => return Err(bad("time_ns", "is missing")),
    };
    let time = chrono::DateTime::from_timestamp_nanos(ns);
    let data = match d.remove("data") {
        Some(b) => bson::from_bson::<serde_json::Value>(b)
            .map_err(|e| bad("data", &format!("is not JSON-like: {e}")))?,
        None => serde_json::Value::Null,
    };
    Ok(AuditEvent {
        id: event_id,
        subject,
        event_type,
        time,
        actor,
        reason,
        data,
    })
}
