//! Logins, shared by every front end: checks a user's password against the table the
//! node keeps of the metadata group's users, and turns the user into a `Grant` the
//! front end checks each command against.
//!
//! - Passwords are hashed with argon2id (the PHC string is what the cluster stores).
//!   Verifying one costs tens of milliseconds on purpose, so it runs on the blocking pool,
//!   and a successful check is remembered (user, SHA-256 of the password, the hash it was
//!   checked against): HTTP basic auth sends the password with every request.
//! - Failed logins are counted per client address; after a few, each further attempt
//!   from that address waits first (doubling, up to `MAX_DELAY`), so guessing is slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use shoal_cluster::users::StoredUser;
use shoal_core::auth::Grant;

/// Failures from one address before its attempts are slowed down.
pub const FREE_FAILURES: u32 = 3;
/// Longest wait imposed before one login attempt.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// A quiet address is forgiven its failures after this long.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most addresses whose failures are remembered (the oldest are forgotten first).
const MAX_TRACKED: usize = 100_000;

/// Why a login failed. The client is told only `WrongPassword` (Redis's -WRONGPASS),
/// whichever it was, so it cannot learn which users exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("invalid username-password pair or user is disabled.")]
    WrongPassword,
}

/// Makes the stored form of a new password.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

struct Failures {
    count: u32,
    last: Instant,
}

/// The name an anonymous client goes by (ACL WHOAMI), as in Redis.
pub const ANONYMOUS: &str = "default";

pub struct Authenticator {
    /// Never serve anonymous clients (TLS is on), even while no user exists.
    always_required: bool,
    /// Bumped whenever the table changes, so a connection knows to look its user up again.
    generation: std::sync::atomic::AtomicU64,
    users: RwLock<Arc<HashMap<String, StoredUser>>>,
    /// user -> (hash checked against, SHA-256 of the password that matched it).
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Counted for INFO and the logs.
    failed_total: std::sync::atomic::AtomicU64,
    /// Asks the metadata leader for the users, so a login that fails against this node's
    /// table is checked once more against the cluster's (a user added a moment ago through
    /// another node can log in here at once). At most once per `RECHECK_EVERY`.
    fetch: OnceLock<Fetch>,
    last_fetch: Mutex<Option<Instant>>,
}

/// Fetches the cluster's users.
pub type Fetch = Box<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Vec<StoredUser>, shoal_core::Error>>
        + Send
        + Sync,
>;

/// Least time between two fetches made for failed logins.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

fn sha256(password: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    digest.as_ref().try_into().expect("32 bytes")
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("always_required", &self.always_required)
            .field("users", &self.users.read().expect("users lock").len())
            .finish()
    }
}

impl Default for Authenticator {
    /// No users and anonymous clients allowed: a node without TLS, until users are added.
    fn default() -> Self {
        Self::new(false)
    }
}

impl Authenticator {
    /// `always_required`: refuse anonymous clients even while the cluster has no users
    /// (set when TLS is on: a node serving a network never serves anonymous clients).
    pub fn new(always_required: bool) -> Self {
        Self {
            always_required,
            generation: Default::default(),
            users: Default::default(),
            verified: Default::default(),
            failures: Default::default(),
            failed_total: Default::default(),
            fetch: OnceLock::new(),
            last_fetch: Mutex::new(None),
        }
    }

    /// Lets failed logins check the cluster's current users (see `fetch`).
    pub fn set_fetch(&self, fetch: Fetch) {
        let _ = self.fetch.set(fetch);
    }

    /// Refreshes the table from the cluster after a failed login, if allowed now; whether
    /// the table changed.
    async fn recheck(&self) -> bool {
        let Some(fetch) = self.fetch.get() else {
            return false;
        };
        {
            let mut last = self.last_fetch.lock().expect("fetch lock");
            if last.is_some_and(|at| at.elapsed() < RECHECK_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let before = self.generation();
        match tokio::time::timeout(Duration::from_secs(2), fetch()).await {
            Ok(Ok(users)) => self.set_users(users),
            _ => return false,
        }
        self.generation() != before
    }

    /// Replaces the table of users (as the metadata group has it now).
    pub fn set_users(&self, users: Vec<StoredUser>) {
        let table: HashMap<String, StoredUser> =
            users.into_iter().map(|u| (u.name.clone(), u)).collect();
        let mut current = self.users.write().expect("users lock");
        if **current != table {
            *current = Arc::new(table);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// Changes whenever the table does.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The rights of a client that has not logged in: every right while the cluster has
    /// no users and TLS is off (the node then listens on loopback only unless told
    /// otherwise), none once a user exists or TLS is on.
    pub fn anonymous(&self) -> Option<Grant> {
        (!self.always_required && !self.has_users()).then(|| Grant {
            user: ANONYMOUS.to_string(),
            role: shoal_core::auth::Role::Admin,
            prefix: None,
        })
    }

    /// Whether a login is needed before anything else (Redis's NOAUTH).
    pub fn required(&self) -> bool {
        self.anonymous().is_none()
    }

    /// May an anonymous client from `peer` create the first user? Only from this machine,
    /// only while no user exists: how a TLS cluster gets its first admin.
    pub fn may_bootstrap(&self, peer: IpAddr) -> bool {
        !self.has_users() && peer.is_loopback()
    }

    /// `user`'s rights as the table has them now (`None`: no such user any more).
    pub fn current(&self, user: &str) -> Option<Grant> {
        let users = self.users.read().expect("users lock");
        users.get(user).map(grant_of)
    }

    /// Every user as stored (hashes included), sorted by name.
    pub fn users(&self) -> Vec<StoredUser> {
        let mut users: Vec<StoredUser> = self
            .users
            .read()
            .expect("users lock")
            .values()
            .cloned()
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    /// Whether the cluster has any user (then nobody is served anonymously).
    pub fn has_users(&self) -> bool {
        !self.users.read().expect("users lock").is_empty()
    }

    pub fn failed_logins(&self) -> u64 {
        self.failed_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long an attempt from `peer` must wait before it is checked.
    fn delay(&self, peer: IpAddr) -> Duration {
        let failures = self.failures.lock().expect("failures lock");
        match failures.get(&peer) {
            Some(f) if f.count > FREE_FAILURES && f.last.elapsed() < FORGET_AFTER => {
                let doublings = (f.count - FREE_FAILURES).min(16);
                (Duration::from_millis(50) * (1u32 << doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn failed(&self, peer: IpAddr, user: &str) {
        self.failed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| f.last.elapsed() < FORGET_AFTER);
        }
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            last: Instant::now(),
        });
        entry.count += 1;
        entry.last = Instant::now();
        tracing::warn!(%peer, user, failures = entry.count, "failed login");
    }

    /// Checks `password` for `user`, from `peer`; the user's rights on success.
    pub async fn login(
        &self,
        peer: IpAddr,
        user: &str,
        password: &[u8],
    ) -> Result<Grant, LoginError> {
        let delay = self.delay(peer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut verified = self.verify(user, password).await;
        if verified.is_none() && self.recheck().await {
            verified = self.verify(user, password).await;
        }
        let Some(grant) = verified else {
            self.failed(peer, user);
            return Err(LoginError::WrongPassword);
        };
        self.failures.lock().expect("failures lock").remove(&peer);
        Ok(grant)
    }

    /// `user`'s rights if `password` is theirs in the table as it is now.
    async fn verify(&self, user: &str, password: &[u8]) -> Option<Grant> {
        let stored = self.users.read().expect("users lock").get(user).cloned()?;
        let digest = sha256(password);
        let remembered = self
            .verified
            .lock()
            .expect("verified lock")
            .get(user)
            .is_some_and(|(hash, d)| *hash == stored.hash && *d == digest);
        let ok = remembered || {
            let (hash, password) = (stored.hash.clone(), password.to_vec());
            tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(&password, &parsed)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false)
        };
        if !ok {
            return None;
        }
        if !remembered {
            self.verified
                .lock()
                .expect("verified lock")
                .insert(user.to_string(), (stored.hash.clone(), digest));
        }
        Some(grant_of(&stored))
    }
}

/// How often each node asks the metadata leader for the user table.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps one node's [`Authenticator`] in step with the cluster's users: asks the metadata
/// leader every [`REFRESH_INTERVAL`] (changes made through this node are applied at once by
/// the handler that made them). Holds only the two handles it uses.
pub struct UserSync {
    pub auth: Arc<Authenticator>,
    pub backend: Arc<dyn crate::backend::Backend>,
}

impl UserSync {
    /// Runs until `shutdown` completes. A failed fetch keeps the table it has (a node cut
    /// off from the metadata leader still knows every user it knew) and is logged once
    /// until a fetch works again.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failing = false;
        loop {
            let fetch = tokio::time::timeout(REFRESH_INTERVAL * 5, self.backend.users());
            tokio::select! {
                () = &mut shutdown => return,
                fetched = fetch => match fetched {
                    Ok(Ok(users)) => {
                        if failing {
                            tracing::info!("user table fetched again");
                        }
                        failing = false;
                        self.auth.set_users(users);
                    }
                    Ok(Err(err)) if !failing => {
                        failing = true;
                        tracing::warn!(%err, "cannot fetch the user table; keeping the one this node has");
                    }
                    Err(_) if !failing => {
                        failing = true;
                        tracing::warn!("fetching the user table timed out; keeping the one this node has");
                    }
                    _ => {}
                },
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(REFRESH_INTERVAL) => {}
            }
        }
    }
}

fn grant_of(user: &StoredUser) -> Grant {
    Grant {
        user: user.name.clone(),
        role: user.role,
        prefix: user.prefix.clone(),
    }
}

/// Who one connection is, kept by the connection: its rights are looked up again when the
/// user table changes, so a removed user or a changed role takes effect at once on
/// connections already open.
#[derive(Debug, Clone)]
pub struct Caller {
    user: Option<String>,
    seen: u64,
    grant: Option<Grant>,
}

impl Default for Caller {
    fn default() -> Self {
        Self {
            user: None,
            seen: u64::MAX,
            grant: None,
        }
    }
}

impl Caller {
    pub fn logged_in(&mut self, grant: Grant, auth: &Authenticator) {
        self.user = Some(grant.user.clone());
        self.seen = auth.generation();
        self.grant = Some(grant);
    }

    /// The rights this connection has now; `None`: it must log in first.
    pub fn grant(&mut self, auth: &Authenticator) -> Option<&Grant> {
        let now = auth.generation();
        if now != self.seen {
            self.seen = now;
            self.grant = match &self.user {
                None => auth.anonymous(),
                Some(user) => auth.current(user),
            };
            if self.grant.is_none() {
                self.user = None;
            }
        }
        self.grant.as_ref()
    }

    /// The rights found by the last [`Caller::grant`].
    pub fn cached(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// The name ACL WHOAMI answers.
    pub fn name(&self) -> &str {
        self.user.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// `Basic base64(user:password)` from an `Authorization` header (HTTP) or metadata entry
/// (gRPC). `Err` says what is wrong with a header that is there.
pub fn parse_basic(value: &[u8]) -> Result<(String, Vec<u8>), String> {
    use base64::Engine;
    let text = std::str::from_utf8(value).map_err(|_| "is not text".to_string())?;
    let (scheme, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or("is not `Basic <base64 of user:password>`")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!(
            "uses the {scheme:?} scheme; shoal accepts Basic <base64 of user:password>"
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "is not valid base64".to_string())?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or("holds no `user:password` pair")?;
    let user = String::from_utf8(decoded[..colon].to_vec())
        .map_err(|_| "names a user that is not UTF-8".to_string())?;
    Ok((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::auth::Role;

    fn authenticator() -> Arc<Authenticator> {
        let auth = Arc::new(Authenticator::default());
        auth.set_users(vec![StoredUser {
            name: "alice".into(),
            role: Role::ReadWrite,
            prefix: None,
            hash: hash_password("s3cret").unwrap(),
        }]);
        auth
    }

    #[tokio::test]
    async fn the_right_password_logs_in_and_is_remembered() {
        let auth = authenticator();
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let grant = auth.login(peer, "alice", b"s3cret").await.unwrap();
        assert_eq!(grant.role, Role::ReadWrite);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.login(peer, "alice", b"s3cret").await.is_ok());
        // A new password (a new hash) is checked again, not taken from memory.
        auth.set_users(vec![StoredUser {
            name: "alice".into(),
            role: Role::Read,
            prefix: None,
            hash: hash_password("n3w").unwrap(),
        }]);
        assert_eq!(
            auth.login(peer, "alice", b"s3cret").await,
            Err(LoginError::WrongPassword)
        );
        assert_eq!(
            auth.login(peer, "alice", b"n3w").await.unwrap().role,
            Role::Read
        );
    }

    #[tokio::test]
    async fn wrong_passwords_and_unknown_users_fail_alike_and_slow_the_address() {
        let auth = authenticator();
        let peer: IpAddr = "10.0.0.7".parse().unwrap();
        let err = auth.login(peer, "nobody", b"x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid username-password pair or user is disabled."
        );
        for _ in 0..FREE_FAILURES {
            let _ = auth.login(peer, "alice", b"wrong").await;
        }
        assert_eq!(auth.failed_logins(), u64::from(FREE_FAILURES) + 1);
        assert!(
            auth.delay(peer) > Duration::ZERO,
            "slowed after {FREE_FAILURES} failures"
        );
        assert_eq!(auth.delay("10.0.0.8".parse().unwrap()), Duration::ZERO);
        // A success forgives the address.
        assert!(auth.login(peer, "alice", b"s3cret").await.is_ok());
        assert_eq!(auth.delay(peer), Duration::ZERO);
    }
}
