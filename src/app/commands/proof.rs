//! `changetrail proof CHANGE_ID --out F` and `changetrail verify-proof F --trusted-key K
//! [--policy P]`: one change's receipt, written from the database and checked offline.

use crate::app::cli::{ProofArgs, VerifyProofArgs};
use crate::app::config::Config;
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::receipt;
use crate::read::receipt::receipt;
use crate::storage::Store;
use anyhow::Context;
use std::io::Read;
use std::time::Instant;

/// Larger than any honest receipt (a change has tens of entries, each a few KiB at most).
const MAX_RECEIPT_BYTES: u64 = 64 << 20;

pub async fn write(cfg: Config, a: ProofArgs) -> anyhow::Result<i32> {
    let store = Store::connect(&cfg.database_url, &cfg.storage_options()).await?;
    store.migrate().await?;
    let policy = match cfg.tlog.policy_file.trim() {
        "" => None,
        path => Some(super::verify::load_policy(std::path::Path::new(path))?),
    };
    use crate::read::receipt::ReceiptError;
    let built = match receipt(&store, &a.change_id, &cfg.criteria(), policy.as_ref()).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("No change {:?} in the ledger.", a.change_id);
            return Ok(1);
        }
        Err(ReceiptError::NotYet(why) | ReceiptError::TooLarge(why)) => {
            eprintln!("No receipt for {}: {why}", a.change_id);
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    if built.witnessed == Some(false) {
        eprintln!(
            "Warning: no checkpoint covering this change meets [tlog] policy_file's quorum yet; \
             verify-proof --policy will refuse this receipt until the witnesses cosign (write it again then)."
        );
    }
    let r = built.receipt;
    let tmp = a.out.with_extension("partial");
    std::fs::write(&tmp, r.to_text()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out)
        .with_context(|| format!("cannot move the receipt to {}", a.out.display()))?;
    println!(
        "Wrote {}: {} entries of {} and {} key-chain entries against checkpoint {}.",
        a.out.display(),
        r.entries.len(),
        a.change_id,
        r.key_chain.len(),
        r.checkpoint.lines().nth(1).unwrap_or("?"),
    );
    Ok(0)
}

pub fn verify(a: VerifyProofArgs) -> anyhow::Result<i32> {
    let mut trusted = Vec::new();
    for k in &a.trusted_keys {
        match Vkey::parse(k) {
            Ok(v) => trusted.push(v),
            Err(e) => {
                eprintln!("--trusted-key {k:?} is not a vkey: {e}");
                return Ok(3);
            }
        }
    }
    let text = match read_limited(&a.file) {
        Ok(Ok(t)) => t,
        // A file that is not text or too large to be a receipt is an invalid receipt.
        Ok(Err(why)) => {
            println!("INVALID {}: {why}", a.file.display());
            return Ok(1);
        }
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(3);
        }
    };
    let started = Instant::now();
    let v = match receipt::verify(&text, &trusted) {
        Ok(v) => v,
        Err(why) => {
            println!("INVALID {}: {}", a.file.display(), printable(&why));
            return Ok(1);
        }
    };
    let witnessed = match &a.policy {
        None => String::from(
            "no witness policy given (--policy): whoever holds a key of this ledger, a retired one \
             included, could have made this receipt; witnesses' cosignatures are what rule that out",
        ),
        Some(path) => match super::policy_check(path, &v.checkpoint_note) {
            Ok(Ok(summary)) => summary,
            Ok(Err(why)) => {
                println!("INVALID {}: {}", a.file.display(), printable(&why));
                return Ok(1);
            }
            Err(e) => {
                eprintln!("{e:#}");
                return Ok(3);
            }
        },
    };
    println!(
        "OK {}: change {} in ledger {}: {} entries{} included in checkpoint {} signed by {} \
         (this proves each is in the ledger as shown, not that the change has no other); {} ({} ms)",
        a.file.display(),
        printable(&v.change_id),
        v.origin,
        v.entries,
        if v.erased.is_empty() {
            String::new()
        } else {
            format!(" ({} REDACTED: {:?})", v.erased.len(), v.erased)
        },
        v.checkpoint_size,
        v.checkpoint_key,
        witnessed,
        started.elapsed().as_millis(),
    );
    Ok(0)
}

/// The file's text; `Ok(Err)` when it cannot be a receipt (not UTF-8, over 64 MiB).
fn read_limited(path: &std::path::Path) -> anyhow::Result<Result<String, String>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_RECEIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_RECEIPT_BYTES {
        return Ok(Err("larger than any receipt (64 MiB)".into()));
    }
    Ok(String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()))
}

/// Text from the file, safe for a terminal: a control character (an escape sequence that
/// would redraw the line as "OK") is shown as its escape, never sent.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
