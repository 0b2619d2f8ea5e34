//! The store against real `redis-server` processes on loopback (no mocks of the network).
use super::super::rate_limit::{RateDecision, RateLimiter};
use super::test_redis::{capture_logs, free_port, log_lines_with, silent_server, RedisServer};
use super::*;
use governor::clock::FakeRelativeClock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Failures reported through `on_error`, by kind.
#[derive(Default)]
struct ErrorCounts {
    timeouts: AtomicU32,
    errors: AtomicU32,
}

impl ErrorCounts {
    fn total(&self) -> u32 {
        self.timeouts.load(Ordering::SeqCst) + self.errors.load(Ordering::SeqCst)
    }
}

fn store(url: &str, timeout_ms: u64) -> (Arc<ClusterStore>, Arc<ErrorCounts>) {
    let counts = Arc::new(ErrorCounts::default());
    let hook_counts = Arc::clone(&counts);
    let on_error: ErrorHook = Arc::new(move |kind| {
        let counter = match kind {
            StoreErrorKind::Timeout => &hook_counts.timeouts,
            StoreErrorKind::Error => &hook_counts.errors,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let settings = ClusterSettings {
        url: url.to_owned(),
        timeout: Duration::from_millis(timeout_ms),
        prefix: "test:rl:".to_owned(),
    };
    let store = ClusterStore::new(settings, on_error).unwrap();
    // The first use starts the lb-redis thread.
    store.is_shared();
    (store, counts)
}

/// How many threads of this process are named `lb-redis`.
fn redis_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "lb-redis")
        .count()
}

#[test]
fn a_store_starts_its_thread_at_its_first_use_not_when_made() {
    let settings = ClusterSettings {
        url: "redis://127.0.0.1:1/0".to_owned(),
        timeout: Duration::from_millis(25),
        prefix: "t:".to_owned(),
    };
    let store = ClusterStore::new(settings, Arc::new(|_| {})).unwrap();
    assert_eq!(redis_threads(), 0, "lb -t and a daemon's parent start none");
    assert!(!store.is_shared());
    // The new thread names itself once it runs: wait for that, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_threads() == 0 {
        assert!(
            Instant::now() < deadline,
            "no lb-redis thread after the first use"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(redis_threads(), 1);
}

/// Polls `condition` every 10 ms (awaiting a state, not timing it); fails after 10 s.
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn shared_store(
    redis: &RedisServer,
    timeout_ms: u64,
) -> (Arc<ClusterStore>, Arc<ErrorCounts>) {
    let (store, counts) = store(&redis.url(), timeout_ms);
    wait_for("the store to share", || store.is_shared()).await;
    (store, counts)
}

const SECOND: Duration = Duration::from_secs(1);
/// Slack for "returns within the timeout" on a loaded 2-core machine.
const SCHEDULING_SLACK: Duration = Duration::from_secs(1);

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn the_script_and_the_local_limiter_agree_step_by_step_on_a_fake_clock() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    // Whole-µs intervals, so both sides compute exactly: (rate per second, burst).
    for (case, (rate, burst)) in [(10u32, 3u32), (250, 20), (1, 0)].into_iter().enumerate() {
        let clock = FakeRelativeClock::default();
        let local = RateLimiter::with_clock(rate, SECOND, burst, 100, clock.clone());
        let limit = format!("fake{case}");
        let mut now_micros = 1_700_000_000_000_000u64;
        let mut seed = 0x2545_f491_u64;
        for step in 0..600 {
            let expected = local.check(b"key");
            let params = script_params(rate, SECOND, burst);
            let got = store
                .check_with(&limit, b"key", params, Some(now_micros))
                .await;
            assert_eq!(got, Some(expected), "rate {rate} burst {burst} step {step}");
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let interval_micros = 1_000_000 / u64::from(rate);
            let advance = (seed >> 33) % (interval_micros * 3 / 2);
            now_micros += advance;
            clock.advance(Duration::from_micros(advance));
        }
    }
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn the_first_burst_plus_one_pass_counting_down_then_the_wait_is_one_interval() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    let period = Duration::from_secs(10);
    let local = RateLimiter::new(1, period, 3, 100);
    for remaining in (0..=3).rev() {
        let allowed = Some(RateDecision::Allowed { remaining });
        assert_eq!(store.check("slow", b"k", 1, period, 3).await, allowed);
        assert_eq!(Some(local.check(b"k")), allowed);
    }
    let waits = [
        store.check("slow", b"k", 1, period, 3).await,
        Some(local.check(b"k")),
    ];
    for wait in waits {
        let Some(RateDecision::Limited { retry_after }) = wait else {
            panic!("expected Limited, got {wait:?}");
        };
        assert!(
            retry_after <= period && retry_after > period - SECOND,
            "{retry_after:?}"
        );
    }
    // The key lives until its state equals a fresh key's: four intervals from now.
    let ttl: i64 = redis::cmd("PTTL")
        .arg("test:rl:slow:k")
        .query(&mut redis.admin())
        .unwrap();
    assert!((39_000..=40_000).contains(&ttl), "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_rate_from_two_replicas_accepts_burst_plus_rate_times_elapsed() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    let (rate, burst) = (100u32, 20u32);
    let run_for = Duration::from_millis(2500);
    let start = Instant::now();
    let replicas = (0..2).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            // Each "replica" offers the full rate, so together they offer twice of it.
            let mut ticks = tokio::time::interval(SECOND / rate);
            let (mut accepted, mut last) = (0u32, start);
            while start.elapsed() < run_for {
                ticks.tick().await;
                last = Instant::now();
                let decision = store.check("fleet", b"client", rate, SECOND, burst).await;
                accepted += u32::from(matches!(decision, Some(RateDecision::Allowed { .. })));
            }
            (accepted, last)
        })
    });
    let mut accepted = 0;
    let mut last = start;
    for replica in replicas.collect::<Vec<_>>() {
        let (count, replica_last) = replica.await.unwrap();
        accepted += count;
        last = last.max(replica_last);
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    let expected = f64::from(burst + 1) + f64::from(rate) * elapsed;
    let tolerance = (expected * 0.03).max(5.0);
    eprintln!("accepted {accepted} in {elapsed:.3} s, expected {expected:.1}");
    assert!((f64::from(accepted) - expected).abs() <= tolerance);
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn limits_and_keys_do_not_share_counters_and_keys_carry_the_prefix() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    let minute = Duration::from_secs(60);
    let binary_key: &[u8] = &[0, 255, b':', b'\n'];
    assert!(store.check("a", binary_key, 1, minute, 0).await.is_some());
    let limited = store.check("a", binary_key, 1, minute, 0).await;
    assert!(matches!(limited, Some(RateDecision::Limited { .. })));
    let fresh = Some(RateDecision::Allowed { remaining: 0 });
    assert_eq!(store.check("a", b"other", 1, minute, 0).await, fresh);
    assert_eq!(store.check("b", binary_key, 1, minute, 0).await, fresh);
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.admin())
        .unwrap();
    // The probe's own key comes and goes (it expires a second after a probe).
    keys.retain(|key| !key.starts_with(b"test:rl:\0lb-probe:"));
    keys.sort();
    let expected: [&[u8]; 3] = [
        b"test:rl:a:\0\xff:\n",
        b"test:rl:a:other",
        b"test:rl:b:\0\xff:\n",
    ];
    assert_eq!(keys, expected.map(<[u8]>::to_vec));
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn a_flushed_script_cache_is_refilled_on_noscript() {
    let redis = RedisServer::start();
    let (store, counts) = shared_store(&redis, 2000).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.admin())
        .unwrap();
    let decision = store.check("n", b"k", 10, SECOND, 1).await;
    assert_eq!(decision, Some(RateDecision::Allowed { remaining: 1 }));
    assert_eq!(counts.total(), 0);
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn a_killed_redis_is_decided_locally_at_once_and_shared_again_after_a_restart() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let (store, counts) = shared_store(&redis, 50).await;
    redis.kill();
    let started = Instant::now();
    assert_eq!(store.check("k", b"k", 10, SECOND, 1).await, None);
    assert!(started.elapsed() < store.settings().timeout + SCHEDULING_SLACK);
    assert!(counts.total() >= 1);
    // A refused or closed connection shows Redis is down: Local after one (at most two) calls.
    store.check("k", b"k", 10, SECOND, 1).await;
    assert!(!store.is_shared());
    let _redis = RedisServer::start_on(port);
    wait_for("the store to share again", || store.is_shared()).await;
    let decision = store.check("k", b"k", 10, SECOND, 1).await;
    assert_eq!(decision, Some(RateDecision::Allowed { remaining: 1 }));
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn a_stalled_redis_times_out_within_the_timeout_and_two_timeouts_go_local() {
    capture_logs();
    let redis = RedisServer::start();
    let (store, counts) = shared_store(&redis, 50).await;
    redis.pause(true);
    for attempt in 1..=2 {
        let started = Instant::now();
        assert_eq!(store.check("s", b"k", 10, SECOND, 1).await, None);
        assert!(started.elapsed() < store.settings().timeout + SCHEDULING_SLACK);
        assert_eq!(counts.timeouts.load(Ordering::SeqCst), attempt);
        assert_eq!(store.is_shared(), attempt < 2, "attempt {attempt}");
    }
    // Local: no Redis call, so no added latency and no error.
    assert_eq!(store.check("s", b"k", 10, SECOND, 1).await, None);
    redis.pause(false);
    wait_for("the store to share again", || store.is_shared()).await;
    assert!(store.check("s", b"k", 10, SECOND, 1).await.is_some());
    let url = redis.url();
    let expected = [
        format!("rate limits: Redis {url} answers; cluster limits are shared"),
        format!(
            "rate limits: Redis {url} does not answer (timed out after 50ms); \
             cluster limits decide locally until it does"
        ),
        format!("rate limits: Redis {url} answers again; cluster limits are shared again"),
    ];
    assert_eq!(log_lines_with(&url), expected, "one line per state change");
}

#[tokio::test]
async fn a_silent_server_never_makes_a_check_hang() {
    let (store, counts) = store(&silent_server(), 50);
    wait_for("a failed probe", || {
        counts.timeouts.load(Ordering::SeqCst) >= 1
    })
    .await;
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(store.check("q", b"k", 10, SECOND, 1).await, None);
    }
    assert!(started.elapsed() < store.settings().timeout + SCHEDULING_SLACK);
    assert!(!store.is_shared());
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn started_while_redis_is_down_it_shares_once_redis_starts() {
    let port = free_port();
    let (store, counts) = store(&format!("redis://127.0.0.1:{port}/0"), 50);
    assert_eq!(store.check("d", b"k", 10, SECOND, 1).await, None);
    wait_for("a failed probe", || {
        counts.errors.load(Ordering::SeqCst) >= 1
    })
    .await;
    let _redis = RedisServer::start_on(port);
    wait_for("the store to share", || store.is_shared()).await;
    assert!(store.check("d", b"k", 10, SECOND, 1).await.is_some());
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[test]
fn the_store_works_from_any_runtime_and_outlives_the_runtime_that_made_it() {
    let redis = RedisServer::start();
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let store = current_thread().block_on(async {
        let (store, _) = shared_store(&redis, 2000).await;
        assert!(store.check("r", b"k", 10, SECOND, 5).await.is_some());
        store
    }); // That runtime is gone now.
    let on_another_thread = std::thread::spawn({
        let store = Arc::clone(&store);
        move || current_thread().block_on(store.check("r", b"k", 10, SECOND, 5))
    });
    assert!(on_another_thread.join().unwrap().is_some());
    let multi_thread = tokio::runtime::Runtime::new().unwrap();
    assert!(multi_thread
        .block_on(store.check("r", b"k", 10, SECOND, 5))
        .is_some());
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn dropping_the_store_stops_its_thread_and_closes_its_connection() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    let clients = || {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut redis.admin())
            .unwrap();
        // The admin connection of this call is one of them.
        info.lines()
            .find_map(|line| line.strip_prefix("connected_clients:"))
            .map(|count| count.trim().parse::<u32>().unwrap())
            .unwrap()
    };
    assert_eq!(clients(), 2);
    drop(store);
    wait_for("the store's connection to close", || clients() == 1).await;
}

#[test]
fn bad_settings_are_refused_naming_what_is_wrong_without_the_password() {
    let settings = |url: &str, timeout_ms| ClusterSettings {
        url: url.to_owned(),
        timeout: Duration::from_millis(timeout_ms),
        prefix: String::new(),
    };
    let on_error: ErrorHook = Arc::new(|_| {});
    let refused = |settings| {
        ClusterStore::new(settings, Arc::clone(&on_error))
            .err()
            .unwrap()
    };
    let error = refused(settings("http://user:hunter2@host/", 25));
    assert!(
        error.starts_with("url \"http://user:***@host/\""),
        "{error}"
    );
    assert!(refused(settings("not a url", 25)).starts_with("url "));
    assert!(refused(settings("redis://127.0.0.1/", 0)).starts_with("timeout"));
    let shown = format!("{:?}", settings("redis://:hunter2@h:6379/1", 25));
    assert!(shown.contains("redis://:***@h:6379/1") && !shown.contains("hunter2"));
    assert_eq!(redis_without_password("redis://h/0"), "redis://h/0");
    assert_eq!(redis_without_password("redis://u@h/0"), "redis://u@h/0");
}

/// A measurement, not an assertion: run with `--nocapture` to see it.
#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn sequential_check_latency_on_loopback() {
    let redis = RedisServer::start();
    let (store, _) = shared_store(&redis, 2000).await;
    let mut micros = Vec::with_capacity(10_000);
    for n in 0u32..10_000 {
        let started = Instant::now();
        let decision = store.check("lat", &n.to_le_bytes(), 100, SECOND, 10).await;
        micros.push(started.elapsed().as_micros());
        assert!(decision.is_some());
    }
    micros.sort_unstable();
    let (p50, p99) = (micros[micros.len() / 2], micros[micros.len() * 99 / 100]);
    eprintln!("10k sequential checks on loopback: p50 {p50} µs, p99 {p99} µs");
}

#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
#[tokio::test]
async fn a_redis_that_answers_ping_but_cannot_write_stays_local_until_it_can() {
    let redis = RedisServer::start();
    let (store, counts) = shared_store(&redis, 50).await;
    let mut admin = redis.admin();
    // A replica of a master that is not there: it answers PING and refuses
    // every script that writes (READONLY).
    let dead_master = free_port().to_string();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&dead_master)
        .query(&mut admin)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.is_shared() {
        assert!(Instant::now() < deadline, "the store never went local");
        assert_eq!(store.check("w", b"k", 10, SECOND, 1).await, None);
    }
    // Probes run the script, so they fail too: no flapping back to Shared
    // over more than one recovery window (1 s).
    let errors_before = counts.errors.load(Ordering::SeqCst);
    let watch_until = Instant::now() + 2 * SECOND;
    while Instant::now() < watch_until {
        assert!(
            !store.is_shared(),
            "went back to Shared while Redis refuses writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counts.errors.load(Ordering::SeqCst) > errors_before);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut admin)
        .unwrap();
    wait_for("the store to share again", || store.is_shared()).await;
}
