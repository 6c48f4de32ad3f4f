//! The pool: worker slots, their supervisors, dispatch with a bounded queue, shutdown.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::invocation::{self, ERROR_HEADER, Invocation, NOT_FOUND_HEADER};
use crate::{BRIDGE_JS, WorkerError};

type Body = ferry_http::Body;

/// A worker that stayed up this long counts as healthy again (resets the crash backoff).
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// First delay of the restart backoff once a worker crashes repeatedly.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// How long a failed request waits to learn whether its worker died.
const SETTLE: Duration = Duration::from_millis(250);
/// Dispatch attempts for a request no worker has seen yet (its worker was found dead).
const UNSENT_ATTEMPTS: usize = 3;

/// How the pool runs its workers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The app's project directory: the workers' cwd; relative entries resolve against it.
    pub project_dir: PathBuf,
    /// Number of Node.js processes.
    pub workers: usize,
    /// The `node` binary.
    pub node: PathBuf,
    /// Extra arguments before the bridge script (e.g. `--max-old-space-size=512`).
    pub node_args: Vec<String>,
    /// Concurrent requests one worker may handle.
    pub max_in_flight_per_worker: usize,
    /// Requests allowed to wait for a free worker; beyond that, `Overloaded` at once.
    pub queue_limit: usize,
    /// How long a request may wait in the queue before `QueueTimeout`.
    pub queue_timeout: Duration,
    /// Time from dispatch to response headers; past it the worker is killed and replaced.
    pub request_timeout: Duration,
    /// Time a worker may take to become ready.
    pub startup_timeout: Duration,
    /// Longest delay between restarts of a crash-looping worker.
    pub restart_backoff_max: Duration,
    /// Extra environment for the workers.
    pub env: Vec<(String, String)>,
    /// Whether workers inherit Ferry's environment (like `next start` does).
    pub inherit_env: bool,
    /// Entries each worker requires before it reports ready (warm start).
    pub preload: Vec<String>,
    /// Where sockets and the bridge script go; a private temp dir when `None`.
    pub run_dir: Option<PathBuf>,
}

impl PoolConfig {
    /// Defaults: one worker per core, 8 in flight each, 256 queued, 60 s to headers.
    pub fn new(project_dir: impl Into<PathBuf>) -> Self {
        PoolConfig {
            project_dir: project_dir.into(),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            node: PathBuf::from("node"),
            node_args: Vec::new(),
            max_in_flight_per_worker: 8,
            queue_limit: 256,
            queue_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(30),
            restart_backoff_max: Duration::from_secs(5),
            env: Vec::new(),
            inherit_env: true,
            preload: Vec::new(),
            run_dir: None,
        }
    }
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Configured worker count.
    pub workers: usize,
    /// Workers currently up and accepting requests.
    pub live_workers: usize,
    /// Requests dispatched and not finished (response body included).
    pub in_flight: usize,
    /// Requests waiting for a free worker.
    pub queued: usize,
    /// Requests handed to a worker since start.
    pub dispatched: u64,
    /// Worker restarts after an exit, crash or kill.
    pub restarts: u64,
    /// Requests answered `Crashed`.
    pub crashed: u64,
    /// Requests answered `Timeout`.
    pub timeouts: u64,
    /// Requests refused with `Overloaded` or `QueueTimeout`.
    pub rejected: u64,
}

/// Facts about a worker response, attached as a response extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerResponseInfo {
    /// Slot index of the worker that answered.
    pub worker: usize,
    /// The handler asked for the 404 page (`notFound`): Ferry should render its own 404.
    pub not_found: bool,
    /// The handler threw before sending headers; the bridge answered 500.
    pub handler_error: bool,
}

/// The readiness of a freshly spawned pool (see [`WorkerPool::spawn`]).
#[derive(Debug)]
pub struct Startup {
    ready: Vec<oneshot::Receiver<Result<(), WorkerError>>>,
}

impl Startup {
    /// Waits until every worker answered its first health check, or one failed to start.
    pub async fn wait(self) -> Result<(), WorkerError> {
        for rx in self.ready {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(WorkerError::Config(
                        "worker supervisor ended during startup".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The supervised pool of Node.js workers. Cheap to clone.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    shared: Arc<Shared>,
    _run_dir: Option<tempfile::TempDir>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: no one can dispatch or shut down any more.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.kill_all.send_replace(true);
        self.shared.wake.notify_waiters();
    }
}

struct Shared {
    cfg: PoolConfig,
    bridge: PathBuf,
    run_dir: PathBuf,
    slots: Vec<Slot>,
    /// Woken when capacity frees up or a worker becomes live.
    wake: Notify,
    /// Woken when `in_flight` drops to zero.
    drained: Notify,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    next_slot: AtomicUsize,
    stopping: AtomicBool,
    kill_all: watch::Sender<bool>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    dispatched: AtomicU64,
    restarts: AtomicU64,
    crashed: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
}

struct Slot {
    in_flight: AtomicUsize,
    worker: Mutex<Option<Arc<Worker>>>,
}

struct Worker {
    slot: usize,
    pid: Option<u32>,
    socket: PathBuf,
    idle: Mutex<Vec<SendRequest<Body>>>,
    alive: AtomicBool,
    kill: Notify,
    /// Set by the supervisor once the process has exited.
    exited: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short locks leaves consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Asks the supervisor to SIGKILL this worker (hung or unwanted).
    fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        lock(&self.idle).clear();
        self.kill.notify_one();
    }

    /// After a connection failure: give the supervisor a moment to notice a dead process,
    /// so the failure is classified right and later requests skip this worker.
    async fn settle(&self) -> bool {
        let mut rx = self.exited.subscribe();
        matches!(
            timeout(SETTLE, rx.wait_for(|exited| *exited)).await,
            Ok(Ok(_))
        )
    }

    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = lock(&self.idle);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Body>, cap: usize) {
        if !self.is_alive() || sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < cap {
            idle.push(sender);
        }
    }
}

impl WorkerPool {
    /// Writes the bridge, spawns every worker and waits until each answers its health check.
    pub async fn start(cfg: PoolConfig) -> Result<Self, WorkerError> {
        let (pool, startup) = Self::spawn(cfg)?;
        startup.wait().await?;
        Ok(pool)
    }

    /// Like [`WorkerPool::start`] but returns at once: requests dispatched before the workers
    /// are ready wait in the queue. `Startup::wait` reports whether every worker came up.
    pub fn spawn(cfg: PoolConfig) -> Result<(Self, Startup), WorkerError> {
        if cfg.workers == 0 {
            return Err(WorkerError::Config("workers must be at least 1".into()));
        }
        if cfg.max_in_flight_per_worker == 0 {
            return Err(WorkerError::Config(
                "max_in_flight_per_worker must be at least 1".into(),
            ));
        }
        if !cfg.project_dir.is_dir() {
            return Err(WorkerError::Config(format!(
                "project dir {} is not a directory",
                cfg.project_dir.display()
            )));
        }
        let (run_dir, temp) = match &cfg.run_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| WorkerError::RunDir {
                    path: dir.clone(),
                    source,
                })?;
                (dir.clone(), None)
            }
            None => {
                let temp_root = std::env::temp_dir();
                sweep_stale_run_dirs(&temp_root);
                let temp = tempfile::Builder::new()
                    .prefix(RUN_DIR_PREFIX)
                    .tempdir()
                    .map_err(|source| WorkerError::RunDir {
                        path: temp_root,
                        source,
                    })?;
                // Who owns it: a later Ferry removes the directory if this process dies
                // without cleaning up (SIGKILL, OOM kill).
                let owner = temp.path().join(RUN_DIR_OWNER);
                std::fs::write(&owner, std::process::id().to_string()).map_err(|source| {
                    WorkerError::RunDir {
                        path: owner,
                        source,
                    }
                })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let bridge = run_dir.join("bridge.cjs");
        std::fs::write(&bridge, BRIDGE_JS).map_err(|source| WorkerError::RunDir {
            path: bridge.clone(),
            source,
        })?;

        let slots = (0..cfg.workers)
            .map(|_| Slot {
                in_flight: AtomicUsize::new(0),
                worker: Mutex::new(None),
            })
            .collect();
        let (kill_all, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            bridge,
            run_dir,
            slots,
            wake: Notify::new(),
            drained: Notify::new(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            next_slot: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            kill_all,
            supervisors: Mutex::new(Vec::new()),
            dispatched: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            crashed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            _run_dir: temp,
        });

        let mut ready = Vec::new();
        for slot in 0..shared.slots.len() {
            let (tx, rx) = oneshot::channel();
            let handle = tokio::spawn(supervise(shared.clone(), slot, tx));
            lock(&shared.supervisors).push(handle);
            ready.push(rx);
        }
        Ok((WorkerPool { inner }, Startup { ready }))
    }

    /// Runs one invocation on the least-loaded live worker; streams both bodies.
    pub async fn dispatch(&self, inv: Invocation) -> Result<Response<Body>, WorkerError> {
        let shared = &self.inner.shared;
        let mut req = invocation::to_request(inv)?;
        let mut attempt = 1;
        loop {
            let lease = shared.acquire().await?;
            shared.dispatched.fetch_add(1, Ordering::Relaxed);
            match shared.send(lease, req).await {
                Ok(resp) => return Ok(resp),
                Err(Failure::Unsent(unsent, _)) if attempt < UNSENT_ATTEMPTS => {
                    // Its worker died before reading it: safe to run elsewhere.
                    req = *unsent;
                    attempt += 1;
                }
                Err(Failure::Unsent(_, err) | Failure::Failed(err)) => return Err(err),
            }
        }
    }

    /// Graceful stop: refuse new work, wait for in-flight requests and `waitUntil` work,
    /// SIGTERM the workers (apps' own handlers run), SIGKILL whatever is left after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let shared = &self.inner.shared;
        let deadline = Instant::now() + grace;
        shared.stopping.store(true, Ordering::SeqCst);
        shared.wake.notify_waiters();

        loop {
            let notified = shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    in_flight = shared.in_flight.load(Ordering::SeqCst),
                    "worker pool shutdown: grace ran out with requests in flight"
                );
                break;
            }
        }

        let mut stops = tokio::task::JoinSet::new();
        for worker in shared.live_workers() {
            stops.spawn(async move {
                // Pending waitUntil / after() work first, then the signal.
                let drained = timeout_at(deadline, control(&worker.socket, "/__ferry/drain")).await;
                if !matches!(drained, Ok(Ok(StatusCode::OK))) {
                    tracing::warn!(worker = worker.slot, "waitUntil work did not drain in time");
                }
                lock(&worker.idle).clear();
                let sent =
                    timeout_at(deadline, control(&worker.socket, "/__ferry/terminate")).await;
                if !matches!(sent, Ok(Ok(StatusCode::ACCEPTED))) {
                    worker.kill();
                }
            });
        }
        while stops.join_next().await.is_some() {}

        let handles: Vec<_> = std::mem::take(&mut *lock(&shared.supervisors));
        let mut left = Vec::new();
        for mut handle in handles {
            if timeout_at(deadline, &mut handle).await.is_err() {
                left.push(handle);
            }
        }
        if !left.is_empty() {
            tracing::warn!(
                workers = left.len(),
                "workers still running after grace; killing"
            );
            shared.kill_all.send_replace(true);
            for handle in left {
                let _ = timeout(Duration::from_secs(5), handle).await;
            }
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> PoolStats {
        let s = &self.inner.shared;
        PoolStats {
            workers: s.slots.len(),
            live_workers: s.live_workers().len(),
            in_flight: s.in_flight.load(Ordering::SeqCst),
            queued: s.queued.load(Ordering::SeqCst),
            dispatched: s.dispatched.load(Ordering::Relaxed),
            restarts: s.restarts.load(Ordering::Relaxed),
            crashed: s.crashed.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
        }
    }

    /// Process ids of the live workers, by slot (diagnostics and tests).
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        self.inner
            .shared
            .slots
            .iter()
            .map(|slot| {
                lock(&slot.worker)
                    .as_ref()
                    .filter(|w| w.is_alive())
                    .and_then(|w| w.pid)
            })
            .collect()
    }
}

/// A reserved unit of capacity on one worker; released on drop.
struct Lease {
    shared: Arc<Shared>,
    slot: usize,
    worker: Arc<Worker>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.slots[self.slot]
            .in_flight
            .fetch_sub(1, Ordering::SeqCst);
        let before = self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if before == 1 {
            self.shared.drained.notify_waiters();
        }
    }
}

/// Decrements the queue length when a waiting request leaves the queue.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn live_workers(&self) -> Vec<Arc<Worker>> {
        self.slots
            .iter()
            .filter_map(|slot| lock(&slot.worker).clone())
            .filter(|w| w.is_alive())
            .collect()
    }

    /// Reserves capacity on the least-loaded live worker, if any has room.
    fn try_reserve(self: &Arc<Self>) -> Option<Lease> {
        let n = self.slots.len();
        let max = self.cfg.max_in_flight_per_worker;
        // Rotate the scan start so equal loads spread round-robin.
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed) % n;
        loop {
            let mut best: Option<(usize, usize, Arc<Worker>)> = None;
            for i in 0..n {
                let idx = (start + i) % n;
                let slot = &self.slots[idx];
                let Some(worker) = lock(&slot.worker).clone().filter(|w| w.is_alive()) else {
                    continue;
                };
                let load = slot.in_flight.load(Ordering::SeqCst);
                if load < max && best.as_ref().is_none_or(|b| load < b.1) {
                    best = Some((idx, load, worker));
                }
            }
            let (idx, load, worker) = best?;
            if self.slots[idx]
                .in_flight
                .compare_exchange(load, load + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                return Some(Lease {
                    shared: self.clone(),
                    slot: idx,
                    worker,
                });
            }
        }
    }

    /// Waits (bounded queue, bounded time) for capacity.
    async fn acquire(self: &Arc<Self>) -> Result<Lease, WorkerError> {
        let deadline = Instant::now() + self.cfg.queue_timeout;
        let mut queued: Option<Queued<'_>> = None;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopping() {
                return Err(WorkerError::ShuttingDown);
            }
            if let Some(lease) = self.try_reserve() {
                return Ok(lease);
            }
            if queued.is_none() {
                let limit = self.cfg.queue_limit;
                let entered = self
                    .queued
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                        (q < limit).then_some(q + 1)
                    })
                    .is_ok();
                if !entered {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(WorkerError::Overloaded);
                }
                queued = Some(Queued(&self.queued));
            }
            if timeout_at(deadline, notified).await.is_err() {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(WorkerError::QueueTimeout(self.cfg.queue_timeout));
            }
        }
    }

    /// Sends the request on a pooled (or new) connection and wraps the response.
    async fn send(
        self: &Arc<Self>,
        lease: Lease,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Failure> {
        let worker = lease.worker.clone();
        let request_timeout = self.cfg.request_timeout;
        let deadline = Instant::now() + request_timeout;
        let timed_out = || {
            worker.kill();
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            Failure::Failed(WorkerError::Timeout {
                worker: worker.slot,
                timeout: request_timeout,
            })
        };
        let crashed = |detail: String| {
            self.crashed.fetch_add(1, Ordering::Relaxed);
            WorkerError::Crashed {
                worker: worker.slot,
                detail,
            }
        };
        loop {
            // Every way round this loop (a kept-alive connection that is not ready, or died
            // idle) counts against the same deadline: a request never waits without bound.
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            let (mut sender, reused) = match worker.take_idle() {
                Some(sender) => (sender, true),
                None => match timeout_at(deadline, connect(&worker.socket)).await {
                    Ok(Ok(sender)) => (sender, false),
                    Ok(Err(e)) => {
                        let err = crashed(format!("connect: {e}"));
                        if worker.settle().await {
                            return Err(Failure::Unsent(Box::new(req), err));
                        }
                        return Err(Failure::Failed(err));
                    }
                    Err(_) => return Err(timed_out()),
                },
            };
            if reused && !sender.is_ready() {
                // The previous response's end is still being processed, or the connection is
                // still sending an earlier request body the worker answered without reading:
                // give it a moment, then leave it (dropped here) for a fresh connection.
                let wait = Duration::from_millis(200)
                    .min(deadline.saturating_duration_since(Instant::now()));
                if !matches!(timeout(wait, sender.ready()).await, Ok(Ok(()))) {
                    continue;
                }
            }
            match timeout_at(deadline, sender.try_send_request(req)).await {
                Ok(Ok(resp)) => return Ok(wrap_response(resp, sender, lease, self)),
                Ok(Err(mut e)) => {
                    let unsent = e.take_message();
                    let err = e.into_error();
                    if let Some(unsent) = unsent {
                        if reused {
                            // A kept-alive connection that died idle: try a fresh one.
                            req = unsent;
                            continue;
                        }
                        let err = crashed(err.to_string());
                        if worker.settle().await {
                            return Err(Failure::Unsent(Box::new(unsent), err));
                        }
                        return Err(Failure::Failed(err));
                    }
                    if err.is_user() {
                        return Err(Failure::Failed(WorkerError::RequestBody(err.to_string())));
                    }
                    let err = crashed(err.to_string());
                    worker.settle().await;
                    return Err(Failure::Failed(err));
                }
                Err(_) => return Err(timed_out()),
            }
        }
    }
}

/// Why `send` failed, keeping the request when no worker ever saw it.
enum Failure {
    /// The worker was gone before the request reached it.
    Unsent(Box<Request<Body>>, WorkerError),
    /// The request may have been (partly) handled.
    Failed(WorkerError),
}

fn wrap_response(
    resp: Response<Incoming>,
    sender: SendRequest<Body>,
    lease: Lease,
    shared: &Shared,
) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        http::HeaderName::from_static("keep-alive"),
    ] {
        parts.headers.remove(name);
    }
    let info = WorkerResponseInfo {
        worker: lease.slot,
        not_found: parts.headers.remove(NOT_FOUND_HEADER).is_some(),
        handler_error: parts.headers.remove(ERROR_HEADER).is_some(),
    };
    parts.extensions.insert(info);
    let body = WorkerBody {
        inner: incoming,
        done: Some((sender, lease)),
        idle_cap: shared.cfg.max_in_flight_per_worker + 2,
        failing: None,
    };
    Response::from_parts(parts, body.boxed())
}

/// A worker's response body: keeps the request counted as in flight until it ends,
/// then returns the connection for reuse.
struct WorkerBody {
    inner: Incoming,
    done: Option<(SendRequest<Body>, Lease)>,
    idle_cap: usize,
    failing: Option<(std::io::Error, Settle)>,
}

type Settle = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

impl WorkerBody {
    fn finish(&mut self) {
        if let Some((sender, lease)) = self.done.take() {
            lease.worker.put_idle(sender, self.idle_cap);
        }
    }
}

impl Drop for WorkerBody {
    fn drop(&mut self) {
        // Dropped unfinished: the connection is closed with the sender.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl http_body::Body for WorkerBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some((_, settle)) = &mut this.failing {
            if settle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let failing = this.failing.take();
            return Poll::Ready(failing.map(|(err, _)| Err(err)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection broke mid-response: most likely the worker died. Let
                // the supervisor notice before the caller sees the error, so a request
                // sent right after it does not land on the dead worker.
                let worker = this.done.take().map(|(_, lease)| lease);
                let err = std::io::Error::other(e);
                match worker {
                    Some(lease) => {
                        this.failing = Some((
                            err,
                            Box::pin(async move {
                                lease.worker.settle().await;
                                drop(lease);
                            }),
                        ));
                        self.poll_frame(cx)
                    }
                    None => Poll::Ready(Some(Err(err))),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn connect(socket: &Path) -> std::io::Result<SendRequest<Body>> {
    let stream = UnixStream::connect(socket).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Errors surface on the request/response side.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One control request to the bridge on a fresh connection; returns the status.
async fn control(socket: &Path, path: &str) -> std::io::Result<StatusCode> {
    let mut sender = connect(socket).await?;
    let method = if path == "/__ferry/health" {
        Method::GET
    } else {
        Method::POST
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .body(ferry_http::empty())
        .map_err(std::io::Error::other)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    Ok(status)
}

/// Prefix of the temporary run directories (bridge script and worker sockets).
const RUN_DIR_PREFIX: &str = "ferry-workers-";
/// File in a run directory holding the owning Ferry process's pid.
const RUN_DIR_OWNER: &str = "owner.pid";

/// Removes run directories left behind by Ferry processes that no longer exist (a graceful
/// exit removes its own; a SIGKILL cannot). Only directories whose `owner.pid` names a dead
/// process are touched; anything unreadable or foreign is left alone. Best effort: errors are
/// ignored, a sweep never stops a start.
fn sweep_stale_run_dirs(temp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(temp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(RUN_DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join(RUN_DIR_OWNER)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && process_is_gone(pid) {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::debug!("cannot remove stale run dir {}: {err}", dir.display());
            } else {
                tracing::debug!("removed stale run dir {} of pid {pid}", dir.display());
            }
        }
    }
}

/// Whether no process with this pid exists (`/proc/<pid>` is absent). Without `/proc` the
/// answer is "not known to be gone", so nothing is removed.
fn process_is_gone(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Spawns one worker process and waits until its socket answers the health check.
async fn start_worker(
    shared: &Shared,
    slot: usize,
    generation: u64,
) -> Result<(Arc<Worker>, Child, Option<ChildStdin>), WorkerError> {
    let cfg = &shared.cfg;
    let socket = shared.run_dir.join(format!("w{slot}-{generation}.sock"));
    let _ = std::fs::remove_file(&socket);

    let mut cmd = Command::new(&cfg.node);
    cmd.args(&cfg.node_args)
        .arg(&shared.bridge)
        .current_dir(&cfg.project_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Own process group: a terminal's Ctrl-C reaches Ferry, which then stops the
        // workers in order, instead of every worker at once.
        .process_group(0)
        .kill_on_drop(true);
    if !cfg.inherit_env {
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
    }
    let node_env_set = cfg.env.iter().any(|(k, _)| k == "NODE_ENV")
        || (cfg.inherit_env && std::env::var_os("NODE_ENV").is_some());
    if !node_env_set {
        // Like `next start` when NODE_ENV is unset.
        cmd.env("NODE_ENV", "production");
    }
    cmd.envs(cfg.env.iter().map(|(k, v)| (k, v)));
    cmd.env("FERRY_BRIDGE_SOCKET", &socket)
        .env("FERRY_WORKER_ID", slot.to_string());
    if !cfg.preload.is_empty() {
        cmd.env("FERRY_BRIDGE_PRELOAD", cfg.preload.join("\n"));
    }

    let mut child = cmd.spawn().map_err(|source| WorkerError::Spawn {
        worker: slot,
        node: cfg.node.clone(),
        source,
    })?;
    let stdin = child.stdin.take();
    forward_output(child.stdout.take(), slot);
    forward_output(child.stderr.take(), slot);

    let deadline = Instant::now() + cfg.startup_timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(WorkerError::StartExited {
                worker: slot,
                status: status.to_string(),
            });
        }
        if socket.exists()
            && let Ok(Ok(StatusCode::OK)) =
                timeout_at(deadline, control(&socket, "/__ferry/health")).await
        {
            let worker = Arc::new(Worker {
                slot,
                pid: child.id(),
                socket,
                idle: Mutex::new(Vec::new()),
                alive: AtomicBool::new(true),
                kill: Notify::new(),
                exited: watch::channel(false).0,
            });
            return Ok((worker, child, stdin));
        }
        if Instant::now() >= deadline || shared.stopping() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(WorkerError::StartTimeout {
                worker: slot,
                timeout: cfg.startup_timeout,
            });
        }
        sleep(Duration::from_millis(15)).await;
    }
}

/// Copies a worker's output lines to Ferry's stderr with a `[worker N]` prefix.
fn forward_output<R: AsyncRead + Unpin + Send + 'static>(stream: Option<R>, slot: usize) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    let _ = writeln!(std::io::stderr().lock(), "[worker {slot}] {text}");
                }
            }
        }
    });
}

async fn wait_kill_all(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn backoff(failures: u32, max: Duration) -> Duration {
    // One crash restarts at once; a crash loop backs off exponentially.
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    BACKOFF_BASE.saturating_mul(factor).min(max)
}

/// Keeps one slot's worker running: start, wait for exit, restart with backoff.
async fn supervise(
    shared: Arc<Shared>,
    slot: usize,
    first: oneshot::Sender<Result<(), WorkerError>>,
) {
    let mut first = Some(first);
    let mut failures = 0u32;
    let mut generation = 0u64;
    let mut kill_rx = shared.kill_all.subscribe();
    loop {
        if shared.stopping() {
            break;
        }
        generation += 1;
        match start_worker(&shared, slot, generation).await {
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                tracing::error!(worker = slot, error = %e, "worker failed to start");
                failures += 1;
            }
            Ok((worker, mut child, stdin)) => {
                // Live before `start` returns, so the first dispatch sees every worker.
                *lock(&shared.slots[slot].worker) = Some(worker.clone());
                shared.wake.notify_waiters();
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                let up_since = Instant::now();
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = worker.kill.notified() => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                    _ = wait_kill_all(&mut kill_rx) => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                drop(stdin);
                worker.alive.store(false, Ordering::SeqCst);
                lock(&worker.idle).clear();
                {
                    let mut current = lock(&shared.slots[slot].worker);
                    if current.as_ref().is_some_and(|w| Arc::ptr_eq(w, &worker)) {
                        *current = None;
                    }
                }
                worker.exited.send_replace(true);
                let _ = std::fs::remove_file(&worker.socket);
                if shared.stopping() {
                    break;
                }
                shared.restarts.fetch_add(1, Ordering::Relaxed);
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                tracing::warn!(worker = slot, %status, "worker exited; restarting");
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "[worker {slot}] exited ({status}); restarting"
                );
                if up_since.elapsed() >= STABLE_AFTER {
                    failures = 1;
                } else {
                    failures += 1;
                }
            }
        }
        let delay = backoff(failures, shared.cfg.restart_backoff_max);
        if !delay.is_zero() {
            tokio::select! {
                _ = sleep(delay) => {}
                _ = wait_kill_all(&mut kill_rx) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, max), Duration::ZERO);
        assert_eq!(backoff(1, max), Duration::ZERO);
        assert_eq!(backoff(2, max), Duration::from_millis(100));
        assert_eq!(backoff(3, max), Duration::from_millis(200));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(1000, max), max);
    }

    #[test]
    fn config_defaults_are_bounded() {
        let cfg = PoolConfig::new("/app");
        assert!(cfg.workers >= 1);
        assert!(cfg.queue_limit > 0);
        assert_eq!(cfg.node, PathBuf::from("node"));
    }

    #[test]
    fn stale_run_dirs_of_dead_owners_are_swept() {
        let root = tempfile::tempdir().expect("tmp");
        // A pid that surely ended: a child we started and reaped.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead = child.id();
        child.wait().expect("wait true");
        let make = |name: &str, owner: Option<String>| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            std::fs::write(dir.join("w0-0.sock"), b"").expect("file");
            if let Some(owner) = owner {
                std::fs::write(dir.join(RUN_DIR_OWNER), owner).expect("owner");
            }
            dir
        };
        let stale = make("ferry-workers-dead", Some(dead.to_string()));
        let live = make("ferry-workers-live", Some(std::process::id().to_string()));
        let unowned = make("ferry-workers-unowned", None);
        let garbage = make("ferry-workers-garbage", Some("not a pid".into()));
        let foreign = make("something-else", Some(dead.to_string()));

        sweep_stale_run_dirs(root.path());

        assert!(!stale.exists(), "a dead owner's run dir is removed");
        for kept in [&live, &unowned, &garbage, &foreign] {
            assert!(kept.exists(), "{} is kept", kept.display());
        }
    }
}
