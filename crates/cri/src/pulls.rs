//! Pulls in flight. Concurrent `PullImage` calls for one image share one
//! pull; a pull that makes no progress for `image_pull_progress_timeout` is
//! cancelled with DeadlineExceeded; when every caller waiting on a pull went
//! away (kubelet gave up, crictl was interrupted), the pull is cancelled.

use crate::images;
use crate::{Backend, BackendError, ErrorKind, PullRequest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stowage_oci::Reference;
use stowage_remote::Credentials;
use stowage_store::Store;
use tokio::sync::watch;

/// What a pull ends with: the image id, or the error every caller gets.
pub type Outcome = Result<String, BackendError>;

struct Flight {
    id: u64,
    /// Callers waiting (guarded by the map's lock).
    waiters: usize,
    cancel: Arc<AtomicBool>,
    result: watch::Receiver<Option<Outcome>>,
}

pub struct Pulls {
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    progress_timeout: Duration,
    flights: Mutex<HashMap<String, Flight>>,
    next_id: AtomicU64,
    /// Pulls started (not joined): lets tests and logs tell sharing happened.
    pub started: AtomicU64,
}

/// Leaves the flight when the caller's future ends, finished or dropped.
struct Waiter<'a> {
    pulls: &'a Pulls,
    key: String,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.pulls.flights.lock().unwrap();
        let Some(f) = map.get_mut(&self.key).filter(|f| f.id == self.id) else {
            return;
        };
        f.waiters -= 1;
        // A finished pull has left the map already, so this one still runs.
        if f.waiters == 0 {
            tracing::info!(image = %self.key, "every caller of this pull went away; cancelling it");
            f.cancel.store(true, Ordering::Relaxed);
            map.remove(&self.key);
        }
    }
}

impl Pulls {
    pub fn new(store: Arc<Store>, backend: Arc<dyn Backend>, progress_timeout: Duration) -> Pulls {
        Pulls {
            store,
            backend,
            progress_timeout,
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            started: AtomicU64::new(0),
        }
    }

    /// Pull `reference` (or join the pull of it already running) and return
    /// the image id.
    pub async fn pull(
        self: &Arc<Self>,
        reference: Reference,
        credentials: Option<Credentials>,
        plain_http: bool,
    ) -> Outcome {
        let key = images::record_name(&reference);
        let (id, mut rx) = {
            let mut map = self.flights.lock().unwrap();
            match map.get_mut(&key) {
                Some(f) => {
                    f.waiters += 1;
                    tracing::info!(image = %key, "joining the pull already in flight");
                    (f.id, f.result.clone())
                }
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(None);
                    let cancel = Arc::new(AtomicBool::new(false));
                    map.insert(
                        key.clone(),
                        Flight {
                            id,
                            waiters: 1,
                            cancel: cancel.clone(),
                            result: rx.clone(),
                        },
                    );
                    self.started.fetch_add(1, Ordering::Relaxed);
                    let this = self.clone();
                    let k = key.clone();
                    tokio::spawn(async move {
                        let outcome = this
                            .drive(&k, reference, credentials, plain_http, cancel)
                            .await;
                        {
                            let mut map = this.flights.lock().unwrap();
                            if map.get(&k).is_some_and(|f| f.id == id) {
                                map.remove(&k);
                            }
                        }
                        let _ = tx.send(Some(outcome));
                    });
                    (id, rx)
                }
            }
        };
        let _waiter = Waiter {
            pulls: self,
            key: key.clone(),
            id,
        };
        loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                return o;
            }
            if rx.changed().await.is_err() {
                return Err(BackendError::new(
                    ErrorKind::Internal,
                    format!("pull {key}: the pull task ended without a result"),
                ));
            }
        }
    }

    /// Run one pull on a blocking thread, watched for progress.
    async fn drive(
        self: &Arc<Self>,
        key: &str,
        reference: Reference,
        credentials: Option<Credentials>,
        plain_http: bool,
        cancel: Arc<AtomicBool>,
    ) -> Outcome {
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let l2 = last.clone();
        let request = PullRequest {
            reference,
            credentials,
            plain_http,
            cancel: cancel.clone(),
            activity: Arc::new(move || {
                l2.store(started.elapsed().as_millis() as u64, Ordering::Relaxed)
            }),
        };
        let store = self.store.clone();
        let backend = self.backend.clone();
        tracing::info!(image = %key, plain_http, "pull started");
        let work = tokio::task::spawn_blocking(move || -> Outcome {
            let pulled = backend.pull(&store, &request)?;
            let record = store
                .meta
                .image(&pulled.name)
                .map_err(|e| BackendError::new(ErrorKind::Internal, format!("store: {e}")))?
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Internal,
                        format!("pulled {} but its name is not in the store", pulled.name),
                    )
                })?;
            let resolved = backend.resolve(&store, &record)?;
            tracing::info!(
                image = %pulled.name,
                id = %resolved.config_digest,
                layers_fetched = pulled.layers_fetched,
                bytes_fetched = pulled.bytes_fetched,
                "pull finished"
            );
            Ok(resolved.config_digest.to_string())
        });
        let timeout = self.progress_timeout;
        let watchdog = async {
            if timeout.is_zero() {
                return std::future::pending::<()>().await;
            }
            let tick = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
            loop {
                tokio::time::sleep(tick).await;
                let idle = started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle >= timeout {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            joined = work => match joined {
                Ok(o) => o,
                Err(e) => Err(BackendError::new(ErrorKind::Internal, format!("pull {key}: {e}"))),
            },
            () = watchdog => {
                cancel.store(true, Ordering::Relaxed);
                Err(BackendError::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "pull {key}: cancelled: no progress for {} (image_pull_progress_timeout)",
                        human_duration(timeout)
                    ),
                ))
            }
        };
        match &outcome {
            Ok(_) => {}
            Err(e) if cancel.load(Ordering::Relaxed) && e.kind != ErrorKind::DeadlineExceeded => {
                tracing::info!(image = %key, "pull cancelled: {e}")
            }
            Err(e) => tracing::warn!(image = %key, "pull failed: {e}"),
        }
        outcome
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && d.subsec_nanos() == 0 && d.as_secs() / 60 * 60 == d.as_secs() {
        format!("{}m", d.as_secs() / 60)
    } else if s >= 1.0 {
        format!("{}s", (s * 10.0).round() / 10.0)
    } else {
        format!("{}ms", d.as_millis())
    }
}
