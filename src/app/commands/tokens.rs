use crate::app::cli::TokensCommand;
use crate::app::config::Config;
use crate::auth::{self, Registration, Role};
use crate::core::time::rfc3339;
use crate::pipeline::{AppendError, LedgerWriter};
use crate::storage::Store;
use crate::sys::now_ns;
use anyhow::{Context, bail};
use std::io::Read;
use std::path::Path;

/// A token file larger than this is not a token file (and is not read to the end).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

pub async fn run(cfg: Config, cmd: TokensCommand) -> anyhow::Result<i32> {
    // Generating touches no database: it serves secret stores and compose files that must know
    // a token before any changetrail runs.
    if let TokensCommand::Generate = cmd {
        println!("{}", auth::generate());
        eprintln!(
            "A new token, registered nowhere yet: keep it secret and register it with \
             `changetrail tokens create --role R --name N --token-file FILE`."
        );
        return Ok(0);
    }
    // Listing reads; creating and revoking append to the ledger (each token change is an entry),
    // so those need the signing key, as `keys rotate` does.
    if let TokensCommand::List = cmd {
        let store = Store::connect(&cfg.database_url, &cfg.storage_options()).await?;
        store.migrate().await?;
        list(&store).await?;
        return Ok(0);
    }
    // Creating a token is the first write of a ledger registered before any server ran (a
    // deployment's init job): it may create the ledger, with the configured key or a generated
    // one, as `serve` would.
    let create = matches!(cmd, TokensCommand::Create { .. });
    let (store, writer) = crate::app::startup::open_ledger(&cfg, create).await?;
    let by = format!("changetrail tokens (run by {})", operator());
    match cmd {
        TokensCommand::Create {
            role,
            name,
            token_file,
            token_env,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let given = match (token_file, token_env) {
                (Some(path), _) => Some((read_token_file(&path)?, path.display().to_string())),
                (None, Some(var)) => Some((read_token_env(&var)?, format!("${var}"))),
                (None, None) => None,
            };
            match given {
                Some((text, from)) => {
                    register(&store, &writer, &by, &text, &from, &name, role).await?
                }
                None => {
                    let (row, token) = auth::issue(&name, role, now_ns());
                    writer.create_token(&row, &by).await?;
                    eprintln!(
                        "Created {role} token {} ({name}). It is shown once:",
                        row.id
                    );
                    println!("{token}");
                }
            }
        }
        // Handled above, with no writer.
        TokensCommand::List => {}
        TokensCommand::Revoke { id } => match writer.revoke_token(&id, &by).await {
            Ok(_) => eprintln!("Revoked token {id}."),
            Err(AppendError::NoActiveToken(_)) => anyhow::bail!("no active token with id {id}"),
            Err(e) => return Err(e.into()),
        },
        // Handled above, without a database.
        TokensCommand::Generate => {}
    }
    Ok(0)
}

async fn list(store: &Store) -> anyhow::Result<()> {
    println!(
        "{:<14} {:<9} {:<21} {:<21} name",
        "id", "role", "created", "revoked"
    );
    for t in store.tokens().await? {
        println!(
            "{:<14} {:<9} {:<21} {:<21} {}",
            t.id,
            t.role,
            rfc3339(t.created_ns),
            t.revoked_ns.map_or("-".into(), rfc3339),
            t.name
        );
    }
    Ok(())
}

/// Who ran this command, as token entries record it.
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "an unknown user".into())
}

/// Registers a token given from outside, as `issue` would store a new one. Messages name the
/// token by its id and where it came from, never by its secret.
async fn register(
    store: &Store,
    writer: &LedgerWriter,
    by: &str,
    text: &str,
    from: &str,
    name: &str,
    role: Role,
) -> anyhow::Result<()> {
    let row = auth::registered_row(text, name, role, now_ns())
        .map_err(|e| anyhow::anyhow!("{from} does not hold a usable changetrail token: {e}"))?;
    let existing = store.token(&row.id).await?;
    let outcome = match auth::registration(existing.as_ref(), &row) {
        Registration::New => match writer.create_token(&row, by).await {
            Ok(_) => {
                eprintln!("Registered {role} token {} ({name}) from {from}.", row.id);
                return Ok(());
            }
            // Two init jobs racing: the loser finds the winner's row, which may be this token.
            Err(e) => {
                let again = store.token(&row.id).await?;
                match auth::registration(again.as_ref(), &row) {
                    Registration::New => return Err(e.into()),
                    other => other,
                }
            }
        },
        other => other,
    };
    match outcome {
        Registration::AlreadyRegistered => {
            eprintln!(
                "Token {} ({role}, {name}) from {from} is already registered; nothing to do.",
                row.id
            );
            Ok(())
        }
        Registration::Conflict(differs) => bail!(
            "token {} from {from} is already registered, but {}: refusing to change it (a new \
             token from `changetrail tokens generate` gets a new id; revoke this one if it is \
             still active)",
            row.id,
            differs.join(", ")
        ),
        // Both arms above return before a `New` gets here.
        Registration::New => bail!("token {} was neither registered nor found", row.id),
    }
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| {
            format!(
                "cannot read the token file {} (is it text?)",
                path.display()
            )
        })?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        bail!(
            "{} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token file",
            path.display()
        );
    }
    Ok(text)
}

fn read_token_env(var: &str) -> anyhow::Result<String> {
    match std::env::var(var) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => bail!("the environment variable {var} is not set"),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("the environment variable {var} is not valid UTF-8")
        }
    }
}
