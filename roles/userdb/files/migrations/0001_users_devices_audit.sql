-- Users, groups, password hashes, devices and the audit log: what the IdP,
-- the SAML proxy, AAA, IM and device registration read and write.
-- Runs as the schema owner, in one transaction with its version row.

CREATE TABLE users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username     text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    display_name text NOT NULL DEFAULT '',
    email        text CHECK (email IS NULL OR email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE groups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    description text NOT NULL DEFAULT ''
);

CREATE TABLE memberships (
    user_id  bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    group_id bigint NOT NULL REFERENCES groups ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);

-- Apart from users, so that reading who a user is does not read their hash.
CREATE TABLE credentials (
    user_id         bigint PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    changed_at      timestamptz NOT NULL DEFAULT now(),
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    timestamptz
);

-- A user's machine, known by the public key of its certificate.
CREATE TABLE devices (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    spki_sha256   text NOT NULL UNIQUE CHECK (spki_sha256 ~ '^[0-9a-f]{64}$'),
    serial        text,
    registered_at timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    UNIQUE (user_id, name)
);

CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- Set by the trigger below to the database role that wrote the row.
    actor   text NOT NULL,
    subject text,
    event   text NOT NULL CHECK (event ~ '^[a-z][a-z0-9_.]{0,63}$'),
    outcome text NOT NULL CHECK (outcome IN ('success', 'failure')),
    source  inet,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_at ON audit_log (subject, at);

-- Who wrote an audit record is not the writer's to say, and a record once
-- written stays as it is.
CREATE FUNCTION audit_log_actor() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    NEW.actor := session_user;
    NEW.at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_actor BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_actor();

CREATE FUNCTION audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Privileges, by what a consumer does (roles made by the userdb role).
-- Every writer may append to the audit log.
GRANT INSERT ON audit_log TO dmzkit_authn, dmzkit_registration, dmzkit_admin;

-- The IdP and AAA: who the user is, their groups and devices, their
-- password hash, and counting failed attempts.
GRANT SELECT ON users, groups, memberships, credentials, devices TO dmzkit_authn;
GRANT UPDATE (failed_attempts, locked_until) ON credentials TO dmzkit_authn;

-- Device registration: enrol and revoke a user's devices.
GRANT SELECT ON users TO dmzkit_registration;
GRANT SELECT, INSERT ON devices TO dmzkit_registration;
GRANT UPDATE (revoked_at) ON devices TO dmzkit_registration;

-- Account management.
GRANT SELECT, INSERT, UPDATE, DELETE ON users, groups, memberships, credentials, devices TO dmzkit_admin;

GRANT SELECT ON audit_log TO dmzkit_auditor;
