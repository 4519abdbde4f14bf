//! The restored-catalog validator against a real PostgreSQL catalog and a real S3 server
//! (moto): data committed by the real worker is consistent, objects the catalog does not know
//! are reported as lost after the restore point (not as damage); then a catalog damaged on
//! purpose — a file gone from the bucket, a dataset head on the wrong snapshot, visibility
//! tokens out of order, a file row lost — has each damage reported with the offending rows.

#![allow(missing_docs)]

mod common;

use bytes::Bytes;
use common::Harness;
use duckmesh_catalog::ProblemKind;
use duckmesh_maintenance::{IntegrityOptions, ViolationKind, validate_restored_catalog};
use std::time::Duration;

#[tokio::test]
async fn a_restored_catalog_is_consistent_and_every_kind_of_damage_is_reported() {
    let harness = Harness::new().await;
    let trips = harness.dataset("trips").await;
    let zones = harness.dataset("zones").await;
    for (index, name) in ["trips-a", "trips-b", "trips-c"].iter().enumerate() {
        harness.commit(&trips, name, &format!("SELECT i + {index} * 1000 AS id FROM range(200) t(i)")).await;
    }
    harness.commit(&zones, "zones-a", "SELECT 1 AS zone").await;
    let options = IntegrityOptions { orphan_grace: Duration::ZERO, ..IntegrityOptions::default() };
    let store = harness.store.as_ref();

    // As committed, and with an object committed "after the restore point" the catalog never saw.
    let late = "trips/attempts/424242/1/part-00000.parquet";
    harness.store.put(late, Bytes::from_static(b"committed later")).await.expect("put");
    let report = validate_restored_catalog(&harness.catalog, store, &options).await.expect("validate");
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.datasets.len(), 2);
    assert_eq!((report.snapshot_count(), report.lost_count()), (4, 1), "{report:#?}");
    let trips_report = &report.datasets[0];
    assert_eq!((trips_report.name.as_str(), trips_report.head.map(|id| id.0)), ("trips", Some(3)));
    assert_eq!(trips_report.lost_after_restore_point[0].path, late);
    assert!(report.newest_commit().is_some());

    // Damage: a file gone from the bucket, the head one snapshot back, snapshot 2's token
    // above snapshot 3's, and zones' only file row deleted.
    let files = harness.catalog.retained_files(trips.id).await.expect("files");
    let deleted = files.iter().find(|file| file.added_in.0 == 1).expect("file of snapshot 1").path.clone();
    harness.store.delete(&deleted).await.expect("delete");
    let pool = harness.catalog.pool();
    sqlx::query("UPDATE datasets SET current_snapshot_id = 2 WHERE id = $1")
        .bind(trips.id.0)
        .execute(pool)
        .await
        .expect("move the head");
    sqlx::query("UPDATE snapshots SET visibility_token = 9 WHERE dataset_id = $1 AND id = 2")
        .bind(trips.id.0)
        .execute(pool)
        .await
        .expect("reorder tokens");
    sqlx::query("DELETE FROM files WHERE dataset_id = $1").bind(zones.id.0).execute(pool).await.expect("lose a row");

    let report = validate_restored_catalog(&harness.catalog, store, &options).await.expect("validate");
    assert!(!report.is_consistent());
    let found: Vec<(&str, ViolationKind)> = report
        .datasets
        .iter()
        .flat_map(|dataset| dataset.violations.iter().map(|violation| (dataset.name.as_str(), violation.kind)))
        .collect();
    assert_eq!(
        found,
        [
            ("trips", ViolationKind::SnapshotOrder),
            ("trips", ViolationKind::HeadMismatch),
            ("trips", ViolationKind::FileFromNewerSnapshot),
            ("trips", ViolationKind::Bucket(ProblemKind::MissingFile)),
            ("zones", ViolationKind::SnapshotCounts),
            ("zones", ViolationKind::Bucket(ProblemKind::Manifest)),
        ],
        "{report:#?}"
    );
    let details: Vec<&str> =
        report.datasets.iter().flat_map(|d| d.violations.iter().map(|v| v.detail.as_str())).collect();
    assert!(details[0].contains("snapshot 3 (token 3) follows snapshot 2 (token 9)"), "{details:#?}");
    assert!(details[1].contains("head (snapshot 2") && details[1].contains("newest snapshot 3"), "{details:#?}");
    let third = files.iter().find(|file| file.added_in.0 == 3).expect("file of snapshot 3");
    assert!(details[2].contains(&third.path), "{details:#?}");
    assert!(details[3].starts_with(&deleted), "{details:#?}");
    assert!(
        details[4].contains("snapshot 1 says files=1") && details[4].contains("hold files=0 rows=0"),
        "{details:#?}"
    );
    assert_eq!(report.violation_count(), 6);
}
