//! One delivery attempt over HTTP, and the lane loop that retries with back-off.

use super::config::{CloudEventsConfig, ContentMode};
use super::stats::Counters;
use ccm_core::events::DATA_CONTENT_TYPE;
use ccm_core::store::events::Event;
use cloudevents::binding::reqwest::RequestBuilderExt;
use cloudevents::{EventBuilder, EventBuilderV10};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// `Content-Type` of a structured-mode request.
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// 2xx.
    Delivered,
    /// 5xx, timeout or transport error: worth another try.
    Retry(String),
    /// 4xx, other statuses, or an event that cannot be encoded: never retried.
    Fail(String),
}

/// Builds the CloudEvents 1.0 event (`specversion` 1.0, `source`, `subject`, `id`, `time`,
/// `application/json` data).
pub(crate) fn to_cloudevent(
    source: &str,
    event: &Event,
) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    EventBuilderV10::new()
        .id(event.id.clone())
        .ty(event.event_type.clone())
        .source(source.to_string())
        .subject(event.subject.clone())
        .time(event.time)
        .data(DATA_CONTENT_TYPE, event.data.clone())
        .build()
}

/// Sends one event once.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    config: &CloudEventsConfig,
    event: &cloudevents::Event,
) -> Attempt {
    let request = client.post(&config.sink_url);
    let request = match config.mode {
        ContentMode::Binary => request.event(event.clone()),
        ContentMode::Structured => serde_json::to_vec(event)
            .map(|body| {
                request
                    .header(reqwest::header::CONTENT_TYPE, STRUCTURED_CONTENT_TYPE)
                    .body(body)
            })
            .map_err(cloudevents::message::Error::from),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return Attempt::Fail(format!("cannot encode event: {e}")),
    };
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Attempt::Delivered;
            }
            let body = resp.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            let msg = format!("HTTP {status}: {excerpt}");
            if status.is_server_error() {
                Attempt::Retry(msg)
            } else {
                Attempt::Fail(msg)
            }
        }
        Err(e) if e.is_timeout() => {
            Attempt::Retry(format!("timed out after {:?}: {e}", config.request_timeout))
        }
        Err(e) => Attempt::Retry(format!("transport error: {e}")),
    }
}

/// Delivers one event: retries with back-off until delivered, refused (4xx) or
/// `retry_for` has passed. Updates the counters.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    config: &CloudEventsConfig,
    counters: &Counters,
    event: Event,
) {
    let ce = match to_cloudevent(&config.source, &event) {
        Ok(ce) => ce,
        Err(e) => {
            counters.failed();
            tracing::warn!(id = %event.id, r#type = %event.event_type, error = %e,
                "cloudevent cannot be built; not delivered");
            return;
        }
    };
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        match attempt(client, config, &ce).await {
            Attempt::Delivered => {
                counters.delivered();
                tracing::debug!(id = %event.id, r#type = %event.event_type, subject = %event.subject,
                    retries, "cloudevent delivered");
                return;
            }
            Attempt::Fail(reason) => {
                counters.failed();
                tracing::warn!(id = %event.id, r#type = %event.event_type, subject = %event.subject,
                    %reason, "cloudevent refused by the sink; not retried");
                return;
            }
            Attempt::Retry(reason) => {
                retries += 1;
                let delay = config.backoff.delay(retries);
                if started.elapsed() + delay > config.retry_for {
                    counters.failed();
                    tracing::warn!(id = %event.id, r#type = %event.event_type, subject = %event.subject,
                        %reason, retries, "cloudevent given up after {:?}", config.retry_for);
                    return;
                }
                counters.retried();
                tracing::debug!(id = %event.id, %reason, retries, ?delay, "cloudevent delivery retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One lane: delivers its events strictly one after the other (so order per subject holds).
pub(crate) async fn run_lane(
    client: reqwest::Client,
    config: Arc<CloudEventsConfig>,
    counters: Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) {
    while let Some(event) = rx.recv().await {
        deliver(&client, &config, &counters, event).await;
        counters.release();
    }
}
