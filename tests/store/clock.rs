//! The database's clock against this host's: replicas judge leases and expiries by
//! their own clocks, and `serve` warns when its host's is far from PostgreSQL's.

use chrono::Utc;
use signoff::clock::{Clock, ManualClock, SystemClock};

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(the_offset_to_the_databases_clock_is_measured_on_postgres_only);

/// Against a clock two weeks behind, the database is two weeks ahead; against this
/// host's, which the database shares, about even. SQLite has no clock of its own.
async fn the_offset_to_the_databases_clock_is_measured_on_postgres_only(db: TestDb) {
    let (store, behind) = open(&db).await;
    let offset = store.clock_offset(&behind).await.unwrap();
    if db.backend == "sqlite" {
        assert_eq!(offset, None);
        return;
    }
    let offset = offset.expect("measured on PostgreSQL");
    let expected = Utc::now() - behind.now();
    let error = (offset - expected).abs();
    assert!(
        error < chrono::Duration::seconds(5),
        "{offset} against a clock {expected} behind"
    );
    let even = store.clock_offset(&SystemClock).await.unwrap().unwrap();
    let lease = signoff::jobs::LEASE;
    assert!(
        even.abs() < signoff::cli::clock_offset_warning(lease),
        "{even}"
    );
    // A clock ahead of the database's reads as the database behind.
    let ahead = ManualClock::new(Utc::now() + chrono::Duration::hours(1));
    let offset = store.clock_offset(&ahead).await.unwrap().unwrap();
    assert!(offset < -chrono::Duration::minutes(59), "{offset}");
}

/// `serve` warns past a twentieth of the lease (each replica's offset from the
/// database's clock, of the tenth two replicas may differ by), 2 s at most.
#[test]
fn the_warning_threshold_follows_the_lease() {
    use signoff::cli::clock_offset_warning;
    let secs = std::time::Duration::from_secs;
    assert_eq!(clock_offset_warning(secs(60)), chrono::Duration::seconds(2));
    assert_eq!(
        clock_offset_warning(secs(10)),
        chrono::Duration::milliseconds(500)
    );
}
