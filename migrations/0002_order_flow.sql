-- The order flow: requested items, pins, refusals and unfulfilled lines, and the offer-deadline timer.

ALTER TABLE orders ADD COLUMN items jsonb NOT NULL DEFAULT '[]';   -- as requested: [{"sku","qty","shop_id"}]

ALTER TABLE jobs ADD COLUMN reason text;                            -- why the shop rejected
ALTER TABLE jobs ADD COLUMN unfulfilled_lines jsonb;                -- lines no shop was left to take
ALTER TABLE jobs ADD COLUMN closed_at timestamptz;                  -- rejected, expired, cancelled...

CREATE INDEX jobs_order ON jobs (order_id);
-- Offer deadlines are timers stored as data: whichever node is alive claims the due ones with
-- FOR UPDATE SKIP LOCKED. A partial index keeps that scan to the open offers.
CREATE INDEX jobs_offer_deadline ON jobs (deadline_at) WHERE state = 'offered';
CREATE INDEX orders_resident_state ON orders (resident_id, state);
