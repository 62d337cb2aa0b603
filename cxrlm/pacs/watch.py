"""`cxrlm pacs watch`: poll the PACS for new chest radiograph studies (CR/DX), read each through the input checks,
and file the model's preliminary SR (PARTIAL/UNVERIFIED) back into the study, exactly once per study.

Exactly once, also across kill -9: each study goes claim (attempt counted) -> check for our SR in the PACS -> read
-> gate -> model -> store -> mark done, in cxrlm.pacs.watch_state. The SR's SOP Instance UID is derived from the
study and the model (`sr_uid`), so a crash between storing and marking finds that SR on the next attempt and marks
the study done without filing another; and a PACS that got the same instance twice keeps one.

Errors: the input gate's or the reader's refusal is recorded with its reason and not retried; a PACS that cannot
be reached (connection refused, timeout, 502/503/504) stops the round, hands the study back uncounted and waits
with capped, jittered exponential backoff before polling again (as after a poll the PACS refused); any other
error is retried later in the same way and the study is `failed` after `max_attempts`. SIGINT/SIGTERM finish the
study in hand and stop.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta

from cxrlm.batch import refusal_kind
from cxrlm.errors import CxrlmError, InputError, one_line
from cxrlm.pacs.watch_state import WatchState, scrub

CHEST_MODALITIES = ("CR", "DX")
SR_UID_ROOT = "cxrlm-watch-sr-v1"  # part of the SR UID's entropy: a new scheme gives new UIDs
UNREACHABLE_STATUS = (502, 503, 504)


@dataclass
class WatchOptions:
    interval_s: float = 30.0  # between polls when there is nothing to do
    max_queue: int = 64  # studies held in memory at once; the rest wait for the next poll
    max_attempts: int = 3  # per study, crashes included
    backoff_s: float = 2.0  # first retry delay; doubled per attempt, jittered
    backoff_cap_s: float = 300.0
    days: int = 2  # studies of the last `days` days by StudyDate (today included), a window that slides
    since: date | None = None  # or: studies from this StudyDate on
    once: bool = False  # process what is there, then exit
    prior: bool = True  # --prior auto: the patient's earlier chest study, read and given to the model
    gate: str = "on"
    max_new_tokens: int | None = None
    filters: dict = field(default_factory=dict)  # more QIDO keys for each poll (--pacs-query), e.g. StudyDescription

    def window_start(self) -> date:
        return self.since or date.today() - timedelta(days=self.days - 1)


@dataclass
class Progress:
    """Counts of this run, for the progress line and the final summary."""

    started: float = field(default_factory=time.monotonic)
    done: int = 0
    refused: int = 0
    failed: int = 0
    retried: int = 0
    already_filed: int = 0  # found our SR in the PACS (a crash between storing and marking done)
    queued: int = 0
    pacs_down: str | None = None

    def line(self) -> str:
        minutes = max(time.monotonic() - self.started, 1e-9) / 60
        rate = (self.done + self.refused) / minutes
        text = (f"watch: {self.done} done, {self.refused} refused, {self.failed} failed, {self.queued} queued, "
                f"{rate:.1f} studies/min")
        return text + (f" | {self.pacs_down}" if self.pacs_down else "")


def sr_uid(study_uid: str, model_id: str) -> str:
    """The SR's SOP Instance UID, the same for the same study and model: what makes a second store a no-op."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[SR_UID_ROOT, study_uid, model_id]))


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with equal jitter: half the delay fixed, half random, so that watchers that lost
    the PACS together do not all come back at the same second."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def unreachable(err: BaseException) -> bool:
    """Whether an error (or what caused it) means the PACS could not be reached, rather than that it said no."""
    import requests

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, requests.ConnectionError | requests.Timeout | ConnectionError):
            return True
        response = getattr(err, "response", None)
        if isinstance(err, requests.HTTPError) and response is not None and response.status_code in UNREACHABLE_STATUS:
            return True
        err = err.__cause__ or err.__context__
    return False


class Watcher:
    """The polling loop over `client` (a cxrlm.pacs.PacsClient) with `model` (a loaded CxrModel)."""

    def __init__(self, model, client, state: WatchState, options: WatchOptions, stop: threading.Event | None = None,
                 out=sys.stderr):
        self.model, self.client, self.state, self.options = model, client, state, options
        self.stop = stop or threading.Event()
        self.out = out
        self.progress = Progress()
        self.queue: deque = deque()  # (StudyInfo, state key), in memory only: the UIDs are never written
        self.model_id = f"{model.name}|{model.template_version}"
        self.rng = random.Random()
        self.down = 0  # polls in a row that failed
        self.listed: set[str] = set()  # state keys of the studies the last poll found

    def run(self) -> Progress:
        while not self.stop.is_set():
            if not self.queue:
                found = self.poll()
                if found is None:  # the poll failed: wait, then poll again
                    if self.options.once and self.down >= self.options.max_attempts:
                        break
                    self.stop.wait(backoff(self.down, self.options.backoff_s, self.options.backoff_cap_s, self.rng))
                    continue
                if not self.queue:
                    if self.options.once and not self.waiting():
                        break
                    self.stop.wait(self.pause())
                    continue
            self.work(*self.queue.popleft())
            self.progress.queued = len(self.queue)
            self.show()
        return self.progress

    def poll(self) -> int | None:
        """Queue the due studies the PACS lists (up to max_queue); None when the poll failed."""
        try:
            infos = self.client.search_studies(date_from=self.options.window_start().strftime("%Y%m%d"),
                                               modalities=CHEST_MODALITIES, filters=self.options.filters)
        except Exception as err:
            if not (unreachable(err) or isinstance(err, CxrlmError)):
                raise  # a bug, not the PACS
            self.down += 1
            why = "PACS unreachable" if unreachable(err) else scrub(err)  # e.g. 401, or too many studies
            self.progress.pacs_down = f"{why}: poll {self.down} failed; retrying with backoff"
            self.show()
            return None
        self.down, self.progress.pacs_down = 0, None
        now = time.time()
        keyed = [(info, self.state.key(info.uid)) for info in reversed(infos)]  # oldest first
        self.listed = {key for _, key in keyed}
        for info, key in keyed:
            if len(self.queue) < self.options.max_queue and self.state.is_due(key, now):
                self.queue.append((info, key))
        self.progress.queued = len(self.queue)
        self.show()
        return len(self.queue)

    def waiting(self) -> bool:
        """Listed studies that wait for a retry (--once keeps going until they are done or failed)."""
        return any((row := self.state.row(key)) and row.state == "retry" for key in self.listed)

    def pause(self) -> float:
        """Until the next poll: the interval, or sooner when a retry falls due."""
        due = self.state.next_retry()
        wait = self.options.interval_s if due is None else min(self.options.interval_s, due - time.time())
        return max(wait, 0.05)

    def work(self, info, key: str) -> None:
        """One study, from claim to done (or refused, retry, failed)."""
        row = self.state.row(key)
        if row and row.state == "running" and row.attempts >= self.options.max_attempts:
            self.state.failed(key, f"the watcher stopped during each of its {row.attempts} attempts")
            self.progress.failed += 1
            return
        attempt = self.state.claim(key)
        try:
            outcome = self.file_report(info)
        except InputError as err:  # the reader or the gate: the study itself cannot be read, never retried
            self.state.refused(key, refusal_kind(str(err)))  # no image name, no score
            self.progress.refused += 1
            return
        except Exception as err:
            delay = backoff(attempt, self.options.backoff_s, self.options.backoff_cap_s, self.rng)
            if unreachable(err):  # give the study back uncounted; the loop polls again after the backoff
                self.state.release(key, delay)
                self.queue.clear()
                self.progress.pacs_down = "PACS unreachable while reading a study; retrying with backoff"
                return
            state = self.state.retry(key, f"{type(err).__name__}: {err}", delay, self.options.max_attempts)
            self.progress.failed += state == "failed"
            self.progress.retried += state == "retry"
            return
        self.state.done(key)
        self.progress.done += 1
        self.progress.already_filed += outcome == "already filed"

    def file_report(self, info) -> str:
        """Read, gate, run and store one study; "already filed" when its SR is in the PACS (an earlier attempt
        stored it and stopped before marking it done)."""
        from cxrlm.gate import check_study, check_views
        from cxrlm.pacs import read_study, store_sr
        from cxrlm.types import Task

        instance_uid = sr_uid(info.uid, self.model_id)
        if any(instance.sop_uid == instance_uid for instance in self.client.instances(info)):
            return "already filed"
        study = read_study(self.client, info)
        check_study(study.study, self.options.gate)  # the study's own images: a refusal here is final
        check_views(study.study, self.model.profile.views, self.model.name, self.options.gate)
        if self.options.prior:
            self.attach_prior(study)
        output = self.model.predict(study.study, Task.REPORT, max_new_tokens=self.options.max_new_tokens)
        store_sr(self.client, study, output, sop_instance_uid=instance_uid)
        return "filed"

    def attach_prior(self, study) -> None:
        """The patient's prior study, gated; one that cannot be read or is refused is left out, not the study."""
        from cxrlm.gate import check_study
        from cxrlm.pacs import read_prior

        try:
            if read_prior(self.client, study) is not None:
                check_study(study.study.prior, self.options.gate)
        except CxrlmError as err:
            if unreachable(err):
                raise
            study.study.prior = study.study.prior_report = None
            study.study.images[0].warnings.append(f"prior study left out: {refusal_kind(str(err))}")

    def show(self) -> None:
        end = "\r" if self.out.isatty() else "\n"
        print(self.progress.line(), end=end, file=self.out, flush=True)


def summary(state: WatchState, progress: Progress) -> dict:
    """What the run did and where the state stands: counts, and the reasons of refused and failed studies."""
    from collections import Counter

    from cxrlm import DISCLAIMER

    problems = state.problems()
    return {
        "this_run": {"done": progress.done, "refused": progress.refused, "failed": progress.failed,
                     "retried": progress.retried, "already_filed": progress.already_filed},
        "state": state.counts(),
        "refused": dict(Counter(r.reason for r in problems if r.state == "refused").most_common()),
        "failed": dict(Counter(one_line(r.reason or "", 120) for r in problems if r.state == "failed").most_common()),
        "notice": DISCLAIMER,
    }
