//! The `lb-redis` thread: a current-thread tokio runtime of the store's own that connects to
//! Redis, probes it while not Shared, and switches the store back to Shared.
//!
//! Everything that outlives one request runs here, not on a caller's runtime: the connection's
//! driver task (so a Pingora service's runtime can stop without taking the connection along),
//! connecting, and probing. The thread ends when the store drops its stop sender: the runtime
//! is dropped with it, which aborts the driver task and closes the socket.
//!
//! The `redis` crate's `ConnectionManager` is not used: on a dropped connection it reconnects
//! with `tokio::spawn` from the request that saw the failure, tying the new connection's
//! driver to that request's runtime, and its retry loop would duplicate the Local state's
//! probing. A plain `MultiplexedConnection` made here pipelines concurrent checks the same way.
use super::health::Failure;
use super::{failure_of, LimitKey, StoreState};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

/// Time between probes while not Shared: five probes make up the recovery window, and a
/// refused connect every 200 ms costs Redis (and lb) nothing measurable.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// The limit name of the probe's key (`prefix` + `\0lb-probe:`): one key, expiring within a
/// second of the last probe. The NUL keeps it apart from any policy's name.
pub(super) const PROBE_LIMIT: &[u8] = b"\0lb-probe";

/// Starts the `lb-redis` thread for `state`; dropping the returned sender stops it.
pub(super) fn start(state: Arc<StoreState>, client: Client) -> Result<oneshot::Sender<()>, String> {
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("lb-redis".to_owned())
        .spawn(move || run(&state, &client, stopped))
        .map_err(|err| format!("cannot start the lb-redis thread: {err}"))?;
    Ok(stop)
}

/// The thread's body: builds the runtime and supervises until stopped.
fn run(state: &StoreState, client: &Client, stopped: oneshot::Receiver<()>) {
    // Built here, not in `new`: a runtime must not be dropped inside another runtime, and
    // `new` may be called from async code (a config reload).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            log::error!(
                "rate limits: cannot start the Redis runtime ({err}); \
                 cluster limits decide locally"
            );
            return;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            _ = stopped => {}
            () = supervise(state, client) => {}
        }
    });
    // Drop the connection while its runtime still exists, then the runtime (and the driver).
    state.connection.store(None);
}

/// Probes every [`PROBE_INTERVAL`] while not Shared (the first one at once); never returns.
async fn supervise(state: &StoreState, client: &Client) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if state.health.is_shared() {
            continue;
        }
        match probe(state, client).await {
            Ok(()) => {
                let now = Instant::now();
                if let Some(change) = state.health.update(|health| health.probe_succeeded(now)) {
                    state.log_change(change, Failure::Error, None);
                }
            }
            Err((failure, error)) => {
                // Start over with a fresh connection: the old one may be half dead or have
                // requests stuck behind a silent server.
                state.connection.store(None);
                (state.on_error)(super::error_kind(failure));
                if let Some(change) = state.health.update(|health| health.probe_failed()) {
                    state.log_change(change, failure, error.as_ref());
                }
            }
        }
    }
}

/// One probe: connects (and loads the script) if there is no connection, then runs the
/// script once, each step bounded by the store's timeout.
async fn probe(state: &StoreState, client: &Client) -> Result<(), (Failure, Option<RedisError>)> {
    let mut connection = match state.connection.load_full() {
        Some(connection) => MultiplexedConnection::clone(&connection),
        None => {
            let connection = bounded(state.timeout, connect(client)).await?;
            state.connection.store(Some(Arc::new(connection.clone())));
            connection
        }
    };
    // The script itself, on a key of its own, rather than a PING: a Redis that answers PING
    // but cannot run the script or write (out of memory, a read-only replica) is not back,
    // and calling it back would flap between Shared and Local every recovery window.
    let key = LimitKey {
        prefix: &state.prefix,
        limit: PROBE_LIMIT,
        key: b"",
    };
    let params = super::script_params(1, Duration::from_secs(1), 0);
    let run = state.run_script(&mut connection, &key, params, None);
    bounded(state.timeout, run).await?;
    Ok(())
}

/// A new multiplexed connection with the script loaded (so requests rarely see `NOSCRIPT`).
async fn connect(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    // Deadlines are the caller's (`bounded` here, the per-check timeout on the request path):
    // the crate's own response timer would be a second timer per request.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(super::GCRA_LUA);
    super::send(&mut connection, &load).await?;
    Ok(connection)
}

/// Runs `step` for at most `timeout`, classifying its failure.
async fn bounded<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, (Failure, Option<RedisError>)> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((failure_of(&error), Some(error))),
        Err(_elapsed) => Err((Failure::Timeout, None)),
    }
}
