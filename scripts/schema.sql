-- ngx-mail-auth: the default SQLite schema (what DEFAULT_QUERY / mail_auth_sqlite_query expects).
--   sqlite3 users.db < scripts/schema.sql      or      mail-auth-user --sqlite users.db init
-- The module opens the database read-only; manage it with mail-auth-user or any SQLite client.
-- Keep SQLite's default rollback journal: in WAL mode (PRAGMA journal_mode=WAL) SQLite makes the
-- module's read-only connection create users.db-wal/-shm next to the file (the module warns).
-- Replacing the whole file by rename (build users.db.new, then mv) is picked up within a second.
--
-- The default query (mail_auth_sqlite_query) reads:
--   SELECT name, password, enabled, protocols, networks, server, port, backend_user AS user,
--          backend_pass, wait FROM users WHERE name = :user
-- `name` is the account's own spelling: the brute-force limiter counts failures per account by
-- it (a query with `WHERE name = :user COLLATE NOCASE` still counts one account once). A query
-- without a `name` column uses the user name asked for.
-- A NULL in an optional column means "not set". A value the module cannot use (port 0, a host
-- name as server, a bad CIDR, enabled = 'maybe') refuses that user with a temporary failure and
-- an error-log line; a NULL or empty password never verifies.

CREATE TABLE IF NOT EXISTS users (
    name         TEXT PRIMARY KEY NOT NULL,  -- the login name (Auth-User), case-sensitive
    password     TEXT NOT NULL,              -- stored password: $2y$ (bcrypt), $6$, {SSHA512}, {PLAIN} ...
    enabled      INTEGER NOT NULL DEFAULT 1, -- 1/0 (the module also reads yes/no, true/false, on/off)
    protocols    TEXT,                       -- e.g. 'imap,pop3'; NULL: all of imap, pop3, smtp; '': none
    networks     TEXT,                       -- e.g. '192.0.2.0/24, 2001:db8::/32'; NULL: anywhere; '': nowhere
    server       TEXT,                       -- per-user backend IP (Auth-Server); NULL: mail_auth_backend
    port         INTEGER,                    -- per-user backend port (Auth-Port)
    backend_user TEXT,                       -- login presented to the backend (Auth-User), e.g. an alias's real user
    backend_pass TEXT,                       -- password presented to the backend (Auth-Pass), master-user setups
    wait         INTEGER,                    -- Auth-Wait (seconds) after a failed login for this user
    created      TEXT NOT NULL DEFAULT (datetime('now')),
    updated      TEXT NOT NULL DEFAULT (datetime('now'))
);
