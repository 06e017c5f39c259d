"""Listing engines over amoCRM: the backfill (CLI) and the reconcile cron share them.

listing.py    every lead updated at or after a cursor, oldest first, without skipping any
              while managers edit leads (a keyset over `updated_at`, not offset pages)
run.py        the shared loop: list, filter, send `amocrm/lead.sync` events in chunks and
              move the cursor only past leads that were sent or filtered out
backfill.py   `python -m prometei backfill`: the cursor and counts in a local state file
reconcile.py  `amocrm-reconcile`: the cursor in the state store, webhook health
"""
