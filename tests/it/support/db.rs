//! SQL behind the server's back, as an attacker with database access (or an earlier version)
//! would run it, and draft entries for the writer.

use crate::support::server::TestDb;
use changetrail::core::ledger::batch::Draft;
use changetrail::storage::Store;
use std::time::Duration;

/// An ordinary entry about change `CHG-{i}`.
pub fn draft(i: u64) -> Draft {
    Draft::of(
        "change.requested",
        &format!("CHG-{i}"),
        &serde_json::json!({ "change": format!("CHG-{i}"), "requester": "alice@example.com", "n": i }),
    )
    .unwrap()
}

/// Runs `sql` on either backend.
pub async fn exec(store: &Store, sql: &str) -> Result<(), sqlx::Error> {
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    match store {
        Store::Sqlite(p) => sqlx::query(q).execute(p).await.map(|_| ()),
        Store::Postgres(p) => sqlx::query(q).execute(p).await.map(|_| ()),
    }
}

/// Lets `table` be changed: its triggers (the append-only guards) disabled or dropped.
pub async fn disable_triggers(store: &Store, table: &str) {
    match store {
        Store::Postgres(_) => exec(store, &format!("ALTER TABLE {table} DISABLE TRIGGER ALL"))
            .await
            .unwrap(),
        Store::Sqlite(_) => {
            let names: Vec<(String,)> = match store {
                Store::Sqlite(p) => sqlx::query_as(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = $1",
                )
                .bind(table)
                .fetch_all(p)
                .await
                .unwrap(),
                Store::Postgres(_) => unreachable!(),
            };
            for (n,) in names {
                exec(store, &format!("DROP TRIGGER {n}")).await.unwrap();
            }
        }
    }
}

/// Changes one value in place: the middle byte of a blob, one character of text, +1 of a number.
pub async fn flip(store: &Store, table: &str, column: &str, filter: &str) {
    let select = format!("SELECT {column} FROM {table} WHERE {filter}");
    let set = format!("UPDATE {table} SET {column} = $1 WHERE {filter}");
    macro_rules! flip_on {
        ($p:expr) => {{
            let p = $p;
            let row = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                .fetch_one(p)
                .await
                .unwrap();
            use sqlx::Row;
            // Integers first, then text, then blobs: SQLite would also read text as bytes.
            if let Ok(n) = row.try_get::<i64, _>(0) {
                sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                    .bind(n + 1)
                    .execute(p)
                    .await
                    .unwrap();
            } else if let Ok(t) = row.try_get::<String, _>(0) {
                let mut chars: Vec<char> = t.chars().collect();
                let mid = chars.len() / 2;
                chars[mid] = if chars[mid] == 'x' { 'y' } else { 'x' };
                let t: String = chars.into_iter().collect();
                sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                    .bind(t)
                    .execute(p)
                    .await
                    .unwrap();
            } else {
                let mut b: Vec<u8> = row.try_get(0).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x01;
                sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                    .bind(b)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }};
    }
    match store {
        Store::Sqlite(p) => flip_on!(p),
        Store::Postgres(p) => flip_on!(p),
    }
}

/// Holds the database's write lock from another connection for `hold`, like a stuck writer.
pub async fn hold_write_lock(db: &TestDb, hold: Duration) -> tokio::task::JoinHandle<()> {
    let store = Store::connect(&db.url, &Default::default()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut t = store.begin_append().await.unwrap();
        t.lock_head().await.unwrap();
        let _ = tx.send(());
        tokio::time::sleep(hold).await;
        drop(t);
        store.close().await;
    });
    rx.await.unwrap();
    handle
}
