"""A DICOMweb session on dicomweb-client: QIDO-RS searches, WADO-RS retrieval and STOW-RS storage, bounded and
with one-line errors. No HTTP is written here: the library builds every request.

Where the PACS is: `--pacs URL` or $CXRLM_PACS_URL. Who we are: the environment only, never the command line
(a process's arguments are visible to every user of the machine): $CXRLM_PACS_TOKEN (a bearer token), or
$CXRLM_PACS_USER and $CXRLM_PACS_PASSWORD (basic auth). Credentials are never printed: a URL that carries them
(`https://user:pass@host`) is refused, and messages show the URL without its user, query or fragment.

Bounds, before anything is decoded: a search asks for one study more than `max_studies` and refuses past it; a
study's instance listing likewise (`max_instances`); every response body is read in chunks and refused past
`max_bytes` (a response hook, so it holds whatever the server's Content-Length says or omits).

Privacy: a search keeps PatientID in memory (`StudyInfo.patient_key`, out of its repr) only so that the prior
query can be made; no message quotes a query, a URL's query string or a response (they may carry identifiers).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cxrlm.errors import CxrlmError, quote
from cxrlm.limits import MAX_PACS_BYTES, MAX_PACS_INSTANCES, MAX_PACS_STUDIES, PACS_TIMEOUT

URL_ENV = "CXRLM_PACS_URL"
TOKEN_ENV = "CXRLM_PACS_TOKEN"
USER_ENV, PASSWORD_ENV = "CXRLM_PACS_USER", "CXRLM_PACS_PASSWORD"
RADIOGRAPHY = ("CR", "DX")  # what a search asks for by default: chest radiograph studies
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances", "PatientID")
INSTANCE_FIELDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "ViewPosition",
                   "SeriesNumber", "InstanceNumber")
# QIDO keys a user may give as --pacs-query KEY=VALUE (study level).
QUERY_KEYS = ("PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
              "StudyDescription")
UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
HANDLE = re.compile(r"^s[0-9a-f]{10}$")


class PacsError(CxrlmError):
    """The PACS could not be reached, refused us, or answered outside cxrlm's bounds."""


def study_handle(uid: str) -> str:
    """A short, one-way name for a study in what cxrlm prints: 's' + 10 hex digits of SHA-256 of its UID. The UID
    itself links back to the patient in any PACS it was copied to, so it is not shown."""
    return "s" + hashlib.sha256(uid.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class StudyInfo:
    """One study as a search found it. `uid` and `patient_key` stay in memory: neither is in the repr."""

    uid: str = field(repr=False)
    date: str = ""  # YYYYMMDD, "" when the PACS has none
    time: str = ""
    modalities: tuple[str, ...] = ()
    series: int | None = None
    instances: int | None = None
    patient_key: str = field(default="", repr=False)  # PatientID: for the prior query only

    @property
    def handle(self) -> str:
        return study_handle(self.uid)

    @property
    def when(self) -> tuple[str, str]:
        return self.date, self.time


@dataclass(frozen=True)
class Instance:
    """One instance of a study as a search listed it."""

    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    sop_uid: str = field(repr=False)
    sop_class: str = ""
    modality: str = ""
    view: str = ""
    order: tuple[int, int] = (0, 0)  # (SeriesNumber, InstanceNumber)


class PacsClient:
    """A bounded DICOMweb session. `from_env(url)` is how every surface makes one."""

    def __init__(self, url: str, *, token: str | None = None, user: str | None = None, password: str | None = None,
                 timeout=PACS_TIMEOUT, max_studies: int = MAX_PACS_STUDIES, max_instances: int = MAX_PACS_INSTANCES,
                 max_bytes: int = MAX_PACS_BYTES):
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        self.max_studies, self.max_instances, self.max_bytes = max_studies, max_instances, max_bytes
        self._session = _session(token, user, password, max_bytes)
        logging.getLogger("dicomweb_client").setLevel(logging.ERROR)  # its INFO/WARNING lines quote UIDs
        self._client = DICOMwebClient(self.url, session=self._session, timeout=timeout)
        self._client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=200)

    @classmethod
    def from_env(cls, url: str | None = None, environ: Mapping[str, str] = os.environ, **bounds) -> PacsClient:
        """`url` (`--pacs`) or $CXRLM_PACS_URL; a token or a user and password from the environment."""
        url = url or environ.get(URL_ENV)
        if not url:
            raise PacsError(f"no PACS given: pass --pacs URL (its DICOMweb root) or set {URL_ENV}")
        token, user, password = environ.get(TOKEN_ENV), environ.get(USER_ENV), environ.get(PASSWORD_ENV)
        if token and (user or password):
            raise PacsError(f"both {TOKEN_ENV} and {USER_ENV}/{PASSWORD_ENV} are set: keep one way to log in")
        if bool(user) != bool(password):
            raise PacsError(f"basic auth needs both {USER_ENV} and {PASSWORD_ENV} in the environment")
        return cls(url, token=token, user=user, password=password, **bounds)

    @property
    def shown_url(self) -> str:
        return shown(self.url)

    def search_studies(self, *, study_uid: str | None = None, patient_id: str | None = None,
                       date_from: str | None = None, date_to: str | None = None,
                       modalities: tuple[str, ...] = RADIOGRAPHY, filters: Mapping[str, str] | None = None,
                       limit: int | None = None) -> list[StudyInfo]:
        """QIDO-RS studies; dates are YYYYMMDD (either end may be None). More than `limit` (default max_studies)
        matches is refused: narrow the query."""
        limit = min(limit or self.max_studies, self.max_studies)
        query = dict(filters or {})
        for key, value in (("StudyInstanceUID", study_uid), ("PatientID", patient_id)):
            if value:
                query[key] = value
        if date_from or date_to:
            query["StudyDate"] = f"{date_from or ''}-{date_to or ''}"
        if modalities and "ModalitiesInStudy" not in query:
            query["ModalitiesInStudy"] = ",".join(modalities)
        with self._errors("search"):
            found = self._client.search_for_studies(search_filters=query, fields=STUDY_FIELDS, limit=limit + 1)
        if len(found) > limit:
            raise PacsError(f"more than {limit} studies match: narrow the query (a patient, a date range, "
                            "--pacs-query KEY=VALUE)")
        return sorted((_study(item) for item in found), key=lambda s: s.when, reverse=True)

    def study(self, key: str, filters: Mapping[str, str] | None = None) -> StudyInfo:
        """The study a user named: its StudyInstanceUID, or a handle from `cxrlm pacs search` (looked up among
        the radiograph studies that match `filters`, as that search did)."""
        key = key.strip()
        if UID.match(key) and len(key) <= 64:
            found = self.search_studies(study_uid=key, modalities=())
        elif HANDLE.match(key):
            found = [s for s in self.search_studies(filters=filters) if s.handle == key]
        else:
            raise PacsError(f"'{quote(key)}' is neither a StudyInstanceUID nor a study handle (s + 10 hex digits) "
                            "from `cxrlm pacs search`")
        if not found:
            raise PacsError(f"no study {study_handle(key) if UID.match(key) else key} on the PACS at "
                            f"{self.shown_url}: check the UID, or run `cxrlm pacs search` with the same filters")
        return found[0]

    def instances(self, study: StudyInfo) -> list[Instance]:
        """Every instance of the study (images, SRs ...), refused past max_instances."""
        with self._errors("instance listing"):
            found = self._client.search_for_instances(study_instance_uid=study.uid, fields=INSTANCE_FIELDS,
                                                      limit=self.max_instances + 1)
        if len(found) > self.max_instances:
            raise PacsError(f"study {study.handle} has more than {self.max_instances} instances: cxrlm reads "
                            "chest radiograph studies of a few views")
        return sorted((_instance(item, study.uid) for item in found), key=lambda i: i.order)

    def retrieve(self, instance: Instance):
        """WADO-RS: one instance as a pydicom Dataset in its stored transfer syntax (body bounded by max_bytes)."""
        with self._errors("retrieval"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's parse warnings may quote patient attributes: never shown
            return self._client.retrieve_instance(instance.study_uid, instance.series_uid, instance.sop_uid,
                                                  media_types=(("application/dicom", "*"),))

    def store(self, datasets: list, study_uid: str) -> None:
        """STOW-RS into the study; a failure the PACS reports per instance is an error too."""
        with self._errors("storing"):
            result = self._client.store_instances(datasets, study_instance_uid=study_uid)
        failed = result.get("FailedSOPSequence") if result is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise PacsError(f"the PACS at {self.shown_url} refused to store the SR (failure reason {quote(reason)}): "
                            "check that it accepts Comprehensive SR objects")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Library and network failures as one line that says what to do; never the request's URL or body."""
        import requests

        try:
            yield
        except PacsError:
            raise
        except (requests.ConnectionError, requests.Timeout) as err:
            cause = "timed out" if isinstance(err, requests.Timeout) else "is not reachable"
            raise PacsError(f"the PACS at {self.shown_url} {cause} ({what}): check that it is running and the URL "
                            f"(--pacs or {URL_ENV})") from None
        except requests.HTTPError as err:
            raise PacsError(_http_message(err.response, what, self.shown_url)) from None
        except (ValueError, KeyError, TypeError, OSError) as err:  # a malformed answer or UID
            raise PacsError(f"the PACS at {self.shown_url} gave an answer cxrlm cannot read ({what}, "
                            f"{type(err).__name__}): check that the URL is its DICOMweb root") from None


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"PACS URL '{quote(shown(url))}' is not an http(s) URL: give its DICOMweb root, e.g. "
                        "https://pacs.example.org/dicom-web")
    if parts.username or parts.password:
        raise PacsError(f"the PACS URL carries a user or password: remove it and set {TOKEN_ENV}, or {USER_ENV} "
                        f"and {PASSWORD_ENV}, in the environment")
    return url.strip().rstrip("/")


def shown(url: str) -> str:
    """A URL as messages show it: scheme, host, port and path; no user, password, query or fragment."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _session(token: str | None, user: str | None, password: str | None, max_bytes: int):
    import requests

    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials or proxies behind the user's back
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password)
    session.hooks["response"].append(_bounded(max_bytes))
    return session


def _bounded(max_bytes: int):
    """A response hook that reads the body in chunks and refuses it past `max_bytes`, before any parsing.
    It runs before requests reads the body itself, which then finds the bounded copy."""

    def hook(response, *args, **kwargs):
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            response.close()
            raise PacsError(_too_big(int(declared), max_bytes))
        body, size = [], 0
        for chunk in response.iter_content(2**16):
            size += len(chunk)
            if size > max_bytes:
                response.close()
                raise PacsError(_too_big(size, max_bytes))
            body.append(chunk)
        response._content = b"".join(body)  # requests keeps a read body here; nothing public sets it
        return response

    return hook


def _too_big(size: int, limit: int) -> str:
    return (f"a PACS answer of {size:,}+ bytes exceeds the limit of {limit:,} bytes per answer (one instance): "
            "check the study (a radiograph is a few MB), or raise the client's max_bytes")


def _http_message(response, what: str, url: str) -> str:
    status = getattr(response, "status_code", 0)
    if status == 401:
        return (f"the PACS at {url} refused the credentials (HTTP 401, {what}): set {TOKEN_ENV}, or {USER_ENV} and "
                f"{PASSWORD_ENV}, to an account of the PACS")
    if status == 403:
        return f"the PACS at {url} does not allow this account to do that (HTTP 403, {what}): ask its administrator"
    if status == 404:
        return (f"the PACS at {url} has no such resource (HTTP 404, {what}): check that the URL is its DICOMweb root "
                "and that the study still exists")
    return f"the PACS at {url} answered HTTP {status} ({what}): check its log, or retry later"


def _value(item: Mapping, keyword: str, default=""):
    """The first value of `keyword` in a DICOM JSON object (tags are upper-case hex)."""
    from pydicom.datadict import tag_for_keyword

    element = item.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = element.get("Value") or [default]
    value = values[0]
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic", default)
    return value


def _values(item: Mapping, keyword: str) -> tuple[str, ...]:
    from pydicom.datadict import tag_for_keyword

    element = item.get(f"{tag_for_keyword(keyword):08X}") or {}
    return tuple(str(v) for v in element.get("Value") or ())


def _count(item: Mapping, keyword: str) -> int | None:
    value = _value(item, keyword, None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _study(item: Mapping) -> StudyInfo:
    uid = str(_value(item, "StudyInstanceUID"))
    if not uid:
        raise PacsError("the PACS listed a study without a StudyInstanceUID: check its DICOMweb configuration")
    return StudyInfo(uid=uid, date=str(_value(item, "StudyDate")), time=str(_value(item, "StudyTime")),
                     modalities=_values(item, "ModalitiesInStudy"), series=_count(item, "NumberOfStudyRelatedSeries"),
                     instances=_count(item, "NumberOfStudyRelatedInstances"),
                     patient_key=str(_value(item, "PatientID")))


def _instance(item: Mapping, study_uid: str) -> Instance:
    return Instance(study_uid=study_uid, series_uid=str(_value(item, "SeriesInstanceUID")),
                    sop_uid=str(_value(item, "SOPInstanceUID")), sop_class=str(_value(item, "SOPClassUID")),
                    modality=str(_value(item, "Modality")).upper(), view=str(_value(item, "ViewPosition")).upper(),
                    order=(_count(item, "SeriesNumber") or 0, _count(item, "InstanceNumber") or 0))
