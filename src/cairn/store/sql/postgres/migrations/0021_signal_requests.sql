-- request: the id a client gave its send of the signal (handle.signal), NULL for one a workflow
-- sent (settled with its activation's commit). A send whose COMMIT was cut off may have landed or
-- not; the client looks its id up to tell, and sends it again only when it is not there. The
-- unique index makes that second send store nothing if the first landed after all.
ALTER TABLE cairn_signals ADD COLUMN request text;
CREATE UNIQUE INDEX cairn_signals_request ON cairn_signals (request) WHERE request IS NOT NULL;
