//! Signing keys on disk: reading, generating (mode 0600) and the file steps of a rotation.

use crate::app::config::LedgerConfig;
use crate::core::ledger::keys::{KeyId, LedgerKey, Origin};
use crate::pipeline::KeySource;
use crate::storage::HeadRow;
use crate::sys::random_bytes;
use anyhow::{Context, bail};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `<key file>.next`: where a rotation puts the new key before it is committed.
pub fn next_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

pub fn read_key(path: &Path) -> anyhow::Result<LedgerKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key {}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path)
        && exposed(meta.permissions().mode(), meta.gid())
    {
        tracing::warn!(path = %path.display(), "The signing key file is readable by other users; chmod 600 it.");
    }
    LedgerKey::parse_private(&text)
        .with_context(|| format!("{} is not a changetrail signing key", path.display()))
}

/// Whether a key file with this mode and group is open to users other than its owner and root:
/// any access for others, or for a group other than root's. A root-group file (0440 root:root)
/// is how docker-compose.yml hands the key to the non-root service, which reads it through
/// `group_add: ["0"]`; the root group is root's alone on an ordinary system, so no warning.
fn exposed(mode: u32, gid: u32) -> bool {
    mode & 0o007 != 0 || (mode & 0o070 != 0 && gid != 0)
}

/// Writes a key to a new file with mode 0600 (never overwriting) and syncs it to disk.
pub fn write_new_key(path: &Path, key: &LedgerKey) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(key.to_private_text().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

pub fn generate(origin: Origin) -> anyhow::Result<LedgerKey> {
    Ok(LedgerKey::from_seed(origin, random_bytes())?)
}

/// A generated origin for a ledger whose configuration names none.
pub fn generated_origin() -> Origin {
    let tag: [u8; 4] = random_bytes();
    // "changetrail.local/<8 hex>" always parses.
    Origin::parse(&format!("changetrail.local/{}", hex::encode(tag)))
        .unwrap_or_else(|e| panic!("generated origin is invalid: {e}"))
}

/// After a committed rotation: keep the old key as `<file>.retired-<id>`, promote `<file>.next`.
pub fn finish_rotation(path: &Path, old: KeyId) -> anyhow::Result<PathBuf> {
    let mut retired = path.as_os_str().to_owned();
    retired.push(format!(".retired-{old}"));
    let retired = PathBuf::from(retired);
    std::fs::rename(path, &retired)
        .with_context(|| format!("cannot move the old key to {}", retired.display()))?;
    std::fs::rename(next_path(path), path)
        .with_context(|| format!("cannot move the new key to {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(retired)
}

/// Reads the key file again (or its `.next`, mid-rotation) for a key another process rotated to.
pub struct FileKeySource(pub PathBuf);

impl KeySource for FileKeySource {
    fn load(&self, wanted: KeyId) -> Result<LedgerKey, String> {
        for p in [self.0.clone(), next_path(&self.0)] {
            if let Ok(k) = read_key(&p)
                && k.key_id() == wanted
            {
                return Ok(k);
            }
        }
        Err(format!(
            "neither {} nor its .next file holds key {wanted}",
            self.0.display()
        ))
    }
}

pub struct LoadedKey {
    pub key: LedgerKey,
    pub source: Option<Box<dyn KeySource>>,
    pub generated: bool,
}

/// Finds the signing key for this ledger: inline, the key file (or its `.next` mid-rotation), or
/// — for a ledger that does not exist yet and when allowed — a freshly generated one.
pub fn load_signing_key(
    cfg: &LedgerConfig,
    existing: Option<&HeadRow>,
    allow_generate: bool,
) -> anyhow::Result<LoadedKey> {
    let wanted = existing.map(|h| h.head.key_id);
    let (key, source, generated) = if !cfg.signing_key.is_empty() {
        let key = LedgerKey::parse_private(cfg.signing_key.expose())
            .context("ledger.signing_key is not a changetrail signing key")?;
        (key, None, false)
    } else if cfg.key_file.exists() {
        let source = FileKeySource(cfg.key_file.clone());
        let key = match wanted {
            Some(w) => source.load(w).map_err(|e| {
                anyhow::anyhow!(
                    "the ledger is signed by key {w}, but {e}; provide the ledger's current key"
                )
            })?,
            None => read_key(&cfg.key_file)?,
        };
        (key, Some(Box::new(source) as Box<dyn KeySource>), false)
    } else if let Some(h) = existing {
        bail!(
            "the ledger {} exists and is signed by key {}, but the key file {} is missing; \
             restore it or set ledger.signing_key",
            h.head.origin,
            h.head.key_id,
            cfg.key_file.display()
        );
    } else if allow_generate {
        let origin = if cfg.origin.is_empty() {
            generated_origin()
        } else {
            Origin::parse(&cfg.origin)?
        };
        let key = generate(origin)?;
        write_new_key(&cfg.key_file, &key)?;
        tracing::warn!(
            path = %cfg.key_file.display(),
            vkey = %key.vkey(),
            "Generated a new signing key. Production deployments should provide their own key \
             (ledger.key_file or CHANGETRAIL_LEDGER__SIGNING_KEY) and back it up: without it the \
             ledger cannot be extended."
        );
        let source = FileKeySource(cfg.key_file.clone());
        (key, Some(Box::new(source) as Box<dyn KeySource>), true)
    } else {
        bail!(
            "no signing key: {} does not exist (run `changetrail keys generate` or `changetrail serve`)",
            cfg.key_file.display()
        );
    };
    if !cfg.origin.is_empty() && key.origin().as_str() != cfg.origin {
        bail!(
            "the signing key is for origin {}, but ledger.origin is {}",
            key.origin(),
            cfg.origin
        );
    }
    if let Some(h) = existing
        && &h.head.origin != key.origin()
    {
        bail!(
            "the database holds ledger {}, but the signing key is for {}",
            h.head.origin,
            key.origin()
        );
    }
    Ok(LoadedKey {
        key,
        source,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::exposed;

    #[test]
    fn a_key_open_to_others_or_to_another_group_is_exposed() {
        assert!(!exposed(0o100600, 1000), "owner only");
        assert!(!exposed(0o100400, 1000), "owner read only");
        assert!(!exposed(0o100440, 0), "root's group: the compose secret");
        assert!(exposed(0o100640, 1000), "another group");
        assert!(exposed(0o100604, 0), "others, even with root's group");
        assert!(exposed(0o100644, 1000), "everyone");
    }
}
