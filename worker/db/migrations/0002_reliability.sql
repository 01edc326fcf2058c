-- Reliability: dead letters, the effect ledger and job claims (fencing). Idempotent.

-- Jobs that will not run again by themselves: permanent errors, exhausted tries, poison payloads,
-- unknown job names past the grace window. Inspect, replay or purge with `python -m worker dead-letters`.
CREATE TABLE IF NOT EXISTS dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        text        NOT NULL,
    queue         text        NOT NULL,
    function      text        NOT NULL,
    payload       bytea       NOT NULL,   -- the job as it was in Redis (JSON, or the poison bytes)
    reason        text        NOT NULL,   -- permanent-error, tries-exhausted, poison, unknown-job
    error_type    text        NOT NULL,
    error_message text        NOT NULL,
    attempts      integer     NOT NULL,
    enqueued_at   timestamptz,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    replay_job_id text
);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at_idx ON dead_letters (failed_at DESC);

-- Effectively-once writes: a write job inserts its idempotency key here in the same transaction as
-- its effect. A second run finds the key and returns the stored result instead of applying it again.
CREATE TABLE IF NOT EXISTS job_effects (
    idempotency_key text PRIMARY KEY,
    job_id          text        NOT NULL,
    function        text        NOT NULL,
    result          jsonb,
    committed_at    timestamptz NOT NULL DEFAULT now()
);

-- Fencing: the try that owns a job. A write commits only while its try is the newest claim, so a
-- worker that lost its lease (blocked event loop) cannot commit after another worker took over.
CREATE TABLE IF NOT EXISTS job_claims (
    job_id     text PRIMARY KEY,
    try        integer     NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_claims_claimed_at_idx ON job_claims (claimed_at);
CREATE INDEX IF NOT EXISTS job_effects_committed_at_idx ON job_effects (committed_at);
