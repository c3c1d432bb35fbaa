-- meshcast: the realtime schema of Supabase Realtime (realtime.messages,
-- realtime.topic, realtime.send, realtime.send_binary,
-- realtime.broadcast_changes), as a Supabase database has it.
--
-- It creates only what is missing and changes nothing that exists: run it
-- again, or on a database that already holds Supabase's realtime schema, and
-- it does nothing. Grants go to the roles anon, authenticated and
-- service_role that exist when it creates the schema and the table (it never
-- creates or alters a role). It runs in one transaction under an advisory
-- lock (see SQL), so several runs at once are safe.
DO $meshcast$
DECLARE
  app_role text;
  app_roles text[] := ARRAY['anon', 'authenticated', 'service_role'];
BEGIN
  IF to_regnamespace('realtime') IS NULL THEN
    CREATE SCHEMA realtime;
    FOREACH app_role IN ARRAY app_roles LOOP
      IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = app_role) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA realtime TO %I', app_role);
      END IF;
    END LOOP;
  END IF;

  -- Supabase's columns in Supabase's order (what SELECT * and to_jsonb
  -- show), partitioned by day: partitions realtime.messages_YYYY_MM_DD are
  -- kept by meshcast (or by the maintenance block printed with this file).
  IF to_regclass('realtime.messages') IS NULL THEN
    CREATE TABLE realtime.messages (
      topic          text NOT NULL,
      extension      text NOT NULL,
      payload        jsonb,
      event          text,
      private        boolean DEFAULT false,
      updated_at     timestamp NOT NULL DEFAULT now(),
      inserted_at    timestamp NOT NULL DEFAULT now(),
      id             uuid NOT NULL DEFAULT gen_random_uuid(),
      binary_payload bytea,
      CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at),
      CONSTRAINT messages_payload_exclusive CHECK (payload IS NULL OR binary_payload IS NULL)
    ) PARTITION BY RANGE (inserted_at);
    -- Private channels are decided by the app's policies on this table:
    -- without any, only its owner sees or writes rows.
    ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
    FOREACH app_role IN ARRAY app_roles LOOP
      IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = app_role) THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON realtime.messages TO %I', app_role);
      END IF;
    END LOOP;
  END IF;

  -- Replay reads the newest private broadcasts of a topic.
  IF to_regclass('realtime.messages_inserted_at_topic_index') IS NULL THEN
    CREATE INDEX messages_inserted_at_topic_index ON realtime.messages (inserted_at DESC, topic)
      WHERE extension = 'broadcast' AND private IS TRUE;
  END IF;

  -- The channel a policy is being checked for (without "realtime:").
  IF to_regprocedure('realtime.topic()') IS NULL THEN
    CREATE FUNCTION realtime.topic() RETURNS text
    LANGUAGE sql STABLE
    AS $fn$ SELECT nullif(current_setting('realtime.topic', true), '') $fn$;
  END IF;

  -- Broadcast payload to topic's subscribers from SQL. The row gets a fresh
  -- id, also added to payload as "id" unless payload has one. Errors (a
  -- policy refusing the insert, a missing partition, a payload that is not
  -- an object) become a warning: the caller's transaction goes on.
  IF to_regprocedure('realtime.send(jsonb, text, text, boolean)') IS NULL THEN
    CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql
    AS $fn$
    DECLARE
      msg_id uuid := gen_random_uuid();
    BEGIN
      BEGIN
        -- Policies on realtime.messages see the topic through realtime.topic().
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
        VALUES (msg_id,
                CASE WHEN payload ? 'id' THEN payload ELSE jsonb_set(payload, '{id}', to_jsonb(msg_id)) END,
                event, topic, private, 'broadcast');
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
      END;
    END
    $fn$;
  END IF;

  -- The same with bytes (binary_payload), left as they are.
  IF to_regprocedure('realtime.send_binary(bytea, text, text, boolean)') IS NULL THEN
    CREATE FUNCTION realtime.send_binary(payload bytea, event text, topic text, private boolean DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql
    AS $fn$
    BEGIN
      BEGIN
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, binary_payload, event, topic, private, extension)
        VALUES (gen_random_uuid(), payload, event, topic, private, 'broadcast');
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
      END;
    END
    $fn$;
  END IF;

  -- For a row trigger: broadcast the change to topic_name as event_name
  -- (private), {"old_record": OLD, "record": NEW, "operation", "table",
  -- "schema"}. Its errors abort the statement, with Supabase's texts.
  IF to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') IS NULL THEN
    CREATE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text,
        table_name text, table_schema text, new record, old record, level text DEFAULT 'ROW')
    RETURNS void
    LANGUAGE plpgsql
    AS $fn$
    BEGIN
      IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'Failed to process the row: function can only be triggered for each row, not for each statement';
      END IF;
      IF operation IS DISTINCT FROM 'INSERT' AND operation IS DISTINCT FROM 'UPDATE'
          AND operation IS DISTINCT FROM 'DELETE' THEN
        RAISE EXCEPTION 'Failed to process the row: Unexpected operation type: %', operation;
      END IF;
      PERFORM realtime.send(
        jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                           'table', table_name, 'schema', table_schema),
        event_name, topic_name);
    END
    $fn$;
  END IF;
END
$meshcast$;
