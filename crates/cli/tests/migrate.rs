//! `duckmesh migrate` as a user runs it: the real binary against a real PostgreSQL.

use duckmesh_testkit::{BoxError, TestDatabase, with_database};
use sqlx::Connection;
use std::process::{Command, Output};

fn duckmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(args)
        .env_remove("DUCKMESH_DATABASE_URL")
        .output()
        .expect("duckmesh runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn migrate_brings_an_empty_database_up_to_date_and_check_reports_it() -> Result<(), BoxError> {
    // A brand-new, never-migrated database next to the test's own.
    let db = TestDatabase::new().await?;
    let empty = format!("duckmesh_cli_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&with_database(db.url(), "postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {empty}")).execute(&mut admin).await?;
    sqlx::query(&format!("CREATE DATABASE {empty}")).execute(&mut admin).await?;
    let url = with_database(db.url(), &empty);

    let check = duckmesh(&["migrate", "--check", "--database-url", &url]);
    assert_eq!(check.status.code(), Some(3), "pending migrations exit 3: {}", text(&check));
    let known = duckmesh_catalog::Catalog::known_migrations().len();
    assert!(text(&check).contains(&format!("0 applied, {known} pending")), "{}", text(&check));

    let migrate = duckmesh(&["migrate", "--database-url", &url]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    assert!(text(&migrate).contains("catalog schema is up to date"), "{}", text(&migrate));

    let again = duckmesh(&["migrate", "--check", "--database-url", &url]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("0 pending"), "{}", text(&again));

    sqlx::query(&format!("DROP DATABASE {empty} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_credentials() {
    let output = duckmesh(&["migrate", "--database-url", "postgres://admin:hunter2@127.0.0.1:9/catalog"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(message.contains("cannot reach the catalog database at 127.0.0.1:9/catalog"), "{message}");
    assert!(!message.contains("hunter2"), "credentials leaked: {message}");
}

#[test]
fn invalid_configuration_names_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(["migrate", "--database-url", "postgres://127.0.0.1:9/x"])
        .env("DUCKMESH_TASK_LEASE_SECONDS", "forever")
        .output()
        .expect("duckmesh runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("invalid DUCKMESH_TASK_LEASE_SECONDS=\"forever\""), "{}", text(&output));
}

#[test]
fn help_describes_every_subcommand() {
    let output = duckmesh(&["--help"]);
    assert!(output.status.success());
    let help = text(&output);
    assert!(help.contains("migrate") && help.contains("Apply the catalog's schema migrations"), "{help}");
}

#[test]
fn crds_prints_the_committed_definitions() {
    let output = duckmesh(&["crds"]);
    assert!(output.status.success(), "{}", text(&output));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/duckmesh.io.yaml"))
        .expect("crds/duckmesh.io.yaml");
    assert_eq!(String::from_utf8_lossy(&output.stdout), committed);
}
