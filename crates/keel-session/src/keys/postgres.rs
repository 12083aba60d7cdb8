//! [`KeyStore`] on the PostgreSQL store: one statement per call on its pool.

use deadpool_postgres::GenericClient as _;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{KEY_COLUMNS, KeyRow, KeyStore, NewKey, StoredKey, check_key_name, check_new_key, limit_to_i64};
use crate::StoreError;
use crate::postgres::{PostgresStore, column_error, db_error, execute, query};
use crate::store::{StoreFuture, now_millis};

const BACKEND: &str = "postgres";

impl KeyStore for PostgresStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, StoredKey> {
        Box::pin(async move {
            let new = check_new_key(new)?;
            let client = self.client().await?;
            let now = now_millis();
            // The partial unique index decides, atomically across keel instances.
            let statement = client
                .prepare_cached(
                    "INSERT INTO api_keys
                       (name, hash, prefix, scopes, requests_per_minute, tokens_per_minute, priority, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING",
                )
                .await
                .map_err(db_error)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &new.name,
                        &&new.hash[..],
                        &new.prefix,
                        &new.scopes,
                        &limit_to_i64(new.requests_per_minute),
                        &limit_to_i64(new.tokens_per_minute),
                        &new.priority,
                        &now,
                    ],
                )
                .await
                .map_err(|error| {
                    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        StoreError::KeyExists { name: new.name.clone() }
                    } else {
                        db_error(error)
                    }
                })?;
            if inserted == 0 {
                return Err(StoreError::KeyExists { name: new.name });
            }
            Ok(new.into_stored(now))
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name, revoked_at IS NULL, id"),
                &[],
            )
            .await?;
            rows.iter().map(key_row).collect()
        })
    }

    fn revoke_key<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key_name(name)?;
            let client = self.client().await?;
            let revoked = execute(
                &client,
                "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &now_millis()],
            )
            .await?;
            Ok(revoked > 0)
        })
    }

    fn active_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = query(
                &client,
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY name"),
                &[],
            )
            .await?;
            rows.iter().map(key_row).collect()
        })
    }
}

fn key_row(row: &Row) -> Result<StoredKey, StoreError> {
    KeyRow {
        name: row.try_get(0).map_err(column_error)?,
        hash: row.try_get(1).map_err(column_error)?,
        prefix: row.try_get(2).map_err(column_error)?,
        scopes: row.try_get(3).map_err(column_error)?,
        requests_per_minute: row.try_get(4).map_err(column_error)?,
        tokens_per_minute: row.try_get(5).map_err(column_error)?,
        priority: row.try_get(6).map_err(column_error)?,
        created_at: row.try_get(7).map_err(column_error)?,
        revoked_at: row.try_get(8).map_err(column_error)?,
    }
    .into_key(BACKEND)
}
