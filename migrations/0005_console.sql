-- What the operator console reads: each dispatch round's outcome and duration, and orders by time.
ALTER TABLE dispatch_rounds ADD COLUMN placed integer CHECK (placed >= 0);   -- jobs put on routes
ALTER TABLE dispatch_rounds ADD COLUMN seconds double precision;             -- from its start to its write

CREATE INDEX orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_open ON orders (created_at)
    WHERE state IN ('placed', 'accepted', 'preparing', 'ready', 'in_delivery');
CREATE INDEX orders_delivered ON orders (updated_at) WHERE state = 'delivered';
