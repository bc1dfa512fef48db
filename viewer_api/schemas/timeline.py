"""A study's timeline (``worklist.timeline``): its hops with their times and sources, the
durations between them, and the deadlines it is held to."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from worklist.timeline import Timeline


class HopOut(BaseModel):
    hop: str
    at: datetime  # on the county's clock
    recorded_at: datetime  # as its record holds it (a gateway's or a modality's clock)
    clock: str  # modality, gateway, county
    source: str
    by: str | None
    since_previous_seconds: float | None  # after the hop before it on the timeline
    since_first_seconds: float


class StageOut(BaseModel):
    stage: str
    start: str
    end: str
    seconds: float


class TargetOut(BaseModel):
    target: str  # read_deadline, stroke_read_45min, cta_read_10min
    start: str
    end: str
    limit_seconds: float
    elapsed_seconds: float | None
    state: str  # met, missed, running, overdue, unknown


class TimelineOut(BaseModel):
    study_instance_uid: str
    site: str
    priority: str
    category: str | None
    status: str
    # the county's clock minus the gateway's, measured at its last announcement
    gateway_clock_offset_seconds: float | None
    gateway_clock_corrected: bool
    hops: list[HopOut]
    stages: list[StageOut]
    targets: list[TargetOut]

    @classmethod
    def from_timeline(cls, t: Timeline) -> TimelineOut:
        first = t.hops[0].at if t.hops else None
        hops = []
        for i, h in enumerate(t.hops):
            previous = t.hops[i - 1].at if i else None
            hops.append(
                HopOut(
                    hop=h.name,
                    at=h.at,
                    recorded_at=h.recorded_at,
                    clock=h.clock,
                    source=h.source,
                    by=h.by,
                    since_previous_seconds=(
                        round((h.at - previous).total_seconds(), 3) if previous else None
                    ),
                    since_first_seconds=round((h.at - (first or h.at)).total_seconds(), 3),
                )
            )
        return cls(
            study_instance_uid=t.study_instance_uid,
            site=t.site,
            priority=t.priority,
            category=t.category,
            status=t.status,
            gateway_clock_offset_seconds=t.gateway_clock_offset_seconds,
            gateway_clock_corrected=t.gateway_clock_corrected,
            hops=hops,
            stages=[
                StageOut(stage=s.name, start=s.start, end=s.end, seconds=s.seconds)
                for s in t.stages
            ],
            targets=[
                TargetOut(
                    target=x.name,
                    start=x.start,
                    end=x.end,
                    limit_seconds=x.limit_seconds,
                    elapsed_seconds=x.elapsed_seconds,
                    state=x.state,
                )
                for x in t.targets
            ],
        )
