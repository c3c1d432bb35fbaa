-- The demo's table (make run-pg, and the browser test of the demo's live table
-- panel): whole rows in old_record (REPLICA IDENTITY FULL), in the publication
-- Supabase users already put their tables in.
CREATE TABLE todos (id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false,
                    created_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE todos REPLICA IDENTITY FULL;
CREATE PUBLICATION supabase_realtime FOR TABLE todos;
INSERT INTO todos (title) VALUES ('try meshcast'), ('insert a row from psql');
