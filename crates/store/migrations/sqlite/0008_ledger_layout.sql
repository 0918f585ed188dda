-- The ledger's block size (`usage.block = seq >> block_bits`, see 0001 and
-- crates/store/src/sqlite.rs): fixed for the life of a database. Databases
-- that already hold usage keep the 8,192-seq blocks they were written with
-- (13 bits); new ones use 1,024-seq blocks (10 bits), so a group commit
-- dirties fewer index pages.
CREATE TABLE ledger_layout (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    block_bits INTEGER NOT NULL
);

INSERT INTO ledger_layout (id, block_bits)
SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM usage) THEN 13 ELSE 10 END;
