-- Where and when a courier set off on its current leg (its last stop when the service there ends, or where it
-- was when given work while idle), and the stop it set off for (NULL: none, it was idle). Its next stop is
-- timed from there: a leg rounded up from its start can end later than one rounded up from midway.
ALTER TABLE couriers ADD COLUMN leg_lat double precision;
ALTER TABLE couriers ADD COLUMN leg_lng double precision;
ALTER TABLE couriers ADD COLUMN leg_at timestamptz;
ALTER TABLE couriers ADD COLUMN leg_stop_id text;
