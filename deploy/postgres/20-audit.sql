-- The shared audit log's table, append-only by construction. Run as a PostgreSQL superuser
-- after 10-team-roles.sql (it connects to the `unlearnops` database itself).
--
-- What the database enforces, whatever client writes:
--   * the application role `unlearnops` holds SELECT and INSERT only: UPDATE, DELETE and
--     TRUNCATE are refused by the privilege system ("permission denied");
--   * triggers refuse UPDATE, DELETE and TRUNCATE for every role, the table's owner included
--     (only a superuser, who can drop triggers, can rewrite history: the signed checkpoints
--     kept outside the database are what detects that);
--   * a record must extend the head: seq = head seq + 1 and prev = head hash (checked under
--     one advisory lock, so concurrent writers queue instead of forking), and seq, prev and
--     hash are unique, so two records can never claim the same place in the chain;
--   * the stored line is the record itself (canonical JSON, byte for byte the file log's line)
--     and its seq/prev/hash agree with the columns.
\connect unlearnops

CREATE ROLE unlearnops_audit_owner NOLOGIN;
CREATE SCHEMA audit AUTHORIZATION unlearnops_audit_owner;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO unlearnops;

SET ROLE unlearnops_audit_owner;

CREATE TABLE audit.records (
    seq        bigint      PRIMARY KEY CHECK (seq >= 1),
    prev       text        NOT NULL UNIQUE CHECK (prev ~ '^[0-9a-f]{64}$'),
    hash       text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    line       text        NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    written_by name        NOT NULL DEFAULT session_user
);
COMMENT ON TABLE audit.records IS
    'unlearnops audit log: one hash-chained record per row (line = the canonical JSON record); append-only';

-- The advisory lock key every writer takes (the client takes it before reading the head, so
-- it computes its record against the head it will extend; the trigger takes it again, which
-- is free for the same transaction and makes a client that skipped it queue all the same).
CREATE FUNCTION audit.lock_key() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT 7526118470113370419::bigint $$;

CREATE FUNCTION audit.check_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
    record    jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(audit.lock_key());
    SELECT seq, hash INTO head_seq, head_hash FROM audit.records ORDER BY seq DESC LIMIT 1;
    IF NEW.seq <> coalesce(head_seq, 0) + 1 OR NEW.prev <> coalesce(head_hash, repeat('0', 64)) THEN
        RAISE EXCEPTION 'audit record % does not extend the head (seq %, hash %)', NEW.seq, coalesce(head_seq, 0), head_hash
            USING ERRCODE = 'serialization_failure', HINT = 'read the head again and re-append';
    END IF;
    BEGIN
        record := NEW.line::jsonb;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'audit record %: line is not JSON', NEW.seq USING ERRCODE = 'check_violation';
    END;
    IF (record ->> 'seq')::bigint IS DISTINCT FROM NEW.seq
       OR record ->> 'prev' IS DISTINCT FROM NEW.prev
       OR record ->> 'hash' IS DISTINCT FROM NEW.hash THEN
        RAISE EXCEPTION 'audit record %: seq/prev/hash columns disagree with the line', NEW.seq USING ERRCODE = 'check_violation';
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
GRANT EXECUTE ON FUNCTION audit.lock_key() TO unlearnops;
