-- Couriers: shifts, routes and their stops, the delivery code, and the dispatch round's timer.

ALTER TABLE couriers ADD COLUMN on_shift boolean NOT NULL DEFAULT false;
ALTER TABLE couriers ADD COLUMN shift_started_at timestamptz;
ALTER TABLE couriers ADD COLUMN shift_ends_at timestamptz;          -- the current shift's planned end, if any

-- Planned shifts are timers stored as data: a due start (or end) is claimed once with SKIP LOCKED.
CREATE TABLE shifts (
    id          bigserial PRIMARY KEY,
    courier_id  text NOT NULL REFERENCES couriers (id),
    start_at    timestamptz NOT NULL,
    end_at      timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'planned' CHECK (state IN ('planned', 'started', 'ended', 'cancelled')),
    created_at  timestamptz NOT NULL,
    CHECK (start_at < end_at)
);
CREATE INDEX shifts_courier ON shifts (courier_id, start_at);
CREATE INDEX shifts_start_due ON shifts (start_at) WHERE state = 'planned';
CREATE INDEX shifts_end_due ON shifts (end_at) WHERE state = 'started';

-- The resident's proof of delivery (never shown to courier or shop), and whether the courier being at the
-- door may stand in for it.
ALTER TABLE orders ADD COLUMN delivery_code text CHECK (delivery_code ~ '^[0-9]{4}$');
ALTER TABLE orders ADD COLUMN allow_proximity boolean NOT NULL DEFAULT false;

-- A route is the work one dispatch round gives one courier; a courier runs its live routes in `ordinal` order.
CREATE TABLE routes (
    id           text PRIMARY KEY,
    ordinal      bigserial UNIQUE,
    courier_id   text NOT NULL REFERENCES couriers (id),
    state        text NOT NULL
                 CHECK (state IN ('offered', 'active', 'completed', 'declined', 'expired', 'cancelled')),
    round        bigint,
    offered_at   timestamptz NOT NULL,
    deadline_at  timestamptz,                 -- offered: the courier answers before this
    accepted_at  timestamptz,
    closed_at    timestamptz,
    reason       text,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX routes_courier_live ON routes (courier_id, ordinal) WHERE state IN ('offered', 'active');
CREATE INDEX routes_offer_deadline ON routes (deadline_at) WHERE state = 'offered';
-- A courier answers one offer at a time.
CREATE UNIQUE INDEX routes_one_offer_per_courier ON routes (courier_id) WHERE state = 'offered';

CREATE TABLE stops (
    id            text PRIMARY KEY,
    route_id      text NOT NULL REFERENCES routes (id),
    seq           integer NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('pickup', 'dropoff')),
    shop_id       text REFERENCES shops (id),       -- pickups
    order_id      text REFERENCES orders (id),      -- drop-offs
    job_ids       text[] NOT NULL,
    lat           double precision NOT NULL,
    lng           double precision NOT NULL,
    items         integer NOT NULL CHECK (items >= 0),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'arrived', 'completed', 'cancelled')),
    eta_arrival   timestamptz,
    eta_service   timestamptz,
    arrived_at    timestamptz,
    completed_at  timestamptz,
    proof         text CHECK (proof IN ('courier', 'shop', 'code', 'proximity')),
    wrong_codes   integer NOT NULL DEFAULT 0,
    locked        boolean NOT NULL DEFAULT false,
    UNIQUE (route_id, seq),
    CHECK ((kind = 'pickup') = (shop_id IS NOT NULL)),
    CHECK ((kind = 'dropoff') = (order_id IS NOT NULL))
);
CREATE INDEX stops_route ON stops (route_id, seq);
CREATE INDEX stops_order ON stops (order_id) WHERE order_id IS NOT NULL;

-- One route per job: a job names at most one route, set only by compare-and-set
-- (UPDATE ... WHERE route_id IS NULL) and cleared when that route gives the job back.
ALTER TABLE jobs ADD COLUMN route_id text REFERENCES routes (id);
CREATE INDEX jobs_route ON jobs (route_id) WHERE route_id IS NOT NULL;
CREATE INDEX jobs_awaiting_courier ON jobs (order_id) WHERE route_id IS NULL AND state IN ('accepted', 'ready');

-- A courier who declined (or let expire) a job is not offered it again.
CREATE TABLE route_refusals (
    job_id      text NOT NULL REFERENCES jobs (id),
    courier_id  text NOT NULL REFERENCES couriers (id),
    at          timestamptz NOT NULL,
    PRIMARY KEY (job_id, courier_id)
);

-- Named periodic timers (the dispatch round). A node claims a due one by locking its row with SKIP LOCKED
-- and moves due_at on in the same transaction.
CREATE TABLE timers (
    name    text PRIMARY KEY,
    due_at  timestamptz NOT NULL,
    runs    bigint NOT NULL DEFAULT 0
);
INSERT INTO timers (name, due_at) VALUES ('dispatch_round', '-infinity');

-- One row per round run: the primary key makes running a round twice impossible, not just unlikely.
CREATE TABLE dispatch_rounds (
    round     bigint PRIMARY KEY,
    node      text NOT NULL,
    at        timestamptz NOT NULL,
    jobs      integer NOT NULL,
    couriers  integer NOT NULL,
    routes    integer NOT NULL,
    released  integer NOT NULL
);
