-- AAA's accounting: one row per Accounting-Request a gateway sends (start,
-- interim update, stop), as received; rows are never changed.

CREATE TABLE radius_accounting (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    nas             text NOT NULL CHECK (length(nas) BETWEEN 1 AND 64),
    nas_address     inet,
    status          text NOT NULL CHECK (status IN ('start', 'stop', 'interim-update', 'accounting-on', 'accounting-off')),
    session_id      text NOT NULL CHECK (length(session_id) <= 253),
    username        text NOT NULL CHECK (length(username) <= 253),
    framed_address  inet,
    calling_station text CHECK (length(calling_station) <= 253),
    input_octets    bigint CHECK (input_octets >= 0),
    output_octets   bigint CHECK (output_octets >= 0),
    session_seconds bigint CHECK (session_seconds >= 0),
    terminate_cause text CHECK (length(terminate_cause) <= 64)
);
CREATE INDEX radius_accounting_username_received ON radius_accounting (username, received_at);

CREATE TRIGGER radius_accounting_append_only BEFORE UPDATE OR DELETE ON radius_accounting
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER radius_accounting_no_truncate BEFORE TRUNCATE ON radius_accounting
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Privileges (roles made by the userdb role): AAA records, the auditor reads.
GRANT INSERT ON radius_accounting, audit_log TO dmzkit_accounting;
GRANT SELECT ON radius_accounting TO dmzkit_auditor;
