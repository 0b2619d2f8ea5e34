//! HTTP Basic authentication against an htpasswd file of bcrypt entries:
//! 401 with `WWW-Authenticate` on missing or wrong credentials.
//!
//! bcrypt is slow on purpose (tens of ms at the usual cost), so it never
//! runs on a request thread: it runs under `spawn_blocking`, at most
//! [`MAX_CONCURRENT_BCRYPT`] at once in the process, and a flood of wrong
//! passwords queues behind that instead of stalling the runtime. Verified
//! credentials are remembered for [`CACHE_TTL`] under a keyed 128-bit hash
//! (never the password), so a busy admin path costs a bcrypt per user every
//! few minutes. Only bcrypt (`htpasswd -B`) is accepted; `$apr1$`, `{SHA}`
//! and crypt are refused at load. Reload builds a new [`BasicAuth`]: the
//! file re-read, the cache empty. Nothing here logs credentials.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Most verified credentials remembered at once (entries).
pub const CACHE_CAPACITY: usize = 256;
/// How long a verified user+password pair is trusted without a new bcrypt.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Most bcrypt verifications running at once, across every route.
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Longest decoded `user:password` accepted (bytes); longer is wrong.
const MAX_CREDENTIALS: usize = 512;

/// Process-wide, so N routes with Basic auth still cost at most this many
/// blocking threads under a flood of wrong passwords.
static BCRYPT_SLOTS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_BCRYPT);

/// What [`BasicAuth::check`] decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials match an entry of the file: pass the request on.
    Allowed,
    /// No `Authorization` header, or one of another scheme (e.g. Bearer):
    /// answer 401 with [`BasicAuth::challenge`].
    Missing,
    /// Basic credentials that are malformed or do not match: answer 401
    /// with [`BasicAuth::challenge`].
    Wrong,
}

/// The users of one `basic_auth` policy, loaded from its htpasswd file.
/// Immutable but for its cache; a reload loads a new one.
pub struct BasicAuth {
    challenge: HeaderValue,
    /// User name (bytes, as sent) → bcrypt hash. `Arc` so that handing a
    /// hash to the blocking thread is a reference count, not a copy.
    users: HashMap<Vec<u8>, Arc<str>>,
    /// The hash a user not in the file is checked against; `None` only when
    /// the file has no users (then every check is wrong at no cost).
    dummy_hash: Option<Arc<str>>,
    /// Keyed hash of user+password → when it was verified. A std `Mutex`:
    /// held for one map lookup or insert, never across an await.
    verified: Mutex<HashMap<u128, Instant>>,
    /// Two independently keyed SipHash states (random per process): their
    /// two 64-bit outputs make the 128-bit cache key.
    key_halves: (RandomState, RandomState),
    #[cfg(test)]
    bcrypt_runs: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for BasicAuth {
    /// Shows the realm and the number of users; never names or hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.users.len();
        write!(f, "BasicAuth({:?}, {users} users)", self.challenge)
    }
}

impl BasicAuth {
    /// Reads `users_file` (htpasswd as `htpasswd -B` writes it:
    /// `user:$2y$05$...` a line; blank lines and `#` comments skipped; a
    /// third `:field` after the hash, as nginx allows, is ignored). An
    /// entry that is not bcrypt is an error naming its line and user, never
    /// its hash; an unreadable file is an error with the OS reason. `realm`
    /// may not contain `"`, `\` or control characters.
    pub fn load(realm: &str, users_file: &Path) -> Result<BasicAuth, String> {
        let challenge = challenge_value(realm)?;
        let in_file = |e: String| format!("{}: {e}", users_file.display());
        let text = std::fs::read_to_string(users_file).map_err(|e| in_file(e.to_string()))?;
        let (users, dummy_hash) = parse_users(&text).map_err(in_file)?;
        Ok(BasicAuth {
            challenge,
            users,
            dummy_hash,
            verified: Mutex::new(HashMap::with_capacity(CACHE_CAPACITY)),
            key_halves: (RandomState::new(), RandomState::new()),
            #[cfg(test)]
            bcrypt_runs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The `WWW-Authenticate` value for a 401:
    /// `Basic realm="<realm>", charset="UTF-8"`, built once at load.
    pub fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    /// Checks the request's `Authorization` header (`Basic <base64 of
    /// user:password>`, scheme case-insensitive, split at the first colon).
    /// A cache hit costs a hash and a map lookup; otherwise the bcrypt runs
    /// on a blocking thread, waiting for one of the process's
    /// [`MAX_CONCURRENT_BCRYPT`] slots. Never blocks a worker thread.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> AuthOutcome {
        // Decoded into the stack: no allocation before the cache lookup.
        let mut decoded = [0u8; MAX_CREDENTIALS];
        let (user, password) = match credentials(authorization, &mut decoded) {
            Ok(credentials) => credentials,
            Err(refused) => return refused,
        };
        let key = self.cache_key(user, password);
        if self.recently_verified(key) {
            return AuthOutcome::Allowed;
        }
        // A user not in the file still costs one bcrypt, against another
        // entry's hash (so of the same cost) and with the result thrown
        // away: a wrong user name then takes as long as a wrong password,
        // and timing does not tell which user names exist.
        let known = self.users.get(user);
        let Some(hash) = known.or(self.dummy_hash.as_ref()).cloned() else {
            return AuthOutcome::Wrong;
        };
        if self.run_bcrypt(password, hash).await && known.is_some() {
            self.remember(key);
            AuthOutcome::Allowed
        } else {
            AuthOutcome::Wrong
        }
    }

    /// Verifies `password` against `hash` on a blocking thread once a slot
    /// is free. The slot is held by the blocking task itself, so a client
    /// that goes away mid-check does not free it before bcrypt ends.
    async fn run_bcrypt(&self, password: &[u8], hash: Arc<str>) -> bool {
        #[cfg(test)]
        self.bcrypt_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(slot) = BCRYPT_SLOTS.acquire().await else {
            return false; // never closed; refusing is the safe answer
        };
        // The one copy of the password a miss makes: the blocking task
        // needs it owned. Cheap next to the bcrypt it feeds.
        let password = password.to_vec();
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await;
        verified.unwrap_or(false)
    }

    /// 128 bits of two keyed SipHashes over the user name's length, the
    /// user name and the password: collisions cannot be forged without the
    /// per-process keys, and the cache never holds a password.
    fn cache_key(&self, user: &[u8], password: &[u8]) -> u128 {
        let half = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write_usize(user.len());
            hasher.write(user);
            hasher.write(password);
            hasher.finish()
        };
        (u128::from(half(&self.key_halves.0)) << 64) | u128::from(half(&self.key_halves.1))
    }

    /// Whether `key` was verified less than [`CACHE_TTL`] ago; drops it if
    /// it is older.
    fn recently_verified(&self, key: u128) -> bool {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = verified.get(&key).map(|at| at.elapsed() < CACHE_TTL);
        if fresh == Some(false) {
            verified.remove(&key);
        }
        fresh == Some(true)
    }

    /// Records a success. When full, drops expired entries, then (if still
    /// full) the oldest one: a scan of at most [`CACHE_CAPACITY`] entries,
    /// only on a miss that already paid for a bcrypt.
    fn remember(&self, key: u128) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= CACHE_CAPACITY && !verified.contains_key(&key) {
            verified.retain(|_, at| at.elapsed() < CACHE_TTL);
            let oldest = verified.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k);
            if let (true, Some(oldest)) = (verified.len() >= CACHE_CAPACITY, oldest) {
                verified.remove(&oldest);
            }
        }
        verified.insert(key, Instant::now());
    }
}

/// `Basic realm="<realm>", charset="UTF-8"` (RFC 7617).
fn challenge_value(realm: &str) -> Result<HeaderValue, String> {
    let unquotable = |c: char| c == '"' || c == '\\' || c.is_control();
    if realm.contains(unquotable) {
        let why = "may not contain '\"', '\\' or control characters";
        return Err(format!("realm {realm:?} {why}"));
    }
    let text = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    HeaderValue::from_bytes(text.as_bytes()).map_err(|e| format!("realm {realm:?}: {e}"))
}

/// Users and the dummy hash (the first entry's) from the file's text.
type Users = (HashMap<Vec<u8>, Arc<str>>, Option<Arc<str>>);

fn parse_users(text: &str) -> Result<Users, String> {
    let mut users: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
    let mut first_hash = None;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Lines are never quoted in errors: a mistyped one may hold a password.
        let entry = line.split_once(':').filter(|(user, _)| !user.is_empty());
        let Some((user, rest)) = entry else {
            return Err(format!("line {line_no}: expected user:bcrypt-hash"));
        };
        let hash = rest.split(':').next().unwrap_or_default().trim();
        if !is_bcrypt(hash) {
            let why = "not a bcrypt hash; lb accepts only bcrypt (htpasswd -B)";
            return Err(format!("line {line_no}: user {user:?}: {why}"));
        }
        let hash: Arc<str> = Arc::from(hash);
        first_hash.get_or_insert_with(|| hash.clone());
        if users.insert(user.as_bytes().to_vec(), hash).is_some() {
            return Err(format!("line {line_no}: user {user:?} is listed twice"));
        }
    }
    Ok((users, first_hash))
}

/// `$2a$`/`$2b$`/`$2x$`/`$2y$`, a two-digit cost from 04 to 31, `$`, then
/// 53 characters of bcrypt's base64 alphabet: 60 in all.
fn is_bcrypt(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    if bytes.len() != 60 || !matches!(&bytes[..4], b"$2a$" | b"$2b$" | b"$2x$" | b"$2y$") {
        return false;
    }
    // Cost 04 to 31, as bcrypt accepts.
    let cost_ok = matches!(
        &bytes[4..6],
        [b'0', b'4'..=b'9'] | [b'1'..=b'2', b'0'..=b'9'] | [b'3', b'0'..=b'1']
    );
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/';
    cost_ok && bytes[6] == b'$' && bytes[7..].iter().all(alphabet)
}

/// A user name and password, borrowed from the decoded header.
type Credentials<'a> = (&'a [u8], &'a [u8]);

/// Splits `Basic <base64>` into user and password, decoding into `buf`;
/// `Missing` for no header or another scheme, `Wrong` for malformed
/// credentials.
fn credentials<'a>(
    header: Option<&HeaderValue>,
    buf: &'a mut [u8],
) -> Result<Credentials<'a>, AuthOutcome> {
    let header = header.ok_or(AuthOutcome::Missing)?.as_bytes();
    let scheme_end = header.iter().position(|b| *b == b' ');
    let is_basic = |end: &usize| header[..*end].eq_ignore_ascii_case(b"basic");
    let Some(space) = scheme_end.filter(is_basic) else {
        return Err(AuthOutcome::Missing);
    };
    let encoded = header[space..].trim_ascii();
    let base64 = base64::engine::general_purpose::STANDARD;
    let Ok(len) = base64.decode_slice(encoded, buf) else {
        return Err(AuthOutcome::Wrong);
    };
    let decoded = &buf[..len];
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Err(AuthOutcome::Wrong);
    };
    Ok((&decoded[..colon], &decoded[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::AuthOutcome::{Allowed, Missing, Wrong};
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    fn users_file(text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Relaxed);
        let path = std::env::temp_dir().join(format!("lb-basic-{}-{n}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn basic(credentials: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    async fn check(auth: &BasicAuth, credentials: &str) -> AuthOutcome {
        auth.check(Some(&basic(credentials))).await
    }

    fn admins() -> BasicAuth {
        let alice = bcrypt::hash("s3cret:with colon", 4).unwrap();
        let bob = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!("# admins\n\nalice:{alice}\n  bob:{bob}:nginx comment\r\n");
        BasicAuth::load("admin", &users_file(&text)).unwrap()
    }

    #[tokio::test]
    async fn the_right_password_is_allowed_and_a_wrong_one_is_not() {
        let auth = admins();
        assert_eq!(check(&auth, "alice:s3cret:with colon").await, Allowed);
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        assert_eq!(check(&auth, "alice:s3cret").await, Wrong);
        assert_eq!(check(&auth, "bob:").await, Wrong);
        let right = basic("bob:hunter2")
            .to_str()
            .unwrap()
            .replace("Basic", "bAsIc");
        let right = HeaderValue::from_str(&right).unwrap();
        assert_eq!(auth.check(Some(&right)).await, Allowed);
    }

    #[tokio::test]
    async fn missing_and_garbage_headers_are_refused_without_bcrypt() {
        let auth = admins();
        assert_eq!(auth.check(None).await, Missing);
        // "bm9jb2xvbg==" is "nocolon".
        let wrong = ["Basic !!!not base64", "Basic bm9jb2xvbg==", "Basic "];
        let cases = ["Bearer abc", "Basic"].map(|h| (h, Missing));
        for (header, outcome) in cases.into_iter().chain(wrong.map(|h| (h, Wrong))) {
            let value = HeaderValue::from_static(header);
            assert_eq!(auth.check(Some(&value)).await, outcome, "{header}");
        }
        let huge = format!("alice:{}", "x".repeat(2000));
        assert_eq!(check(&auth, &huge).await, Wrong);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn an_unknown_user_still_costs_a_bcrypt() {
        let auth = admins();
        assert_eq!(check(&auth, "mallory:hunter2").await, Wrong);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn the_second_right_check_hits_the_cache_and_wrong_ones_never_do() {
        let auth = admins();
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 1);
        assert_eq!(check(&auth, "bob:hunter3").await, Wrong);
        assert_eq!(check(&auth, "bob:hunter3").await, Wrong);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_success_expires_after_its_ttl() {
        let auth = admins();
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        tokio::time::advance(CACHE_TTL - Duration::from_secs(1)).await;
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_its_oldest_entry() {
        let auth = admins();
        for n in 0..=CACHE_CAPACITY as u32 {
            auth.remember(u128::from(n));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(auth.verified.lock().unwrap().len(), CACHE_CAPACITY);
        assert!(!auth.recently_verified(0));
        assert!(auth.recently_verified(u128::from(CACHE_CAPACITY as u32)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_wrong_passwords_all_get_an_answer() {
        let auth = Arc::new(admins());
        let flood = (0..12).map(|n| {
            let auth = auth.clone();
            tokio::spawn(async move { check(&auth, &format!("bob:{n}")).await })
        });
        for wrong in flood.collect::<Vec<_>>() {
            assert_eq!(wrong.await.unwrap(), Wrong);
        }
        assert_eq!(auth.bcrypt_runs.load(Relaxed), 12);
        assert_eq!(check(&auth, "bob:hunter2").await, Allowed);
    }

    #[test]
    fn a_non_bcrypt_entry_is_refused_with_its_line_and_user_but_not_its_hash() {
        let bob = bcrypt::hash("hunter2", 4).unwrap();
        let sha = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";
        let odd = format!("$2y$1\u{e9}{}", &bob[7..]); // 60 bytes, not ASCII
        for hash in [
            "$apr1$xyz$0123456789abcdefghijkl",
            sha,
            "abJnggxhB/yWI",
            &odd,
        ] {
            let path = users_file(&format!("bob:{bob}\n# old\ncarol:{hash}\n"));
            let err = BasicAuth::load("admin", &path).unwrap_err();
            assert!(err.contains("line 3") && err.contains("\"carol\""), "{err}");
            assert!(!err.contains(hash), "{err}");
        }
        let err = BasicAuth::load("admin", &users_file("just-a-word\n")).unwrap_err();
        assert!(
            err.contains("line 1") && !err.contains("just-a-word"),
            "{err}"
        );
        let twice = users_file(&format!("bob:{bob}\nbob:{bob}\n"));
        assert!(BasicAuth::load("a", &twice).unwrap_err().contains("line 2"));
    }

    #[test]
    fn an_unreadable_file_names_the_os_reason() {
        let path = std::env::temp_dir().join("lb-basic-auth-no-such-file");
        let err = BasicAuth::load("admin", &path).unwrap_err();
        assert!(err.contains("lb-basic-auth-no-such-file"), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn the_challenge_names_the_realm_and_a_bad_realm_is_refused() {
        let file = users_file("");
        let auth = BasicAuth::load("Admin area", &file).unwrap();
        let want = "Basic realm=\"Admin area\", charset=\"UTF-8\"";
        assert_eq!(auth.challenge(), want);
        assert!(BasicAuth::load("say \"hi\"", &file).is_err());
        assert!(!format!("{:?}", admins()).contains("$2"));
    }
}
