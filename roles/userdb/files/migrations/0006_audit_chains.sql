-- Hash chains over the audit log (docs/device-autologin.md, "Audit"): each
-- record of a chained event carries its chain's name and number, the hash
-- of the record before it in the chain and its own hash,
-- sha256(previous hash || the record's canonical form). Editing, removing
-- or reordering a record breaks its chain there; removing the newest ones
-- leaves the chain short of its head (dmzkit_remote_access.audit_chain
-- verifies both). Whoever may rewrite the whole table, the heads and
-- these functions (the schema's owner, the superuser) may rewrite a chain
-- too: keep its head's hash elsewhere to tell.

ALTER TABLE audit_log
    ADD COLUMN chain     text,
    ADD COLUMN chain_seq bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash      bytea,
    ADD CONSTRAINT audit_log_chained CHECK (num_nulls(chain, chain_seq, prev_hash, hash) IN (0, 4)),
    ADD CONSTRAINT audit_log_chain_seq UNIQUE (chain, chain_seq);

-- Each chain's head: the number and hash of its newest record (the start:
-- number 0, 32 zero bytes). A record's trigger locks its chain's head until
-- the writer's transaction ends, so a chain is numbered in commit order.
CREATE TABLE audit_chains (
    name   text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,31}$'),
    -- The group role whose members alone may write the chain's records.
    writer name NOT NULL,
    seq    bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    hash   bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);

-- What a record's hash covers, as bytes (the verifier reads it from here):
-- every column but its id and hashes, the time in UTC to the microsecond.
CREATE FUNCTION audit_log_canonical(r audit_log) RETURNS bytea
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT convert_to(jsonb_build_array(
        r.chain, r.chain_seq, to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), r.actor, r.subject,
        r.event, r.outcome, r.source::text, r.detail)::text, 'UTF8')
$$;

-- A BEFORE INSERT trigger per chained event (TG_ARGV[0]: the chain). It
-- runs after audit_log_actor (triggers fire in name order), so the actor
-- and time it hashes are the ones kept.
CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head dmzkit.audit_chains%ROWTYPE;
BEGIN
    UPDATE dmzkit.audit_chains SET seq = seq + 1 WHERE name = TG_ARGV[0] RETURNING * INTO head;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no audit chain %', TG_ARGV[0];
    END IF;
    IF NOT pg_has_role(NEW.actor, head.writer, 'MEMBER') THEN
        RAISE EXCEPTION 'only members of % write % records', head.writer, NEW.event
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.chain := head.name;
    NEW.chain_seq := head.seq;
    NEW.prev_hash := head.hash;
    NEW.hash := sha256(head.hash || dmzkit.audit_log_canonical(NEW));
    UPDATE dmzkit.audit_chains SET hash = NEW.hash WHERE name = head.name;
    RETURN NEW;
END $$;

REVOKE ALL ON FUNCTION audit_log_chain() FROM PUBLIC;

-- Device registration's records: one per connection (registration/server.py).
INSERT INTO audit_chains (name, writer) VALUES ('registration', 'dmzkit_registration');
CREATE TRIGGER audit_log_chain_registration BEFORE INSERT ON audit_log
    FOR EACH ROW WHEN (NEW.event = 'registration') EXECUTE FUNCTION audit_log_chain('registration');

-- Writers name what a record says, never where it sits in a chain.
REVOKE INSERT ON audit_log FROM dmzkit_authn, dmzkit_registration, dmzkit_admin, dmzkit_accounting;
GRANT INSERT (actor, subject, event, outcome, source, detail) ON audit_log
    TO dmzkit_authn, dmzkit_registration, dmzkit_admin, dmzkit_accounting;

GRANT SELECT ON audit_chains TO dmzkit_auditor;
