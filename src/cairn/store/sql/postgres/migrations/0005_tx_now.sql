-- cairn_tx_now: the database clock as the transaction began, one value for the whole transaction.
-- A claim reads it in the same round trip as its claims (instead of reading the clock first and
-- sending it back), and every statement of the claim judges leases and due times by the same now.
CREATE FUNCTION cairn_tx_now() RETURNS double precision LANGUAGE sql STABLE AS
$$ SELECT COALESCE(NULLIF(current_setting('cairn.fake_now', true), '')::double precision,
                   extract(epoch from transaction_timestamp())::double precision) $$;
