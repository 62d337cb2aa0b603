"""Reader studies in the server's database: studies, cases, readers, assignments, view events and responses.

Tables are prefixed `study_` and live in the same database as `cxrlm serve --db` (own DeclarativeBase, so either
side creates only its own tables). Case images are stored as PNGs of the decoded pixels under a store-chosen name in
`data_dir/study/<study id>/`: no DICOM tag and no manifest path is kept. Readers are pseudonyms (R01, R02, ...) that
sign in with their own key, stored salted and hashed like the server's API keys.

A reader works through their assignments in order (`position` 1..C): a case opens only when every earlier one is
submitted. Time per case is active time: view/resume events open an interval, pause/submit close it, and the
response keeps the sum. A case left open without a pause (a closed tab) keeps counting until the next pause or
submit: a viewer may send a pause when its page is hidden.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from cxrlm import DISCLAIMER
from cxrlm.errors import ConfigError, InputError
from cxrlm.pathologies import CHEXPERT14
from cxrlm.study import teaching
from cxrlm.study.design import TEACHING

MAX_IMPRESSION_CHARS = 4_000
LIKERT = range(1, 6)
AI_QUESTIONS = ("quality", "usefulness", "time_saved", "safety")  # about the AI output: not asked without one
RESPONSE_FIELDS = ("findings", "impression", "confidence", *AI_QUESTIONS)
TOKEN_PREFIX = "cxrs"


class StudyConflict(InputError):
    """A request that does not fit the reader's progress: a case out of order, a second submit, an early reveal."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class StudyBase(DeclarativeBase):
    pass


class ReaderStudy(StudyBase):
    __tablename__ = "study_studies"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))  # reader | teaching
    conditions: Mapped[list] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model: Mapped[dict] = mapped_column(JSON, default=dict)  # name, profile, engine, notice of the precomputing model
    design_warnings: Mapped[list] = mapped_column(JSON, default=list)


class StudyCase(StudyBase):
    __tablename__ = "study_cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("study_studies.id"), index=True)
    case_id: Mapped[str] = mapped_column(String(64))  # the manifest's id: never shown to a reader
    image_files: Mapped[list] = mapped_column(JSON)  # store-chosen PNG names under data_dir/study/<study id>/
    reference: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # CheXpert-14 -> 1, 0 or None
    model_output: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # see cxrlm.study.create.model_output
    __table_args__ = (UniqueConstraint("study_id", "case_id"),)


class StudyReader(StudyBase):
    __tablename__ = "study_readers"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # random; also the key's public part
    study_id: Mapped[str] = mapped_column(ForeignKey("study_studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(16))  # pseudonym R01, R02, ...
    salt: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))


class StudyAssignment(StudyBase):
    __tablename__ = "study_assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reader_id: Mapped[str] = mapped_column(ForeignKey("study_readers.id"), index=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("study_cases.id"))
    condition: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("reader_id", "position"), UniqueConstraint("reader_id", "case_pk"))


class StudyEvent(StudyBase):
    __tablename__ = "study_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("study_assignments.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # view | pause | resume | submit | reveal
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StudyResponse(StudyBase):
    __tablename__ = "study_responses"
    assignment_id: Mapped[int] = mapped_column(ForeignKey("study_assignments.id"), primary_key=True)
    findings: Mapped[dict] = mapped_column(JSON)  # every CheXpert-14 label -> bool
    impression: Mapped[str] = mapped_column(Text)
    confidence: Mapped[int] = mapped_column(Integer)
    quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usefulness: Mapped[int | None] = mapped_column(Integer, nullable=True)
    time_saved: Mapped[int | None] = mapped_column(Integer, nullable=True)
    safety: Mapped[int | None] = mapped_column(Integer, nullable=True)
    first_view_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active_seconds: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class Reader:
    id: str  # the key's public part; use it in every call
    name: str  # pseudonym shown to the reader and in results
    study_id: str
    mode: str
    conditions: tuple[str, ...]


@dataclass(frozen=True)
class CaseInput:
    """One case for `create_study`: PNG bytes per image, reference labels, the precomputed model output."""
    case_id: str
    pngs: list[bytes]
    reference: dict | None
    model_output: dict | None


def hash_key(secret: str, salt: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def active_seconds(events: list[tuple[str, datetime]]) -> float:
    """Seconds between each view/resume and the pause/submit that ends it (events in time order)."""
    total, since = 0.0, None
    for kind, at in events:
        if kind in ("view", "resume") and since is None:
            since = at
        elif kind in ("pause", "submit") and since is not None:
            total += (at - since).total_seconds()
            since = None
    return total


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive datetimes


class StudyStore:
    """`db` is a database URL or an Engine (the server passes its own, so both share one pool)."""

    def __init__(self, db: str | Engine, data_dir: str | Path, clock: Callable[[], datetime] = utcnow):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)  # before SQLite opens its default file there
        self.engine = db if isinstance(db, Engine) else _engine(db)
        self.clock = clock  # tests pass a fake clock to check times
        StudyBase.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # Creation (cxrlm study create) ------------------------------------------------------------------------------
    def create_study(self, *, name: str, mode: str, conditions: tuple[str, ...], seed: int, model: dict,
                     cases: list[CaseInput], design: list, warnings: list[str] = ()) -> tuple[str, dict[str, str]]:
        """Store a study; `design` is cxrlm.study.design.make_design's list. Returns (study id, {reader: key}):
        the keys exist only here, hashed in the database."""
        study_id = uuid.uuid4().hex
        folder = self.data_dir / "study" / study_id
        folder.mkdir(parents=True, exist_ok=True)
        keys: dict[str, str] = {}
        with self._session() as db, db.begin():
            db.add(ReaderStudy(id=study_id, name=name, mode=mode, conditions=list(conditions), seed=seed,
                               model=model, design_warnings=list(warnings), created_at=self.clock()))
            case_pk = {}
            for case in cases:
                files = []
                for png in case.pngs:
                    files.append(f"{uuid.uuid4().hex}.png")
                    (folder / files[-1]).write_bytes(png)
                row = StudyCase(study_id=study_id, case_id=case.case_id, image_files=files,
                                reference=case.reference, model_output=case.model_output)
                db.add(row)
                db.flush()
                case_pk[case.case_id] = row.id
            readers = {}
            for reader in sorted({a.reader for a in design}):
                reader_id, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(24), secrets.token_hex(16)
                readers[reader] = reader_id
                name_ = f"R{reader + 1:02d}"
                db.add(StudyReader(id=reader_id, study_id=study_id, name=name_, salt=salt,
                                   key_hash=hash_key(secret, salt)))
                keys[name_] = f"{TOKEN_PREFIX}-{reader_id}-{secret}"
            db.flush()
            db.add_all(StudyAssignment(reader_id=readers[a.reader], case_pk=case_pk[a.case], condition=a.condition,
                                       position=a.position) for a in design)
        return study_id, keys

    # Studies ------------------------------------------------------------------------------------------------------
    def study(self, study_id: str) -> ReaderStudy | None:
        with self._session() as db:
            return db.get(ReaderStudy, study_id)

    def studies(self) -> list[ReaderStudy]:
        with self._session() as db:
            return list(db.scalars(select(ReaderStudy).order_by(ReaderStudy.created_at)))

    def find_study(self, prefix: str) -> ReaderStudy:
        """The study whose id is or starts with `prefix` (at least 4 characters), else InputError."""
        matches = [s for s in self.studies() if len(prefix) >= 4 and s.id.startswith(prefix)]
        if len(matches) != 1:
            known = ", ".join(f"{s.id[:8]} ({s.name})" for s in self.studies()[-5:]) or "none"
            raise InputError(f"no single study matches {prefix!r}: give its id (studies here: {known})")
        return matches[0]

    # Readers ------------------------------------------------------------------------------------------------------
    def verify_reader(self, token: str) -> Reader | None:
        """The reader whose key `token` is, else None (constant-time comparison of the hash)."""
        parts = token.strip().split("-", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 8:
            return None
        with self._session() as db:
            row = db.get(StudyReader, parts[1])
            study = db.get(ReaderStudy, row.study_id) if row else None
        if row is None or not secrets.compare_digest(hash_key(parts[2], row.salt), row.key_hash):
            return None
        return Reader(row.id, row.name, study.id, study.mode, tuple(study.conditions))

    def readers(self, study_id: str) -> list[Reader]:
        study = self.study(study_id)
        with self._session() as db:
            rows = db.scalars(select(StudyReader).where(StudyReader.study_id == study_id).order_by(StudyReader.name))
            return [Reader(r.id, r.name, study_id, study.mode, tuple(study.conditions)) for r in rows]

    # A reader's work ----------------------------------------------------------------------------------------------
    def assignments(self, reader_id: str) -> list[dict]:
        """The reader's cases in order: position, condition, status (todo | reading | paused | done), seconds so
        far. No case id: the reader sees positions only."""
        with self._session() as db:
            rows = list(db.scalars(select(StudyAssignment).where(StudyAssignment.reader_id == reader_id)
                                   .order_by(StudyAssignment.position)))
            events = self._events(db, [r.id for r in rows])
        return [{"position": r.position, "condition": r.condition, **_state(events.get(r.id, []))} for r in rows]

    def progress(self, reader_id: str) -> dict:
        """{"done": n submitted, "total": n assigned, "next": the position to read next or None}."""
        rows = self.assignments(reader_id)
        todo = [r["position"] for r in rows if r["status"] != "done"]
        return {"done": len(rows) - len(todo), "total": len(rows), "next": todo[0] if todo else None}

    def next_case(self, reader_id: str) -> int | None:
        return self.progress(reader_id)["next"]

    def case_payload(self, reader_id: str, position: int) -> dict:
        """What the reader may see of case `position` under its condition: 'manual' and 'teaching' nothing of the
        model; 'labels' CheXpert-14 probabilities and calls; 'reasoning' those plus reasoning, report and boxes.
        Plus the reader's own response once submitted, and the images' count (images: `case_image`)."""
        assignment, case, state = self._open(reader_id, position)
        payload = {"position": position, "total": len(self.assignments(reader_id)), "condition": assignment.condition,
                   "n_images": len(case.image_files), "labels": list(CHEXPERT14), "notice": DISCLAIMER,
                   **state, "ai": ai_view(assignment.condition, case.model_output), "response": None}
        if state["status"] == "done":
            payload["response"] = self._response(assignment.id)
        return payload

    def case_image(self, reader_id: str, position: int, index: int = 0) -> Path | None:
        """The stored PNG of image `index` of the reader's case `position`, or None."""
        assignment, case, _ = self._open(reader_id, position)
        if not 0 <= index < len(case.image_files):
            return None
        return self.data_dir / "study" / case.study_id / case.image_files[index]

    def mark_viewed(self, reader_id: str, position: int) -> dict:
        return self._event(reader_id, position, "view")

    def pause(self, reader_id: str, position: int) -> dict:
        return self._event(reader_id, position, "pause")

    def resume(self, reader_id: str, position: int) -> dict:
        return self._event(reader_id, position, "resume")

    def submit(self, reader_id: str, position: int, response: dict) -> dict:
        """Validate and store the reader's response (InputError says what is wrong); closes the case's time.
        `response`: findings (CheXpert-14 names that are present, or {name: bool}), impression (text),
        confidence 1-5, and quality, usefulness, time_saved, safety 1-5 when the condition showed AI output
        ('labels', 'reasoning'; optional in teaching, refused under 'manual')."""
        assignment, case, state = self._open(reader_id, position)
        if state["status"] == "done":
            raise StudyConflict(f"case {position} is already submitted: a response cannot be changed")
        if state["status"] == "todo":
            raise StudyConflict(f"case {position} was never viewed: open it before submitting")
        values = validate_response(response, assignment.condition)
        now = self.clock()
        try:
            with self._session() as db, db.begin():
                events = self._events(db, [assignment.id])[assignment.id] + [("submit", now)]
                db.add(StudyEvent(assignment_id=assignment.id, kind="submit", at=now))
                db.add(StudyResponse(assignment_id=assignment.id, first_view_at=events[0][1], submitted_at=now,
                                     active_seconds=active_seconds(events), **values))
        except IntegrityError:  # two submits at once: the response is the assignment's key, so one wins
            raise StudyConflict(f"case {position} is already submitted: a response cannot be changed") from None
        return self.progress(reader_id)

    def reveal(self, reader_id: str, position: int) -> dict:
        """Teaching mode, after submit: the model's output, the reference labels, per-label agreement and the
        running score over the reader's submitted cases so far."""
        assignment, case, state = self._open(reader_id, position)
        if assignment.condition != TEACHING:
            raise StudyConflict("only a teaching study reveals the model's read")
        if state["status"] != "done":
            raise StudyConflict(f"submit your read of case {position} first: the answer is revealed after it")
        with self._session() as db, db.begin():
            db.add(StudyEvent(assignment_id=assignment.id, kind="reveal", at=self.clock()))
        entries = self.teaching_entries(reader_id)
        entry = next(e for e in entries if e["position"] == position)
        # the image paths are the server's: the viewer shows case_image's PNGs
        return {k: v for k, v in entry.items() if k != "images"} | {
            "n_images": len(entry["images"]), "score": teaching.running_score([e["agreement"] for e in entries])}

    def teaching_entries(self, reader_id: str) -> list[dict]:
        """Every submitted case of a reader with its images, response, model output, truth and agreement."""
        out = []
        with self._session() as db:
            for assignment, case, response in db.execute(
                    select(StudyAssignment, StudyCase, StudyResponse)
                    .join(StudyCase, StudyCase.id == StudyAssignment.case_pk)
                    .join(StudyResponse, StudyResponse.assignment_id == StudyAssignment.id)
                    .where(StudyAssignment.reader_id == reader_id).order_by(StudyAssignment.position)):
                model = case.model_output or {}
                out.append({
                    "position": assignment.position, "notice": DISCLAIMER,
                    "images": [str(self.data_dir / "study" / case.study_id / f) for f in case.image_files],
                    "response": _response_dict(response), "model": ai_view("reasoning", model),
                    "truth": case.reference,
                    "agreement": teaching.agreement(response.findings,
                                                    teaching.model_calls(model.get("probabilities") or {}),
                                                    case.reference)})
        return out

    # Results ------------------------------------------------------------------------------------------------------
    def responses(self, study_id: str) -> list[dict]:
        """Every submitted response of a study, one flat dict each: reader (pseudonym), case (manifest id),
        condition, position, findings {label: bool}, impression, confidence, the four Likert answers,
        first_view_at, submitted_at (ISO 8601), active_seconds, reference {label: 1/0/None} or None."""
        query = (select(StudyReader.name, StudyCase.case_id, StudyCase.reference, StudyAssignment, StudyResponse)
                 .join(StudyAssignment, StudyAssignment.reader_id == StudyReader.id)
                 .join(StudyCase, StudyCase.id == StudyAssignment.case_pk)
                 .join(StudyResponse, StudyResponse.assignment_id == StudyAssignment.id)
                 .where(StudyReader.study_id == study_id).order_by(StudyReader.name, StudyAssignment.position))
        with self._session() as db:
            return [{"reader": reader, "case": case_id, "condition": a.condition, "position": a.position,
                     **_response_dict(r), "reference": reference}
                    for reader, case_id, reference, a, r in db.execute(query)]

    def cases(self, study_id: str) -> list[dict]:
        """Every case of a study: case (manifest id), reference, model_output (as stored)."""
        with self._session() as db:
            rows = db.scalars(select(StudyCase).where(StudyCase.study_id == study_id).order_by(StudyCase.id))
            return [{"case": r.case_id, "reference": r.reference, "model_output": r.model_output} for r in rows]

    def assignment_table(self, study_id: str) -> list[dict]:
        """The whole design: reader (pseudonym), case (manifest id), condition, position."""
        query = (select(StudyReader.name, StudyCase.case_id, StudyAssignment.condition, StudyAssignment.position)
                 .join(StudyAssignment, StudyAssignment.reader_id == StudyReader.id)
                 .join(StudyCase, StudyCase.id == StudyAssignment.case_pk)
                 .where(StudyReader.study_id == study_id).order_by(StudyReader.name, StudyAssignment.position))
        with self._session() as db:
            return [{"reader": r, "case": c, "condition": k, "position": p} for r, c, k, p in db.execute(query)]

    # Internals ----------------------------------------------------------------------------------------------------
    def _open(self, reader_id: str, position: int) -> tuple[StudyAssignment, StudyCase, dict]:
        """The assignment at `position`, refused (StudyConflict) while an earlier case is not submitted."""
        rows = self.assignments(reader_id)
        row = next((r for r in rows if r["position"] == position), None)
        if row is None:
            raise InputError(f"no case {position} for this reader: positions run 1 to {len(rows)}")
        first_open = next((r["position"] for r in rows if r["status"] != "done"), None)
        if row["status"] != "done" and position != first_open:
            raise StudyConflict(f"read case {first_open} first: cases open in order")
        with self._session() as db:
            assignment = db.scalars(select(StudyAssignment).where(StudyAssignment.reader_id == reader_id,
                                                                  StudyAssignment.position == position)).one()
            case = db.get(StudyCase, assignment.case_pk)
        state = {k: row[k] for k in ("status", "seconds")}
        return assignment, case, state

    def _event(self, reader_id: str, position: int, kind: str) -> dict:
        """Record a view/pause/resume when it changes something (a pause of a paused case does not)."""
        assignment, _, state = self._open(reader_id, position)
        status = state["status"]
        opens, closes = kind in ("view", "resume"), kind == "pause"
        if (opens and status in ("todo", "paused")) or (closes and status == "reading"):
            with self._session() as db, db.begin():
                db.add(StudyEvent(assignment_id=assignment.id, kind="view" if status == "todo" else kind,
                                  at=self.clock()))
        return next(r for r in self.assignments(reader_id) if r["position"] == position)

    def _events(self, db, assignment_ids: list[int]) -> dict[int, list[tuple[str, datetime]]]:
        out: dict[int, list] = {}
        rows = db.scalars(select(StudyEvent).where(StudyEvent.assignment_id.in_(assignment_ids))
                          .order_by(StudyEvent.at, StudyEvent.id))
        for event in rows:
            out.setdefault(event.assignment_id, []).append((event.kind, _aware(event.at)))
        return out

    def _response(self, assignment_id: int) -> dict | None:
        with self._session() as db:
            row = db.get(StudyResponse, assignment_id)
        return _response_dict(row) if row else None


def ai_view(condition: str, model: dict | None) -> dict | None:
    """The part of a precomputed model output a condition shows ('manual' and 'teaching' before reveal: None)."""
    if not model or condition not in ("labels", "reasoning"):
        return None
    calls = teaching.model_calls(model.get("probabilities") or {})
    labels = [{"name": n, "probability": (model.get("probabilities") or {}).get(n), "present": calls[n]}
              for n in CHEXPERT14]
    view = {"model": model.get("model"), "model_notice": model.get("model_notice"), "labels": labels}
    if condition == "reasoning":
        view |= {k: model.get(k) for k in ("reasoning", "findings", "impression", "report_labels", "boxes",
                                           "image_size")}
    return view


def validate_response(response: dict, condition: str) -> dict:
    """The response as stored columns, or InputError naming the first problem."""
    if not isinstance(response, dict):
        raise InputError("a response is a JSON object with findings, impression, confidence and ratings")
    unknown = sorted(set(response) - set(RESPONSE_FIELDS))
    if unknown:
        raise InputError(f"unknown response field(s) {', '.join(unknown)[:80]}: use {', '.join(RESPONSE_FIELDS)}")
    findings = response.get("findings") or []
    if isinstance(findings, dict):
        findings = [name for name, present in findings.items() if present is True]
    if not isinstance(findings, list) or not all(isinstance(f, str) for f in findings):
        raise InputError("findings must be a list of CheXpert-14 label names (or {name: true/false})")
    wrong = [f for f in findings if f not in CHEXPERT14]
    if wrong:
        raise InputError(f"unknown finding {wrong[0][:40]!r}: use CheXpert-14 names such as 'Pleural Effusion'")
    impression = response.get("impression") or ""
    if not isinstance(impression, str) or len(impression) > MAX_IMPRESSION_CHARS:
        raise InputError(f"the impression must be text of at most {MAX_IMPRESSION_CHARS:,} characters")
    values = {"findings": {name: name in findings for name in CHEXPERT14}, "impression": impression.strip(),
              "confidence": _likert(response, "confidence", required=True)}
    shows_ai = condition in ("labels", "reasoning")
    for name in AI_QUESTIONS:
        if condition == "manual" and response.get(name) is not None:
            raise InputError(f"{name} rates the AI output, which the 'manual' condition does not show: leave it out")
        values[name] = _likert(response, name, required=shows_ai)
    return values


def _likert(response: dict, name: str, required: bool) -> int | None:
    value = response.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in LIKERT:
        raise InputError(f"{name} must be a whole number from 1 to 5" + (" (required here)" if required else ""))
    return value


def _state(events: list[tuple[str, datetime]]) -> dict:
    kinds = [k for k, _ in events if k != "reveal"]
    if not kinds:
        return {"status": "todo", "seconds": 0.0}
    status = {"submit": "done", "pause": "paused"}.get(kinds[-1], "reading")
    return {"status": status, "seconds": round(active_seconds(events), 3)}


def _response_dict(row: StudyResponse) -> dict:
    return {"findings": dict(row.findings), "impression": row.impression, "confidence": row.confidence,
            **{name: getattr(row, name) for name in AI_QUESTIONS},
            "first_view_at": _aware(row.first_view_at).isoformat(), "submitted_at": _aware(row.submitted_at).isoformat(),
            "active_seconds": round(row.active_seconds, 3)}


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    if url.startswith(("postgresql", "postgres")):
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(f"unsupported --db {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
