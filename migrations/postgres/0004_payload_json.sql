-- Payloads are stored as `json` (their text, checked to be JSON) instead of `jsonb`. Nothing
-- queries inside a stored payload: every read model is folded from the typed payload. The log
-- is read far more than it is written (every rebuild reads all of it), and printing a `jsonb`
-- back as text cost ~1.7 µs an event, more than our decoding of it; a `json` value is returned
-- as stored. Payloads are written by serde_json, so they hold no duplicate keys and no
-- insignificant whitespace, and the text read back is the text that was appended.
ALTER TABLE events ALTER COLUMN payload TYPE JSON USING payload::text::json;
