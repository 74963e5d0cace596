//! Starting and stopping the gateway: the data directory lock, the listeners, one pinned Glommio
//! executor per core, the `ready` line, and the drain on SIGTERM/SIGINT.
//!
//! Owns process-wide startup and shutdown. Invariants: `ready ws=… ops=… media=…` is printed
//! exactly once, after every core accepts; two servers never share a data directory or a listen
//! address (WebSocket, ops or media); after a drain signal the process exits 0 within `drain_timeout_ms` (plus a margin);
//! a second signal exits at once.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::core::{Core, Process};
use crate::metrics::Metrics;
use anyhow::Context as _;
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, IntoRawFd as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How often each core looks at the drain flag the signal thread sets.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long the cores may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// IO memory per executor: the gateway does no direct (`O_DIRECT`) file IO, only buffered media
/// reads and writes, so Glommio's 10 MiB default would only add to the footprint.
const IO_MEMORY_BYTES: usize = 1 << 20;
/// Entries per io_uring of each executor (Glommio's default is 128). Every idle connection
/// keeps a poll request in its core's ring, and the kernel finds the request a cancel names
/// (Glommio cancels a timer or a dropped read's poll this way) by walking one bucket of a hash
/// table sized from the ring: `clamp(log2(cq entries) - 5, 1, 8)` bits, so 8 buckets at 128
/// entries (2,000 idle connections: ~250 requests walked per cancel) and the most, 256, from
/// 4,096 on. Measured with `loadgen live` (2,000 connections, 5,000 msg/s, one core), alternated:
/// `io_poll_find` was 8% of the executor's profile, and the executor's CPU fell from 0.52–0.54
/// to 0.48–0.49 cores with 4,096. Costs ~4 MiB of resident memory per executor.
const RING_DEPTH: usize = 4096;

/// What each core's startup takes (handed out once, by core index).
struct Startup {
    config: &'static Config,
    store: Arc<dyn store::Store>,
    /// Whether the store still takes writes (for `/readyz`).
    health: store::embedded::StoreHealth,
    auth: Authenticator,
    metrics: Arc<Metrics>,
    process: Arc<Process>,
    sockets: Mutex<Vec<Option<socket2::Socket>>>,
    ops: Mutex<Option<std::net::TcpListener>>,
    media: Mutex<Option<std::net::TcpListener>>,
    blobs: Arc<crate::media::Blobs>,
    next_index: AtomicUsize,
    ready: Mutex<mpsc::Sender<usize>>,
}

/// Runs the gateway until it has drained.
///
/// # Errors
/// Anything that stops it from starting: the data dir, a key, an address in use.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let config: &'static Config = Box::leak(Box::new(config));
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(config)?;
    let auth = Authenticator::from_config(config)?;
    let cores = config.executor_count();
    let store = open_store(config)?;
    let health = store.health();
    let mut metrics = Metrics::new();
    if let Some(syncs) = store.log_sync_stats() {
        metrics.watch_store(syncs, store.index_lag(), health.clone());
    }
    let sockets = crate::listener::bind_reuseport(config.listen, cores, config.accept_backlog)?;
    let ws_addr = local_addr(&sockets[0])?;
    let ops = std::net::TcpListener::bind(config.ops_listen).with_context(|| {
        format!(
            "cannot listen on ops_listen {}: address in use?",
            config.ops_listen
        )
    })?;
    let ops_addr = ops.local_addr()?;
    // A plain (not reuse-port) bind: it fails if anything already listens there.
    let media = std::net::TcpListener::bind(config.media_listen).with_context(|| {
        format!(
            "cannot listen on media_listen {}: address in use?",
            config.media_listen
        )
    })?;
    let media_addr = media.local_addr()?;
    let blobs = Arc::new(crate::media::Blobs::from_config(config, media_addr)?);
    let process = Arc::new(Process::default());
    watch_signals(process.clone())?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let startup = Arc::new(Startup {
        config,
        store: store.clone(),
        health,
        auth,
        metrics: Arc::new(metrics),
        process,
        sockets: Mutex::new(sockets.into_iter().map(Some).collect()),
        ops: Mutex::new(Some(ops)),
        media: Mutex::new(Some(media)),
        blobs,
        next_index: AtomicUsize::new(0),
        ready: Mutex::new(ready_tx),
    });
    // Each core gets its own handle to the mesh (it is `Send`, not `Sync`).
    let mesh = crate::messaging::mesh(cores);
    let pool =
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(cores, CpuSet::online().ok()))
            .name("switchboard")
            .io_memory(IO_MEMORY_BYTES)
            .ring_depth(RING_DEPTH)
            .on_all_shards(move || run_core(startup, mesh))
            .map_err(|e| anyhow::anyhow!("starting executors: {e}"))?;
    for _ in 0..cores {
        ready_rx
            .recv_timeout(START_TIMEOUT)
            .context("a core did not start")?;
    }
    tracing::info!(%ws_addr, %ops_addr, %media_addr, cores, "accepting");
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "ready ws={ws_addr} ops={ops_addr} media={media_addr}"
    )?;
    stdout.flush()?;
    drop(stdout);
    for result in pool.join_all() {
        result.map_err(|e| anyhow::anyhow!("a core failed: {e}"))?;
    }
    // Tasks a core leaves behind when it stops keep their store handles, so the store is
    // checkpointed here rather than left to its drop: the next start replays nothing.
    if store.checkpoint() {
        tracing::info!("store checkpointed");
    } else {
        tracing::warn!(
            "store: the checkpoint on exit did not complete; the next start replays the log"
        );
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// One core: accept, sweep, (core 0) serve ops and media; then drain when told.
async fn run_core(startup: Arc<Startup>, mesh: crate::messaging::Mesh) {
    let index = startup.next_index.fetch_add(1, Ordering::Relaxed);
    let socket = lock(&startup.sockets)[index]
        .take()
        .expect("one socket per core");
    let core = Rc::new(Core::new(
        index,
        startup.config,
        startup.auth.clone(),
        startup.metrics.core(index),
        startup.process.clone(),
    ));
    let store = startup.store.clone();
    let blobs = startup.blobs.clone();
    if let Err(error) = crate::messaging::Hub::start(&core, store.clone(), blobs, mesh).await {
        // Without the mesh this core cannot route; refuse to run half-started.
        tracing::error!(%error, "messaging did not start on this core");
        std::process::exit(1);
    }
    if index == 0 {
        let config = startup.config;
        glommio::spawn_local(retention(
            store,
            startup.blobs.clone(),
            config.sweep_interval_ms,
            config.attachment_unreferenced_ms,
        ))
        .detach();
    }
    glommio::spawn_local(crate::listener::accept_loop(
        core.clone(),
        crate::listener::into_glommio(socket),
    ))
    .detach();
    let sweeper = core.clone();
    glommio::spawn_local(async move { sweeper.sweep_forever().await }).detach();
    if let Some(ops) = lock(&startup.ops).take() {
        let listener = ops_listener(ops);
        glommio::spawn_local(crate::ops::serve(
            listener,
            startup.metrics.clone(),
            startup.process.clone(),
            startup.health.clone(),
        ))
        .detach();
    }
    if index == 0
        && let Some(media) = lock(&startup.media).take()
    {
        glommio::spawn_local(crate::media::http::serve(
            ops_listener(media),
            startup.blobs.clone(),
            startup.config.media_connections_max,
        ))
        .detach();
    }
    let _ = lock(&startup.ready).send(index);
    while !core.draining() {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    core.drain().await;
}

/// Opens the embedded store in `<data_dir>/store`, replaying its log.
fn open_store(config: &Config) -> anyhow::Result<Arc<store::embedded::EmbeddedStore>> {
    let dir = config.data_dir.join("store");
    let options = store::embedded::EmbeddedOptions {
        retention: config.retention(),
        background_nice: config.store_background_nice,
        apply_nice: config.store_apply_nice,
        index_dir: config.store_index_dir.clone(),
        ..store::embedded::EmbeddedOptions::default()
    };
    let store = store::embedded::EmbeddedStore::open(&dir, options)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let report = store.open_report();
    tracing::info!(
        replayed = report.replayed,
        torn_bytes_dropped = report.torn_bytes_dropped,
        chats = report.chats,
        "store open"
    );
    Ok(Arc::new(store))
}

/// Runs retention every `interval_ms` (on core 0; the store does the work on its own thread),
/// then deletes the attachments no retained message references after `unreferenced_ms`.
async fn retention(
    store: Arc<dyn store::Store>,
    blobs: Arc<crate::media::Blobs>,
    interval_ms: u64,
    unreferenced_ms: u64,
) {
    loop {
        glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
        match store.sweep(crate::messaging::unix_ms()).await {
            Ok(report) => tracing::debug!(?report, "retention sweep"),
            Err(error) => tracing::warn!(%error, "retention sweep failed"),
        }
        let deleted = crate::messaging::sweep_attachments(&store, &blobs, unreferenced_ms).await;
        if deleted > 0 {
            tracing::debug!(deleted, "unreferenced attachments deleted");
        }
    }
}

/// A plain bound `std` listener (ops, media) handed to the current core's reactor.
#[allow(unsafe_code)]
fn ops_listener(listener: std::net::TcpListener) -> glommio::net::TcpListener {
    // SAFETY: `into_raw_fd` gives up ownership of a valid listening socket; the listener takes it.
    unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Startup state: a poisoned lock means another core panicked, and the process aborts anyway.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn local_addr(socket: &socket2::Socket) -> anyhow::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .context("listener has an IP address")
}

/// SIGTERM/SIGINT start the drain; a second one exits at once.
fn watch_signals(process: Arc<Process>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if process.draining.swap(true, Ordering::Relaxed) {
                    tracing::warn!(signal, "second signal: exiting without finishing the drain");
                    std::process::exit(1);
                }
                tracing::info!(signal, "draining");
            }
        })?;
    Ok(())
}

/// An exclusive lock on `<data_dir>/LOCK` for the life of the process.
fn lock_data_dir(config: &Config) -> anyhow::Result<std::fs::File> {
    let path = config.data_dir.join("LOCK");
    store::embedded::lock_file(&path)
        .with_context(|| format!("locking {}", path.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "data_dir {} is in use by another switchboard",
                config.data_dir.display()
            )
        })
}
