"""The county index: sites, users, studies, series, instances, reports, audit events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    select,
    table,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

# Roles
ROLE_RADIOLOGIST = "radiologist"
ROLE_CLINIC = "clinic"
ROLE_ADMIN = "admin"
ROLE_GATEWAY = "gateway"
ROLES = (ROLE_RADIOLOGIST, ROLE_CLINIC, ROLE_ADMIN, ROLE_GATEWAY)

# Study statuses, in the order a study moves through them
STATUS_RECEIVING = "receiving"
STATUS_READY = "ready"
STATUS_CLAIMED = "claimed"
STATUS_DRAFT = "draft"
STATUS_PRELIMINARY = "preliminary"
STATUS_FINAL = "final"
STATUS_AMENDED = "amended"
STATUS_CANCELLED = "cancelled"
# Statuses in which a study waits for a reader
UNCLAIMED_STATUSES = (STATUS_RECEIVING, STATUS_READY)
# Workflow (0002): the partial-index predicate of "still on the worklist"
OPEN_STUDY_SQL = "status NOT IN ('cancelled', 'final', 'amended')"

PRIORITY_STAT = "stat"
PRIORITY_ROUTINE = "routine"
CATEGORY_STROKE = "stroke"
CATEGORY_CHEST_PAIN = "chest_pain"

# Report statuses
REPORT_DRAFT = "draft"
REPORT_PRELIMINARY = "preliminary"
REPORT_FINAL = "final"
REPORT_AMENDED = "amended"

# JSON that is JSONB on PostgreSQL would be nicer, but plain JSON keeps one code path.
JsonDict = dict[str, Any]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones and drops tzinfo, so values
    are normalised to UTC before they are written (naive values are taken as UTC) and come
    back tagged UTC. SQLite stores a fixed-width text form, so ``<`` comparisons in SQL
    still order correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # where its reports' SRs are C-STOREd, "AE@host:port" (``worklist.sr_sends``); "": none
    sr_destination: Mapped[str] = mapped_column(String(128), default="", server_default="")

    ae_titles: Mapped[list[SiteAE]] = relationship(
        back_populates="site", cascade="all, delete-orphan", order_by="SiteAE.ae_title"
    )
    # where the site's devices may call from (migration 0013); none of either: any address
    networks: Mapped[list[SiteNetwork]] = relationship(
        cascade="all, delete-orphan", order_by="SiteNetwork.network"
    )
    certificates: Mapped[list[SiteCertificate]] = relationship(
        cascade="all, delete-orphan", order_by="SiteCertificate.sha256"
    )


class SiteAE(Base):
    """A calling AE title (a modality at the site) allowed to send to the gateway."""

    __tablename__ = "site_ae_titles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)

    site: Mapped[Site] = relationship(back_populates="ae_titles")


class SiteNetwork(Base):
    """A network (CIDR) the site's modalities call the gateway from. A site with networks or
    certificates accepts an association for its AE titles only from one of its networks or
    over DICOM TLS with one of its certificates."""

    __tablename__ = "site_networks"
    __table_args__ = (UniqueConstraint("site_id", "network"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    network: Mapped[str] = mapped_column(String(49))  # normalised, e.g. 10.1.2.0/24


class SiteCertificate(Base):
    """A DICOM TLS client certificate of one of the site's modalities, by the SHA-256 of its
    DER encoding; a certificate belongs to one site."""

    __tablename__ = "site_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # lowercase hex
    label: Mapped[str] = mapped_column(String(200), default="")  # e.g. the file it came from


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    # professional title printed under the signer's name ("主治医师") (0007)
    title: Mapped[str] = mapped_column(String(100), default="", server_default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    # clinic users and township gateways are bound to one site; None for the others
    # (an unbound gateway credential is the all-in-one gateway that serves every site)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), default=None)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    # accounts (0004): tokens issued at or before this instant are refused (a revocation, a
    # password reset, disabling the account); None: every unexpired token is accepted
    tokens_valid_after: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site | None] = relationship()


class WebSession(Base):
    """A browser signed in to the web pages (its cookie names this row): it ends at log-out,
    in every tab of that browser at once, and with its expiry."""

    __tablename__ = "web_sessions"

    # random and unguessable (secrets.token_urlsafe); also signed into the cookie's token
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class ShareLink(Base):
    """A link that opens one study's signed report and images without a log-in, made by a
    signed-in user on purpose. Only the sha256 of its token is stored: the token is shown
    once, at creation. It works until ``expires_at``, its revocation, or its creator's
    account being disabled or its tokens revoked (``users.tokens_valid_after``)."""

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)

    study: Mapped[Study] = relationship()
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])


# the series table's columns that ``Study.body_part`` reads (``Series`` is declared after)
_SERIES = table(
    "series",
    column("id"),
    column("study_id"),
    column("series_number"),
    column("body_part_examined"),
)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_queue", "status", "priority_rank", "received_at"),
        Index("ix_studies_site_received", "site_id", "received_at"),
        # workflow (0002): the open worklist in queue order, overall and per site; by reader
        Index(
            "ix_studies_open_queue",
            "priority_rank",
            "received_at",
            "id",
            # filters answered from the index alone (counts are index-only scans)
            postgresql_include=["modalities", "claimed_by_id"],
            postgresql_where=text(OPEN_STUDY_SQL),
            sqlite_where=text(OPEN_STUDY_SQL),
        ),
        Index(
            "ix_studies_open_category",
            "category",
            "priority_rank",
            "received_at",
            "id",
            postgresql_where=text(OPEN_STUDY_SQL),
            sqlite_where=text(OPEN_STUDY_SQL),
        ),
        Index(
            "ix_studies_open_site_queue",
            "site_id",
            "priority_rank",
            "received_at",
            "id",
            postgresql_where=text(OPEN_STUDY_SQL),
            sqlite_where=text(OPEN_STUDY_SQL),
        ),
        Index("ix_studies_claimed_by", "claimed_by_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")

    # Patient and study header, decoded to Unicode
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    study_description: Mapped[str] = mapped_column(String(200), default="")
    modalities: Mapped[str] = mapped_column(String(64), default="")  # "CT" or "CT\\SR"
    # Decoded triage text fields, merged over every series (keyword -> text)
    text_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)

    # Triage
    priority: Mapped[str] = mapped_column(String(16), default=PRIORITY_ROUTINE)
    # 0 = stat, 1 = routine: the queue sorts on it ascending
    priority_rank: Mapped[int] = mapped_column(Integer, default=1)
    category: Mapped[str | None] = mapped_column(String(32), default=None)
    # each a worklist.triage.Reason's to_json() (rows written before hold English strings)
    triage_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # set when a person flagged or downgraded the study; automatic triage then stops
    triage_override_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    triage_override_reason: Mapped[str | None] = mapped_column(Text, default=None)

    # Workflow
    status: Mapped[str] = mapped_column(String(16), default=STATUS_RECEIVING)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime]  # first instance
    last_instance_at: Mapped[datetime]
    deadline_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    claim_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # deadlines and claims (0009): when the holder was warned that the claim runs out; who
    # held a claim that ran out, and when (shown to every reader until someone claims it);
    # the final report's deadline, set when a preliminary report meets the read deadline
    claim_warned_at: Mapped[datetime | None] = mapped_column(default=None)
    claim_expired_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    claim_expired_at: Mapped[datetime | None] = mapped_column(default=None)
    final_deadline_at: Mapped[datetime | None] = mapped_column(default=None)
    # --- Workflow (migration 0002): escalation state and cancellation ---
    # 0 = none, 1 = unclaimed at half its deadline, 2 = overdue; each level is raised once
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # clinic alerts (0008): when the study was found past its deadline with no report (the
    # site's clinic was told once); cleared when a person sets a new deadline
    overdue_at: Mapped[datetime | None] = mapped_column(default=None)
    # study timeline (0012), each time on the clock that took it down (``worklist.timeline``):
    # the first and last image's acquisition (the modality's clock, from the headers); the
    # first and last instance uploaded to the object store (the gateway's clock, announced);
    # the first and last instance announced to the county (the county's clock: listed on the
    # worklist from the first); the county's clock minus the gateway's, measured at its last
    # announcement (None: a gateway that does not say when it sent)
    acquired_at: Mapped[datetime | None] = mapped_column(default=None)
    acquired_last_at: Mapped[datetime | None] = mapped_column(default=None)
    uploaded_first_at: Mapped[datetime | None] = mapped_column(default=None)
    uploaded_last_at: Mapped[datetime | None] = mapped_column(default=None)
    arrived_at: Mapped[datetime | None] = mapped_column(default=None)
    arrived_last_at: Mapped[datetime | None] = mapped_column(default=None)
    gateway_clock_offset_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    # a re-sent instance replaced a served one after the study's report was signed
    # (``worklist.resends``): the report may describe images no longer served
    updated_after_report_at: Mapped[datetime | None] = mapped_column(default=None)

    # the body part of the study's first series (in series order) that names one, or None:
    # read by a subquery, not by loading the series, and only where a query asks for it
    # (``undefer``: the worklist's pages, a study, its priors; elsewhere when first read)
    body_part: Mapped[str | None] = column_property(
        select(_SERIES.c.body_part_examined)
        .where(_SERIES.c.study_id == id, _SERIES.c.body_part_examined != "")
        .order_by(_SERIES.c.series_number, _SERIES.c.id)
        .limit(1)
        .scalar_subquery(),
        deferred=True,
    )

    site: Mapped[Site] = relationship()
    claimed_by: Mapped[User | None] = relationship(foreign_keys=[claimed_by_id])
    claim_expired_by: Mapped[User | None] = relationship(foreign_keys=[claim_expired_by_id])
    series: Mapped[list[Series]] = relationship(
        back_populates="study", cascade="all, delete-orphan", order_by="Series.series_number"
    )
    report: Mapped[Report | None] = relationship(back_populates="study", uselist=False)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, default=None)
    series_description: Mapped[str] = mapped_column(String(200), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", cascade="all, delete-orphan", order_by="Instance.instance_number"
    )


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    object_key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    # header as DICOM JSON (no bulk data), for metadata requests without reading objects
    dicom_json: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # the calling AE title of the version served ("" before 0014: the study's then)
    calling_ae: Mapped[str] = mapped_column(String(16), default="", server_default="")

    series: Mapped[Series] = relationship(back_populates="instances")


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default=REPORT_DRAFT)
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    recommendation: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    signed_at: Mapped[datetime | None] = mapped_column(default=None)
    content_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # why a stroke / chest-pain report was signed final without a critical result (0003)
    no_critical_result_reason: Mapped[str | None] = mapped_column(Text, default=None)

    study: Mapped[Study] = relationship(back_populates="report")
    author: Mapped[User] = relationship(foreign_keys=[author_id])
    signed_by: Mapped[User | None] = relationship(foreign_keys=[signed_by_id])


class AuditEvent(Base):
    """Append-only: who did what to which object, when, from where, with what outcome."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    username: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16), default="")
    site_code: Mapped[str] = mapped_column(String(32), default="")
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(128), default="")
    client_addr: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


# --- Workflow: events and webhook deliveries (migration 0002) -----------------------------
EVENT_KINDS = (
    "study_urgent",
    "escalation",
    "study_claimed",
    "study_released",
    "report_signed",
    "report_amended",
    "critical_result",
    # clinic alerts (0008)
    "critical_result_acknowledged",
    "study_overdue",
    "call_ahead",
    # a claim about to run out (0009)
    "claim_expiring",
    # a re-sent instance replaced a served one after the report was signed (0014)
    "study_updated_after_report",
)
DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_FAILED = "failed"  # gave up after the last retry


class Event(Base):
    """Append-only feed of things readers must know about now (SSE stream and webhooks).

    The id orders the feed: a client resumes with ``Last-Event-ID``. The payload never
    holds patient names or IDs (it leaves the county through webhooks).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_site_id", "site_code", "id"),
        # a study's events (its timeline, 0012)
        Index("ix_events_study_uid", "study_uid", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    site_code: Mapped[str | None] = mapped_column(String(32), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class WebhookDelivery(Base):
    """One event to one webhook URL: retried with backoff until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "url", name="uq_webhook_deliveries_event_url"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("events.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default=DELIVERY_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime]

    event: Mapped[Event] = relationship()


# --- Reports: addenda and critical results (migration 0003) -------------------------------
CRITICAL_METHODS = ("phone", "in_person", "message", "other")


class ReportAddendum(Base):
    """A later note on a signed final report; append-only, each with its own hash.

    The signed report itself never changes: its content and ``content_sha256`` stay as signed.
    """

    __tablename__ = "report_addenda"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    # sha256 over the addendum and the report hash it amends (worklist.report_hashes)
    content_sha256: Mapped[str] = mapped_column(String(64))

    author: Mapped[User] = relationship()


class CriticalResult(Base):
    """An actionable finding communicated to the referring side (ACR practice): what, when
    identified, who was told (name, role, phone), when, how, and whether read back."""

    __tablename__ = "critical_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    finding: Mapped[str] = mapped_column(Text)
    identified_at: Mapped[datetime]
    communicated_to_name: Mapped[str] = mapped_column(String(200))
    communicated_to_role: Mapped[str] = mapped_column(String(100), default="")
    communicated_to_phone: Mapped[str] = mapped_column(String(64), default="")
    communicated_at: Mapped[datetime]
    method: Mapped[str] = mapped_column(String(16))
    read_back_confirmed: Mapped[bool] = mapped_column(default=False)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime]
    # clinic alerts (0008): the clinic user who acknowledged it on the clinic page (the
    # read-back, which also sets read_back_confirmed), and when
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)

    recorded_by: Mapped[User] = relationship(foreign_keys=[recorded_by_id])
    acknowledged_by: Mapped[User | None] = relationship(foreign_keys=[acknowledged_by_id])


# --- Clinic alerts: call-ahead and gateway status (migration 0008) -------------------------
class CallAhead(Base):
    """A clinic announced an urgent patient before the images came (worklist.call_ahead)."""

    __tablename__ = "call_aheads"
    __table_args__ = (Index("ix_call_aheads_site_pending", "site_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    category: Mapped[str] = mapped_column(String(32))
    onset_at: Mapped[datetime | None] = mapped_column(default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # the study it made urgent (set once)
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), default=None, unique=True
    )
    matched_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site] = relationship()
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    study: Mapped[Study | None] = relationship()


class GatewayStatus(Base):
    """A township gateway's latest report of its spool (gateway.heartbeat), one per account."""

    __tablename__ = "gateway_status"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    reported_at: Mapped[datetime]
    status: Mapped[dict[str, Any]] = mapped_column(default=dict)


# An announced instance the county held back instead of filing it (``worklist.conflicts``)
CONFLICT_STUDY_OTHER_SITE = "study_other_site"  # its study UID belongs to another site
CONFLICT_SERIES_OTHER_STUDY = "series_other_study"  # its series UID belongs to another study
CONFLICT_PATIENT_MISMATCH = "patient_mismatch"  # its patient ID or name differs from its study's
CONFLICT_SOP_OTHER_STUDY = "sop_other_study"  # its SOP Instance UID is filed in another study
CONFLICT_KINDS = (
    CONFLICT_STUDY_OTHER_SITE,
    CONFLICT_SERIES_OTHER_STUDY,
    CONFLICT_PATIENT_MISMATCH,
    CONFLICT_SOP_OTHER_STUDY,
)
RESOLUTION_SEPARATE_STUDY = "separate_study"  # filed under a study UID of its own
RESOLUTION_DISCARD = "discard"  # never filed; the object stays in storage
RESOLUTIONS = (RESOLUTION_SEPARATE_STUDY, RESOLUTION_DISCARD)


class IngestConflict(Base):
    """An announced instance held for an admin: never merged into the study it names, never
    dropped. ``arrival`` is the announcement as received, so a resolution can file it."""

    __tablename__ = "ingest_conflicts"
    __table_args__ = (Index("ix_ingest_conflicts_open", "resolved_at", "held_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    kind: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    # one conflict per stored object: a gateway re-announcing it holds nothing twice
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    # the study (or series) it clashed with, and that side's identifying values
    existing_study_uid: Mapped[str] = mapped_column(String(64), default="")
    existing_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), default=None)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    existing_patient_id: Mapped[str] = mapped_column(String(64), default="")
    existing_patient_name: Mapped[str] = mapped_column(String(200), default="")
    arrival: Mapped[dict[str, Any]] = mapped_column(default=dict)
    held_at: Mapped[datetime]
    resolution: Mapped[str | None] = mapped_column(String(16), default=None)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    # the study it was filed under (``separate_study``)
    resolved_study_uid: Mapped[str | None] = mapped_column(String(64), default=None)

    site: Mapped[Site] = relationship(foreign_keys=[site_id])
    existing_site: Mapped[Site | None] = relationship(foreign_keys=[existing_site_id])
    resolved_by: Mapped[User | None] = relationship()


# Re-sent instances (other bytes under a SOP Instance UID already filed, ``worklist.resends``)
OVERWRITE_NEVER = "never"  # the first version stays served
OVERWRITE_SAME_SOURCE = "same_source"  # the newest from the same site and calling AE is served
OVERWRITE_ALWAYS = "always"  # the newest from the same site is served
OVERWRITE_POLICIES = (OVERWRITE_NEVER, OVERWRITE_SAME_SOURCE, OVERWRITE_ALWAYS)
VERSION_SUPERSEDED = "superseded"  # was served, replaced by a newer version
VERSION_NOT_APPLIED = "not_applied"  # never served: the policy kept the served one, or older


class InstanceVersion(Base):
    """A version of an instance that is not (or no longer) the one served: the object stays
    in storage under its own key, recoverable by an admin."""

    __tablename__ = "instance_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime]
    dicom_json: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime]
    # what the re-send changed (study-level fields by name), the other version's sha256
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


# The signed report's SR sent to its site's PACS (``worklist.sr_sends``)
SR_SEND_PENDING = "pending"  # to send, now or after a back-off (``next_attempt_at``)
SR_SEND_SENT = "sent"
SR_SEND_FAILED = "failed"  # gave up after the last retry; queued again by the next change
SR_SEND_STATUSES = (SR_SEND_PENDING, SR_SEND_SENT, SR_SEND_FAILED)


class SRSend(Base):
    """A study's report SR on its way to the site's DICOM destination: one row per study,
    armed again (``generation`` + 1) whenever the report or the served study changes."""

    __tablename__ = "sr_sends"
    __table_args__ = (Index("ix_sr_sends_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=SR_SEND_PENDING)
    # what queued it last: signed_preliminary, signed_final, amended, study_updated, requested
    reason: Mapped[str] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # since it was last queued
    next_attempt_at: Mapped[datetime]
    queued_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    destination: Mapped[str] = mapped_column(String(128), default="")  # of the last attempt
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")  # the SR last sent

    study: Mapped[Study] = relationship()


__all__ = [
    "CONFLICT_KINDS",
    "CONFLICT_PATIENT_MISMATCH",
    "CONFLICT_SERIES_OTHER_STUDY",
    "CONFLICT_SOP_OTHER_STUDY",
    "CONFLICT_STUDY_OTHER_SITE",
    "CRITICAL_METHODS",
    "EVENT_KINDS",
    "OVERWRITE_ALWAYS",
    "OVERWRITE_NEVER",
    "OVERWRITE_POLICIES",
    "OVERWRITE_SAME_SOURCE",
    "RESOLUTIONS",
    "RESOLUTION_DISCARD",
    "RESOLUTION_SEPARATE_STUDY",
    "SR_SEND_FAILED",
    "SR_SEND_PENDING",
    "SR_SEND_SENT",
    "SR_SEND_STATUSES",
    "VERSION_NOT_APPLIED",
    "VERSION_SUPERSEDED",
    "AuditEvent",
    "Base",
    "CallAhead",
    "CriticalResult",
    "Event",
    "GatewayStatus",
    "IngestConflict",
    "Instance",
    "InstanceVersion",
    "Report",
    "ReportAddendum",
    "SRSend",
    "Series",
    "ShareLink",
    "Site",
    "SiteAE",
    "SiteCertificate",
    "SiteNetwork",
    "Study",
    "UTCDateTime",
    "User",
    "WebSession",
    "WebhookDelivery",
]
