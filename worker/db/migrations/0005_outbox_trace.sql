-- The producer's trace context on outbox rows (docs/wire-format.md, Trace context): enqueue_job()
-- takes an optional W3C traceparent and tracestate, else the transaction's `pgpool.traceparent` and
-- `pgpool.tracestate` settings (SET LOCAL), and the relay copies them into the job's payload, so a
-- tracing worker's run of the job continues the producer's trace. Idempotent.

ALTER TABLE job_outbox ADD COLUMN IF NOT EXISTS traceparent text;  -- NULL: no trace context
ALTER TABLE job_outbox ADD COLUMN IF NOT EXISTS tracestate text;   -- only with a traceparent

-- Rows inserted directly (a producer's role may INSERT) are held to enqueue_job()'s rules: a
-- version-00 W3C traceparent in lowercase hex, its trace id and parent span id not all zero, and a
-- tracestate (only with a traceparent) of at most 512 printable ASCII characters.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'job_outbox_trace_check') THEN
        ALTER TABLE job_outbox ADD CONSTRAINT job_outbox_trace_check CHECK (
            (traceparent IS NULL AND tracestate IS NULL)
            OR (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
                AND substr(traceparent, 4, 32) <> repeat('0', 32)
                AND substr(traceparent, 37, 16) <> repeat('0', 16)
                AND (tracestate IS NULL
                     OR (tracestate ~ '^[\x20-\x7e]+$' AND length(tracestate) <= 512))));
    END IF;
END;
$$;

-- enqueue_job() with two trailing parameters; every existing call (positional or named) still works.
-- Its old signature is replaced, and who could EXECUTE it may EXECUTE the new one.
CREATE OR REPLACE FUNCTION enqueue_job(
    name        text,
    args        jsonb       DEFAULT '{}'::jsonb,
    job_id      text        DEFAULT NULL,
    run_at      timestamptz DEFAULT NULL,
    queue       text        DEFAULT 'arq:queue',
    traceparent text        DEFAULT NULL,
    tracestate  text        DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    new_id text;
    parent text := traceparent;
    state  text := tracestate;
BEGIN
    IF name IS NULL OR length(name) = 0 THEN
        RAISE EXCEPTION 'enqueue_job: name must be a job name, got an empty one'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF args IS NULL OR jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'enqueue_job: args must be a JSON object of keyword arguments, got %',
            coalesce(jsonb_typeof(args), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job_id IS NOT NULL AND length(job_id) = 0 THEN
        RAISE EXCEPTION 'enqueue_job: job_id must not be empty (NULL: a new id)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF queue IS NULL OR length(queue) = 0 THEN
        RAISE EXCEPTION 'enqueue_job: queue must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- No traceparent given: the transaction's (SET LOCAL pgpool.traceparent = '...'), with its
    -- tracestate. An empty one is none (a setting once set in a session reads '' afterwards).
    IF parent IS NULL THEN
        parent := current_setting('pgpool.traceparent', true);
        IF state IS NULL THEN
            state := current_setting('pgpool.tracestate', true);
        END IF;
    END IF;
    parent := nullif(parent, '');
    state := nullif(state, '');
    IF parent IS NOT NULL AND NOT (parent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
                                   AND substr(parent, 4, 32) <> repeat('0', 32)
                                   AND substr(parent, 37, 16) <> repeat('0', 16)) THEN
        RAISE EXCEPTION 'enqueue_job: traceparent (or the pgpool.traceparent setting) must be a '
            'W3C traceparent: 00-<32 lowercase hex trace id, not all zero>-<16 lowercase hex '
            'parent span id, not all zero>-<2 lowercase hex flags>'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF state IS NOT NULL AND parent IS NULL THEN
        RAISE EXCEPTION 'enqueue_job: tracestate (or the pgpool.tracestate setting) is given '
            'without a traceparent'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF state IS NOT NULL AND (state !~ '^[\x20-\x7e]+$' OR length(state) > 512) THEN
        RAISE EXCEPTION 'enqueue_job: tracestate (or the pgpool.tracestate setting) must be at '
            'most 512 printable ASCII characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO job_outbox AS o (id, queue, function, args, run_at, traceparent, tracestate)
    VALUES (coalesce(job_id, replace(gen_random_uuid()::text, '-', '')), queue, name, args, run_at,
            parent, state)
    RETURNING o.id INTO new_id;
    -- Delivered at commit only (never for a rolled-back transaction): wakes the queue's relays.
    PERFORM pg_notify('job_outbox', queue);
    RETURN new_id;
END;
$$;

DO $$
DECLARE
    old_fn regprocedure := to_regprocedure('enqueue_job(text, jsonb, text, timestamptz, text)');
    new_fn regprocedure :=
        'enqueue_job(text, jsonb, text, timestamptz, text, text, text)'::regprocedure;
    acl aclitem[];
    entry record;
BEGIN
    IF old_fn IS NULL THEN
        RETURN;
    END IF;
    SELECT proacl INTO acl FROM pg_proc WHERE oid = old_fn;
    IF acl IS NOT NULL THEN  -- NULL: the default (PUBLIC may execute), as the new one has
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', new_fn);
        FOR entry IN
            SELECT grantee, is_grantable FROM aclexplode(acl) WHERE privilege_type = 'EXECUTE'
        LOOP
            EXECUTE format(
                'GRANT EXECUTE ON FUNCTION %s TO %s%s',
                new_fn,
                CASE WHEN entry.grantee = 0 THEN 'PUBLIC'
                     ELSE quote_ident(pg_get_userbyid(entry.grantee)) END,
                CASE WHEN entry.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
    EXECUTE format('DROP FUNCTION %s', old_fn);
END;
$$;
