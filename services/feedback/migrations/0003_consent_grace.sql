-- An invitation found without a consented channel waits a little for consents still in flight
-- (they travel on another topic than the visit); retry_at keeps it out of the clock's way meanwhile.
alter table invitations add column retry_at timestamptz;
