"""The test PACS itself: Orthanc starts, stores the synthetic studies, answers QIDO-RS, and survives a restart."""

import json
import urllib.request


def qido(orthanc, path):
    import base64

    from tests.orthanc import PASSWORD, USER

    request = urllib.request.Request(orthanc.dicomweb + path)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"[]")


def test_studies_are_stored_and_found_by_qido_after_a_restart(orthanc, pacs_studies):
    from tests.orthanc import MARKER

    assert len(orthanc.rest("/studies")) == 4
    assert len(orthanc.rest("/instances")) == 8
    orthanc.stop()
    orthanc.start()
    found = qido(orthanc, "/studies?ModalitiesInStudy=DX&PatientID=" + f"{MARKER}000")
    uids = {study["0020000D"]["Value"][0] for study in found}
    assert uids == {s["study_uid"] for s in pacs_studies if s["patient"] == 0}
