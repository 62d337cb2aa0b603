"""Reader studies and teaching (issue 35): cases, a counterbalanced design, precomputed model output, responses.

Modules: manifest.py (the case list), design.py (who reads what under which condition, as data), store.py (tables
`study_*` in the server's database), teaching.py (read-first feedback), create.py (`cxrlm study create`: manifest ->
design -> model outputs -> store), results.py (`cxrlm study results`: accuracy, time, ratings, paired bootstrap,
HTML and CSV). A workflow layer: it imports batch, models, metrics, io; never serve or cli. docs/STUDY.md explains
the design choices.

The store API the viewer uses (cxrlm.study.store; every method is synchronous, SQLAlchemy underneath):

    store = StudyStore(db: str | sqlalchemy.Engine, data_dir: str | Path, clock=utcnow)
        # the server passes its own Store's engine and --data-dir; tables are created if missing
    store.verify_reader(token: str) -> Reader | None
        # Reader(id, name, study_id, mode, conditions); token "cxrs-<8 hex>-<secret>", printed once by create
    store.assignments(reader_id) -> list[dict]      # [{position, condition, status, seconds}] in order
        # status: todo | reading | paused | done; seconds: active time of closed intervals so far
    store.progress(reader_id) -> dict               # {done, total, next}; next is a position or None
    store.next_case(reader_id) -> int | None
    store.case_payload(reader_id, position: int) -> dict
        # {position, total, condition, n_images, labels (CheXpert-14 names for the form), notice, status, seconds,
        #  ai, response}; ai is None for manual/teaching, {model, model_notice, labels: [{name, probability,
        #  present}]} for labels, plus reasoning, findings, impression, report_labels, boxes ([{label, xyxy,
        #  xyxy_norm, score}] in pixels of image 0), image_size for reasoning; response once submitted
    store.case_image(reader_id, position, index=0) -> Path | None   # a stored PNG, safe to send
    store.mark_viewed(reader_id, position) -> dict  # the assignment row; first view starts the clock
    store.pause(reader_id, position) -> dict
    store.resume(reader_id, position) -> dict
    store.submit(reader_id, position, response: dict) -> dict   # returns progress
        # response: {findings: [names] or {name: bool}, impression: str <= 4000 chars, confidence: 1-5,
        #  quality, usefulness, time_saved, safety: 1-5 (required for labels/reasoning, refused for manual,
        #  optional for teaching)}
    store.reveal(reader_id, position) -> dict       # teaching only, after submit:
        # {position, notice, n_images, response, model (as ai for reasoning), truth, agreement: {labels: [{label,
        #  resident, model, truth, resident_vs_truth, model_vs_truth, resident_vs_model}], labels_scored,
        #  resident_correct, model_correct, resident_model_agree}, score: {cases, labels_scored, resident_correct,
        #  model_correct, resident_accuracy, model_accuracy}}
    store.teaching_entries(reader_id) -> list[dict] # every submitted case as reveal gives it, with images
        # (server paths of the PNGs, for the teaching-file export) instead of n_images, without score
    store.responses(study_id) -> list[dict]         # flat rows for results and CSV
    store.assignment_table(study_id), store.cases(study_id), store.study(study_id), store.studies(),
    store.readers(study_id), store.find_study(id_prefix)

Errors: InputError for a bad response or an unknown position (HTTP 400/404), StudyConflict (an InputError) for a
case out of order, a second submit, or an early reveal (HTTP 409). A case opens only when the earlier ones are
submitted; submitted ones stay viewable. Readers never see the manifest's case ids, only positions.
"""
