//! [`KeyStore`] on the SQLite store: writes go through its writer thread
//! ([`SqliteStore::write_with`], so they share its group commits), reads through its readers.

use rusqlite::{Connection, Row, params};

use super::{KEY_COLUMNS, KeyRow, KeyStore, NewKey, StoredKey, check_key_name, check_new_key, limit_to_i64};
use crate::StoreError;
use crate::sqlite::{SqliteStore, db_error};
use crate::store::StoreFuture;

const BACKEND: &str = "sqlite";

impl KeyStore for SqliteStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, StoredKey> {
        Box::pin(async move {
            let new = check_new_key(new)?;
            self.write_with(move |conn, now| insert(conn, new, now)).await
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(self.read(|conn| {
            select(
                conn,
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name, revoked_at IS NULL, id"),
            )
        }))
    }

    fn revoke_key<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key_name(name)?;
            let name = name.to_owned();
            self.write_with(move |conn, now| {
                conn.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL")
                    .and_then(|mut update| update.execute(params![name, now]))
                    .map(|changed| changed > 0)
                    .map_err(db_error)
            })
            .await
        })
    }

    fn active_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(self.read(|conn| {
            select(conn, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY name"))
        }))
    }
}

/// Inserts the key unless an active key has its name (checked first for the typed error; the
/// partial unique index backs it up against another process writing the file).
fn insert(conn: &Connection, new: NewKey, now: i64) -> Result<StoredKey, StoreError> {
    let taken = conn
        .prepare_cached("SELECT 1 FROM api_keys WHERE name = ?1 AND revoked_at IS NULL")
        .and_then(|mut select| select.exists([&new.name]))
        .map_err(db_error)?;
    if taken {
        return Err(StoreError::KeyExists { name: new.name });
    }
    let scopes = serde_json::to_string(&new.scopes)
        .map_err(|e| StoreError::InvalidInput(format!("scopes cannot be stored: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO api_keys (name, hash, prefix, scopes, requests_per_minute, tokens_per_minute, priority, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            new.name,
            &new.hash[..],
            new.prefix,
            scopes,
            limit_to_i64(new.requests_per_minute),
            limit_to_i64(new.tokens_per_minute),
            new.priority,
            now
        ])
    })
    .map_err(|error| match &error {
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::KeyExists { name: new.name.clone() }
        }
        _ => db_error(error),
    })?;
    Ok(new.into_stored(now))
}

/// A row read as it is stored (`scopes` still JSON text).
fn key_row(row: &Row<'_>) -> rusqlite::Result<(KeyRow, String)> {
    Ok((
        KeyRow {
            name: row.get(0)?,
            hash: row.get(1)?,
            prefix: row.get(2)?,
            scopes: Vec::new(),
            requests_per_minute: row.get(4)?,
            tokens_per_minute: row.get(5)?,
            priority: row.get(6)?,
            created_at: row.get(7)?,
            revoked_at: row.get(8)?,
        },
        row.get(3)?,
    ))
}

fn select(conn: &Connection, sql: &str) -> Result<Vec<StoredKey>, StoreError> {
    let rows = conn
        .prepare_cached(sql)
        .and_then(|mut select| select.query_map([], key_row)?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_error)?;
    rows.into_iter()
        .map(|(mut row, scopes)| {
            row.scopes = serde_json::from_str(&scopes).map_err(|e| StoreError::Corrupt {
                backend: BACKEND,
                message: format!("API key '{}' has bad scopes {scopes:?}: {e}", row.name),
            })?;
            row.into_key(BACKEND)
        })
        .collect()
}
