-- The demo's private room and database broadcasts (make run-pg, after the
-- realtime schema): Supabase's roles and auth.uid(), a membership table whose
-- rows the policies on realtime.messages read (a private room's members read
-- and write it), and a trigger on todos that sends each change with
-- realtime.broadcast_changes to the private topic "todos-changes", which every
-- signed-in user may read.
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated;
GRANT SELECT, INSERT ON realtime.messages TO anon, authenticated;
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT SELECT ON todos TO authenticated;

CREATE TABLE room_members (user_id uuid, room text, PRIMARY KEY (user_id, room));
GRANT SELECT ON room_members TO authenticated;

CREATE POLICY "room members read" ON realtime.messages FOR SELECT TO authenticated USING (
  realtime.topic() = 'todos-changes'
  OR EXISTS (SELECT 1 FROM room_members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()));
CREATE POLICY "room members write" ON realtime.messages FOR INSERT TO authenticated WITH CHECK (
  EXISTS (SELECT 1 FROM room_members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()));

CREATE FUNCTION todos_broadcast() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM realtime.broadcast_changes('todos-changes', TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
  RETURN NULL;
END $$;
CREATE TRIGGER todos_broadcast AFTER INSERT OR UPDATE OR DELETE ON todos
  FOR EACH ROW EXECUTE FUNCTION todos_broadcast();
