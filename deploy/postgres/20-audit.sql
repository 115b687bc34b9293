-- The shared audit log's table, append-only by construction. Run as a PostgreSQL superuser
-- after 10-team-roles.sql (it connects to the `unlearnops` database itself). One table holds
-- any number of independent logs (column `log`, e.g. one per team or environment).
--
-- What the database enforces, whatever client writes:
--   * the application role `unlearnops` holds SELECT and INSERT only: UPDATE, DELETE and
--     TRUNCATE are refused by the privilege system ("permission denied for table records");
--   * triggers refuse UPDATE, DELETE and TRUNCATE for every role, the table's owner included
--     (only a superuser, who can drop triggers, can rewrite history: the signed checkpoints
--     kept outside the database are what detects that);
--   * a record must extend its log's head: seq = head seq + 1 and prev = head hash, checked
--     under the log's advisory lock, and (log, seq), (log, prev) and (log, hash) are unique, so
--     two records can never claim the same place in a chain: concurrent writers queue, they
--     cannot fork it;
--   * the client inserts only (log, line); seq, prev and hash are taken from the line (the
--     record's canonical JSON, byte for byte the file log's line) by the trigger.
\connect unlearnops

CREATE ROLE unlearnops_audit_owner NOLOGIN;
CREATE SCHEMA audit AUTHORIZATION unlearnops_audit_owner;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO unlearnops;

SET ROLE unlearnops_audit_owner;

CREATE TABLE audit.records (
    log        text        NOT NULL CHECK (log ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    seq        bigint      NOT NULL CHECK (seq >= 1),
    prev       text        NOT NULL CHECK (prev ~ '^[0-9a-f]{64}$'),
    hash       text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    line       text        NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    written_by name        NOT NULL DEFAULT session_user,
    PRIMARY KEY (log, seq),
    UNIQUE (log, prev),
    UNIQUE (log, hash)
);
COMMENT ON TABLE audit.records IS
    'unlearnops audit logs: one hash-chained record per row (line = the canonical JSON record); append-only';

-- The advisory lock class every writer of a log takes, with hashtext(log) as the second key:
-- the client holds it (session level) across reading the head and inserting, and the insert
-- trigger takes it again (free for the holder), so a client that skipped it still queues.
CREATE FUNCTION audit.lock_class() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 1970170997 $$;

CREATE FUNCTION audit.check_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
    record    jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(audit.lock_class(), hashtext(NEW.log));
    BEGIN
        record := NEW.line::jsonb;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'audit log %: the line is not JSON', NEW.log USING ERRCODE = 'check_violation';
    END;
    IF jsonb_typeof(record) IS DISTINCT FROM 'object' OR jsonb_typeof(record -> 'seq') IS DISTINCT FROM 'number'
       OR jsonb_typeof(record -> 'prev') IS DISTINCT FROM 'string' OR jsonb_typeof(record -> 'hash') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'audit log %: the line is not a record (seq, prev and hash)', NEW.log USING ERRCODE = 'check_violation';
    END IF;
    NEW.seq := (record ->> 'seq')::bigint;
    NEW.prev := record ->> 'prev';
    NEW.hash := record ->> 'hash';
    SELECT seq, hash INTO head_seq, head_hash FROM audit.records WHERE log = NEW.log ORDER BY seq DESC LIMIT 1;
    IF NEW.seq <> coalesce(head_seq, 0) + 1 OR NEW.prev <> coalesce(head_hash, repeat('0', 64)) THEN
        RAISE EXCEPTION 'audit log %: record % does not extend the head (seq %)', NEW.log, NEW.seq, coalesce(head_seq, 0)
            USING ERRCODE = 'serialization_failure', HINT = 'take the log''s advisory lock, read the head again and re-append';
    END IF;
    NEW.written_at := clock_timestamp();
    NEW.written_by := session_user;
    RETURN NEW;
END
$$;

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.records is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER records_extend_head BEFORE INSERT ON audit.records FOR EACH ROW EXECUTE FUNCTION audit.check_append();
CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON audit.records FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON audit.records FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

RESET ROLE;

REVOKE ALL ON audit.records FROM PUBLIC;
GRANT SELECT, INSERT ON audit.records TO unlearnops;
REVOKE ALL ON FUNCTION audit.check_append(), audit.refuse_change() FROM PUBLIC;
