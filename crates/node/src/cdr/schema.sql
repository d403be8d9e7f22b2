-- hatrunk's CDR tables (issue 21), applied by every node at start, under an advisory lock so that
-- nodes starting together do not race. Version 1. One row per call, keyed by its Call-ID and start
-- time, so a record shipped twice (a retry after a lost commit) is inserted once; one row per
-- attempt. `record` keeps the whole CDR as the JSON-lines file has it.
CREATE TABLE IF NOT EXISTS hatrunk_cdr_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hatrunk_calls (
    call_key text PRIMARY KEY,
    call_id text NOT NULL,
    trunk text,
    direction text NOT NULL,
    from_uri text NOT NULL,
    to_uri text NOT NULL,
    start_at timestamptz NOT NULL,
    answer_at timestamptz,
    end_at timestamptz NOT NULL,
    disposition text NOT NULL,
    cause text NOT NULL,
    final_code integer,
    failover boolean NOT NULL,
    failover_ms bigint,
    primary_skipped boolean NOT NULL,
    record jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS hatrunk_attempts (
    call_key text NOT NULL REFERENCES hatrunk_calls (call_key) ON DELETE CASCADE,
    n integer NOT NULL,
    account text,
    node text NOT NULL,
    zone text NOT NULL,
    region text NOT NULL,
    target text NOT NULL,
    code integer,
    error text,
    elapsed_ms bigint NOT NULL,
    PRIMARY KEY (call_key, n)
);
CREATE INDEX IF NOT EXISTS hatrunk_calls_start ON hatrunk_calls (start_at);
CREATE INDEX IF NOT EXISTS hatrunk_calls_trunk ON hatrunk_calls (trunk, start_at);
INSERT INTO hatrunk_cdr_schema (version) VALUES (1) ON CONFLICT DO NOTHING;
