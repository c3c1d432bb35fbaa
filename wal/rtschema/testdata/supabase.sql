-- The realtime schema as Supabase Realtime's tenant migrations leave it
-- (supabase/realtime lib/realtime/tenants/repo/migrations/, up to
-- 20260707120000_restrict_realtime_schema), written for the tests: the
-- table rebuilt by the partitioning migrations (so id comes after the
-- timestamps and binary_payload last, its check constraint NOT VALID),
-- owned by supabase_realtime_admin, with Supabase's grants, the replay
-- index, the functions as the latest migrations define them, another
-- table of the schema, and an app's policies. The roles are the
-- cluster's: the tests create them first.
CREATE SCHEMA realtime;
GRANT USAGE ON SCHEMA realtime TO postgres, anon, authenticated, service_role;
GRANT ALL PRIVILEGES ON SCHEMA realtime TO supabase_realtime_admin;

CREATE TABLE realtime.schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0));

CREATE TABLE realtime.messages (
  id bigserial,
  uuid text DEFAULT gen_random_uuid(),
  topic text NOT NULL,
  extension text NOT NULL,
  payload jsonb,
  event text,
  private boolean DEFAULT false,
  updated_at timestamp NOT NULL DEFAULT now(),
  inserted_at timestamp NOT NULL DEFAULT now(),
  PRIMARY KEY (id, inserted_at)
) PARTITION BY RANGE (inserted_at);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.messages DROP COLUMN id, DROP COLUMN uuid;
ALTER TABLE realtime.messages ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE realtime.messages ADD PRIMARY KEY (id, inserted_at);
ALTER TABLE realtime.messages ADD COLUMN IF NOT EXISTS binary_payload bytea;
ALTER TABLE realtime.messages ADD CONSTRAINT messages_payload_exclusive
  CHECK (payload IS NULL OR binary_payload IS NULL) NOT VALID;
ALTER TABLE realtime.messages OWNER TO supabase_realtime_admin;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO postgres, anon, authenticated, service_role;
CREATE INDEX IF NOT EXISTS messages_inserted_at_topic_index ON realtime.messages (inserted_at DESC, topic)
  WHERE extension = 'broadcast' AND private IS TRUE;

CREATE FUNCTION realtime.topic() RETURNS text AS $$
select nullif(current_setting('realtime.topic', true), '')::text;
$$ LANGUAGE sql STABLE;

CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
AS $$
DECLARE
  generated_id uuid;
  final_payload jsonb;
BEGIN
  BEGIN
    -- (fixture) as 20260605120000_rename_broadcast_send_warning
    generated_id := gen_random_uuid();
    IF payload ? 'id' THEN
      final_payload := payload;
    ELSE
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    END IF;
    EXECUTE format('SET LOCAL realtime.topic TO %L', topic);
    INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
    VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION realtime.send_binary(payload bytea, event text, topic text, private boolean DEFAULT true) RETURNS void
AS $$
DECLARE
  generated_id uuid;
BEGIN
  BEGIN
    -- (fixture)
    generated_id := gen_random_uuid();
    EXECUTE format('SET LOCAL realtime.topic TO %L', topic);
    INSERT INTO realtime.messages (id, binary_payload, event, topic, private, extension)
    VALUES (generated_id, payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text,
    table_schema text, NEW record, OLD record, level text DEFAULT 'ROW') RETURNS void
AS $$
DECLARE
  row_data jsonb := '{}'::jsonb;
BEGIN
  -- (fixture) as 20240919163303_add_payload_to_messages
  IF level = 'STATEMENT' THEN
    RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
  END IF;
  IF operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE' THEN
    row_data := jsonb_build_object('old_record', OLD, 'record', NEW, 'operation', operation, 'table', table_name, 'schema', table_schema);
    PERFORM realtime.send (row_data, event_name, topic_name);
  ELSE
    RAISE EXCEPTION 'Unexpected operation type: %', operation;
  END IF;
EXCEPTION
  WHEN OTHERS THEN
    RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END;
$$ LANGUAGE plpgsql;

ALTER FUNCTION realtime.topic() OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.send(jsonb, text, text, boolean) OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.send_binary(bytea, text, text, boolean) OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.broadcast_changes(text, text, text, text, text, record, record, text) OWNER TO supabase_realtime_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA realtime TO postgres, anon, authenticated, service_role;

-- The app's: a membership table and policies for private channels.
CREATE TABLE public.rooms_members (user_id uuid NOT NULL, room text NOT NULL, PRIMARY KEY (user_id, room));
GRANT SELECT ON public.rooms_members TO authenticated;
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM public.rooms_members m
                 WHERE m.user_id = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
                   AND m.room = realtime.topic())
         AND realtime.messages.extension IN ('broadcast', 'presence'));
CREATE POLICY "members write" ON realtime.messages FOR INSERT TO authenticated
  WITH CHECK (EXISTS (SELECT 1 FROM public.rooms_members m
                      WHERE m.user_id = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
                        AND m.room = realtime.topic()));
-- A DBA's choice that a grant by meshcast would undo.
REVOKE UPDATE ON realtime.messages FROM anon;
