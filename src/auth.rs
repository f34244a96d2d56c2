//! API tokens and roles. A token is `ct_<id>_<secret>`: the id finds the row, the secret is
//! stored only as SHA-256 and compared in constant time. Tokens are shown once and never logged.

use crate::core::hash::Hash;
use crate::pipeline::random_bytes;
use crate::storage::{StorageError, Store, TokenRow};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Narrow roles: a token can do only what its role names (DESIGN.md "Security").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// OTLP export and imports.
    Ingest,
    /// Changes and reports.
    Auditor,
    /// Ledger, proofs, checkpoints, keys.
    Reviewer,
    /// Tokens and keys.
    Admin,
    /// Reading /metrics (for a Prometheus scraper), nothing else.
    Metrics,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Ingest,
        Role::Auditor,
        Role::Reviewer,
        Role::Admin,
        Role::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Auditor => "auditor",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: use ingest, auditor, reviewer, admin or metrics")
            })
    }
}

/// Who made a request: the token's id, name and role (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid or revoked token")]
    Invalid,
    #[error("this token's role ({have}) may not do this (needs {need})")]
    Forbidden { have: Role, need: Role },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn secret_hash(secret: &str) -> Hash {
    Hash::of(&[b"changetrail/token/v1\n", secret.as_bytes()])
}

/// Creates a token; returns the row to store and the token text to show once.
pub fn issue(name: &str, role: Role, now_ns: i64) -> (TokenRow, String) {
    let id = hex::encode(random_bytes::<6>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let row = TokenRow {
        id: id.clone(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: secret_hash(&secret).0.to_vec(),
        created_ns: now_ns,
        revoked_ns: None,
    };
    (row, format!("ct_{id}_{secret}"))
}

/// Splits `ct_<12 hex>_<secret>`; anything else is not one of our tokens.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("ct_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = (16..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// The token from an `Authorization` header value: exactly `Bearer <token>`.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token.trim())
}

/// Recently looked-up token rows, so high-rate callers (OTLP exporters) do not cost a database
/// round trip per request. A revocation takes effect within the time-to-live.
pub struct TokenCache {
    ttl: Duration,
    rows: Mutex<HashMap<String, (Option<TokenRow>, Instant)>>,
}

/// Cached token ids at most; the cache starts over beyond this (ids of unknown tokens count too).
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            rows: Mutex::new(HashMap::new()),
        }
    }

    async fn row(&self, store: &Store, id: &str) -> Result<Option<TokenRow>, AuthError> {
        let now = Instant::now();
        if let Ok(rows) = self.rows.lock()
            && let Some((row, at)) = rows.get(id)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(row.clone());
        }
        let row = store.token(id).await?;
        if let Ok(mut rows) = self.rows.lock() {
            if rows.len() >= TOKEN_CACHE_MAX {
                rows.clear();
            }
            rows.insert(id.to_owned(), (row.clone(), now));
        }
        Ok(row)
    }
}

/// Checks a presented token against storage and the role required.
pub async fn authenticate(store: &Store, token: &str, need: Role) -> Result<Principal, AuthError> {
    let (id, _) = split_token(token).ok_or(AuthError::Invalid)?;
    let row = store.token(id).await?;
    check(row, token, Some(need))
}

/// Checks a presented token against storage whatever its role: for callers that only ask who
/// they are (the console's sign-in), never for doing anything a role guards.
pub async fn identify(store: &Store, token: &str) -> Result<Principal, AuthError> {
    let (id, _) = split_token(token).ok_or(AuthError::Invalid)?;
    let row = store.token(id).await?;
    check(row, token, None)
}

/// Like `authenticate`, through a cache of token rows.
pub async fn authenticate_cached(
    store: &Store,
    cache: &TokenCache,
    token: &str,
    need: Role,
) -> Result<Principal, AuthError> {
    let (id, _) = split_token(token).ok_or(AuthError::Invalid)?;
    let row = cache.row(store, id).await?;
    check(row, token, Some(need))
}

/// `need: None` accepts any role.
fn check(row: Option<TokenRow>, token: &str, need: Option<Role>) -> Result<Principal, AuthError> {
    let (_, secret) = split_token(token).ok_or(AuthError::Invalid)?;
    let presented = secret_hash(secret);
    // Compare against something even for unknown ids, so timing says nothing about which exist.
    let stored = row
        .as_ref()
        .map_or([0u8; 32].to_vec(), |r| r.secret_hash.clone());
    let matches: bool = presented.0.ct_eq(stored.as_slice()).into();
    let row = match row {
        Some(r) if matches && r.revoked_ns.is_none() => r,
        _ => return Err(AuthError::Invalid),
    };
    let role: Role = row.role.parse().map_err(|_| AuthError::Invalid)?;
    if let Some(need) = need
        && role != need
    {
        return Err(AuthError::Forbidden { have: role, need });
    }
    Ok(Principal {
        token_id: row.id,
        name: row.name,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_split_and_hash() {
        let (row, token) = issue("ci", Role::Reviewer, 1);
        let (id, secret) = split_token(&token).unwrap();
        assert_eq!(id, row.id);
        assert_eq!(secret_hash(secret).0.to_vec(), row.secret_hash);
        assert!(!row.secret_hash.is_empty());
        assert!(split_token("ct_zz_abc").is_none());
        assert!(split_token(&token.replace("ct_", "xx_")).is_none());
    }

    #[test]
    fn bearer_is_strict() {
        assert!(matches!(bearer(None), Err(AuthError::Missing)));
        assert!(matches!(bearer(Some("Basic abc")), Err(AuthError::Invalid)));
        assert_eq!(bearer(Some("Bearer ct_x")).unwrap(), "ct_x");
    }
}
