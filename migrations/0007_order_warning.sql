-- A delivery order no courier on shift could collect in time when it was placed (DISPATCH_UNDELIVERABLE=flag):
-- why, and what the resident may do instead (pick-up, a later slot).
ALTER TABLE orders ADD COLUMN warning jsonb;
