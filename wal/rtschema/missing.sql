-- The objects of schema.sql that do not exist, by name.
SELECT name FROM (VALUES
  (1, 'schema realtime', to_regnamespace('realtime') IS NOT NULL),
  (2, 'table realtime.messages', to_regclass('realtime.messages') IS NOT NULL),
  (3, 'index realtime.messages_inserted_at_topic_index', to_regclass('realtime.messages_inserted_at_topic_index') IS NOT NULL),
  (4, 'function realtime.topic()', to_regprocedure('realtime.topic()') IS NOT NULL),
  (5, 'function realtime.send(jsonb, text, text, boolean)', to_regprocedure('realtime.send(jsonb, text, text, boolean)') IS NOT NULL),
  (6, 'function realtime.send_binary(bytea, text, text, boolean)', to_regprocedure('realtime.send_binary(bytea, text, text, boolean)') IS NOT NULL),
  (7, 'function realtime.broadcast_changes(text, text, text, text, text, record, record, text)',
      to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') IS NOT NULL)
) AS o(n, name, present)
WHERE NOT present
ORDER BY n
