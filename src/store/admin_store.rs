//! What operators read from the store: keys by state, a key's history, the audit trail. (An
//! operator's settle is a key transition, in `sql_store.rs`.)

use super::admin_rows::*;
use super::backend::Arg::{Int, Text};
use super::backend::Backend;
use super::rows::{Key, KeyState};
use super::sql as s;
use super::sql_store::{SqlStore, decode_state, key_args};
use super::traits::{OperatorStore, StoreError, StoreFuture};

/// A key that filters nothing, where a statement takes one (first page, no key filter).
fn placeholder() -> Key {
    Key {
        caller: String::new(),
        method: super::rows::KEY_METHODS[0],
        request_id: String::new(),
    }
}

fn read_key<DB: Backend>(r: &DB::Row) -> Result<KeyView, StoreError> {
    let method = DB::text(r, 1)?;
    let key = Key {
        caller: DB::text(r, 0)?,
        method: Key::method_named(&method)
            .ok_or_else(|| StoreError::Decode(format!("unknown key method {method:?}")))?,
        request_id: DB::text(r, 2)?,
    };
    Ok(KeyView {
        key,
        state: decode_state(&DB::text(r, 3)?)?,
        attempts: DB::int(r, 4)?,
        created_at: DB::int(r, 5)?,
        updated_at: DB::int(r, 6)?,
        account: DB::text(r, 7)?,
        payment_id: DB::opt_text(r, 8)?,
        refund_id: DB::opt_text(r, 9)?,
        last_failure: DB::opt_text(r, 10)?,
        lease_live: DB::int(r, 11)? != 0,
        blocks_payment: DB::int(r, 12)? != 0,
        outcome: DB::opt_text(r, 13)?,
    })
}

impl<DB: Backend> OperatorStore for SqlStore<DB> {
    fn list_keys<'a>(&'a self, f: &'a KeyFilter) -> StoreFuture<'a, Vec<KeyView>> {
        Box::pin(async move {
            let states = if f.states.is_empty() {
                KeyState::ALL.to_vec()
            } else {
                f.states.clone()
            };
            let open = !states.contains(&KeyState::Done);
            let states = format!(
                ",{},",
                states
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let first = (i64::MAX, placeholder());
            let (at, after) = f
                .after
                .as_ref()
                .map_or((first.0, &first.1), |(a, k)| (*a, k));
            let args = [
                Text(&states),
                Text(f.account.as_deref().unwrap_or_default()),
                Text(f.payment_id.as_deref().unwrap_or_default()),
                Int(f.min_age_ms),
                Int(at),
                Text(&after.caller),
                Text(after.method),
                Text(&after.request_id),
                Int(f.limit),
            ];
            let sql = if open {
                s::LIST_OPEN_KEYS
            } else {
                s::LIST_KEYS
            };
            let rows = DB::fetch_all_pooled(&self.pool, sql, &args).await?;
            rows.iter().map(read_key::<DB>).collect()
        })
    }

    fn key_view<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Option<KeyView>> {
        Box::pin(async move {
            let row =
                DB::fetch_optional_pooled(&self.pool, s::KEY_VIEW, &key_args(key, &[])).await?;
            row.as_ref().map(read_key::<DB>).transpose()
        })
    }

    fn key_history<'a>(&'a self, key: &'a Key) -> StoreFuture<'a, Vec<HistoryEntry>> {
        Box::pin(async move {
            let rows =
                DB::fetch_all_pooled(&self.pool, s::KEY_HISTORY, &key_args(key, &[])).await?;
            let read = |r: &DB::Row| {
                Ok::<_, sqlx::Error>(HistoryEntry {
                    at: DB::int(r, 0)?,
                    attempt: DB::int(r, 1)?,
                    kind: DB::text(r, 2)?,
                    detail: DB::text(r, 3)?,
                })
            };
            Ok(rows.iter().map(read).collect::<Result<_, _>>()?)
        })
    }

    fn audit_entries<'a>(&'a self, f: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditRow>> {
        Box::pin(async move {
            let none = placeholder();
            let key = f.key.as_ref().unwrap_or(&none);
            let (at, id) = f
                .after
                .as_ref()
                .map_or((i64::MIN, ""), |(a, i)| (*a, i.as_str()));
            let args = [
                Int(i64::from(f.key.is_some())),
                Text(&key.caller),
                Text(key.method),
                Text(&key.request_id),
                Int(at),
                Text(id),
                Int(f.limit),
            ];
            let rows = DB::fetch_all_pooled(&self.pool, s::LIST_AUDIT, &args).await?;
            let read = |r: &DB::Row| -> Result<AuditRow, StoreError> {
                let method = DB::text(r, 6)?;
                Ok(AuditRow {
                    audit_id: DB::text(r, 0)?,
                    at: DB::int(r, 1)?,
                    actor: DB::text(r, 2)?,
                    action: DB::text(r, 3)?,
                    account: DB::text(r, 4)?,
                    key: Key {
                        caller: DB::text(r, 5)?,
                        method: Key::method_named(&method).ok_or_else(|| {
                            StoreError::Decode(format!("unknown key method {method:?}"))
                        })?,
                        request_id: DB::text(r, 7)?,
                    },
                    reason: DB::text(r, 8)?,
                    state_before: DB::text(r, 9)?,
                    state_after: DB::text(r, 10)?,
                    outcome: DB::text(r, 11)?,
                    refund_id: DB::opt_text(r, 12)?,
                })
            };
            rows.iter().map(read).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(MAX_DETAIL_CHARS + 10);
        let cut = bounded_detail(&long);
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_detail("short"), "short");
    }
}
