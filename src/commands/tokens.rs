use crate::auth::{self, Role};
use crate::cli::TokensCommand;
use crate::config::Config;
use crate::pipeline::now_ns;
use crate::storage::Store;
use crate::util::rfc3339;

pub async fn run(cfg: Config, cmd: TokensCommand) -> anyhow::Result<i32> {
    let store = Store::connect(&cfg.database_url, &cfg.storage_options()).await?;
    store.migrate().await?;
    match cmd {
        TokensCommand::Create { role, name } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let (row, token) = auth::issue(&name, role, now_ns());
            store.insert_token(&row).await?;
            eprintln!(
                "Created {role} token {} ({name}). It is shown once:",
                row.id
            );
            println!("{token}");
        }
        TokensCommand::List => {
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
        }
        TokensCommand::Revoke { id } => {
            if store.revoke_token(&id, now_ns()).await? {
                eprintln!("Revoked token {id}.");
            } else {
                anyhow::bail!("no active token with id {id}");
            }
        }
    }
    Ok(0)
}
