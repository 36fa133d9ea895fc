-- A refund finds the lot it reverses, and who holds it now, by lot key: without this index every
-- reversal scanned the whole ledger.
create index entries_lot_key on entries (lot_key, seq) where lot_key is not null;
