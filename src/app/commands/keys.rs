use crate::app::cli::KeysCommand;
use crate::app::config::Config;
use crate::app::keyfile;
use crate::app::startup::open_ledger;
use crate::core::ledger::keys::Origin;
use anyhow::{Context, bail};

pub async fn run(cfg: Config, cmd: KeysCommand) -> anyhow::Result<i32> {
    match cmd {
        KeysCommand::Generate { out, origin } => {
            let path = out.unwrap_or_else(|| cfg.ledger.key_file.clone());
            let origin = match origin
                .or_else(|| (!cfg.ledger.origin.is_empty()).then(|| cfg.ledger.origin.clone()))
            {
                Some(o) => Origin::parse(&o)?,
                None => keyfile::generated_origin(),
            };
            let key = keyfile::generate(origin)?;
            keyfile::write_new_key(&path, &key)?;
            eprintln!(
                "Wrote a new signing key to {} (mode 0600). Its verifier key:",
                path.display()
            );
            println!("{}", key.vkey());
        }
        KeysCommand::Show => {
            let key = if cfg.ledger.signing_key.is_empty() {
                keyfile::read_key(&cfg.ledger.key_file)?
            } else {
                crate::core::ledger::keys::LedgerKey::parse_private(cfg.ledger.signing_key.expose())
                    .context("ledger.signing_key is not a changetrail signing key")?
            };
            println!("{}", key.vkey());
        }
        KeysCommand::Rotate { out } => {
            let inline = !cfg.ledger.signing_key.is_empty();
            if inline && out.is_none() {
                bail!(
                    "the key comes from ledger.signing_key: pass --out FILE for the new key, then update the secret"
                );
            }
            let (_, writer) = open_ledger(&cfg, false).await?;
            let old = writer.key();
            let new_key = keyfile::generate(old.origin().clone())?;
            let vkey = new_key.vkey().to_string();
            // The new key is on disk before the rotation commits, so a crash never leaves a
            // ledger whose current key exists nowhere.
            let staged = match &out {
                Some(p) => p.clone(),
                None => keyfile::next_path(&cfg.ledger.key_file),
            };
            keyfile::write_new_key(&staged, &new_key)?;
            let journal_keys = (
                old.derive_secret(crate::ingest::journal::KEY_LABEL),
                new_key.derive_secret(crate::ingest::journal::KEY_LABEL),
            );
            let done = writer.rotate(new_key).await?;
            // Parked spans journaled under the old key stay readable after the restart.
            let dir = &cfg.otlp.journal_dir;
            if !dir.as_os_str().is_empty() {
                match crate::ingest::journal::Journal::rekey_dir(
                    dir,
                    &journal_keys.0,
                    &journal_keys.1,
                ) {
                    Ok(0) => {}
                    Ok(n) => eprintln!(
                        "Wrapped the keys of {n} parking journal segments in {} under the new key.",
                        dir.display()
                    ),
                    Err(e) => eprintln!(
                        "The parking journal {} was left as it is ({e}); a running service wraps its own keys again.",
                        dir.display()
                    ),
                }
            }
            let seq = done.seqs.first().copied().unwrap_or_default();
            if out.is_none() {
                let retired = keyfile::finish_rotation(&cfg.ledger.key_file, old.key_id())?;
                eprintln!(
                    "Rotated at entry {seq}: {} now holds the new key; the old one is kept as {}.",
                    cfg.ledger.key_file.display(),
                    retired.display()
                );
            } else {
                eprintln!(
                    "Rotated at entry {seq}: the new key is in {}; put it where the service reads its key (ledger.signing_key, or the file ledger.key_file names) before it next starts.",
                    staged.display()
                );
            }
            eprintln!(
                "Reviewers who pinned {} follow the rotation automatically. New verifier key:",
                old.vkey()
            );
            println!("{vkey}");
        }
    }
    Ok(0)
}
