"""The county API: log-in, the reading worklist, studies, reports, and the gateway's ingest
call. Thin: the work itself lives in ``worklist`` and ``storage``."""
