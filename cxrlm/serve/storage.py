"""Persistent state of the server: API keys, de-identified studies, chat sessions, results and the audit log.

SQLAlchemy 2 over SQLite (a file, in WAL mode, the default) or PostgreSQL (by URL). Study images are stored as
PNGs of `XrayImage.pixels` under a server-chosen uuid name in `data_dir/studies/`: no path ever comes from user
input, and no DICOM tag outside the non-identifying allow-list is kept. The audit log is append-only: a request
writes a `started` row before the model runs and a terminal row (`completed`, `failed`, `cancelled`,
`timeout`) after, so a server killed mid-request leaves a `started` row that the next start closes as
`interrupted`. Not here: HTTP, the model, key checks (see security.py).
"""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, create_engine, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cxrlm.errors import ConfigError
from cxrlm.types import XrayImage

# XrayImage.metadata keys a study may keep: DICOM acquisition facts (cxrlm.io.dicom.SAFE_METADATA_TAGS) and the
# raster facts cxrlm.io.image records. Anything else is dropped, whatever a loader puts there.
SAFE_METADATA_KEYS = frozenset({
    "Modality", "BitsStored", "PhotometricInterpretation", "TransferSyntaxUID", "SOPClassUID", "Rows", "Columns",
    "voi_applied", "windowing", "format", "mode",
    "BodyPartExamined", "ImageType", "colour_saturation",  # the input gate's inputs (cxrlm.gate)...
    "gate_chest_score", "gate_view", "gate_view_score",  # ... and its scores
})
TERMINAL_EVENTS = ("completed", "failed", "cancelled", "timeout", "interrupted")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    salt: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    api_key_id: Mapped[str] = mapped_column(String(16))
    image_file: Mapped[str] = mapped_column(String(64))  # "<uuid>.png", chosen by the server
    pixels_sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    view_position: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pixel_spacing: Mapped[list | None] = mapped_column(JSON, nullable=True)
    image_metadata: Mapped[dict] = mapped_column(JSON, default=dict)
    warnings: Mapped[list] = mapped_column(JSON, default=list)


class ChatSession(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    api_key_id: Mapped[str] = mapped_column(String(16))
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    model: Mapped[str] = mapped_column(String(200))


class MessageRow(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)


class ResultRow(Base):
    __tablename__ = "results"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    api_key_id: Mapped[str] = mapped_column(String(16))
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"), nullable=True)
    task: Mapped[str] = mapped_column(String(16))
    output: Mapped[dict] = mapped_column(JSON)


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(16))  # started | completed | failed | cancelled | timeout | interrupted
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    api_key_id: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[str] = mapped_column(String(64))
    input_sha256: Mapped[str] = mapped_column(String(64))
    output: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


# SQLite refuses to change or delete audit rows; the Store itself never issues UPDATE or DELETE on them.
SQLITE_APPEND_ONLY = (
    ("CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
    ("CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
)


def new_id() -> str:
    return uuid.uuid4().hex


def hash_key(secret: str, salt: str) -> str:
    # The secret is 32 random bytes, so a salted SHA-256 is enough: nothing to brute-force, unlike a password.
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Store:
    def __init__(self, url: str, data_dir: str | Path):
        self.url = url
        self.data_dir = Path(data_dir)
        self.studies_dir = self.data_dir / "studies"
        self.studies_dir.mkdir(parents=True, exist_ok=True)
        self.engine = _engine(url)
        Base.metadata.create_all(self.engine)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                for statement in SQLITE_APPEND_ONLY:
                    conn.execute(text(statement))
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._session()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def close(self) -> None:
        self.engine.dispose()

    # API keys -------------------------------------------------------------------------------------------------
    def add_key(self, name: str) -> tuple[str, str]:
        """A new key: returns (key id, the full key). Only the salted hash is stored; the key is shown once."""
        key_id, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self.session() as db, db.begin():
            db.add(ApiKey(id=key_id, name=name, salt=salt, key_hash=hash_key(secret, salt)))
        return key_id, f"cxrlm-{key_id}-{secret}"

    def revoke_key(self, key_id: str) -> bool:
        with self.session() as db, db.begin():
            row = db.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

    def has_keys(self) -> bool:
        with self.session() as db:
            return db.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def verify_key(self, token: str) -> str | None:
        """The key id if `token` is a live key, else None (constant-time comparison of the hash)."""
        parts = token.split("-", 2)
        if len(parts) != 3 or parts[0] != "cxrlm":
            return None
        with self.session() as db:
            row = db.get(ApiKey, parts[1])
        if row is None or row.revoked_at is not None:
            return None
        return row.id if secrets.compare_digest(hash_key(parts[2], row.salt), row.key_hash) else None

    # Studies --------------------------------------------------------------------------------------------------
    def sweep_uploads(self) -> int:
        """At start-up: delete whole uploads that earlier servers, killed mid-decode, left in `tmp/` (they hold
        every DICOM tag). Uploads are now decoded in memory and never written."""
        left = list((self.data_dir / "tmp").glob("upload-*"))
        for path in left:
            path.unlink(missing_ok=True)
        return len(left)

    def save_study(self, image: XrayImage, api_key_id: str) -> str:
        study_id = new_id()
        data = png_bytes(image.pixels)
        (self.studies_dir / f"{study_id}.png").write_bytes(data)
        width, height = image.size
        row = StudyRow(
            id=study_id, api_key_id=api_key_id, image_file=f"{study_id}.png",
            pixels_sha256=hashlib.sha256(image.pixels.tobytes()).hexdigest(), width=width, height=height,
            view_position=image.view_position,
            pixel_spacing=list(image.pixel_spacing) if image.pixel_spacing else None,
            image_metadata={k: _jsonable(v) for k, v in image.metadata.items() if k in SAFE_METADATA_KEYS},
            warnings=list(image.warnings),
        )
        with self.session() as db, db.begin():
            db.add(row)
        return study_id

    def study(self, study_id: str) -> StudyRow | None:
        if not _is_hex_id(study_id):
            return None
        with self.session() as db:
            return db.get(StudyRow, study_id)

    def study_png(self, row: StudyRow) -> Path:
        return self.studies_dir / row.image_file

    def load_study_image(self, study_id: str) -> XrayImage | None:
        from PIL import Image

        row = self.study(study_id)
        if row is None:
            return None
        with Image.open(self.study_png(row)) as im:
            pixels = np.asarray(im.convert("L"))
        spacing = tuple(row.pixel_spacing) if row.pixel_spacing else None
        return XrayImage(pixels=pixels, source=f"cxrlm://study/{row.id}", view_position=row.view_position,
                         pixel_spacing=spacing, metadata=dict(row.image_metadata), warnings=list(row.warnings))

    # Sessions and results -------------------------------------------------------------------------------------
    def open_session(self, session_id: str | None, api_key_id: str, study_id: str | None, model: str) -> str:
        """Continue `session_id` when it exists and belongs to this key, else start a new session."""
        with self.session() as db, db.begin():
            row = db.get(ChatSession, session_id) if session_id and _is_hex_id(session_id) else None
            if row is not None and row.api_key_id == api_key_id:
                return row.id
            row = ChatSession(id=new_id(), api_key_id=api_key_id, study_id=study_id, model=model)
            db.add(row)
            return row.id

    def add_messages(self, session_id: str, messages: list[tuple[str, str]]) -> None:
        with self.session() as db, db.begin():
            db.add_all(MessageRow(session_id=session_id, role=role, text=body) for role, body in messages)

    def messages(self, session_id: str) -> list[tuple[str, str]]:
        with self.session() as db:
            rows = db.scalars(select(MessageRow).where(MessageRow.session_id == session_id).order_by(MessageRow.id))
            return [(r.role, r.text) for r in rows]

    def save_result(self, *, request_id: str, api_key_id: str, task: str, output: dict,
                    study_id: str | None = None, session_id: str | None = None) -> str:
        result_id = new_id()
        with self.session() as db, db.begin():
            db.add(ResultRow(id=result_id, request_id=request_id, api_key_id=api_key_id, task=task, output=output,
                             study_id=study_id, session_id=session_id))
        return result_id

    def result(self, result_id: str) -> ResultRow | None:
        if not _is_hex_id(result_id):
            return None
        with self.session() as db:
            return db.get(ResultRow, result_id)

    # Audit log ------------------------------------------------------------------------------------------------
    def audit_start(self, request_id: str, *, api_key_id: str, endpoint: str, model: str, template_version: str,
                    input_sha256: str) -> None:
        self._audit(AuditRow(request_id=request_id, event="started", api_key_id=api_key_id, endpoint=endpoint,
                             model=model, template_version=template_version, input_sha256=input_sha256))

    def audit_end(self, request_id: str, event_name: str, *, output: dict | None = None,
                  timings: dict | None = None, detail: str | None = None) -> None:
        if event_name not in TERMINAL_EVENTS:
            raise ValueError(f"unknown audit event {event_name!r}")
        with self.session() as db:
            start = db.scalars(select(AuditRow).where(AuditRow.request_id == request_id,
                                                      AuditRow.event == "started")).first()
        if start is None:
            raise ValueError(f"no started audit row for request {request_id}")
        self._audit(AuditRow(request_id=request_id, event=event_name, api_key_id=start.api_key_id,
                             endpoint=start.endpoint, model=start.model, template_version=start.template_version,
                             input_sha256=start.input_sha256, output=output, timings=timings, detail=detail))

    def audit_events(self, request_id: str | None = None) -> list[AuditRow]:
        query = select(AuditRow).order_by(AuditRow.id)
        if request_id:
            query = query.where(AuditRow.request_id == request_id)
        with self.session() as db:
            return list(db.scalars(query))

    def close_interrupted(self) -> int:
        """At start-up: requests that were started but never finished (server killed) get an `interrupted` row."""
        with self.session() as db:
            finished = select(AuditRow.request_id).where(AuditRow.event != "started")
            open_ids = list(db.scalars(select(AuditRow.request_id).where(
                AuditRow.event == "started", AuditRow.request_id.not_in(finished))))
        for request_id in open_ids:
            self.audit_end(request_id, "interrupted", detail="the server stopped before this request finished")
        return len(open_ids)

    def _audit(self, row: AuditRow) -> None:
        with self.session() as db, db.begin():
            db.add(row)


def _engine(url: str):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # WAL: readers never block the writer; a killed server loses nothing committed
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if url.startswith(("postgresql", "postgres")):
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(f"unsupported --db {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")


def _is_hex_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _jsonable(value):
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)

