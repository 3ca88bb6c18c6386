"""The controller's registry schema: one SQL step per version, never changed once released.

:func:`fogline.store.open_database` runs the steps a registry has not had yet.
"""

from __future__ import annotations

from fogline.fleet.controller._monitoring import MONITORING_SCHEMA

# Written out here, not imported: _release_keys imports the registry, which imports this.
_RELEASE_KEYS_SCHEMA = """
ALTER TABLE devices ADD COLUMN release_key TEXT;
ALTER TABLE devices ADD COLUMN revoked_at REAL;
"""

# Energy per release and report: the period's joules, per item, and how they were obtained.
_ENERGY_SCHEMA = """
ALTER TABLE metrics ADD COLUMN joules REAL;
ALTER TABLE metrics ADD COLUMN joules_per_item REAL;
ALTER TABLE metrics ADD COLUMN energy TEXT;
ALTER TABLE metrics ADD COLUMN energy_measured INTEGER;
"""

# A step, once released, never changes: registries out there were made by it.
_SCHEMA_V1 = """
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    grp         TEXT NOT NULL DEFAULT 'default',
    tags        TEXT NOT NULL DEFAULT '[]',
    enrolled_at REAL,
    last_seen   REAL,
    online      INTEGER NOT NULL DEFAULT 0,
    state       TEXT
) WITHOUT ROWID;
CREATE TABLE tokens (
    digest     TEXT PRIMARY KEY,
    grp        TEXT NOT NULL,
    tags       TEXT NOT NULL,
    created    REAL NOT NULL,
    expires    REAL NOT NULL,
    used_by    TEXT
) WITHOUT ROWID;
CREATE TABLE desired (
    device_id  TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE deployments (
    id          TEXT PRIMARY KEY,
    release     TEXT NOT NULL,
    version     TEXT NOT NULL,
    grp         TEXT NOT NULL,
    strategy    TEXT NOT NULL,
    criteria    TEXT NOT NULL,
    status      TEXT NOT NULL,
    wave        INTEGER NOT NULL DEFAULT 0,
    wave_started REAL,
    converged_at REAL,
    reason      TEXT,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE deployment_devices (
    deployment TEXT NOT NULL REFERENCES deployments (id),
    device_id  TEXT NOT NULL,
    wave       INTEGER NOT NULL,
    status     TEXT NOT NULL DEFAULT 'waiting',
    previous   TEXT,
    since      REAL,
    PRIMARY KEY (deployment, device_id)
) WITHOUT ROWID;
CREATE TABLE telemetry (
    key        TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL,
    time       REAL NOT NULL,
    received   REAL NOT NULL,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX telemetry_time ON telemetry (time);
CREATE INDEX telemetry_device ON telemetry (device_id, time);
CREATE TABLE metrics (
    device_id  TEXT NOT NULL,
    time       REAL NOT NULL,
    release    TEXT NOT NULL,
    version    TEXT,
    items      INTEGER NOT NULL,
    items_per_second REAL NOT NULL,
    p50_ms     REAL,
    p99_ms     REAL,
    errors     INTEGER NOT NULL,
    drops      INTEGER NOT NULL,
    accuracy   REAL,
    drift      REAL,
    cpu_percent REAL,
    memory_mb  REAL
);
CREATE INDEX metrics_time ON metrics (time);
CREATE INDEX metrics_device ON metrics (device_id, time);
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time       REAL NOT NULL,
    kind       TEXT NOT NULL,
    device_id  TEXT,
    deployment TEXT,
    message    TEXT NOT NULL
);
"""

#: The registry's schema, one step per version: ``MIGRATIONS[n]`` takes version ``n`` to ``n + 1``.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    MONITORING_SCHEMA,  # v2: drift, live accuracy, estimates, labels and captures per report
    _RELEASE_KEYS_SCHEMA,  # v3: each device's X25519 release key, and when it was revoked
    _ENERGY_SCHEMA,  # v4: joules per release and report, measured or estimated
)

#: The schema this code writes; ``PRAGMA user_version`` of a registry it created.
SCHEMA_VERSION = len(MIGRATIONS)
