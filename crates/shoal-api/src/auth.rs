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
use std::sync::{Arc, Mutex, RwLock};
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

#[derive(Default)]
pub struct Authenticator {
    users: RwLock<Arc<HashMap<String, StoredUser>>>,
    /// user -> (hash checked against, SHA-256 of the password that matched it).
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Counted for INFO and the logs.
    failed_total: std::sync::atomic::AtomicU64,
}

fn sha256(password: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
    digest.as_ref().try_into().expect("32 bytes")
}

impl Authenticator {
    /// Replaces the table of users (as the metadata group has it now).
    pub fn set_users(&self, users: Vec<StoredUser>) {
        let table = users.into_iter().map(|u| (u.name.clone(), u)).collect();
        *self.users.write().expect("users lock") = Arc::new(table);
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
        password: &str,
    ) -> Result<Grant, LoginError> {
        let delay = self.delay(peer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let stored = self.users.read().expect("users lock").get(user).cloned();
        let Some(stored) = stored else {
            self.failed(peer, user);
            return Err(LoginError::WrongPassword);
        };
        let digest = sha256(password);
        let remembered = self
            .verified
            .lock()
            .expect("verified lock")
            .get(user)
            .is_some_and(|(hash, d)| *hash == stored.hash && *d == digest);
        let ok = remembered || {
            let (hash, password) = (stored.hash.clone(), password.to_string());
            tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false)
        };
        if !ok {
            self.failed(peer, user);
            return Err(LoginError::WrongPassword);
        }
        if !remembered {
            self.verified
                .lock()
                .expect("verified lock")
                .insert(user.to_string(), (stored.hash.clone(), digest));
        }
        self.failures.lock().expect("failures lock").remove(&peer);
        Ok(Grant {
            user: stored.name,
            role: stored.role,
            prefix: stored.prefix,
        })
    }
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
        let grant = auth.login(peer, "alice", "s3cret").await.unwrap();
        assert_eq!(grant.role, Role::ReadWrite);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.login(peer, "alice", "s3cret").await.is_ok());
        // A new password (a new hash) is checked again, not taken from memory.
        auth.set_users(vec![StoredUser {
            name: "alice".into(),
            role: Role::Read,
            prefix: None,
            hash: hash_password("n3w").unwrap(),
        }]);
        assert_eq!(
            auth.login(peer, "alice", "s3cret").await,
            Err(LoginError::WrongPassword)
        );
        assert_eq!(
            auth.login(peer, "alice", "n3w").await.unwrap().role,
            Role::Read
        );
    }

    #[tokio::test]
    async fn wrong_passwords_and_unknown_users_fail_alike_and_slow_the_address() {
        let auth = authenticator();
        let peer: IpAddr = "10.0.0.7".parse().unwrap();
        let err = auth.login(peer, "nobody", "x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid username-password pair or user is disabled."
        );
        for _ in 0..FREE_FAILURES {
            let _ = auth.login(peer, "alice", "wrong").await;
        }
        assert_eq!(auth.failed_logins(), u64::from(FREE_FAILURES) + 1);
        assert!(
            auth.delay(peer) > Duration::ZERO,
            "slowed after {FREE_FAILURES} failures"
        );
        assert_eq!(auth.delay("10.0.0.8".parse().unwrap()), Duration::ZERO);
        // A success forgives the address.
        assert!(auth.login(peer, "alice", "s3cret").await.is_ok());
        assert_eq!(auth.delay(peer), Duration::ZERO);
    }
}
