//! Test helpers shared by the store's unit tests: an in-memory database with the original table
//! and every migration, and SQLite's query plan for a statement, so that tests can check which
//! index a query searches.

use rusqlite::Connection;

use crate::store::schema;

/// A fresh database with the original table and every migration.
pub(crate) fn migrated() -> Connection {
    let mut conn = Connection::open_in_memory().expect("an in-memory database opens");
    conn.execute_batch(schema::BASE_DDL)
        .expect("the original DDL runs");
    schema::migrate(&mut conn, false).expect("the migrations run");
    conn
}

/// SQLite's plan for `sql`, one step a line. The parameters are left unbound (NULL): the plan
/// does not depend on their values.
pub(crate) fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut statement = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("the statement prepares");
    let mut rows = statement.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("the plan reads") {
        steps.push(row.get::<_, String>(3).expect("a plan step is text"));
    }
    steps
}
