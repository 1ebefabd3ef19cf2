-- ngx-mail-auth: the default SQLite schema (what DEFAULT_QUERY / mail_auth_sqlite_query expects).
--   sqlite3 users.db < scripts/schema.sql      or      mail-auth-user --sqlite users.db init
--   (the tool makes the file 0640: chgrp it to the group nginx's workers run as, www-data)
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
    app_only     TEXT,                       -- e.g. 'imap,pop3' or 'all': main password refused there, only app
                                             -- passwords (read only by a mail_auth_sqlite_query that selects it)
    created      TEXT NOT NULL DEFAULT (datetime('now')),
    updated      TEXT NOT NULL DEFAULT (datetime('now'))
);

-- App passwords (per-device credentials), read with `mail_auth_sqlite_app_query default;`:
--   SELECT label, password, protocols, networks FROM app_passwords WHERE user = :user ORDER BY rowid
-- Managed with `mail-auth-user --sqlite DB app add|list|revoke`. Revoking is deleting the row:
-- the next login no longer accepts it (the verdict cache is bound to the credentials).
CREATE TABLE IF NOT EXISTS app_passwords (
    user      TEXT NOT NULL,                 -- users.name
    label     TEXT NOT NULL,                 -- names the credential in the log: letters, digits, . _ - @ +
    password  TEXT NOT NULL,                 -- stored hash ({SSHA512} for generated secrets)
    protocols TEXT,                          -- e.g. 'smtp'; NULL: all the account may use
    networks  TEXT,                          -- e.g. '10.0.0.0/8'; NULL: anywhere the account may log in from
    created   TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (user, label)
);
