"""A signed report in the forms clinics and their systems use: PDF (with a QR code to a
time-limited share link), FHIR R4 DiagnosticReport, DICOM Basic Text SR, and a share page.

Each renderer is a pure function of a ``ReportContent`` (``content.gather`` builds one from
the database), so they can be called from routes, the CLI or a signing hook alike.
"""
