//! Resuming prefix watches: one background task per watch re-creates the etcd watch after a
//! disconnect from the revision after the last delivered event.

use super::client::Conn;
use super::errors::map_status;
use super::pb::etcdserverpb as pb;
use super::pb::mvccpb;
use super::store::{prefix_end, to_kv};
use ccm_core::store::{Revision, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

type Item = Result<WatchEvent, StoreError>;

/// Events buffered per watch before the task waits for the consumer.
const BUFFER: usize = 4096;

/// The response stream of one etcd watch.
type EtcdWatch = tonic::Streaming<pb::WatchResponse>;

enum Opened {
    Live(EtcdWatch),
    Compacted(StoreError),
}

/// What the first response of a watch said.
enum First {
    Live(Box<EtcdWatch>),
    Compacted(Revision),
    Refused(String),
}

/// Opens an etcd watch on `prefix` from `start` and waits for its confirmation.
async fn open(conn: &Conn, prefix: &str, start: Revision) -> Result<Opened, StoreError> {
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision: start,
                progress_notify: true,
                ..Default::default()
            },
        )),
    };
    let first = conn
        .call(|| {
            let mut client = conn.watch();
            let create = create.clone();
            async move {
                // The request side stays open for the life of the watch.
                let requests = futures::stream::iter([create]).chain(futures::stream::pending());
                let mut stream = client.watch(requests).await?.into_inner();
                // The first response confirms creation (or reports a compacted start revision).
                match stream.message().await? {
                    Some(r) if r.compact_revision > 0 => Ok(First::Compacted(r.compact_revision)),
                    // etcd 3.4 refuses a watch whose token it no longer knows this way.
                    Some(r) if r.canceled && r.cancel_reason.contains("permission denied") => {
                        Err(Status::unauthenticated(r.cancel_reason))
                    }
                    Some(r) if r.canceled => Ok(First::Refused(r.cancel_reason)),
                    Some(r) if r.created => Ok(First::Live(Box::new(stream))),
                    Some(_) => Err(Status::internal(
                        "etcd watch: first response was not a creation",
                    )),
                    None => Err(Status::unavailable(
                        "etcd closed the watch stream while creating it",
                    )),
                }
            }
        })
        .await
        .map_err(|s| map_status(&s, None))?;
    match first {
        First::Live(s) => Ok(Opened::Live(*s)),
        First::Compacted(compacted) => Ok(Opened::Compacted(StoreError::Compacted {
            requested: start,
            compacted,
        })),
        First::Refused(reason) => Err(StoreError::Backend(format!(
            "etcd refused the watch on {prefix}: {reason}"
        ))),
    }
}

fn convert(ev: &mvccpb::Event) -> Item {
    let kv = ev
        .kv
        .as_ref()
        .ok_or_else(|| StoreError::Backend("etcd watch event without key-value".into()))?;
    match mvccpb::event::EventType::try_from(ev.r#type) {
        Ok(mvccpb::event::EventType::Put) => Ok(WatchEvent::Put(to_kv(kv)?)),
        Ok(mvccpb::event::EventType::Delete) => Ok(WatchEvent::Delete {
            key: to_kv(kv)?.key,
            mod_revision: kv.mod_revision,
        }),
        Err(_) => Err(StoreError::Backend(format!(
            "etcd watch event of unknown type {}",
            ev.r#type
        ))),
    }
}

/// Starts a watch; the first creation is awaited here so a bad start surfaces at once.
pub(crate) async fn spawn_watch(
    conn: Conn,
    prefix: String,
    start: Revision,
) -> Result<WatchStream, StoreError> {
    let first = open(&conn, &prefix, start).await?;
    let stream = match first {
        Opened::Compacted(e) => return Ok(futures::stream::once(async move { Err(e) }).boxed()),
        Opened::Live(s) => s,
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(conn, prefix, start, stream, tx));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

/// Outcome of pumping one etcd watch stream.
enum Pumped {
    /// The consumer went away.
    Closed,
    /// The connection broke; resume.
    Broken(String),
    /// The start revision was compacted (delivered to the consumer already).
    Compacted,
}

async fn pump(stream: &mut EtcdWatch, next: &mut Revision, tx: &mpsc::Sender<Item>) -> Pumped {
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = tx.closed() => return Pumped::Closed,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return Pumped::Broken("stream ended".into()),
            Err(e) => return Pumped::Broken(e.to_string()),
        };
        if resp.compact_revision > 0 {
            let _ = tx
                .send(Err(StoreError::Compacted {
                    requested: *next,
                    compacted: resp.compact_revision,
                }))
                .await;
            return Pumped::Compacted;
        }
        if resp.canceled {
            return Pumped::Broken(format!("watch canceled: {}", resp.cancel_reason));
        }
        if resp.events.is_empty() {
            // A progress notification: every change up to the header revision was sent.
            if !resp.created {
                if let Some(h) = &resp.header {
                    *next = (*next).max(h.revision.saturating_add(1));
                }
            }
            continue;
        }
        for ev in &resp.events {
            let item = convert(ev);
            if let Ok(e) = &item {
                *next = (*next).max(e.revision().saturating_add(1));
            }
            let failed = item.is_err();
            if tx.send(item).await.is_err() {
                return Pumped::Closed;
            }
            if failed {
                return Pumped::Compacted;
            }
        }
    }
}

async fn run(
    conn: Conn,
    prefix: String,
    start: Revision,
    mut stream: EtcdWatch,
    tx: mpsc::Sender<Item>,
) {
    let mut next = start;
    loop {
        match pump(&mut stream, &mut next, &tx).await {
            Pumped::Closed | Pumped::Compacted => return,
            Pumped::Broken(why) => {
                tracing::warn!(prefix = %prefix, resume_from = next, %why, "etcd watch broke; resuming");
            }
        }
        let mut backoff = Duration::from_millis(100);
        stream = loop {
            if tx.is_closed() {
                return;
            }
            match open(&conn, &prefix, next).await {
                Ok(Opened::Live(s)) => {
                    tracing::info!(prefix = %prefix, from = next, "etcd watch resumed");
                    break s;
                }
                Ok(Opened::Compacted(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(prefix = %prefix, error = %e, "etcd watch resume failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
    }
}
