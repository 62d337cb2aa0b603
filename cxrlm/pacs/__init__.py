"""A PACS as a source and a destination, over DICOMweb (dicomweb-client; the `pacs` extra). docs/PACS.md.

The API every surface uses (the CLI's `--study`/`cxrlm pacs`, the watch mode):

    client = PacsClient.from_env(url)            # url or $CXRLM_PACS_URL; $CXRLM_PACS_TOKEN or _USER/_PASSWORD
    infos = client.search_studies(patient_id=None, date_from="20240101", date_to=None, filters={...})
                                                 # -> [StudyInfo] newest first; CR/DX studies by default
    info = client.study("1.2.3..." or "s0123456789")   # a StudyInstanceUID or a handle from a search
    study = read_study(client, info)             # -> PacsStudy: .study is a cxrlm.types.Study (images decoded
                                                 #    in memory by cxrlm.io, frontal first), .info, .handle
    prior = read_prior(client, study)            # the same patient's latest earlier CR/DX study, attached to
                                                 #    study.study.prior (+ prior_report from its SR); None if none
    find_prior(client, info) -> StudyInfo | None # the same, without reading it
    sr_uid = store_sr(client, study, output)     # the preliminary SR (cxrlm.export.dicom_sr) filed into the study

Run the input gate on `study.study` as for files (`cxrlm.gate.check_study`). Errors are `PacsError` (a
`cxrlm.errors.CxrlmError`: one line that says what to do). `StudyInfo.uid` and `.patient_key` (PatientID) are for
queries in memory: print `info.handle` (`study_handle(uid)`), never the UID or any patient attribute.
"""

from cxrlm.pacs.client import PacsClient, PacsError, StudyInfo, study_handle
from cxrlm.pacs.study import PacsStudy, find_prior, read_prior, read_study, store_sr

__all__ = ["PacsClient", "PacsError", "PacsStudy", "StudyInfo", "find_prior", "read_prior", "read_study",
           "store_sr", "study_handle"]
