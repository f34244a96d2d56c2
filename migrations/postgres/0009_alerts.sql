-- Alerts ([alerts], issue 18). The alerts themselves are ledger entries (alert.raised,
-- alert.resolved, alert.delivered); these tables are operational, not evidence: how far the
-- alerter has followed the chain, and the outbox of deliveries still to make. A lost outbox row
-- at worst leaves a delivery unmade, which GET /v1/alerts shows (no alert.delivered entry).
CREATE TABLE alert_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq   BIGINT  NOT NULL,  -- every entry up to and including it has been looked at
    unlinked_seq  BIGINT  NOT NULL   -- every version sighting up to it has been judged
);
-- The sightings the alerter judges for UNLINKED_DEPLOY, in chain order.
CREATE INDEX facts_sightings ON facts (entry_seq) WHERE kind = 'version.observed';
-- One row per (alert event, destination), written in the transaction that appends the event.
CREATE TABLE alert_outbox (
    event_seq      BIGINT   NOT NULL,  -- the alert.raised or alert.resolved entry
    destination    TEXT     NOT NULL,  -- the destination's name ([[alerts.webhooks]] name, or "otlp")
    state          TEXT     NOT NULL,  -- pending | claimed | delivered | refused (and delivering,
                                       -- only inside the transaction that records the delivery)
    attempts       BIGINT   NOT NULL,
    next_ns        BIGINT   NOT NULL,  -- pending: not before; claimed: the claim's deadline
    claim          BIGINT   NOT NULL,  -- the holder's random token while claimed
    delivered_seq  BIGINT,             -- the alert.delivered entry, once delivered
    last_error     TEXT,               -- why the last attempt failed (no secrets: no URL)
    PRIMARY KEY (event_seq, destination)
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_ns);
