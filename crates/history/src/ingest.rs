//! [`Property::AckedVisibleOnce`]: every acknowledged record is durable, committed exactly once
//! (or dead-lettered when sent as poison), and visible exactly once.

use crate::error::{Error, Result};
use crate::reads::query_snapshot;
use crate::{AckedRecords, HistoryReport, Property, Violation};
use duckmesh_catalog::{Catalog, DatasetRecord};
use duckmesh_engine::sql::identifier;
use duckmesh_storage::ObjectStore;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// How many offending keys a violation lists.
const SHOWN: usize = 10;

pub(crate) async fn check(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    acked: &[AckedRecords],
    report: &mut HistoryReport,
) -> Result<()> {
    for records in acked {
        let dataset = catalog
            .dataset_by_name(&records.namespace, &records.dataset)
            .await
            .map_err(Error::catalog("reading an ingest dataset"))?;
        let keys: BTreeSet<&str> = records.dedupe_keys.iter().map(String::as_str).collect();
        let poison: BTreeSet<&str> = records.poison.iter().map(String::as_str).collect();
        report.checked.acked_records += keys.len();
        buffered(catalog, &dataset, &keys, &poison, report).await?;
        batches(catalog, &dataset, report).await?;
        if let Some(column) = &records.key_column {
            visible(catalog, store, &dataset, column, &keys, &poison, report).await?;
        }
    }
    Ok(())
}

/// The first [`SHOWN`] items (already quoted), and how many more there are.
fn shown<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut text = keys.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    text
}

/// Every acked key is in the buffer, and committed by a retained snapshot (or dead-lettered
/// when poison; a poison record that was committed is a violation too).
async fn buffered(
    catalog: &Catalog,
    dataset: &DatasetRecord,
    keys: &BTreeSet<&str>,
    poison: &BTreeSet<&str>,
    report: &mut HistoryReport,
) -> Result<()> {
    let wanted: Vec<&str> = keys.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT e.dedupe_key, e.seq, e.snapshot_id, e.dead_letter_id, \
                (s.id IS NOT NULL) AS snapshot_exists, (s.expired_at IS NULL) AS retained \
           FROM ingest_events e \
           LEFT JOIN snapshots s ON s.dataset_id = e.dataset_id AND s.id = e.snapshot_id \
          WHERE e.dataset_id = $1 AND e.dedupe_key = ANY ($2)",
    )
    .bind(dataset.id.0)
    .bind(&wanted)
    .fetch_all(catalog.pool())
    .await
    .map_err(Error::sql("reading acknowledged events"))?;
    let name = format!("{}/{}", dataset.namespace, dataset.name);
    let mut found = BTreeSet::new();
    let (mut pending, mut unexpected_dead, mut poison_visible, mut dangling) = (vec![], vec![], vec![], vec![]);
    for row in &rows {
        let key: String = row.try_get("dedupe_key").map_err(Error::sql("reading an event"))?;
        let snapshot: Option<i64> = row.try_get("snapshot_id").map_err(Error::sql("reading an event"))?;
        let dead: Option<i64> = row.try_get("dead_letter_id").map_err(Error::sql("reading an event"))?;
        let exists: bool = row.try_get("snapshot_exists").map_err(Error::sql("reading an event"))?;
        let is_poison = poison.contains(key.as_str());
        match (snapshot, dead) {
            (Some(id), _) if is_poison => poison_visible.push(format!("{key:?} (snapshot {id})")),
            (Some(id), _) if !exists => dangling.push(format!("{key:?} (snapshot {id})")),
            (Some(_), _) => {}
            (None, Some(_)) if is_poison => {}
            (None, Some(letter)) => unexpected_dead.push(format!("{key:?} (dead letter {letter})")),
            (None, None) => pending.push(key.clone()),
        }
        found.insert(key);
    }
    let lost: Vec<&str> = keys.iter().copied().filter(|key| !found.contains(*key)).collect();
    let mut flag = |what: &str, items: Vec<String>| {
        if !items.is_empty() {
            report.violations.push(Violation::new(
                Property::AckedVisibleOnce,
                format!(
                    "{name}: {} acknowledged records {what}: {}",
                    items.len(),
                    shown(items.iter().map(String::as_str))
                ),
            ));
        }
    };
    flag("are not in the ingest buffer (lost after the ack)", lost.iter().map(|key| format!("{key:?}")).collect());
    flag("were never committed", pending.iter().map(|key| format!("{key:?}")).collect());
    flag("were dead-lettered though not poison", unexpected_dead);
    flag("were sent as poison but committed", poison_visible);
    flag("name a snapshot the catalog does not hold", dangling);
    Ok(())
}

/// Every retained ingest snapshot added exactly the rows of the events it committed.
async fn batches(catalog: &Catalog, dataset: &DatasetRecord, report: &mut HistoryReport) -> Result<()> {
    let rows = sqlx::query(
        // One grouped pass over the files and the events each (a correlated count per
        // snapshot scanned every event once per snapshot: hours after a long chaos run).
        "SELECT s.id, coalesce(f.added, 0)::bigint AS added, coalesce(e.events, 0)::bigint AS events \
           FROM snapshots s \
           LEFT JOIN (SELECT added_in, sum(rows) AS added FROM files WHERE dataset_id = $1 GROUP BY added_in) f \
                  ON f.added_in = s.id \
           LEFT JOIN (SELECT snapshot_id, count(*) AS events FROM ingest_events \
                       WHERE dataset_id = $1 AND snapshot_id IS NOT NULL GROUP BY snapshot_id) e \
                  ON e.snapshot_id = s.id \
          WHERE s.dataset_id = $1 AND s.kind = 'ingest' AND s.expired_at IS NULL \
          ORDER BY s.id",
    )
    .bind(dataset.id.0)
    .fetch_all(catalog.pool())
    .await
    .map_err(Error::sql("reading ingest snapshots"))?;
    for row in rows {
        let id: i64 = row.try_get("id").map_err(Error::sql("reading an ingest snapshot"))?;
        let added: i64 = row.try_get("added").map_err(Error::sql("reading an ingest snapshot"))?;
        let events: i64 = row.try_get("events").map_err(Error::sql("reading an ingest snapshot"))?;
        if added != events {
            report.violations.push(Violation::new(
                Property::AckedVisibleOnce,
                format!(
                    "{}/{} snapshot {id}: the ingest commit added {added} rows for {events} committed events",
                    dataset.namespace, dataset.name
                ),
            ));
        }
    }
    Ok(())
}

/// Every acked key appears exactly once in the current snapshot's `column`; poison never.
async fn visible(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    column: &str,
    keys: &BTreeSet<&str>,
    poison: &BTreeSet<&str>,
    report: &mut HistoryReport,
) -> Result<()> {
    let name = format!("{}/{}", dataset.namespace, dataset.name);
    let Some(snapshot) = dataset.current_snapshot else {
        if !keys.is_empty() {
            report.violations.push(Violation::new(
                Property::AckedVisibleOnce,
                format!("{name} has no snapshot, yet {} records were acknowledged", keys.len()),
            ));
        }
        return Ok(());
    };
    let column_sql = identifier(column);
    let counts = query_snapshot(catalog, store, dataset, snapshot, move |relation| {
        format!("SELECT {column_sql}::VARCHAR, count(*)::VARCHAR FROM {relation} GROUP BY 1")
    })
    .await?;
    let counts = match counts {
        Ok(rows) => rows,
        Err(message) => {
            report.violations.push(Violation::new(
                Property::AckedVisibleOnce,
                format!("{name}@{snapshot} cannot be read to count keys: {message}"),
            ));
            return Ok(());
        }
    };
    let seen: BTreeMap<String, u64> = counts
        .into_iter()
        .filter_map(|row| {
            let mut values = row.into_iter();
            let key = values.next().flatten()?;
            let count = values.next().flatten()?.parse().ok()?;
            Some((key, count))
        })
        .collect();
    let (mut missing, mut duplicated, mut poison_seen) = (vec![], vec![], vec![]);
    for key in keys {
        let count = seen.get(*key).copied().unwrap_or(0);
        match (poison.contains(key), count) {
            (true, 0) | (false, 1) => {}
            (true, n) => poison_seen.push(format!("{key:?} ×{n}")),
            (false, 0) => missing.push(format!("{key:?}")),
            (false, n) => duplicated.push(format!("{key:?} ×{n}")),
        }
    }
    for (what, items) in [
        ("are not visible", missing),
        ("are visible more than once", duplicated),
        ("were sent as poison but are visible", poison_seen),
    ] {
        if !items.is_empty() {
            report.violations.push(Violation::new(
                Property::AckedVisibleOnce,
                format!(
                    "{name}@{snapshot}, key column {column:?}: {} acknowledged records {what}: {}",
                    items.len(),
                    shown(items.iter().map(String::as_str))
                ),
            ));
        }
    }
    Ok(())
}
