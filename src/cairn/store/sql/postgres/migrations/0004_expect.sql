-- cairn_expect: a check that fails the transaction on the server. A pipelined commit sends all its
-- statements at once; a failed fence must stop the statements behind it from running at all.
CREATE FUNCTION cairn_expect(ok boolean, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION '%', what USING ERRCODE = 'CA001';
    END IF;
END $$;
