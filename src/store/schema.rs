//! Opening a database either brings its schema up to this signoff's
//! ([`Schema::Migrate`]: `serve`, `migrate` and every command that writes) or takes it
//! as found ([`Schema::AsFound`]: the commands that only inspect it, `audit verify`,
//! `audit export` and `list`), so that inspecting a database never changes it. One
//! whose migrations are not exactly this signoff's is then refused, saying which
//! signoff to inspect it with.

use sqlx::migrate::{MigrateError, Migrator};

use super::{Result, StoreError};

/// What opening a database does to its schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Schema {
    /// Applies this signoff's pending migrations.
    #[default]
    Migrate,
    /// Changes nothing; refuses a schema that is not this signoff's.
    AsFound,
}

/// The migrations a database records, in order: version, checksum, and whether it
/// was applied whole.
pub(crate) const APPLIED: &str =
    "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";

/// A row of [`APPLIED`].
pub(crate) type Applied = (i64, Vec<u8>, bool);

/// Whether a database whose migrations are `applied` (`None`: it has no record of
/// any) has exactly `migrator`'s schema; if not, why, and what to do.
pub(crate) fn check(applied: Option<Vec<Applied>>, migrator: &Migrator) -> Result<()> {
    let refused = |why: String| Err(StoreError::Invalid(why));
    let Some(applied) = applied else {
        return refused(
            "it has no signoff schema (no migrations were applied to it): check DATABASE_URL"
                .into(),
        );
    };
    let ours: Vec<_> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    for (version, checksum, whole) in &applied {
        match ours.iter().find(|m| m.version == *version) {
            None => {
                return refused(format!(
                    "a newer signoff migrated it (migration {version} is not this version's): \
                     inspect it with that signoff"
                ));
            }
            Some(_) if !whole => {
                return refused(format!(
                    "its migration {version} failed part-way: `signoff migrate` says why"
                ));
            }
            Some(ours) if ours.checksum.as_ref() != checksum.as_slice() => {
                return refused(format!(
                    "its migration {version} is not this signoff's: inspect it with the \
                     signoff that migrated it"
                ));
            }
            Some(_) => {}
        }
    }
    if applied.len() < ours.len() {
        return refused(format!(
            "its schema is older than this signoff's ({} of {} migrations applied), and \
             inspecting it changes nothing: use the signoff that wrote it, or run \
             `signoff migrate` first",
            applied.len(),
            ours.len()
        ));
    }
    Ok(())
}

/// What applying this signoff's migrations came to: a database that a newer signoff
/// migrated (sqlx: a migration "previously applied but missing") is refused saying
/// so, and which signoff to run; this one would write it by a schema it does not know.
pub(crate) fn migrated(result: std::result::Result<(), MigrateError>) -> Result<()> {
    match result {
        Err(MigrateError::VersionMissing(version)) => Err(StoreError::Invalid(format!(
            "a newer signoff migrated it (migration {version} is not this version's): run \
             that signoff or a newer one (the replicas sharing a database run one version, \
             see docs/operations.md)"
        ))),
        other => other.map_err(Into::into),
    }
}

/// [`APPLIED`]'s rows, or `None` when the database has no such table (a database
/// error; a connection's error is passed on).
pub(crate) fn applied_or_none(
    rows: std::result::Result<Vec<Applied>, sqlx::Error>,
) -> Result<Option<Vec<Applied>>> {
    match rows {
        Ok(rows) => Ok(Some(rows)),
        Err(sqlx::Error::Database(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

    fn all() -> Vec<Applied> {
        MIGRATOR
            .iter()
            .map(|m| (m.version, m.checksum.to_vec(), true))
            .collect()
    }

    fn refusal(applied: Option<Vec<Applied>>) -> String {
        match check(applied, &MIGRATOR) {
            Err(StoreError::Invalid(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn only_exactly_this_signoffs_migrations_are_taken_as_found() {
        assert!(check(Some(all()), &MIGRATOR).is_ok());
        assert!(refusal(None).contains("no signoff schema"));

        let mut older = all();
        older.pop();
        let why = refusal(Some(older));
        assert!(why.contains("older than this signoff's"), "{why}");

        let mut newer = all();
        newer.push((newer.last().unwrap().0 + 1, vec![0; 48], true));
        assert!(refusal(Some(newer)).contains("a newer signoff migrated it"));

        let mut altered = all();
        altered[0].1[0] ^= 1;
        assert!(refusal(Some(altered)).contains("is not this signoff's"));

        let mut failed = all();
        failed.last_mut().unwrap().2 = false;
        assert!(refusal(Some(failed)).contains("failed part-way"));
    }
}
