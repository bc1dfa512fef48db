"""The township gateway: DICOM SCP -> durable spool/outbox -> object store + county API.

Entry points: ``gateway.service.Gateway`` (``start()`` / ``stop()``), ``gateway.ops.spool_status``.
"""
