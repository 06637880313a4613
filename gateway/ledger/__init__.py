"""The supervision ledger: ingest of signed copies, matching (pure), alerts and the read-only API."""
