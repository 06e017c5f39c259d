"""Deal payloads sent by other systems: validation, ERP values, event builders, a send helper.

Use this package when something outside amoCRM wants an ERP record. Its modules, each using
only the ones above it:

- `payload`: the models (`DealPayload`, `BatchPayload`), their limits and `DealValidationError`;
- `record`: which ERP entity and fields a deal goes to, and `deal_values(deal, ...)`, the
  values of its record (checked against the entity's fields and converted by
  `prometei.erp.records.RecordWriter`);
- `validation`: `parse_deal(data)` / `parse_batch(data)` validate the event data of
  `crm/create-deal`, `erp/task.create` and `crm/batch-create-deals` and report *every* problem
  in readable form (`dealName: must be 1-255 characters after trimming`);
- `events`: `deal_event`, `batch_event`, `fanout_events` build the events (with deterministic
  ids, so a repeated send is dropped by Inngest's 24 h event-id dedupe);
- `send`: `send_deals(deals, batch=..., dry_run=...)`, the helper internal systems and the CLI
  call.

Everything is importable from `prometei.deals` itself (e.g. `from prometei.deals import
send_deals`, the documented Python API).

Payload of one deal (JSON keys):

    {"dealName": "Order #1042",       # required, 1-255 characters after trimming
     "amount": 15000.5,               # optional, number or numeric string, >= 0
     "entityId": 70,                  # optional, positive int, default ERP_ENTITY_ID
     "fields": {"field_1041": "x"},   # optional extra ERP fields (of that entity)
     "externalId": "shop-1042"}       # optional; a resend with it updates the record
"""

from prometei.deals.events import (
    BATCH_EVENT,
    CREATE_DEAL_EVENT,
    MAX_EVENT_BYTES,
    SEND_CHUNK,
    SEND_CHUNK_BYTES,
    TASK_CREATE_EVENT,
    batch_event,
    chunk_events,
    deal_event,
    derived_external_id,
    event_size,
    fanout_event_id,
    fanout_events,
)
from prometei.deals.payload import (
    MAX_AMOUNT_DIGITS,
    MAX_BATCH,
    MAX_EXTRA_FIELDS,
    MAX_FIELD_VALUE,
    MAX_NAME,
    BatchPayload,
    DealPayload,
    DealValidationError,
)
from prometei.deals.record import (
    DEFAULT_NAME_FIELD,
    DEFAULT_PRICE_FIELD,
    conflicts,
    deal_values,
    entity_of,
    erp_fields,
)
from prometei.deals.send import EventSink, SendReport, send_deals
from prometei.deals.validation import BatchCheck, parse_batch, parse_deal

__all__ = [
    "BATCH_EVENT",
    "CREATE_DEAL_EVENT",
    "DEFAULT_NAME_FIELD",
    "DEFAULT_PRICE_FIELD",
    "MAX_AMOUNT_DIGITS",
    "MAX_BATCH",
    "MAX_EVENT_BYTES",
    "MAX_EXTRA_FIELDS",
    "MAX_FIELD_VALUE",
    "MAX_NAME",
    "SEND_CHUNK",
    "SEND_CHUNK_BYTES",
    "TASK_CREATE_EVENT",
    "BatchCheck",
    "BatchPayload",
    "DealPayload",
    "DealValidationError",
    "EventSink",
    "SendReport",
    "batch_event",
    "chunk_events",
    "conflicts",
    "deal_event",
    "deal_values",
    "derived_external_id",
    "entity_of",
    "erp_fields",
    "event_size",
    "fanout_event_id",
    "fanout_events",
    "parse_batch",
    "parse_deal",
    "send_deals",
]
