-- Transactional enqueue: the job outbox and enqueue_job(). Idempotent.

-- Jobs enqueued inside a producer's own transaction: a row exists only if that transaction commits.
-- Each worker's relay (worker/runtime/relay.py) moves committed rows of its queue to Redis under the
-- row's id as the arq job id, marks them relayed (or sets `error` when the row is not a valid job,
-- which then becomes a dead letter), and deletes relayed rows after OUTBOX_RETENTION.
CREATE TABLE IF NOT EXISTS job_outbox (
    id         text        PRIMARY KEY DEFAULT replace(gen_random_uuid()::text, '-', ''),
    queue      text        NOT NULL DEFAULT 'arq:queue',
    function   text        NOT NULL,
    args       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_at     timestamptz,                          -- NULL: as soon as it is relayed
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    relayed_at timestamptz,                          -- NULL: not yet in Redis
    error      text,                                 -- why the row became a dead letter instead
    CONSTRAINT job_outbox_id_check CHECK (length(id) BETWEEN 1 AND 200),
    CONSTRAINT job_outbox_queue_check CHECK (length(queue) BETWEEN 1 AND 200),
    CONSTRAINT job_outbox_function_check CHECK (length(function) BETWEEN 1 AND 200),
    CONSTRAINT job_outbox_args_check CHECK (jsonb_typeof(args) = 'object')
);
-- The relay's claims: the unrelayed rows of a queue, oldest first.
CREATE INDEX IF NOT EXISTS job_outbox_unrelayed_idx
    ON job_outbox (queue, created_at) WHERE relayed_at IS NULL;
-- The relay's pruning: relayed rows by age.
CREATE INDEX IF NOT EXISTS job_outbox_relayed_at_idx
    ON job_outbox (relayed_at) WHERE relayed_at IS NOT NULL;

-- Enqueue a job in the caller's transaction: it reaches Redis only if that transaction commits, and
-- nothing is enqueued if it rolls back. Returns the job id (the arq job id; a duplicate id raises
-- unique_violation). `args` is the job's keyword arguments as a JSON object; the relay checks them
-- against the job's model and turns a row it cannot run into a dead letter (reason outbox-invalid).
CREATE OR REPLACE FUNCTION enqueue_job(
    name   text,
    args   jsonb       DEFAULT '{}'::jsonb,
    job_id text        DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    queue  text        DEFAULT 'arq:queue'
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    new_id text;
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
    INSERT INTO job_outbox AS o (id, queue, function, args, run_at)
    VALUES (coalesce(job_id, replace(gen_random_uuid()::text, '-', '')), queue, name, args, run_at)
    RETURNING o.id INTO new_id;
    -- Delivered at commit only (never for a rolled-back transaction): wakes the queue's relays.
    PERFORM pg_notify('job_outbox', queue);
    RETURN new_id;
END;
$$;
