-- The users table the jobs query, with the indexes their queries need. Idempotent.
CREATE TABLE IF NOT EXISTS users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text        NOT NULL,
    name         text        NOT NULL,
    is_active    boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz
);

-- Emails are unique whatever their case.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));
-- search_users: case-insensitive prefix search on email and on name.
CREATE INDEX IF NOT EXISTS users_email_prefix_idx ON users (lower(email) text_pattern_ops, id);
CREATE INDEX IF NOT EXISTS users_name_prefix_idx ON users (lower(name) text_pattern_ops, id);
-- list_users: filter on creation time.
CREATE INDEX IF NOT EXISTS users_created_at_idx ON users (created_at, id);
-- deactivate_inactive_users: active users by last activity.
CREATE INDEX IF NOT EXISTS users_active_last_seen_idx
    ON users ((coalesce(last_seen_at, created_at))) WHERE is_active;
