//! A C2SP witness written for the tests from the tlog-witness and tlog-cosignature texts alone,
//! sharing nothing with `changetrail` (no `changetrail::` import): notes are parsed, verified and
//! signed with the independent `signed_note` crate, consistency proofs checked with
//! `tlog_tiles::check_tree`, cosignatures made with ed25519-dalek and sha2 directly.
//!
//! `POST /add-checkpoint` answers as the spec says (404 unknown origin, 403 no valid log
//! signature, 400 old > size, 409 with the size it knows, 422 for a bad proof, a proof with old 0,
//! same size different root, or size 0 with another root); its state moves under one lock, so
//! the check and the update are one step. `GET /<sha256(origin) hex>/checkpoint` serves the
//! newest cosigned checkpoint. Refused requests are kept for the tests to read.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// tlog-cosignature's signature type for Ed25519 cosignatures.
const COSIGNATURE_TYPE: u8 = 0x04;

/// What the witness knows of one log.
#[derive(Clone)]
struct LogState {
    vkey: String,
    size: u64,
    root: [u8; 32],
    /// The newest cosigned note, served by GET.
    note: Option<Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<String, LogState>,
    /// (status, why) of each refused request, in order.
    refused: Vec<(u16, String)>,
}

#[derive(Clone)]
struct Shared {
    name: String,
    key: Arc<SigningKey>,
    inner: Arc<Mutex<Inner>>,
}

/// A running witness.
pub struct TestWitness {
    /// The submission (and monitoring) prefix, ending in `/`.
    pub url: String,
    pub name: String,
    shared: Shared,
}

/// The `signed_note` verifier of an Ed25519 cosignature, written from tlog-cosignature: key id
/// over `name ‖ "\n" ‖ 0x04 ‖ pk`, signature bytes `u64 timestamp ‖ sig`, message
/// `"cosignature/v1\ntime <t>\n" ‖ note text`.
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> CosignatureVerifier {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update([COSIGNATURE_TYPE]);
        h.update(key.as_bytes());
        let d = h.finalize();
        CosignatureVerifier {
            name: name.to_owned(),
            id: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            key,
        }
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 72 {
            return false;
        }
        let ts = u64::from_be_bytes(sig[..8].try_into().unwrap());
        let mut m = format!("cosignature/v1\ntime {ts}\n").into_bytes();
        m.extend_from_slice(msg);
        let s = ed25519_dalek::Signature::from_bytes(sig[8..].try_into().unwrap());
        self.key.verify(&m, &s).is_ok()
    }
}

impl TestWitness {
    /// Starts a witness named `name` (key from `seed`) that trusts the given `(origin, log
    /// vkey)` pairs.
    pub async fn start(name: &str, seed: u8, logs: &[(&str, &str)]) -> TestWitness {
        let mut inner = Inner::default();
        for (origin, vkey) in logs {
            inner.logs.insert(
                (*origin).to_owned(),
                LogState {
                    vkey: (*vkey).to_owned(),
                    size: 0,
                    root: Sha256::digest(b"").into(),
                    note: None,
                },
            );
        }
        let shared = Shared {
            name: name.to_owned(),
            key: Arc::new(SigningKey::from_bytes(&[seed; 32])),
            inner: Arc::new(Mutex::new(inner)),
        };
        let app = axum::Router::new()
            .route("/add-checkpoint", axum::routing::post(add_checkpoint))
            .route(
                "/{origin_hash}/checkpoint",
                axum::routing::get(get_checkpoint),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestWitness {
            url,
            name: name.to_owned(),
            shared,
        }
    }

    /// The witness's vkey: `<name>+<key id>+<b64(0x04 ‖ pk)>`.
    pub fn vkey(&self) -> String {
        let v = self.verifier();
        let mut raw = vec![COSIGNATURE_TYPE];
        raw.extend_from_slice(self.shared.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, v.id, STANDARD.encode(raw))
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier::new(&self.name, self.shared.key.verifying_key())
    }

    /// Requests refused so far: (status, why).
    pub fn refused(&self) -> Vec<(u16, String)> {
        self.shared.inner.lock().unwrap().refused.clone()
    }

    /// The size the witness last cosigned for `origin`.
    pub fn size(&self, origin: &str) -> u64 {
        self.shared.inner.lock().unwrap().logs[origin].size
    }

    /// Adds a log the witness trusts (its origin and Ed25519 note vkey).
    pub fn trust(&self, origin: &str, vkey: &str) {
        self.shared.inner.lock().unwrap().logs.insert(
            origin.to_owned(),
            LogState {
                vkey: vkey.to_owned(),
                size: 0,
                root: Sha256::digest(b"").into(),
                note: None,
            },
        );
    }
}

fn refuse(inner: &mut Inner, status: StatusCode, why: String) -> Response {
    inner.refused.push((status.as_u16(), why.clone()));
    (status, why).into_response()
}

/// An add-checkpoint body split: old size, proof hashes, note bytes.
type Request<'a> = (u64, Vec<[u8; 32]>, &'a [u8]);

fn parse_request(body: &[u8]) -> Result<Request<'_>, String> {
    let mut rest = body;
    let take_line = |rest: &mut &[u8]| -> Result<String, String> {
        let i = rest.iter().position(|&b| b == b'\n').ok_or("no newline")?;
        let line = std::str::from_utf8(&rest[..i])
            .map_err(|_| "not UTF-8")?
            .to_owned();
        *rest = &rest[i + 1..];
        Ok(line)
    };
    let first = take_line(&mut rest)?;
    let old = first.strip_prefix("old ").ok_or("no old line")?;
    if old.is_empty()
        || (old.len() > 1 && old.starts_with('0'))
        || !old.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("old size is not canonical decimal".into());
    }
    let old: u64 = old.parse().map_err(|_| "old size out of range")?;
    let mut proof = Vec::new();
    loop {
        let line = take_line(&mut rest)?;
        if line.is_empty() {
            break;
        }
        if proof.len() == 63 {
            return Err("more than 63 proof lines".into());
        }
        let h: [u8; 32] = STANDARD
            .decode(&line)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("proof line is not a base64 hash")?;
        proof.push(h);
    }
    Ok((old, proof, rest))
}

async fn add_checkpoint(State(s): State<Shared>, body: Bytes) -> Response {
    // One lock over check and update: two requests cannot both move from the same old size.
    let mut g = s.inner.lock().unwrap();
    let (old, proof, note_bytes) = match parse_request(&body) {
        Ok(v) => v,
        Err(e) => return refuse(&mut g, StatusCode::BAD_REQUEST, e),
    };
    let Ok(mut note) = signed_note::Note::from_bytes(note_bytes) else {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "malformed note".into());
    };
    let text = String::from_utf8(note.text().to_vec()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 3 {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "not a checkpoint".into());
    }
    let origin = lines[0].to_owned();
    let Some(log) = g.logs.get(&origin).cloned() else {
        return refuse(
            &mut g,
            StatusCode::NOT_FOUND,
            format!("unknown origin {origin}"),
        );
    };
    let verifier = signed_note::StandardVerifier::new(&log.vkey).unwrap();
    let known = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    if note.verify(&known).is_err() {
        return refuse(
            &mut g,
            StatusCode::FORBIDDEN,
            "no valid log signature".into(),
        );
    }
    let (Ok(size), Some(root)) = (
        lines[1].parse::<u64>(),
        STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok()),
    ) else {
        return refuse(&mut g, StatusCode::BAD_REQUEST, "bad size or root".into());
    };
    if old > size {
        return refuse(
            &mut g,
            StatusCode::BAD_REQUEST,
            format!("old {old} > size {size}"),
        );
    }
    if old != log.size {
        g.refused
            .push((409, format!("old {old}, known {}", log.size)));
        return (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{}\n", log.size),
        )
            .into_response();
    }
    let empty: [u8; 32] = Sha256::digest(b"").into();
    let unprocessable = if size == 0 && root != empty {
        Some("size 0 with a non-empty root".to_owned())
    } else if old == 0 && !proof.is_empty() {
        Some("a proof with old size 0".to_owned())
    } else if old == size && root != log.root {
        Some(format!("size {size} with a different root: a fork"))
    } else if old > 0 && old < size {
        let p: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
        tlog_tiles::check_tree(
            &p,
            size,
            tlog_tiles::Hash(root),
            old,
            tlog_tiles::Hash(log.root),
        )
        .err()
        .map(|e| format!("consistency proof from {old} to {size} fails: {e}"))
    } else {
        None
    };
    if let Some(why) = unprocessable {
        return refuse(&mut g, StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    // Cosign: timestamp ‖ Ed25519 over "cosignature/v1\ntime <t>\n" ‖ text, attached with
    // signed_note so the line is written the way the independent crate writes lines.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut msg = format!("cosignature/v1\ntime {ts}\n").into_bytes();
    msg.extend_from_slice(note.text());
    let mut sig = ts.to_be_bytes().to_vec();
    sig.extend_from_slice(&s.key.sign(&msg).to_bytes());
    let id = CosignatureVerifier::new(&s.name, s.key.verifying_key()).id;
    let ours = signed_note::Signature::new(s.name.clone(), id, sig).unwrap();
    let line = String::from_utf8(ours.to_bytes()).unwrap();
    note = signed_note::Note::from_bytes(&[note.to_bytes(), ours.to_bytes()].concat()).unwrap();
    let entry = g.logs.get_mut(&origin).unwrap();
    entry.size = size;
    entry.root = root;
    entry.note = Some(note.to_bytes());
    (StatusCode::OK, line).into_response()
}

async fn get_checkpoint(State(s): State<Shared>, Path(origin_hash): Path<String>) -> Response {
    let g = s.inner.lock().unwrap();
    for (origin, log) in &g.logs {
        if hex::encode(Sha256::digest(origin.as_bytes())) == origin_hash
            && let Some(note) = &log.note
        {
            return (StatusCode::OK, note.clone()).into_response();
        }
    }
    StatusCode::NOT_FOUND.into_response()
}
