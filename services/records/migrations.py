"""The schema's history: migration N turns a version N-1 database into a version N one.

Released migrations are never edited, only appended to; the version is SQLite's
`PRAGMA user_version` (see services/records/storage.py, which applies them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "append-only events table: the audit trail of every feature",
        """
        CREATE TABLE events (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            at          TEXT    NOT NULL,
            kind        TEXT    NOT NULL,
            actor       TEXT    NOT NULL,
            subject     TEXT    NOT NULL DEFAULT '',
            data        TEXT    NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_subject ON events (subject, id);
        CREATE INDEX events_kind ON events (kind, id);
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        """,
    ),
    Migration(
        2,
        "bot_state: small key/value facts the bot keeps across restarts",
        """
        CREATE TABLE bot_state (
            key         TEXT PRIMARY KEY,
            value       TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "confirmations: one row per confirm button (restart and other risky one-off actions)",
        """
        CREATE TABLE confirmations (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            action        TEXT    NOT NULL,
            subject       TEXT    NOT NULL,
            requested_by  INTEGER NOT NULL,
            chat_id       INTEGER NOT NULL,
            created_at    TEXT    NOT NULL,
            expires_at    TEXT    NOT NULL,
            state         TEXT    NOT NULL DEFAULT 'open',
            decided_by    INTEGER,
            decided_at    TEXT
        );
        """,
    ),
    Migration(
        4,
        "feature flags: current definitions, and an append-only trail of every field change",
        """
        CREATE TABLE flags (
            key         TEXT    PRIMARY KEY,
            definition  TEXT    NOT NULL,
            version     INTEGER NOT NULL,
            created_at  TEXT    NOT NULL,
            updated_at  TEXT    NOT NULL,
            updated_by  TEXT    NOT NULL
        );
        CREATE TABLE flag_changes (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            flag_key    TEXT    NOT NULL REFERENCES flags (key),
            version     INTEGER NOT NULL,
            at          TEXT    NOT NULL,
            actor       TEXT    NOT NULL,
            field       TEXT    NOT NULL,
            from_value  TEXT    NOT NULL,
            to_value    TEXT    NOT NULL,
            note        TEXT    NOT NULL DEFAULT ''
        );
        CREATE INDEX flag_changes_key ON flag_changes (flag_key, id);
        CREATE TRIGGER flag_changes_no_update BEFORE UPDATE ON flag_changes
        BEGIN SELECT RAISE(ABORT, 'flag changes are append-only'); END;
        CREATE TRIGGER flag_changes_no_delete BEFORE DELETE ON flag_changes
        BEGIN SELECT RAISE(ABORT, 'flag changes are append-only'); END;
        """,
    ),
    Migration(
        5,
        "flag_plans: staged rollout plans, advanced by the bot while their gates hold",
        """
        CREATE TABLE flag_plans (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            flag_key    TEXT    NOT NULL,
            steps       TEXT    NOT NULL,
            every_s     REAL    NOT NULL,
            step_index  INTEGER NOT NULL,
            state       TEXT    NOT NULL,
            next_at     TEXT,
            reason      TEXT    NOT NULL DEFAULT '',
            created_by  TEXT    NOT NULL,
            created_at  TEXT    NOT NULL
        );
        CREATE INDEX flag_plans_key ON flag_plans (flag_key, id);
        """,
    ),
    Migration(
        6,
        "deployments: the pipeline's rows, one-active-deployment locks, manual environment locks",
        """
        CREATE TABLE deployments (
            id                   INTEGER PRIMARY KEY AUTOINCREMENT,
            service              TEXT    NOT NULL,
            environment          TEXT    NOT NULL,
            version              TEXT    NOT NULL,
            previous_version     TEXT,
            kind                 TEXT    NOT NULL,
            state                TEXT    NOT NULL,
            requested_by         TEXT    NOT NULL,
            emergency            INTEGER NOT NULL DEFAULT 0,
            dry_run              INTEGER NOT NULL DEFAULT 0,
            created_at           TEXT    NOT NULL,
            updated_at           TEXT    NOT NULL,
            finished_at          TEXT,
            error                TEXT    NOT NULL DEFAULT '',
            progress_chat_id     INTEGER,
            progress_message_id  INTEGER
        );
        CREATE INDEX deployments_service ON deployments (service, id);
        CREATE INDEX deployments_in_flight ON deployments (id) WHERE finished_at IS NULL;
        CREATE TABLE deployment_locks (
            service        TEXT    NOT NULL,
            environment    TEXT    NOT NULL,
            deployment_id  INTEGER NOT NULL UNIQUE REFERENCES deployments (id),
            acquired_at    TEXT    NOT NULL,
            PRIMARY KEY (service, environment)
        );
        CREATE TABLE env_locks (
            environment  TEXT PRIMARY KEY,
            locked_by    TEXT NOT NULL,
            reason       TEXT NOT NULL,
            since        TEXT NOT NULL
        );
        """,
    ),
    Migration(
        7,
        "approvals: sign-off requests, checklist items, votes, evidence, rejection prompts",
        """
        CREATE TABLE approval_requests (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id  INTEGER NOT NULL UNIQUE REFERENCES deployments (id),
            requester      TEXT    NOT NULL,
            status         TEXT    NOT NULL,
            any_role       INTEGER NOT NULL DEFAULT 0,
            origin_chat_id     INTEGER,
            origin_message_id  INTEGER,
            chat_id        INTEGER,
            message_id     INTEGER,
            created_at     TEXT    NOT NULL,
            remind_at      TEXT    NOT NULL,
            escalate_at    TEXT    NOT NULL,
            expires_at     TEXT    NOT NULL,
            reminded       INTEGER NOT NULL DEFAULT 0,
            escalated      INTEGER NOT NULL DEFAULT 0,
            ended_at       TEXT,
            ended_by       TEXT,
            reason         TEXT    NOT NULL DEFAULT ''
        );
        CREATE INDEX approval_requests_open ON approval_requests (id) WHERE ended_at IS NULL;
        CREATE TABLE approval_roles (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id  INTEGER NOT NULL REFERENCES approval_requests (id),
            role        TEXT    NOT NULL,
            needed      INTEGER NOT NULL,
            position    INTEGER NOT NULL,
            UNIQUE (request_id, role)
        );
        CREATE TABLE approval_items (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            role_id     INTEGER NOT NULL REFERENCES approval_roles (id),
            item_key    TEXT    NOT NULL,
            text        TEXT    NOT NULL,
            required    INTEGER NOT NULL,
            position    INTEGER NOT NULL,
            ticked_by   TEXT,
            ticked_at   TEXT,
            UNIQUE (role_id, item_key)
        );
        CREATE TABLE approval_votes (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            role_id     INTEGER NOT NULL REFERENCES approval_roles (id),
            user_id     TEXT    NOT NULL,
            decision    TEXT    NOT NULL,
            reason      TEXT    NOT NULL DEFAULT '',
            at          TEXT    NOT NULL,
            UNIQUE (role_id, user_id)
        );
        CREATE TABLE approval_evidence (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id  INTEGER NOT NULL REFERENCES approval_requests (id),
            item_id     INTEGER REFERENCES approval_items (id),
            user_id     TEXT    NOT NULL,
            kind        TEXT    NOT NULL,
            content     TEXT    NOT NULL,
            file_id     TEXT,
            at          TEXT    NOT NULL
        );
        CREATE TABLE evidence_choices (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            evidence_id  INTEGER NOT NULL REFERENCES approval_evidence (id),
            item_id      INTEGER NOT NULL REFERENCES approval_items (id),
            UNIQUE (evidence_id, item_id)
        );
        CREATE TABLE rejection_prompts (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            role_id     INTEGER NOT NULL REFERENCES approval_roles (id),
            user_id     TEXT    NOT NULL,
            chat_id     INTEGER NOT NULL,
            message_id  INTEGER NOT NULL,
            at          TEXT    NOT NULL,
            UNIQUE (chat_id, message_id)
        );
        """,
    ),
    Migration(
        8,
        "alerts: alerts by fingerprint, their groups and messages, silences, the outbox",
        """
        CREATE TABLE alert_groups (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            key           TEXT    NOT NULL UNIQUE,
            labels        TEXT    NOT NULL,
            chat_id       INTEGER NOT NULL,
            route         INTEGER NOT NULL,
            message_id    INTEGER,
            dirty         INTEGER NOT NULL DEFAULT 0,
            due_at        TEXT,
            notified_at   TEXT,
            firing_since  TEXT,
            escalation    INTEGER NOT NULL DEFAULT 0,
            acked_by      TEXT,
            acked_at      TEXT
        );
        CREATE TABLE alerts (
            fingerprint   TEXT    PRIMARY KEY,
            group_id      INTEGER NOT NULL REFERENCES alert_groups (id),
            labels        TEXT    NOT NULL,
            annotations   TEXT    NOT NULL,
            source        TEXT    NOT NULL,
            status        TEXT    NOT NULL,
            starts_at     TEXT    NOT NULL,
            ends_at       TEXT,
            first_seen    TEXT    NOT NULL,
            last_seen     TEXT    NOT NULL,
            notified      TEXT    NOT NULL DEFAULT ''
        );
        CREATE INDEX alerts_group ON alerts (group_id, status);
        CREATE TABLE silences (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            matchers    TEXT    NOT NULL,
            starts_at   TEXT    NOT NULL,
            ends_at     TEXT    NOT NULL,
            created_by  TEXT    NOT NULL,
            comment     TEXT    NOT NULL DEFAULT '',
            ended_by    TEXT
        );
        CREATE TABLE alert_outbox (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id     INTEGER NOT NULL,
            group_id    INTEGER,
            kind        TEXT    NOT NULL,
            fingerprints TEXT   NOT NULL,
            silent      INTEGER NOT NULL DEFAULT 0,
            dedup       TEXT    UNIQUE,
            state       TEXT    NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            next_at     TEXT    NOT NULL,
            created_at  TEXT    NOT NULL,
            sent_at     TEXT,
            message_id  INTEGER,
            folded_into INTEGER,
            error       TEXT    NOT NULL DEFAULT ''
        );
        CREATE INDEX alert_outbox_pending ON alert_outbox (next_at) WHERE state = 'pending';
        """,
    ),
    Migration(
        9,
        "retention: audit events may be deleted only once archived (up to a watermark)",
        """
        CREATE TABLE event_archive (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            upto_id     INTEGER NOT NULL,
            path        TEXT    NOT NULL,
            sha256      TEXT    NOT NULL,
            events      INTEGER NOT NULL,
            at          TEXT    NOT NULL
        );
        DROP TRIGGER events_no_delete;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN OLD.id > (SELECT coalesce(max(upto_id), 0) FROM event_archive)
        BEGIN SELECT RAISE(ABORT, 'events are append-only until archived'); END;
        """,
    ),
    Migration(
        10,
        "alert outbox: how many chat messages a delivery took (every part counts)",
        """
        ALTER TABLE alert_outbox ADD COLUMN messages INTEGER NOT NULL DEFAULT 1;
        """,
    ),
    Migration(
        11,
        "fleets: where each host of a deployment is (its batch, state, release before it)",
        """
        CREATE TABLE deployment_hosts (
            deployment_id    INTEGER NOT NULL REFERENCES deployments (id),
            host             TEXT    NOT NULL,
            position         INTEGER NOT NULL,
            batch            INTEGER NOT NULL,
            state            TEXT    NOT NULL DEFAULT 'pending',
            previous_version TEXT,
            error            TEXT    NOT NULL DEFAULT '',
            started_at       TEXT,
            updated_at       TEXT    NOT NULL,
            PRIMARY KEY (deployment_id, host)
        );
        """,
    ),
    Migration(
        12,
        "canary releases: each rollout's colour, step, weight and control, and its analyses",
        """
        CREATE TABLE canary_rollouts (
            deployment_id INTEGER PRIMARY KEY REFERENCES deployments (id),
            color         TEXT    NOT NULL,
            phase         TEXT    NOT NULL DEFAULT 'starting',
            step          INTEGER NOT NULL DEFAULT -1,
            weight        INTEGER NOT NULL DEFAULT 0,
            paused        INTEGER NOT NULL DEFAULT 0,
            updated_at    TEXT    NOT NULL
        );
        CREATE TABLE canary_analyses (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id INTEGER NOT NULL REFERENCES deployments (id),
            at            TEXT    NOT NULL,
            phase         TEXT    NOT NULL,
            weight        INTEGER NOT NULL,
            verdict       TEXT    NOT NULL,
            numbers       TEXT    NOT NULL
        );
        CREATE INDEX canary_analyses_by_deployment ON canary_analyses (deployment_id, id);
        """,
    ),
    Migration(
        13,
        "outgoing webhooks: a queue of deliveries per subscription, and their running totals",
        """
        CREATE TABLE webhook_deliveries (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            subscription TEXT    NOT NULL,
            event_id     INTEGER NOT NULL,
            kind         TEXT    NOT NULL,
            subject      TEXT    NOT NULL,
            message_id   TEXT    NOT NULL UNIQUE,
            body         TEXT    NOT NULL,
            created_at   TEXT    NOT NULL,
            state        TEXT    NOT NULL DEFAULT 'pending',
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_at      TEXT    NOT NULL,
            last_error   TEXT    NOT NULL DEFAULT '',
            updated_at   TEXT    NOT NULL
        );
        CREATE INDEX webhook_deliveries_pending
            ON webhook_deliveries (subscription, subject, id) WHERE state = 'pending';
        CREATE TABLE webhook_totals (
            subscription      TEXT    PRIMARY KEY,
            delivered         INTEGER NOT NULL DEFAULT 0,
            failed            INTEGER NOT NULL DEFAULT 0,
            gave_up           INTEGER NOT NULL DEFAULT 0,
            last_error        TEXT    NOT NULL DEFAULT '',
            last_error_at     TEXT,
            last_delivered_at TEXT
        );
        """,
    ),
    Migration(
        14,
        "long watches: a watch of hours to days after a deploy, checked in the background",
        """
        CREATE TABLE long_watches (
            deployment_id    INTEGER PRIMARY KEY REFERENCES deployments (id),
            service          TEXT    NOT NULL,
            environment      TEXT    NOT NULL,
            host             TEXT    NOT NULL,
            version          TEXT    NOT NULL,
            previous_version TEXT,
            restarts_before  INTEGER,
            started_at       TEXT    NOT NULL,
            ends_at          TEXT    NOT NULL,
            state            TEXT    NOT NULL DEFAULT 'watching',
            readings         INTEGER NOT NULL DEFAULT 0,
            streaks          TEXT    NOT NULL DEFAULT '{}',
            last_seen        TEXT    NOT NULL DEFAULT '',
            note             TEXT    NOT NULL DEFAULT '',
            rollback_id      INTEGER,
            updated_at       TEXT    NOT NULL
        );
        CREATE INDEX long_watches_watching ON long_watches (service) WHERE state = 'watching';
        """,
    ),
    Migration(
        15,
        "dashboard login links: one-time, short-lived, stored as the token's sha256",
        """
        CREATE TABLE dashboard_links (
            token_sha256 TEXT    PRIMARY KEY,
            person       INTEGER NOT NULL,
            created_at   TEXT    NOT NULL,
            expires_at   TEXT    NOT NULL,
            used_at      TEXT
        );
        """,
    ),
    Migration(
        16,
        "flag change requests: a rollout above its four-eyes threshold waits for a second person",
        """
        CREATE TABLE flag_change_requests (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            flag_key     TEXT    NOT NULL,
            change       TEXT    NOT NULL,
            from_version INTEGER NOT NULL,
            requested_by TEXT    NOT NULL,
            requested_at TEXT    NOT NULL,
            state        TEXT    NOT NULL DEFAULT 'pending',
            decided_by   TEXT,
            decided_at   TEXT,
            chat_id      INTEGER,
            message_id   INTEGER
        );
        CREATE INDEX flag_change_requests_pending ON flag_change_requests (flag_key)
            WHERE state = 'pending';
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
