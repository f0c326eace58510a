//! PostgreSQL fixtures: every store gets a schema of its own, named uniquely (tests of
//! other processes share the server), and dropped with `DROP SCHEMA ... CASCADE` when
//! its guard drops, also when the test fails.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use decaf_tasks_core::PostgresStore;

/// The server tests use: `DECAF_PG_URL`, or the local one.
pub fn url() -> String {
    std::env::var("DECAF_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A connection for the test's own statements.
pub fn client() -> postgres::Client {
    postgres::Client::connect(&url(), postgres::NoTls).expect("the test server answers")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A schema of this test alone, dropped (with everything in it) when this drops.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn new() -> Self {
        let name = format!(
            "decaf_test_{}_{}_{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        Schema { name }
    }

    /// A store of `origin` on this schema.
    pub fn store(&self, origin: &str) -> PostgresStore {
        PostgresStore::connect(&url(), &self.name, origin).expect("the store connects")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let dropped = postgres::Client::connect(&url(), postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

thread_local! {
    /// Schemas of the stores `scoped_store` made on this thread.
    static SCOPED: RefCell<Vec<Schema>> = const { RefCell::new(Vec::new()) };
}

/// A store on a new schema, dropped by the [`Cleanup`] of the running test (or, failing
/// that, when the test's thread ends).
pub fn scoped_store(origin: &str) -> PostgresStore {
    let schema = Schema::new();
    let store = schema.store(origin);
    SCOPED.with(|s| s.borrow_mut().push(schema));
    store
}

/// Drops the schemas `scoped_store` made on this thread when it drops: hold one for the
/// length of a test.
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let schemas = SCOPED.with(|s| std::mem::take(&mut *s.borrow_mut()));
        drop(schemas);
    }
}
