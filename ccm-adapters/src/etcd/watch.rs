//! Resuming prefix watches: one background task per watch re-creates the etcd watch after a
//! disconnect from the revision after the last delivered event.

use super::errors::map_err;
use super::store::to_kv;
use ccm_core::store::{Revision, StoreError, WatchEvent, WatchStream};
use etcd_client as ec;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

type Item = Result<WatchEvent, StoreError>;

/// Events buffered per watch before the task waits for the consumer.
const BUFFER: usize = 4096;

enum Opened {
    Live(ec::WatchStream),
    Compacted(StoreError),
}

/// Opens an etcd watch on `prefix` from `start` and waits for its confirmation.
async fn open(
    client: &mut ec::WatchClient,
    prefix: &str,
    start: Revision,
) -> Result<Opened, StoreError> {
    let opts = ec::WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let mut stream = client
        .watch(prefix, Some(opts))
        .await
        .map_err(|e| map_err(e, None))?;
    // The first response confirms creation (or reports a compacted start revision).
    match stream.message().await.map_err(|e| map_err(e, None))? {
        Some(r) if r.compact_revision() > 0 => Ok(Opened::Compacted(StoreError::Compacted {
            requested: start,
            compacted: r.compact_revision(),
        })),
        Some(r) if r.canceled() => Err(StoreError::Backend(format!(
            "etcd refused the watch on {prefix}: {}",
            r.cancel_reason()
        ))),
        Some(r) if r.created() => Ok(Opened::Live(stream)),
        Some(_) => Err(StoreError::Backend(
            "etcd watch: first response was not a creation".into(),
        )),
        None => Err(StoreError::Unavailable(
            "etcd closed the watch stream while creating it".into(),
        )),
    }
}

fn convert(ev: &ec::Event) -> Item {
    let kv = ev
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd watch event without key-value".into()))?;
    match ev.event_type() {
        ec::EventType::Put => Ok(WatchEvent::Put(to_kv(kv)?)),
        ec::EventType::Delete => Ok(WatchEvent::Delete {
            key: to_kv(kv)?.key,
            mod_revision: kv.mod_revision(),
        }),
    }
}

/// Starts a watch; the first creation is awaited here so a bad start surfaces at once.
pub(crate) async fn spawn_watch(
    mut client: ec::WatchClient,
    prefix: String,
    start: Revision,
) -> Result<WatchStream, StoreError> {
    let first = open(&mut client, &prefix, start).await?;
    let stream = match first {
        Opened::Compacted(e) => return Ok(futures::stream::once(async move { Err(e) }).boxed()),
        Opened::Live(s) => s,
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(client, prefix, start, stream, tx));
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

async fn pump(
    stream: &mut ec::WatchStream,
    next: &mut Revision,
    tx: &mpsc::Sender<Item>,
) -> Pumped {
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
        if resp.compact_revision() > 0 {
            let _ = tx
                .send(Err(StoreError::Compacted {
                    requested: *next,
                    compacted: resp.compact_revision(),
                }))
                .await;
            return Pumped::Compacted;
        }
        if resp.canceled() {
            return Pumped::Broken(format!("watch canceled: {}", resp.cancel_reason()));
        }
        if resp.events().is_empty() {
            // A progress notification: every change up to the header revision was sent.
            if !resp.created() {
                if let Some(h) = resp.header() {
                    *next = (*next).max(h.revision() + 1);
                }
            }
            continue;
        }
        for ev in resp.events() {
            let item = convert(ev);
            if let Ok(e) = &item {
                *next = (*next).max(e.revision() + 1);
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
    mut client: ec::WatchClient,
    prefix: String,
    start: Revision,
    mut stream: ec::WatchStream,
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
            match open(&mut client, &prefix, next).await {
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
