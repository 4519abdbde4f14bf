//! The ingest body parser and record validator (`POST /v1/ingest/{dataset}`) on arbitrary
//! bodies against a fixed schema covering every kind of column: never panics; an accepted batch
//! holds at most the record limit, each with a 1–512 byte key and an object payload without the
//! explicit key field.
#![no_main]

use duckmesh_contracts::Column;
use duckmesh_contracts::ingest::{KEY_FIELD, check_value, parse_body, prepare};
use libfuzzer_sys::fuzz_target;

const MAX_RECORDS: usize = 64;

const SCHEMA: &[(&str, &str)] = &[
    ("id", "BIGINT"),
    ("small", "tinyint"),
    ("unsigned", "UBIGINT"),
    ("huge", "HUGEINT"),
    ("amount", "DECIMAL(12,2)"),
    ("ratio", "double"),
    ("ok", "BOOLEAN"),
    ("name", "text"),
    ("day", "DATE"),
    ("at", "TIMESTAMP WITH TIME ZONE"),
    ("tags", "VARCHAR[]"),
    ("grid", "INTEGER[][]"),
    ("point", "STRUCT(x DOUBLE, y DOUBLE)"),
    ("attributes", "MAP(VARCHAR, INTEGER)"),
    ("nested", "STRUCT(a INTEGER[], b STRUCT(c VARCHAR))"),
    ("doc", "JSON"),
    ("mood", "ENUM('a', 'b')"),
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the dedupe column: none (explicit keys only) or one of the columns.
    let Some((&choice, body)) = data.split_first() else { return };
    let schema: Vec<Column> = SCHEMA
        .iter()
        .map(|(name, data_type)| Column { name: (*name).into(), data_type: (*data_type).into() })
        .collect();
    let dedupe = match usize::from(choice) % (SCHEMA.len() + 1) {
        0 => None,
        n => Some(SCHEMA[n - 1].0),
    };
    let Ok(records) = parse_body(body, MAX_RECORDS) else { return };
    assert!(!records.is_empty() && records.len() <= MAX_RECORDS);
    for record in &records {
        for (field, value) in record {
            for (_, data_type) in SCHEMA {
                let _ = check_value(data_type, value);
            }
            let _ = check_value(field, value);
        }
    }
    let count = records.len();
    if let Ok(prepared) = prepare(records, &schema, dedupe) {
        assert_eq!(prepared.len(), count);
        for record in prepared {
            assert!(!record.key.is_empty() && record.key.len() <= 512, "key {:?}", record.key);
            let payload = record.payload.as_object().expect("an object payload");
            assert!(!payload.contains_key(KEY_FIELD));
        }
    }
});
