//! API tokens and roles. A token is `ct_<id>_<secret>`: the id finds the row, the secret is
//! stored only as SHA-256 and compared in constant time. Tokens are shown once and never logged.

use crate::core::ledger::hash::Hash;
use crate::storage::{StorageError, Store, TokenRow};
use crate::sys::random_bytes;
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
    /// Asking the deploy gate (`POST /v1/gate`) from a workflow, nothing else: it learns only
    /// the decision about the change it names.
    Gate,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Ingest,
        Role::Auditor,
        Role::Reviewer,
        Role::Admin,
        Role::Metrics,
        Role::Gate,
    ];

    /// This role alone, as a list of roles a route admits.
    pub fn only(self) -> &'static [Role] {
        match self {
            Role::Ingest => &[Role::Ingest],
            Role::Auditor => &[Role::Auditor],
            Role::Reviewer => &[Role::Reviewer],
            Role::Admin => &[Role::Admin],
            Role::Metrics => &[Role::Metrics],
            Role::Gate => &[Role::Gate],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Auditor => "auditor",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
            Role::Gate => "gate",
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
                format!("unknown role {s:?}: use ingest, auditor, reviewer, admin, metrics or gate")
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

impl Principal {
    /// Notes who made the current request on its `request` span (and so on every later log line
    /// of it): token id, name and role, never the token.
    pub fn record_on_span(&self) {
        let span = tracing::Span::current();
        span.record("token_id", self.token_id.as_str());
        span.record("principal", self.name.as_str());
        span.record("role", self.role.as_str());
    }
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
    let (id, secret) = fresh();
    let row = row_for(&id, &secret, name, role, now_ns);
    (row, format!("ct_{id}_{secret}"))
}

/// A fresh token text, stored nowhere: for secret stores and deployments that must know a token
/// before changetrail runs (`tokens generate`, then `tokens create --token-file`).
pub fn generate() -> String {
    let (id, secret) = fresh();
    format!("ct_{id}_{secret}")
}

fn fresh() -> (String, String) {
    let id = hex::encode(random_bytes::<6>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    (id, secret)
}

fn row_for(id: &str, secret: &str, name: &str, role: Role, now_ns: i64) -> TokenRow {
    TokenRow {
        id: id.to_owned(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: secret_hash(secret).0.to_vec(),
        created_ns: now_ns,
        revoked_ns: None,
    }
}

/// The shortest secret accepted from outside: 32 base64url characters are 192 bits. (Presented
/// tokens are held to the looser bounds below; `generate` makes 43 characters.)
pub const MIN_REGISTERED_SECRET_LEN: usize = 32;
/// Presented tokens with shorter secrets are refused outright.
const MIN_PRESENTED_SECRET_LEN: usize = 16;
/// Secrets longer than this are refused everywhere.
const MAX_SECRET_LEN: usize = 128;

/// Why a text given from outside (a file, a variable) is not a token changetrail can register.
/// The messages describe the shape only: they never quote the text, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("it is empty")]
    Empty,
    #[error("it does not start with `ct_` (a changetrail token is ct_<12 hex id>_<secret>)")]
    Prefix,
    #[error("the id after `ct_` is not 12 lowercase hex digits followed by `_`")]
    Id,
    #[error("the secret may hold only A-Z a-z 0-9 - _ (no spaces or line breaks inside it)")]
    SecretCharacters,
    #[error("the secret is {len} characters long; at least {min} are needed")]
    SecretTooShort { len: usize, min: usize },
    #[error("the secret is {len} characters long; at most {max} are allowed")]
    SecretTooLong { len: usize, max: usize },
}

/// Splits `ct_<12 hex>_<secret>` (a secret of at least `min_secret` characters) and says what is
/// wrong with anything else.
fn parse_token(token: &str, min_secret: usize) -> Result<(&str, &str), TokenFormatError> {
    if token.is_empty() {
        return Err(TokenFormatError::Empty);
    }
    let rest = token.strip_prefix("ct_").ok_or(TokenFormatError::Prefix)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenFormatError::Id)?;
    if id.len() != 12 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(TokenFormatError::Id);
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenFormatError::SecretCharacters);
    }
    if secret.len() < min_secret {
        return Err(TokenFormatError::SecretTooShort {
            len: secret.len(),
            min: min_secret,
        });
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(TokenFormatError::SecretTooLong {
            len: secret.len(),
            max: MAX_SECRET_LEN,
        });
    }
    Ok((id, secret))
}

/// Splits `ct_<12 hex>_<secret>`; anything else is not one of our tokens.
fn split_token(token: &str) -> Option<(&str, &str)> {
    parse_token(token, MIN_PRESENTED_SECRET_LEN).ok()
}

/// The token in a file's or variable's text, split into id and secret. Line breaks at the end are
/// dropped (`tokens generate > FILE` and `echo` add one); anything else must already be exactly a
/// token, with a secret of at least `MIN_REGISTERED_SECRET_LEN` characters.
pub fn parse_registered(text: &str) -> Result<(&str, &str), TokenFormatError> {
    parse_token(
        text.trim_end_matches(['\n', '\r']),
        MIN_REGISTERED_SECRET_LEN,
    )
}

/// The row that registers a token given from outside, stored as `issue` stores a new one: the
/// id, and the secret only as its hash.
pub fn registered_row(
    text: &str,
    name: &str,
    role: Role,
    now_ns: i64,
) -> Result<TokenRow, TokenFormatError> {
    let (id, secret) = parse_registered(text)?;
    Ok(row_for(id, secret, name, role, now_ns))
}

/// What registering a token means, given the row storage already holds under its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Nothing under this id yet: insert the row.
    New,
    /// The same secret, role and name are registered and active: nothing to do (a re-run init
    /// job).
    AlreadyRegistered,
    /// Something else holds this id. The reasons name fields, never the secret.
    Conflict(Vec<String>),
}

/// Compares a wanted registration with the stored row of the same id.
pub fn registration(existing: Option<&TokenRow>, wanted: &TokenRow) -> Registration {
    let Some(have) = existing else {
        return Registration::New;
    };
    let mut differs = Vec::new();
    let same_secret: bool = have.secret_hash.ct_eq(&wanted.secret_hash).into();
    if !same_secret {
        differs.push("its secret differs".to_owned());
    }
    if have.role != wanted.role {
        differs.push(format!("its role is {}", have.role));
    }
    if have.name != wanted.name {
        differs.push(format!("its name is {:?}", have.name));
    }
    // A revoked token stays revoked: registering it again must not look like success, since it
    // would not authenticate.
    if have.revoked_ns.is_some() {
        differs.push("it was revoked".to_owned());
    }
    if differs.is_empty() {
        Registration::AlreadyRegistered
    } else {
        Registration::Conflict(differs)
    }
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
struct TokenCache {
    ttl: Duration,
    rows: Mutex<HashMap<String, (Option<TokenRow>, Instant)>>,
}

/// Cached token ids at most; the cache starts over beyond this (ids of unknown tokens count too).
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn new(ttl: Duration) -> TokenCache {
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

/// Checks presented tokens against the stored token rows: the one part that reads them, handed
/// to the REST API and to ingest so neither needs the store for it. With a cache (ingest), a
/// revocation takes effect within its time-to-live; without (the API), at once.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    cache: Option<std::sync::Arc<TokenCache>>,
}

impl Authenticator {
    /// Every check reads the token row.
    pub fn new(store: Store) -> Authenticator {
        Authenticator { store, cache: None }
    }

    /// Token rows are remembered for `ttl` (for high-rate callers: OTLP exporters).
    pub fn cached(store: Store, ttl: Duration) -> Authenticator {
        Authenticator {
            store,
            cache: Some(std::sync::Arc::new(TokenCache::new(ttl))),
        }
    }

    async fn row(&self, token: &str) -> Result<Option<TokenRow>, AuthError> {
        let (id, _) = split_token(token).ok_or(AuthError::Invalid)?;
        match &self.cache {
            Some(c) => c.row(&self.store, id).await,
            None => Ok(self.store.token(id).await?),
        }
    }

    /// Checks a presented token and the role required.
    pub async fn authenticate(&self, token: &str, need: Role) -> Result<Principal, AuthError> {
        check(self.row(token).await?, token, Some(need))
    }

    /// Checks a presented token whatever its role: for callers that only ask who they are (the
    /// console's sign-in), never for doing anything a role guards.
    pub async fn identify(&self, token: &str) -> Result<Principal, AuthError> {
        check(self.row(token).await?, token, None)
    }
}

/// One check without a long-lived `Authenticator` (commands that run once).
pub async fn authenticate(store: &Store, token: &str, need: Role) -> Result<Principal, AuthError> {
    Authenticator::new(store.clone())
        .authenticate(token, need)
        .await
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
    fn generated_tokens_register_as_issue_stores_them() {
        let token = generate();
        assert_ne!(token, generate());
        let (id, secret) = split_token(&token).unwrap();
        assert_eq!(parse_registered(&token), Ok((id, secret)));
        let row = registered_row(&token, "otel-collector", Role::Ingest, 7).unwrap();
        assert_eq!(row.id, id);
        assert_eq!(row.secret_hash, secret_hash(secret).0.to_vec());
        assert_eq!((row.role.as_str(), row.revoked_ns), ("ingest", None));
        // And what `issue` makes passes the stricter registration check too.
        let (_, issued) = issue("ci", Role::Admin, 1);
        assert!(parse_registered(&issued).is_ok());
    }

    #[test]
    fn registered_text_drops_only_trailing_line_breaks() {
        let token = generate();
        let (id, secret) = split_token(&token).unwrap();
        for text in [
            format!("{token}\n"),
            format!("{token}\r\n"),
            format!("{token}\n\n"),
        ] {
            assert_eq!(parse_registered(&text), Ok((id, secret)));
        }
        use TokenFormatError as E;
        for text in [
            format!(" {token}"),
            format!("{token} \n"),
            format!("{token}\tx"),
        ] {
            assert!(
                matches!(
                    parse_registered(&text),
                    Err(E::Prefix | E::SecretCharacters)
                ),
                "{text:?}"
            );
        }
        let two_lines = format!("{token}\n{token}\n");
        assert_eq!(parse_registered(&two_lines), Err(E::SecretCharacters));
    }

    #[test]
    fn registered_text_must_be_a_strong_well_formed_token() {
        use TokenFormatError as E;
        let id = "0123456789ab";
        let secret = "A".repeat(MIN_REGISTERED_SECRET_LEN);
        assert!(parse_registered(&format!("ct_{id}_{secret}")).is_ok());
        let cases = [
            (String::new(), E::Empty),
            ("\n".to_owned(), E::Empty),
            (format!("xx_{id}_{secret}"), E::Prefix),
            (format!("{id}_{secret}"), E::Prefix),
            (format!("ct_{id}"), E::Id),
            (format!("ct_0123456789AB_{secret}"), E::Id),
            (format!("ct_0123456789_{secret}"), E::Id),
            (format!("ct_{id}_{}=", &secret[1..]), E::SecretCharacters),
            // Long enough to be presented, too short to be registered from outside.
            (
                format!("ct_{id}_{}", "A".repeat(20)),
                E::SecretTooShort { len: 20, min: 32 },
            ),
            (
                format!("ct_{id}_{}", "A".repeat(8)),
                E::SecretTooShort { len: 8, min: 32 },
            ),
            (
                format!("ct_{id}_{}", "A".repeat(129)),
                E::SecretTooLong { len: 129, max: 128 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_registered(&text), Err(want.clone()), "{text:?}");
            // No message repeats what it was given.
            if text.len() > 3 {
                assert!(!want.to_string().contains(&text));
            }
        }
    }

    #[test]
    fn registration_is_idempotent_and_names_every_conflict() {
        let token = generate();
        let wanted = registered_row(&token, "otel-collector", Role::Ingest, 2).unwrap();
        assert_eq!(registration(None, &wanted), Registration::New);
        let stored = TokenRow {
            created_ns: 1,
            ..wanted.clone()
        };
        assert_eq!(
            registration(Some(&stored), &wanted),
            Registration::AlreadyRegistered
        );
        let (id, _) = split_token(&token).unwrap();
        let other_secret = format!("ct_{id}_{}", "B".repeat(43));
        let other = registered_row(&other_secret, "otel-collector", Role::Admin, 2).unwrap();
        assert_eq!(
            registration(Some(&stored), &other),
            Registration::Conflict(vec![
                "its secret differs".to_owned(),
                "its role is ingest".to_owned()
            ])
        );
        let renamed = registered_row(&token, "collector", Role::Ingest, 2).unwrap();
        assert_eq!(
            registration(Some(&stored), &renamed),
            Registration::Conflict(vec!["its name is \"otel-collector\"".to_owned()])
        );
        let revoked = TokenRow {
            revoked_ns: Some(3),
            ..stored
        };
        assert_eq!(
            registration(Some(&revoked), &wanted),
            Registration::Conflict(vec!["it was revoked".to_owned()])
        );
    }

    #[test]
    fn bearer_is_strict() {
        assert!(matches!(bearer(None), Err(AuthError::Missing)));
        assert!(matches!(bearer(Some("Basic abc")), Err(AuthError::Invalid)));
        assert_eq!(bearer(Some("Bearer ct_x")).unwrap(), "ct_x");
    }
}
