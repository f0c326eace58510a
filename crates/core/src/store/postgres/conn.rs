//! Connections: how one is opened (timeout, `application_name`, `search_path`), the main
//! connection that reconnects with backoff, transactions with their statement cache, and
//! what a PostgreSQL error means for the call that got it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use crate::error::{EngineError, Result};

/// How long opening a connection may take, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest pause between two reconnection attempts.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (the dynamic ones vary a little).
const STATEMENT_CACHE: usize = 256;
/// Attempts of a write that lost to a deadlock or a serialization failure.
const CONFLICT_ATTEMPTS: u32 = 5;

/// A parameter of a statement.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

/// What an error means for the call that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connection is gone: open a new one.
    Lost,
    /// A deadlock or a serialization failure: the transaction may be run again.
    Conflict,
    /// Anything else.
    Other,
}

/// What an error means, given the client that got it.
pub(super) fn classify(error: &postgres::Error, client_closed: bool) -> Failure {
    let code = error.code().map(|c| c.code());
    if error.is_closed()
        || client_closed
        || code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
        || io_error(error)
    {
        Failure::Lost
    } else if matches!(code, Some("40001" | "40P01")) {
        Failure::Conflict
    } else {
        Failure::Other
    }
}

fn io_error(error: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error's text: the server's message and SQLSTATE, or the client's error and its causes.
pub(super) fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// Opens connections to one server for one schema.
pub(super) struct Connector {
    config: Config,
    schema: String,
    /// `host:port` of the server(s), for messages.
    target: String,
}

impl Connector {
    /// Parses `url`; [`EngineError::Invalid`] when it is not a PostgreSQL URL.
    pub(super) fn new(url: &str, schema: &str, origin: &str) -> Result<Self> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            EngineError::Invalid(format!(
                "invalid PostgreSQL URL (expected postgres://user@host:port/database): {}",
                describe(&e)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name(&application_name(origin));
        config.notice_callback(|notice| {
            tracing::debug!(message = notice.message(), "PostgreSQL notice");
        });
        let target = target_of(&config);
        Ok(Connector {
            config,
            schema: schema.to_owned(),
            target,
        })
    }

    /// The server(s), as `host:port`.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// A new connection, its `search_path` set to the schema.
    pub(super) fn open(&self) -> Result<Client> {
        let mut client = self.config.connect(NoTls).map_err(|e| {
            EngineError::Store(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target,
                describe(&e)
            ))
        })?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(|e| {
                EngineError::Store(format!(
                    "PostgreSQL at {}: cannot set the search path: {}",
                    self.target,
                    describe(&e)
                ))
            })?;
        Ok(client)
    }
}

/// `decaf-tasks/<origin>`, cut to the 63 bytes PostgreSQL keeps.
pub(super) fn application_name(origin: &str) -> String {
    let mut name = format!("decaf-tasks/{origin}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

fn target_of(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "(no host in the URL)".into()
    } else {
        hosts.join(",")
    }
}

/// A connection and the statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    pub(super) fn new(client: Client) -> Self {
        Conn {
            client,
            statements: HashMap::new(),
        }
    }
}

/// The main connection of a store: opened again on the first call after it was lost,
/// with growing pauses between attempts while the server stays away.
pub(super) struct Main {
    conn: Option<Conn>,
    /// No attempt before this time (after a failed one).
    next_attempt: Option<Instant>,
    delay: Duration,
    last_error: String,
}

impl Main {
    pub(super) fn new(conn: Conn) -> Self {
        Main {
            conn: Some(conn),
            next_attempt: None,
            delay: BACKOFF_MIN,
            last_error: String::new(),
        }
    }

    /// The connection, opening a new one if it was lost (and the pause is over).
    fn connection(&mut self, connector: &Connector) -> Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            if let Some(at) = self.next_attempt {
                let now = Instant::now();
                if now < at {
                    return Err(EngineError::Store(format!(
                        "the connection to PostgreSQL at {} is lost ({}); next attempt in {} ms",
                        connector.target(),
                        self.last_error,
                        (at - now).as_millis()
                    )));
                }
            }
            match connector.open() {
                Ok(client) => {
                    tracing::info!(server = connector.target(), "reconnected to PostgreSQL");
                    self.conn = Some(Conn::new(client));
                    self.next_attempt = None;
                    self.delay = BACKOFF_MIN;
                }
                Err(err) => {
                    self.last_error = err.to_string();
                    self.next_attempt = Some(Instant::now() + self.delay);
                    self.delay = (self.delay * 2).min(BACKOFF_MAX);
                    return Err(err);
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| EngineError::Internal("no PostgreSQL connection".into()))
    }

    /// Closes the connection (the next call opens one again, at once).
    pub(super) fn close(&mut self) {
        self.conn = None;
        self.next_attempt = None;
        self.delay = BACKOFF_MIN;
    }

    /// Forgets a connection that is gone.
    fn lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(
                error = why,
                "the connection to PostgreSQL is lost; reconnecting"
            );
        }
        self.last_error = why.to_owned();
    }

    /// Runs `body` in one transaction, committed when it returns `Ok`.
    ///
    /// A connection found lost when the transaction begins is replaced at once and the
    /// call goes on (nothing was sent yet). One lost later fails the call, and the next
    /// call reconnects: nothing was committed, unless the connection died during the
    /// `COMMIT` itself (then the error says the outcome is unknown). With `retry`, a
    /// transaction that lost to a deadlock or a serialization failure runs again.
    pub(super) fn writing<T>(
        &mut self,
        connector: &Connector,
        retry: bool,
        mut body: impl FnMut(&mut Db<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let mut reconnected = false;
        let mut conflicts = 0;
        loop {
            let conn = self.connection(connector)?;
            let attempt = attempt(conn, &mut body);
            let closed = conn.client.is_closed();
            let (err, failure) = match attempt {
                Attempt::Committed(value) => return Ok(value),
                Attempt::NotBegun(failure, text) => {
                    if failure == Failure::Lost || closed {
                        self.lost(&text);
                        if !reconnected {
                            // Nothing was sent: run it on a new connection.
                            reconnected = true;
                            continue;
                        }
                    }
                    return Err(EngineError::Store(format!("PostgreSQL: {text}")));
                }
                Attempt::CommitFailed(failure, text) => {
                    if failure == Failure::Lost || closed {
                        self.lost(&text);
                        return Err(EngineError::Store(format!(
                            "PostgreSQL: the connection was lost during COMMIT, so the write \
                             may or may not be stored: {text}"
                        )));
                    }
                    return Err(EngineError::Store(format!("PostgreSQL: COMMIT: {text}")));
                }
                Attempt::Failed(err, failure) => (err, failure),
            };
            if failure == Some(Failure::Lost) || closed {
                self.lost(&err.to_string());
            } else if failure == Some(Failure::Conflict)
                && retry
                && conflicts + 1 < CONFLICT_ATTEMPTS
            {
                conflicts += 1;
                tracing::debug!(%err, "transaction conflict; running it again");
                continue;
            }
            return Err(err);
        }
    }

    /// Runs `body`, which only reads, outside a transaction (each statement sees what
    /// was committed when it began). A lost connection is replaced and `body` runs once
    /// more.
    pub(super) fn reading<T>(
        &mut self,
        connector: &Connector,
        mut body: impl FnMut(&mut Db<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let mut reconnected = false;
        loop {
            let Conn { client, statements } = self.connection(connector)?;
            let mut db = Db {
                on: On::Client(client),
                statements,
                failure: None,
            };
            let outcome = body(&mut db);
            let lost = db.failure == Some(Failure::Lost);
            match outcome {
                Ok(value) => return Ok(value),
                Err(err) if lost || client.is_closed() => {
                    self.lost(&err.to_string());
                    if reconnected {
                        return Err(err);
                    }
                    reconnected = true;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// How one run of a write transaction went.
enum Attempt<T> {
    Committed(T),
    /// `BEGIN` failed: nothing was sent.
    NotBegun(Failure, String),
    /// The body failed (what its last PostgreSQL error meant, if any); rolled back.
    Failed(EngineError, Option<Failure>),
    /// `COMMIT` failed.
    CommitFailed(Failure, String),
}

/// Runs `body` in one transaction on `conn`, committed when it returns `Ok`.
fn attempt<T>(conn: &mut Conn, body: &mut impl FnMut(&mut Db<'_, '_>) -> Result<T>) -> Attempt<T> {
    let Conn { client, statements } = conn;
    let (failure, text) = match client.transaction() {
        Ok(mut tx) => {
            let mut db = Db {
                on: On::Tx(&mut tx),
                statements,
                failure: None,
            };
            let outcome = body(&mut db);
            let failure = db.failure;
            return match outcome {
                Ok(value) => match tx.commit() {
                    Ok(()) => Attempt::Committed(value),
                    Err(e) => Attempt::CommitFailed(classify(&e, false), describe(&e)),
                },
                // Dropping the transaction rolls it back (an error there changes nothing:
                // the server rolls back the transaction of a connection that died).
                Err(err) => Attempt::Failed(err, failure),
            };
        }
        Err(e) => (classify(&e, false), describe(&e)),
    };
    Attempt::NotBegun(failure, text)
}

/// Where statements run.
enum On<'t, 'c> {
    Tx(&'t mut Transaction<'c>),
    Client(&'t mut Client),
}

/// A transaction (or the bare connection, for reads), with the connection's prepared
/// statements.
pub(super) struct Db<'t, 'c> {
    on: On<'t, 'c>,
    statements: &'t mut HashMap<String, Statement>,
    /// What the last error meant.
    failure: Option<Failure>,
}

impl Db<'_, '_> {
    fn fail(&mut self, error: postgres::Error) -> EngineError {
        let failure = classify(&error, false);
        if self.failure != Some(Failure::Lost) {
            self.failure = Some(failure);
        }
        EngineError::Store(format!("PostgreSQL: {}", describe(&error)))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let prepared = match &mut self.on {
            On::Tx(tx) => tx.prepare(sql),
            On::Client(client) => client.prepare(sql),
        };
        let statement = match prepared {
            Ok(statement) => statement,
            Err(e) => return Err(self.fail(e)),
        };
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs one statement; returns how many rows it changed.
    pub(super) fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let done = match &mut self.on {
            On::Tx(tx) => tx.execute(&statement, params),
            On::Client(client) => client.execute(&statement, params),
        };
        done.map_err(|e| self.fail(e))
    }

    /// Runs statements with the simple query protocol (no parameters, nothing prepared).
    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        let done = match &mut self.on {
            On::Tx(tx) => tx.batch_execute(sql),
            On::Client(client) => client.batch_execute(sql),
        };
        done.map_err(|e| self.fail(e))
    }

    /// Every row a query returns.
    pub(super) fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        let rows = match &mut self.on {
            On::Tx(tx) => tx.query(&statement, params),
            On::Client(client) => client.query(&statement, params),
        };
        rows.map_err(|e| self.fail(e))
    }

    /// The row a query returns, if any.
    pub(super) fn row(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// The first column of the one row a query returns.
    pub(super) fn one<T>(&mut self, sql: &str, params: &[Param<'_>]) -> Result<T>
    where
        T: for<'r> postgres::types::FromSql<'r>,
    {
        let row = self.row(sql, params)?.ok_or_else(|| {
            EngineError::Internal(format!(
                "PostgreSQL: no row from a query that has one: {sql}"
            ))
        })?;
        self.get(&row, 0)
    }

    /// Reads column `i` of `row`.
    pub(super) fn get<T>(&mut self, row: &Row, i: usize) -> Result<T>
    where
        T: for<'r> postgres::types::FromSql<'r>,
    {
        row.try_get(i).map_err(|e| self.fail(e))
    }
}
