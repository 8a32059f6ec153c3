//! The embedded store: every job the server has accepted, in SQLite through sqlx.
//!
//! Survives restarts; schema changes are migrations under `migrations/`.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message;
use silo_proto::v1::{EndCause, JobSpec, JobState, StartFailure, Usage};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrating the schema failed.
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No job has this id or id prefix.
    #[error("job {0} not found")]
    NotFound(String),
    /// Several jobs start with this prefix.
    #[error("job id prefix {prefix} is ambiguous: it matches {count} jobs; give more characters")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many jobs match (at least two).
        count: usize,
    },
    /// A job with this id exists already and is not SCHEDULED.
    #[error("job {0} exists already")]
    Conflict(String),
    /// A stored row cannot be read back.
    #[error("stored job {id} is unreadable: {what}")]
    Corrupt {
        /// The job.
        id: String,
        /// What is wrong.
        what: String,
    },
}

/// A page token that this server did not issue (or that is damaged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the page token is not one this server issued; start again from the first page")]
pub struct BadPageToken;

/// A position in the list of jobs, newest first: the (creation time, id) of the last job a
/// page held. A page after it holds only jobs that sort after it, so a walk of the list
/// never repeats or skips a job, and jobs created during the walk (which sort first) stay
/// out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// The job's creation time, microseconds since the epoch.
    pub created_at: i64,
    /// The job's full id.
    pub id: String,
}

/// First byte of every page token: the token format's version.
const PAGE_TOKEN_VERSION: u8 = 1;

impl PageCursor {
    /// The position right after `row`.
    pub fn after(row: &JobRow) -> PageCursor {
        PageCursor {
            created_at: row.created_at,
            id: row.id.clone(),
        }
    }

    /// The cursor as an opaque token for clients: lowercase hex of the version byte, the
    /// creation time (8 bytes, big-endian) and the id's bytes.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(9 + self.id.len());
        bytes.push(PAGE_TOKEN_VERSION);
        bytes.extend_from_slice(&self.created_at.to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor a token from [`PageCursor::to_token`] holds.
    pub fn from_token(token: &str) -> Result<PageCursor, BadPageToken> {
        // The longest id a token may hold; server ids are 32 characters.
        const MAX_ID: usize = 64;
        if !token.len().is_multiple_of(2)
            || token.len() > 2 * (9 + MAX_ID)
            || !token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BadPageToken);
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(BadPageToken)?;
        let Some((&[PAGE_TOKEN_VERSION], rest)) = bytes.split_first_chunk::<1>() else {
            return Err(BadPageToken);
        };
        let Some((time, id)) = rest.split_first_chunk::<8>() else {
            return Err(BadPageToken);
        };
        let id = std::str::from_utf8(id).map_err(|_| BadPageToken)?;
        if id.is_empty() {
            return Err(BadPageToken);
        }
        Ok(PageCursor {
            created_at: i64::from_be_bytes(*time),
            id: id.to_owned(),
        })
    }
}

/// Some jobs, newest first, and where the list continues.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs of this page.
    pub rows: Vec<JobRow>,
    /// The position after the last of `rows`, when more jobs follow; `None` at the end.
    pub next: Option<PageCursor>,
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobRow {
    /// Full id (32 lowercase hex digits).
    pub id: String,
    /// What the client asked to run.
    pub spec: JobSpec,
    /// The CN of the client that started it.
    pub owner: String,
    /// Uploaded paths, relative to the work directory.
    pub uploads: Vec<String>,
    /// Current state.
    pub state: JobState,
    /// Why it is in that state.
    pub reason: String,
    /// Exit code, when the command exited.
    pub exit_code: Option<i32>,
    /// Signal, when the command was killed by one.
    pub signal: Option<i32>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// When the command started.
    pub started_at: Option<i64>,
    /// When the job ended.
    pub ended_at: Option<i64>,
    /// The init process while the job runs: pid and start time (clock ticks after boot).
    pub init: Option<(i32, u64)>,
    /// Resource usage when the job ended.
    pub usage: Option<Usage>,
    /// The host uid and gid its user namespace maps its user to.
    pub host_id: Option<u32>,
    /// Why it ended (unspecified while it runs).
    pub end_cause: EndCause,
    /// With a start failure: its kind.
    pub start_failure: StartFailure,
    /// With a start failure: the step that failed.
    pub failed_step: Option<String>,
    /// With a start failure: the errno.
    pub errno: Option<i32>,
    /// The caller's idempotency token, unique among jobs (see [`Store::find_by_token`]).
    pub request_token: Option<String>,
    /// The instant it was scheduled to start at (a one-shot or a schedule's firing).
    pub scheduled_at: Option<i64>,
    /// The schedule whose firing created it.
    pub schedule_id: Option<String>,
}

/// How often the WAL is copied into the database, off every request's path.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the WAL into the database every [`CHECKPOINT_EVERY`] (a passive checkpoint: it
/// never waits for readers or writers) until the store is closed. Commits are as durable
/// as before: in WAL mode a commit is in the WAL, and a crash or restart replays it.
///
/// The first write after a checkpoint that copied the whole WAL starts the WAL over and
/// fsyncs its new header (0.4-1 ms here, more on a busy disk): that would be the next
/// request's write, a launch's insert. So when the checkpoint copied the whole WAL, this
/// task writes first ([`restart_wal`]); and when nothing but that write was committed
/// since (`Commits`), it does not checkpoint at all: copying that one write would leave a
/// copied WAL, which the next request's write, the first launch after a quiet second,
/// would start over. An idle server writes nothing.
fn checkpoint_in_background(pool: SqlitePool, commits: &'static Commits) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = checkpoint(&pool, commits).await {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!("cannot checkpoint the store's WAL: {e}");
            }
        }
    });
}

/// Whether anything was committed to a store since its checkpoint task last looked: set by
/// SQLite's WAL hook ([`note_commit`]) on every commit of every connection of the store.
#[derive(Debug)]
pub(crate) struct Commits(AtomicBool);

impl Commits {
    /// A flag for a store being opened, set: whatever is in its WAL is copied at the first
    /// checkpoint. Leaked on purpose: SQLite's hook on each connection points at it, and a
    /// connection may outlive the `Store` (a pool closes its connections asynchronously);
    /// one byte per store opened.
    fn new() -> &'static Commits {
        Box::leak(Box::new(Commits(AtomicBool::new(true))))
    }
}

/// SQLite's WAL hook: called after each commit in WAL mode (with the WAL's frame count,
/// unused); marks the store's [`Commits`]. Returns SQLITE_OK, as the hook must.
extern "C" fn note_commit(
    commits: *mut std::ffi::c_void,
    _db: *mut libsqlite3_sys::sqlite3,
    _name: *const std::ffi::c_char,
    _frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: the hook was installed with a pointer to a leaked, never freed `Commits`.
    let commits = unsafe { &*(commits as *const Commits) };
    commits.0.store(true, Ordering::Release);
    libsqlite3_sys::SQLITE_OK
}

/// One passive checkpoint when something was committed since the last one, then the WAL's
/// restart when it copied the whole WAL (see [`checkpoint_in_background`]); returns
/// whether it restarted the WAL.
async fn checkpoint(pool: &SqlitePool, commits: &Commits) -> Result<bool, sqlx::Error> {
    if !commits.0.swap(false, Ordering::AcqRel) {
        return Ok(false);
    }
    let (busy, log, copied) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
    if busy != 0 || copied != log {
        // Frames left to copy: the next tick tries again.
        commits.0.store(true, Ordering::Release);
        return Ok(false);
    }
    restart_wal(pool).await?;
    // That write is not news. A commit of another that landed between the checkpoint and
    // here is no longer marked: it is copied after the next commit, and meanwhile only
    // keeps the WAL from starting over (never a request's write fsyncing a new header).
    commits.0.store(false, Ordering::Release);
    Ok(true)
}

/// Rewrites the one row of `wal_restart`: the first write after a full checkpoint, it
/// starts the WAL over (see [`checkpoint_in_background`]).
async fn restart_wal(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wal_restart SET at = ? WHERE id = 0")
        .bind(crate::jobs::now_micros())
        .execute(pool)
        .await
        .map(|_| ())
}

/// How long a write waits for another connection's write to end before it fails with
/// SQLITE_BUSY.
const BUSY_LIMIT: Duration = Duration::from_secs(10);
/// The first waits for a write lock, 50 µs each (2 ms in all); after them, 1 ms each.
const SHORT_BUSY_WAITS: i32 = 40;

/// SQLite's busy handler on every connection of the store: called when a write finds
/// another connection writing, with how often it has been called for this write. The one
/// `busy_timeout` installs sleeps 1 ms, then 2, 5, 10 ms and more; the server's writes
/// hold the lock for about 0.1 ms, so that first sleep alone was ten of them, on the path
/// from a job's end to its workflow's next job (whose node write meets the ended job's
/// row write). This one retries every 50 µs for 2 ms, then every 1 ms, up to
/// [`BUSY_LIMIT`], and counts its waits (`silo_store_busy_waits_total`).
extern "C" fn wait_for_the_writer(
    _: *mut std::ffi::c_void,
    tries: std::ffi::c_int,
) -> std::ffi::c_int {
    let (short, long) = (
        tries.min(SHORT_BUSY_WAITS),
        (tries - SHORT_BUSY_WAITS).max(0),
    );
    let waited = Duration::from_micros(50) * short as u32 + Duration::from_millis(1) * long as u32;
    if waited >= BUSY_LIMIT {
        return 0;
    }
    metrics::counter!(crate::metrics::STORE_BUSY_WAITS).increment(1);
    std::thread::sleep(if tries < SHORT_BUSY_WAITS {
        Duration::from_micros(50)
    } else {
        Duration::from_millis(1)
    });
    1
}

/// Runs `write` until it succeeds: for a record the server has acted on already (a job's
/// end, a workflow's step), which a write failing for a while (the state filesystem full,
/// the database locked beyond its timeout) must delay and not lose. The first failure is
/// logged as an error naming `what`, the recovery once; the pause between tries doubles
/// from 50 ms to 5 s.
pub async fn until_stored<F, Fut, E>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut pause = std::time::Duration::from_millis(50);
    let mut failed_since = None;
    loop {
        match write().await {
            Ok(()) => break,
            Err(e) => {
                if failed_since.is_none() {
                    tracing::error!("cannot record {what}, trying again until it is: {e}");
                }
                failed_since.get_or_insert_with(std::time::Instant::now);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    if let Some(since) = failed_since {
        tracing::info!(
            "recorded {what} after {:.1} s of failed writes",
            since.elapsed().as_secs_f64()
        );
    }
}

/// The job store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Marked by every commit; read and cleared by the checkpoint task.
    commits: &'static Commits,
}

const COLUMNS: &str = "id, name, owner, spec, uploads, state, reason, exit_code, signal, \
                       created_at, started_at, ended_at, init_pid, init_start, usage, host_id, \
                       end_cause, start_failure, failed_step, errno, request_token, \
                       scheduled_at, schedule_id";

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open_alone(path).await?;
        checkpoint_in_background(store.pool.clone(), store.commits);
        Ok(store)
    }

    /// As [`Store::open`], without the background checkpoints: for tests that checkpoint
    /// themselves and must not meet that task's reads and writes.
    async fn open_alone(path: &Path) -> Result<Store, StoreError> {
        let commits = Commits::new();
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Replaced by `wait_for_the_writer` once connected; this covers the connect.
            .busy_timeout(BUSY_LIMIT)
            .foreign_keys(true)
            // No checkpoint inside a commit: with the default (1,000 pages), the write that
            // crosses it copies the WAL into the database and fsyncs it while a request
            // waits. A background task checkpoints instead (see `checkpoint_in_background`).
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection to a local file does not go stale. By default the pool pings an
            // idle connection before handing it out, a round trip to its worker thread
            // (two thread wake-ups) before every query, the launch's insert included; and
            // it reopens connections after 10 idle or 30 live minutes, which the query
            // that meets it waits for.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    let db = handle.as_raw_handle();
                    // SAFETY: as below; `commits` is never freed (see `Commits::new`), and
                    // the hook only stores to it. The connection's pragmas ran before this
                    // (wal_autocheckpoint = 0 cleared SQLite's own hook), so nothing else
                    // replaces it.
                    unsafe {
                        libsqlite3_sys::sqlite3_wal_hook(
                            db.as_ptr(),
                            Some(note_commit),
                            commits as *const Commits as *mut std::ffi::c_void,
                        );
                    }
                    // SAFETY: `db` is this connection's open handle, locked for us; the
                    // handler is a plain function that touches no connection state.
                    let rc = unsafe {
                        libsqlite3_sys::sqlite3_busy_handler(
                            db.as_ptr(),
                            Some(wait_for_the_writer),
                            std::ptr::null_mut(),
                        )
                    };
                    if rc != libsqlite3_sys::SQLITE_OK {
                        return Err(sqlx::Error::Protocol(format!(
                            "cannot install the store's busy handler (SQLite error {rc})"
                        )));
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, commits })
    }

    /// The database, for other tables of the same store (workflows).
    pub fn pool(&self) -> sqlx::SqlitePool {
        self.pool.clone()
    }

    /// Stores a new job, or the start of a job stored as SCHEDULED under the same id (its
    /// row is replaced); any other row with that id is an error (nothing changes).
    pub async fn insert(&self, job: &JobRow) -> Result<(), StoreError> {
        self.insert_with_secrets(job, &[]).await
    }

    /// Stores a new job (or the start of a SCHEDULED one, as [`Store::insert`]) and its
    /// sealed secret variables, all or nothing.
    pub async fn insert_with_secrets(
        &self,
        job: &JobRow,
        secrets: &[crate::secrets::Sealed],
    ) -> Result<(), StoreError> {
        let replace: Vec<String> = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET {} WHERE jobs.state = {}",
            replace.join(", "),
            JobState::Scheduled as i32
        );
        let query = sqlx::query(&sql)
            .bind(&job.id)
            .bind(&job.spec.name)
            .bind(&job.owner)
            .bind(job.spec.encode_to_vec())
            .bind(job.uploads.join("\n"))
            .bind(job.state as i32)
            .bind(&job.reason)
            .bind(job.exit_code)
            .bind(job.signal)
            .bind(job.created_at)
            .bind(job.started_at)
            .bind(job.ended_at)
            .bind(job.init.map(|(pid, _)| pid))
            .bind(job.init.map(|(_, start)| start as i64))
            .bind(job.usage.as_ref().map(Message::encode_to_vec))
            .bind(job.host_id.map(i64::from))
            .bind(job.end_cause as i32)
            .bind(job.start_failure as i32)
            .bind(&job.failed_step)
            .bind(job.errno)
            .bind(&job.request_token)
            .bind(job.scheduled_at)
            .bind(&job.schedule_id);
        // Without secrets the row is one statement, atomic by itself: one trip to the
        // database's thread instead of three (BEGIN, INSERT, COMMIT) on the launch's path.
        if secrets.is_empty() {
            let done = query.execute(&self.pool).await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict(job.id.clone()));
            }
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let done = query.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(job.id.clone()));
        }
        crate::secrets::store_sealed(&mut tx, "job_secrets", "job_id", &job.id, secrets).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The sealed secret variables of the job `id` (none once it is deleted).
    pub async fn secrets_of(&self, id: &str) -> Result<Vec<crate::secrets::Sealed>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, nonce, ciphertext FROM job_secrets WHERE job_id = ? ORDER BY rowid",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::secrets::sealed_rows(&rows)?)
    }

    /// Ends a job that is still SCHEDULED as `job` says (its state, reason, end); false
    /// when it is no longer SCHEDULED (it has started, or ended already).
    pub async fn end_scheduled(&self, job: &JobRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = ?, reason = ?, ended_at = ?, end_cause = ?, \
             start_failure = ? WHERE id = ? AND state = ?",
        )
        .bind(job.state as i32)
        .bind(&job.reason)
        .bind(job.ended_at)
        .bind(job.end_cause as i32)
        .bind(job.start_failure as i32)
        .bind(&job.id)
        .bind(JobState::Scheduled as i32)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The jobs waiting for their start time: id and instant, earliest first.
    pub async fn scheduled(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT id, scheduled_at FROM jobs WHERE state = ? ORDER BY scheduled_at",
        )
        .bind(JobState::Scheduled as i32)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at)| (id, at.unwrap_or(0)))
            .collect())
    }

    /// The job a caller started with `token`, if it exists.
    pub async fn find_by_token(&self, token: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE request_token = ?"
        ))
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Records the job's state, reason, exit, times and init process.
    pub async fn update(&self, job: &JobRow) -> Result<(), StoreError> {
        update_query(job).execute(&self.pool).await?;
        Ok(())
    }

    /// Updates several jobs' state, as [`Store::update`] does, in one transaction.
    pub async fn update_all(&self, jobs: &[JobRow]) -> Result<(), StoreError> {
        if let [job] = jobs {
            return self.update(job).await;
        }
        let mut tx = self.pool.begin().await?;
        for job in jobs {
            update_query(job).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The one job whose id starts with `prefix`.
    pub async fn get(&self, prefix: &str) -> Result<JobRow, StoreError> {
        let id = self.resolve(prefix).await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))
            .bind(&id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(prefix.to_owned()))?;
        decode(&row)
    }

    /// The full id of the one job whose id starts with `prefix`.
    pub async fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        resolve_id(&self.pool, "jobs", prefix).await
    }

    /// How many jobs the store holds, in any state.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Jobs newest first, optionally only those in `states`, at most `limit`.
    pub async fn list(&self, states: &[JobState], limit: u32) -> Result<Vec<JobRow>, StoreError> {
        self.select(states, None, i64::from(limit)).await
    }

    /// At most `size` jobs (at least one) newest first, optionally only those in `states`,
    /// starting after `after` (from the newest when `None`).
    pub async fn page(
        &self,
        states: &[JobState],
        after: Option<&PageCursor>,
        size: u32,
    ) -> Result<JobPage, StoreError> {
        self.page_of_schedule(states, None, after, size).await
    }

    /// As [`Store::page`], only jobs created by the schedule `schedule` when it is given.
    pub async fn page_of_schedule(
        &self,
        states: &[JobState],
        schedule: Option<&str>,
        after: Option<&PageCursor>,
        size: u32,
    ) -> Result<JobPage, StoreError> {
        let size = size.max(1) as usize;
        // One more than asked tells whether another page follows.
        let mut rows = self
            .select_of_schedule(states, schedule, after, size as i64 + 1)
            .await?;
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(PageCursor::after)
        } else {
            None
        };
        Ok(JobPage { rows, next })
    }

    /// Jobs in list order (newest first, then by id) after `after`, at most `limit`.
    async fn select(
        &self,
        states: &[JobState],
        after: Option<&PageCursor>,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.select_of_schedule(states, None, after, limit).await
    }

    /// As [`Store::select`], only jobs of the schedule `schedule` when it is given.
    async fn select_of_schedule(
        &self,
        states: &[JobState],
        schedule: Option<&str>,
        after: Option<&PageCursor>,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let mut conditions = Vec::new();
        if schedule.is_some() {
            conditions.push("schedule_id = ?".to_owned());
        }
        if !states.is_empty() {
            let list: Vec<String> = states.iter().map(|s| (*s as i32).to_string()).collect();
            conditions.push(format!("state IN ({})", list.join(",")));
        }
        if after.is_some() {
            // Keyset pagination: the rows that sort after the cursor, found through the
            // index whatever the page's depth (an OFFSET would rescan every earlier row,
            // and would shift under inserts).
            conditions.push("(created_at, id) < (?, ?)".to_owned());
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let mut query = sqlx::query(&sql);
        if let Some(schedule) = schedule {
            query = query.bind(schedule);
        }
        if let Some(cursor) = after {
            query = query.bind(cursor.created_at).bind(&cursor.id);
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// Jobs that had not ended when the previous server stopped.
    pub async fn unfinished(&self) -> Result<Vec<JobRow>, StoreError> {
        self.list(
            // SCHEDULED jobs have not started: the scheduler arms them again.
            &[JobState::Starting, JobState::Running],
            u32::MAX,
        )
        .await
    }

    /// Ids of at most `limit` jobs that ended before `cutoff` (µs since the epoch), oldest
    /// first. A job that a caller of the job manager started with a request token (a
    /// workflow's) is that caller's to delete, and is not listed; a schedule's firing (its
    /// token names the firing) is a plain job, and is.
    pub async fn ended_before(&self, cutoff: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        // The WHERE of the index jobs_ended, word for word, so that SQLite uses it.
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs \
             WHERE ended_at IS NOT NULL AND (request_token IS NULL OR schedule_id IS NOT NULL) \
             AND ended_at < ? ORDER BY ended_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes the job's row, and with it its secrets (`ON DELETE CASCADE`); NotFound when
    /// there is none (another call removed it first).
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }
}

/// The full id of the one row of `table` (whose ids are lowercase hex) that starts with
/// `prefix`: NotFound for none, Ambiguous (with how many) for several.
pub(crate) async fn resolve_id(
    pool: &SqlitePool,
    table: &'static str,
    prefix: &str,
) -> Result<String, StoreError> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::NotFound(prefix.to_owned()));
    }
    let prefix_lower = prefix.to_ascii_lowercase();
    // The range [prefix, prefix + 'g') holds exactly the hex ids that start with it.
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT id FROM {table} WHERE id >= ? AND id < ? LIMIT 2"
    ))
    .bind(&prefix_lower)
    .bind(format!("{prefix_lower}g"))
    .fetch_all(pool)
    .await?;
    match ids.len() {
        0 => Err(StoreError::NotFound(prefix.to_owned())),
        1 => Ok(ids.into_iter().next().unwrap_or_default()),
        _ => {
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE id >= ? AND id < ?"
            ))
            .bind(&prefix_lower)
            .bind(format!("{prefix_lower}g"))
            .fetch_one(pool)
            .await?;
            Err(StoreError::Ambiguous {
                prefix: prefix.to_owned(),
                count: count as usize,
            })
        }
    }
}

/// The statement that records a job's state, reason, exit, times and init process.
fn update_query(
    job: &JobRow,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    sqlx::query(
        "UPDATE jobs SET state = ?, reason = ?, exit_code = ?, signal = ?, started_at = ?, \
         ended_at = ?, init_pid = ?, init_start = ?, usage = ?, end_cause = ?, \
         start_failure = ?, failed_step = ?, errno = ? WHERE id = ?",
    )
    .bind(job.state as i32)
    .bind(&job.reason)
    .bind(job.exit_code)
    .bind(job.signal)
    .bind(job.started_at)
    .bind(job.ended_at)
    .bind(job.init.map(|(pid, _)| pid))
    .bind(job.init.map(|(_, start)| start as i64))
    .bind(job.usage.as_ref().map(Message::encode_to_vec))
    .bind(job.end_cause as i32)
    .bind(job.start_failure as i32)
    .bind(&job.failed_step)
    .bind(job.errno)
    .bind(&job.id)
}

fn decode(row: &SqliteRow) -> Result<JobRow, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt {
        id: id.clone(),
        what,
    };
    let spec_bytes: Vec<u8> = row.try_get("spec")?;
    let spec = JobSpec::decode(spec_bytes.as_slice()).map_err(|e| corrupt(format!("spec: {e}")))?;
    let state: i32 = row.try_get("state")?;
    let state = JobState::try_from(state).map_err(|_| corrupt(format!("unknown state {state}")))?;
    let uploads: String = row.try_get("uploads")?;
    let init_pid: Option<i32> = row.try_get("init_pid")?;
    let init_start: Option<i64> = row.try_get("init_start")?;
    let usage: Option<Vec<u8>> = row.try_get("usage")?;
    let usage = match usage {
        Some(bytes) => {
            Some(Usage::decode(bytes.as_slice()).map_err(|e| corrupt(format!("usage: {e}")))?)
        }
        None => None,
    };
    Ok(JobRow {
        spec,
        owner: row.try_get("owner")?,
        uploads: uploads.lines().map(str::to_owned).collect(),
        state,
        reason: row.try_get("reason")?,
        exit_code: row.try_get("exit_code")?,
        signal: row.try_get("signal")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        init: init_pid.zip(init_start.map(|s| s as u64)),
        usage,
        host_id: row
            .try_get::<Option<i64>, _>("host_id")?
            .and_then(|h| u32::try_from(h).ok()),
        // A cause this server does not know (a newer one wrote it) reads as unspecified.
        end_cause: EndCause::try_from(row.try_get::<i32, _>("end_cause")?).unwrap_or_default(),
        start_failure: StartFailure::try_from(row.try_get::<i32, _>("start_failure")?)
            .unwrap_or_default(),
        failed_step: row.try_get("failed_step")?,
        errno: row.try_get("errno")?,
        request_token: row.try_get("request_token")?,
        scheduled_at: row.try_get("scheduled_at")?,
        schedule_id: row.try_get("schedule_id")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, created_at: i64, state: JobState) -> JobRow {
        JobRow {
            id: id.into(),
            spec: JobSpec {
                command: vec!["echo".into(), "hi".into()],
                name: "n".into(),
                ..Default::default()
            },
            owner: "admin".into(),
            uploads: vec!["a.txt".into(), "dir/b".into()],
            state,
            reason: String::new(),
            exit_code: None,
            signal: None,
            created_at,
            started_at: None,
            ended_at: None,
            init: Some((42, 1234)),
            usage: None,
            host_id: None,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_checkpoint_restarts_the_wal_after_writes_and_an_idle_store_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Without the background task: its checkpoint, met mid-way, holds a read snapshot
        // that keeps the restart's write from starting the WAL over (a flake under the
        // full suite's load, where a second checkpoint then found frames to copy).
        let path = dir.path().join("db");
        let store = Store::open_alone(&path).await.unwrap();
        let restarted_at = || async {
            sqlx::query_as::<_, (i64,)>("SELECT at FROM wal_restart WHERE id = 0")
                .fetch_one(&store.pool)
                .await
                .unwrap()
                .0
        };
        // The WAL header's salts: SQLite adds one to the first and draws the second at
        // random each time the WAL starts over.
        let wal_generation = || {
            let header = std::fs::read(dir.path().join("db-wal")).unwrap();
            header[16..24].to_vec()
        };
        let checkpoint = || checkpoint(&store.pool, store.commits);
        // Whatever opening the store wrote is copied first.
        while checkpoint().await.unwrap() {}
        let before = restarted_at().await;
        for i in 0..5 {
            store
                .insert(&job(&format!("{i:032x}"), i, JobState::Running))
                .await
                .unwrap();
        }
        assert!(checkpoint().await.unwrap(), "the writes were copied");
        let after = restarted_at().await;
        assert!(after > before, "the restart's write landed");
        // Nothing but that write since: nothing is copied, nothing written.
        let generation = wal_generation();
        assert!(!checkpoint().await.unwrap());
        assert!(!checkpoint().await.unwrap());
        assert_eq!(restarted_at().await, after);
        // So the next request's write appends to the WAL instead of starting it over
        // (which fsyncs a new header while the request waits).
        store
            .insert(&job(&format!("{:032x}", 9), 9, JobState::Running))
            .await
            .unwrap();
        assert_eq!(
            wal_generation(),
            generation,
            "the insert started the WAL over"
        );
        // And a commit is noticed: the next checkpoint copies it and starts the WAL over.
        assert!(checkpoint().await.unwrap(), "the insert was copied");
        assert_ne!(
            wal_generation(),
            generation,
            "the checkpoint started the WAL over"
        );
        let third = store.get(&format!("{:032x}", 3)).await.unwrap();
        assert_eq!(third.state, JobState::Running);
    }

    #[test]
    fn the_busy_handler_waits_briefly_then_longer_and_gives_up_at_the_limit() {
        let waited = |tries: i32| {
            (0..tries)
                .map(|t| match t < SHORT_BUSY_WAITS {
                    true => Duration::from_micros(50),
                    false => Duration::from_millis(1),
                })
                .sum::<Duration>()
        };
        // The first 40 waits make 2 ms; the limit falls among the 1 ms waits after them.
        assert_eq!(waited(SHORT_BUSY_WAITS), Duration::from_millis(2));
        let last = SHORT_BUSY_WAITS + (BUSY_LIMIT.as_millis() as i32 - 2);
        assert_eq!(waited(last), BUSY_LIMIT);
        assert_eq!(wait_for_the_writer(std::ptr::null_mut(), last), 0);
        assert_eq!(wait_for_the_writer(std::ptr::null_mut(), 0), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_meets_another_writes_once_the_other_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        let pool = store.pool();
        // One connection holds the write lock; another write must wait for it, not fail.
        let mut holder = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let j = job("0123456789abcdef0123456789abcdef", 1, JobState::Running);
        let writer = {
            let store = store.clone();
            let j = j.clone();
            tokio::spawn(async move { store.insert(&j).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!writer.is_finished(), "the write did not wait for the lock");
        sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(store.get("0123").await.unwrap(), j);
    }

    #[tokio::test]
    async fn jobs_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silo.db");
        let store = Store::open(&path).await.unwrap();
        let mut j = job("abcdef0123456789abcdef0123456789", 1, JobState::Running);
        store.insert(&j).await.unwrap();
        j.state = JobState::Completed;
        j.exit_code = Some(0);
        j.init = None;
        j.usage = Some(Usage {
            cpu_usec: Some(5),
            oom_kills: Some(0),
            ..Default::default()
        });
        store.update(&j).await.unwrap();
        drop(store);
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.get("abcdef").await.unwrap(), j);
    }

    #[tokio::test]
    async fn a_jobs_secrets_are_stored_with_it_and_deleted_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        let sealed = crate::secrets::Sealed {
            name: "TOKEN".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
        };
        let j = job("ab", 1, JobState::Completed);
        store
            .insert_with_secrets(&j, std::slice::from_ref(&sealed))
            .await
            .unwrap();
        assert_eq!(
            store.secrets_of("ab").await.unwrap(),
            std::slice::from_ref(&sealed)
        );
        // A failed insert (the same id again) leaves nothing behind.
        assert!(store.insert_with_secrets(&j, &[sealed]).await.is_err());
        assert_eq!(store.secrets_of("ab").await.unwrap().len(), 1);
        store.delete("ab").await.unwrap();
        assert!(store.secrets_of("ab").await.unwrap().is_empty());
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_secrets")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_scheduled_job_is_replaced_by_its_start_once_and_only_while_scheduled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        let mut waiting = job("aa11", 1, JobState::Scheduled);
        waiting.init = None;
        waiting.scheduled_at = Some(5_000);
        store.insert(&waiting).await.unwrap();
        assert_eq!(
            store.scheduled().await.unwrap(),
            [("aa11".to_owned(), 5_000)]
        );
        // Jobs that have not started are not the restart's to reconcile.
        assert!(store.unfinished().await.unwrap().is_empty());
        let mut started = waiting.clone();
        started.state = JobState::Starting;
        started.request_token = Some("s:5000".into());
        store.insert(&started).await.unwrap();
        assert_eq!(store.get("aa11").await.unwrap(), started);
        assert!(store.scheduled().await.unwrap().is_empty());
        // A second start of the same id is refused, and changes nothing.
        let mut again = started.clone();
        again.owner = "other".into();
        assert!(matches!(
            store.insert(&again).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.get("aa11").await.unwrap(), started);
        // Ending it as if still SCHEDULED (a late cancel) does nothing either.
        let mut cancelled = started.clone();
        cancelled.state = JobState::Stopped;
        assert!(!store.end_scheduled(&cancelled).await.unwrap());
        assert_eq!(store.get("aa11").await.unwrap().state, JobState::Starting);
    }

    #[tokio::test]
    async fn pages_of_a_schedule_hold_only_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        for (i, schedule) in [Some("s1"), None, Some("s2"), Some("s1")]
            .into_iter()
            .enumerate()
        {
            let mut j = job(&format!("a{i}"), i as i64, JobState::Completed);
            j.schedule_id = schedule.map(str::to_owned);
            store.insert(&j).await.unwrap();
        }
        let page = store
            .page_of_schedule(&[], Some("s1"), None, 10)
            .await
            .unwrap();
        let ids: Vec<&str> = page.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a3", "a0"]);
        let page = store
            .page_of_schedule(&[], Some("s1"), None, 1)
            .await
            .unwrap();
        let next = store
            .page_of_schedule(&[], Some("s1"), page.next.as_ref(), 1)
            .await
            .unwrap();
        assert_eq!(next.rows[0].id, "a0");
        assert_eq!(store.page(&[], None, 10).await.unwrap().rows.len(), 4);
    }

    #[tokio::test]
    async fn prefixes_resolve_uniquely_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        store
            .insert(&job("aa11", 1, JobState::Completed))
            .await
            .unwrap();
        store
            .insert(&job("aa22", 2, JobState::Failed))
            .await
            .unwrap();
        assert_eq!(store.resolve("aa1").await.unwrap(), "aa11");
        assert_eq!(store.resolve("AA2").await.unwrap(), "aa22");
        assert!(matches!(
            store.resolve("aa").await,
            Err(StoreError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            store.resolve("b").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.resolve("a%").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.resolve("").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn list_is_newest_first_and_filters_by_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        store
            .insert(&job("01", 1, JobState::Completed))
            .await
            .unwrap();
        store
            .insert(&job("02", 2, JobState::Running))
            .await
            .unwrap();
        store
            .insert(&job("03", 3, JobState::Completed))
            .await
            .unwrap();
        let all: Vec<_> = store
            .list(&[], 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(all, ["03", "02", "01"]);
        let done: Vec<_> = store
            .list(&[JobState::Completed], 1)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(done, ["03"]);
        assert_eq!(store.unfinished().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn pages_walk_every_job_once_newest_first_even_while_newer_jobs_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        // 250 jobs; pairs share a creation time, so the id must break ties.
        for n in 0..250i64 {
            let row = job(&format!("{n:032x}"), 1_000 + n / 2, JobState::Completed);
            store.insert(&row).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<PageCursor> = None;
        let mut pages = 0;
        loop {
            let page = store.page(&[], after.as_ref(), 100).await.unwrap();
            pages += 1;
            assert!(page.rows.len() <= 100);
            seen.extend(page.rows.iter().map(|r| (r.created_at, r.id.clone())));
            // A newer job arrives between pages; the walk must not see it.
            let newer = job(&format!("f{pages:031x}"), 10_000 + pages, JobState::Running);
            store.insert(&newer).await.unwrap();
            match page.next {
                // Through the token, as a client would carry it.
                Some(cursor) => after = Some(PageCursor::from_token(&cursor.to_token()).unwrap()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let mut expected: Vec<(i64, String)> = (0..250i64)
            .map(|n| (1_000 + n / 2, format!("{n:032x}")))
            .collect();
        expected.reverse();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn pages_filter_by_state_and_end_without_an_empty_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("silo.db")).await.unwrap();
        for (id, at, state) in [
            ("01", 1, JobState::Completed),
            ("02", 2, JobState::Running),
            ("03", 3, JobState::Completed),
            ("04", 4, JobState::Completed),
        ] {
            store.insert(&job(id, at, state)).await.unwrap();
        }
        let done = [JobState::Completed];
        let first = store.page(&done, None, 2).await.unwrap();
        let ids: Vec<_> = first.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["04", "03"]);
        let next = first.next.expect("a third completed job follows");
        let second = store.page(&done, Some(&next), 2).await.unwrap();
        let ids: Vec<_> = second.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["01"]);
        assert_eq!(second.next, None);
        // Exactly a page's worth left: no token to an empty page.
        let all = store.page(&[], None, 4).await.unwrap();
        assert_eq!((all.rows.len(), all.next), (4, None));
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let cursor = PageCursor {
            created_at: 1_700_000_000_123_456,
            id: "abcdef0123456789abcdef0123456789".into(),
        };
        assert_eq!(
            PageCursor::from_token(&cursor.to_token()),
            Ok(cursor.clone())
        );
        let good = cursor.to_token();
        for bad in [
            String::new(),
            "zz".into(),
            "01".into(),
            format!("{good}0"),
            format!("02{}", &good[2..]),
            good[..18].to_owned(),
            format!("{}ff", &good[..18]),
            "é".repeat(20),
            format!("+{}", &good[1..]),
            "0".repeat(10_000),
        ] {
            assert_eq!(PageCursor::from_token(&bad), Err(BadPageToken), "{bad:?}");
        }
    }
}
