-- The dashboard's audit log (worker/db/dashboard_audit.py): every action asked for on the dashboard,
-- allowed or refused, with who asked, as which role, from where, and how it ended. Idempotent.
CREATE TABLE IF NOT EXISTS dashboard_audit (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text        NOT NULL,                   -- the signed-in user ("anonymous": no sign-in)
    role       text        NOT NULL,                   -- viewer or operator
    action     text        NOT NULL,                   -- abort, retry, pause, limit-set, ...
    target     text        NOT NULL DEFAULT '',        -- a job id, dead letter, job name or limit
    parameters jsonb       NOT NULL DEFAULT '{}'::jsonb, -- the request's fields (no secrets)
    client     text        NOT NULL DEFAULT '',        -- the client's address
    outcome    text        NOT NULL,                   -- pending, ok, refused, failed
    detail     text        NOT NULL DEFAULT '',        -- the result, or why it was refused or failed
    CONSTRAINT dashboard_audit_outcome_check
        CHECK (outcome IN ('pending', 'ok', 'refused', 'failed'))
);
CREATE INDEX IF NOT EXISTS dashboard_audit_at_idx ON dashboard_audit (at DESC);
