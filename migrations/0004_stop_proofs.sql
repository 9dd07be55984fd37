-- Stops prove where and when: how an arrival was proven (the courier's trusted position, or an admin standing
-- in for it), and an admin's completion as a proof of its own.
ALTER TABLE stops ADD COLUMN arrival_proof text CHECK (arrival_proof IN ('position', 'admin'));
ALTER TABLE stops DROP CONSTRAINT stops_proof_check;
ALTER TABLE stops ADD CONSTRAINT stops_proof_check
    CHECK (proof IN ('courier', 'shop', 'code', 'proximity', 'admin'));

-- A pick-up order collected at the counter is delivered, and so is its job (it used to stay picked_up).
UPDATE jobs j SET state = 'delivered'
FROM orders o
WHERE o.id = j.order_id AND o.fulfilment = 'pickup' AND j.state = 'picked_up';
