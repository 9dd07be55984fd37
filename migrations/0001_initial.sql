-- First schema. Ids are prefixed random text (dispatch/ids.py), money is integer cents, times are timestamptz.

CREATE TABLE shops (
    id              text PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    lat             double precision NOT NULL CHECK (lat BETWEEN -85 AND 85),
    lng             double precision NOT NULL CHECK (lng BETWEEN -180 AND 180),
    zone            jsonb,                      -- GeoJSON Polygon/MultiPolygon, normalised
    opening_hours   jsonb NOT NULL,             -- dispatch/core/hours.py format
    prep_minutes    integer NOT NULL DEFAULT 15 CHECK (prep_minutes BETWEEN 1 AND 240),
    auto_accept     boolean NOT NULL DEFAULT false,
    capacity        integer NOT NULL DEFAULT 20 CHECK (capacity BETWEEN 1 AND 10000),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The H3 cells of each shop's zone, written with the zone so that a starting node builds its index without
-- recomputing covers. Arrays (one row per shop) load an order of magnitude faster than a row per cell.
CREATE TABLE shop_covers (
    shop_id     text PRIMARY KEY REFERENCES shops (id) ON DELETE CASCADE,
    resolution  integer NOT NULL,
    interior    bigint[] NOT NULL,   -- cells wholly inside the zone
    edge        bigint[] NOT NULL,   -- cells partly inside: settled by exact point-in-polygon
    zone_wkb    bytea NOT NULL       -- the zone again, as WKB: every geometry decodes in one vectorised call
);

CREATE TABLE catalogue_items (
    shop_id        text NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    sku            text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name           text NOT NULL,
    price_cents    integer NOT NULL CHECK (price_cents >= 0),
    stock          integer NOT NULL CHECK (stock >= 0),
    preorder_only  boolean NOT NULL DEFAULT false,
    lead_minutes   integer NOT NULL DEFAULT 0 CHECK (lead_minutes >= 0),
    PRIMARY KEY (shop_id, sku)
);
CREATE INDEX catalogue_items_sku ON catalogue_items (sku);

CREATE TABLE residents (
    id          text PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE couriers (
    id          text PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone       text,
    capacity    integer NOT NULL DEFAULT 4 CHECK (capacity BETWEEN 1 AND 100),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id            text PRIMARY KEY,
    resident_id   text NOT NULL REFERENCES residents (id),
    state         text NOT NULL,
    fulfilment    text NOT NULL CHECK (fulfilment IN ('delivery', 'pickup')),
    drop_lat      double precision NOT NULL CHECK (drop_lat BETWEEN -85 AND 85),
    drop_lng      double precision NOT NULL CHECK (drop_lng BETWEEN -180 AND 180),
    slot_start    timestamptz,                 -- NULL: as soon as possible
    slot_end      timestamptz,
    note          text,
    total_cents   integer NOT NULL DEFAULT 0 CHECK (total_cents >= 0),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CHECK (slot_end IS NULL OR slot_start < slot_end)
);
CREATE INDEX orders_resident ON orders (resident_id, created_at DESC);

-- One job per shop per order: the part of an order that one shop prepares.
CREATE TABLE jobs (
    id             text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (id),
    shop_id        text NOT NULL REFERENCES shops (id),
    state          text NOT NULL,
    lines          jsonb NOT NULL,             -- [{"sku", "qty", "unit_price_cents"}]
    offered_at     timestamptz,
    deadline_at    timestamptz,
    accepted_at    timestamptz,
    prep_minutes   integer,
    ready_at       timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (order_id, shop_id)
);
CREATE INDEX jobs_shop_state ON jobs (shop_id, state);

-- The outbox: every event written in the transaction of the change that caused it.
-- seq is the recipient's own gapless sequence number (see recipient_seqs).
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    recipient   text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    UNIQUE (recipient, seq)
);

-- Per-recipient counters. Incremented in the writing transaction: the row lock orders concurrent writers for
-- one recipient, and a rolled-back transaction gives its number back, so sequences have no gaps.
CREATE TABLE recipient_seqs (
    recipient  text PRIMARY KEY,
    last_seq   bigint NOT NULL
);

CREATE TABLE idempotency_keys (
    subject       text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash  text NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (subject, key)
);
