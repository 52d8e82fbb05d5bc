"""Durable event notifications (issue 4): Distribution's envelope, an outbox table written in the
same transaction as each change (outbox.py), a delivery worker (delivery.py), the EventsService
(servicer.py) and the composition (wiring.py). See README "Event notifications"."""
